"""A fresh Django project (``startproject`` defaults: middleware, apps, SQLite), three views.

``hello`` answers a constant, ``orm`` makes one ORM query, ``page`` renders a
template; ``/sse`` and ``/ws`` are Channels consumers for the idle-connection
benchmark. The database is ``BENCH_DJANGO_DB``, migrated and seeded by
``bench.frameworks.prepare_django`` before a server starts.
"""

"""Running bridge: the command line and the servers it drives.

- ``cli.py``: ``bridge serve`` and ``bridge check``, a thin layer over ``run()``.
- ``importer.py``: the app string found and classified (WSGI callable, ASGI app, Bridge).
- ``servers.py``: one adapter per server (uvicorn, hypercorn, granian, daphne, gunicorn).
- ``worker.py``: ``gunicorn -k bridge.gunicorn.Worker`` (its public name is ``bridge.gunicorn``).
- ``gunicorn_flags.py``: gunicorn's flags and config settings, and what bridge does with each.
- ``gunicorn_limits.py``: gunicorn's request-line and header limits for servers without them.
"""

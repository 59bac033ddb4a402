"""Running bridge: the command line and the servers it drives.

- ``cli.py``: ``bridge serve``, ``bridge check`` and ``bridge replay``, a thin layer over ``run()``.
- ``replay.py``: ``bridge replay FILE APP``, a downloaded shadow mismatch answered again.
- ``importer.py``: the app string found and classified (WSGI callable, ASGI app, Bridge).
- ``servers.py``: one adapter per server (uvicorn, hypercorn, granian, daphne, gunicorn).
- ``worker.py``: ``gunicorn -k bridge.gunicorn.Worker`` (its public name is ``bridge.gunicorn``).
- ``gunicorn_flags.py``: gunicorn's flags and config settings, and what bridge does with each.
- ``gunicorn_limits.py``: gunicorn's request-line and header limits for servers without them.
- ``draining.py``: uvicorn's HTTP protocols, retiring without dropping what they accepted.
- ``logs.py``: where bridge's log lines go under a server, and one traceback per failure.
"""

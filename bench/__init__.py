"""The benchmark harness: bridge beside a2wsgi, asgiref, gunicorn, granian and pure ASGI.

Run it with ``scripts/bench`` (``--quick`` for a smoke run); see ``docs/benchmarks.md``.
"""

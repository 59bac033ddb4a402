"""The worker tests' WSGI app behind a Bridge, for ASGI servers run directly."""

from bridge import Bridge

from .app import app

application = Bridge(app)

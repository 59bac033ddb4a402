"""This project's WSGI application served through bridge.

Run it with ``uvicorn djangoproject.bridge_asgi:application``.
"""

from __future__ import annotations

from bridge import Bridge

from .wsgi import application as wsgi_application

application = Bridge(wsgi_application)

"""The project's WSGI and ASGI applications, and the Channels router for the feeds."""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.djangosite.settings")


def wsgi() -> Any:
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()


def asgi() -> Any:
    from django.core.asgi import get_asgi_application

    return get_asgi_application()


def channels() -> Any:
    """Django's ASGI handler for pages, Channels consumers for ``/sse`` and ``/ws``."""
    from django.core.asgi import get_asgi_application

    pages = get_asgi_application()  # first: it sets Django up before consumers import models
    from channels.routing import ProtocolTypeRouter, URLRouter
    from django.urls import path, re_path

    from .consumers import Feed, Socket

    return ProtocolTypeRouter(
        {
            "http": URLRouter([path("sse", Feed.as_asgi()), re_path(r"", pages)]),
            "websocket": URLRouter([path("ws", Socket.as_asgi())]),
        }
    )

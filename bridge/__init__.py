"""bridge: serve legacy WSGI applications under any ASGI server, and move them to async
one route at a time."""

from __future__ import annotations

from .app import Bridge
from .errors import BodyError, BodyTooLarge, ClientDisconnected

__all__ = ["BodyError", "BodyTooLarge", "Bridge", "ClientDisconnected"]
__version__ = "0.1.0"

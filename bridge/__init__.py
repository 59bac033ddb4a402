"""bridge: serve legacy WSGI applications under any ASGI server, and move them to async
one route at a time."""

from __future__ import annotations

from .app import Bridge
from .broadcast import Broadcast
from .canary import Canary
from .errors import BodyError, BodyTimeout, BodyTooLarge, ClientDisconnected
from .metrics import Metrics
from .requests import Request
from .shadow import Shadow
from .websockets import WebSocket, WebSocketDisconnect

__all__ = [
    "BodyError",
    "BodyTimeout",
    "BodyTooLarge",
    "Bridge",
    "Broadcast",
    "Canary",
    "ClientDisconnected",
    "Metrics",
    "Request",
    "Shadow",
    "WebSocket",
    "WebSocketDisconnect",
]
__version__ = "0.1.0"

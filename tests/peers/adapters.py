"""Bridge presented under each peer's names, so a peer's own tests drive bridge.

Each adapter only translates a calling convention (a constructor's arguments, a
helper's signature) to bridge's; none of them changes what bridge does.
"""

from __future__ import annotations

import io
from typing import Any

import pytest

from bridge import Bridge
from bridge.wsgi.environ import build_environ
from bridge.wsgi.filewrapper import FileWrapper

WSGIApp = Any


def middleware(app: WSGIApp, *args: Any, **kwargs: Any) -> Bridge:
    """``WSGIMiddleware(app)`` of a2wsgi, starlette and uvicorn; ``WsgiToAsgi(app)`` of
    asgiref. Their tuning arguments (worker counts, duplicate-header limits) have no
    counterpart that means the same, so a test that passes one is listed as a difference."""
    if args or kwargs:
        raise TypeError(f"bridge has no counterpart for the peer's arguments {args} {kwargs}.")
    return Bridge(app)


def environ_of(scope: dict[str, Any], body: bytes | None = b"") -> dict[str, Any]:
    """A peer's ``build_environ(scope, body)``: bridge's environ with that body as input."""
    return build_environ(scope, io.BytesIO(body or b""), file_wrapper=FileWrapper)


def uvicorn_environ(scope: dict[str, Any], message: Any, body: Any) -> dict[str, Any]:
    """uvicorn's ``wsgi.build_environ(scope, message, body)``."""
    return build_environ(scope, body, file_wrapper=FileWrapper)


class UvicornWSGI:
    """Stands in for the ``uvicorn.middleware.wsgi`` module the suite calls into."""

    build_environ = staticmethod(uvicorn_environ)


@pytest.fixture
def uvicorn_wsgi_middleware() -> Any:
    """uvicorn's ``wsgi_middleware`` fixture, which gives the adapter class under test."""
    return middleware


class AsgirefInstance:
    """asgiref's ``WsgiToAsgiInstance(app)``, for the tests of its ``build_environ``."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app
        self.scope: dict[str, Any] = {}

    def build_environ(self, scope: dict[str, Any], body: Any) -> dict[str, Any]:
        return environ_of(scope, body)


class HypercornWrapper:
    """hypercorn's ``WSGIWrapper(app, max_body_size)``, called with hypercorn's extra
    ``sync_spawn`` and ``call_soon`` arguments, which bridge has no use for."""

    def __init__(self, app: WSGIApp, max_body_size: int) -> None:
        self.bridge = Bridge(app, max_body_size=max_body_size)

    async def __call__(self, scope: Any, receive: Any, send: Any, *server_hooks: Any) -> None:
        await self.bridge(scope, receive, send)

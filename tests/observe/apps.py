"""The applications the observability tests trace: a Flask legacy app behind ``Bridge``,
with migrated async and sync routes beside it, each with a way to fail."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from wsgiref.validate import validator

from flask import Flask
from werkzeug.wrappers import Response

from bridge import Bridge, Request


def legacy_flask() -> Flask:
    app = Flask("legacy")

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> str:
        return f"item {item_id}"

    @app.get("/boom/<int:n>")
    def boom(n: int) -> str:
        raise RuntimeError("the legacy view failed")

    @app.get("/stream/<int:n>")
    def stream(n: int) -> Response:
        def body() -> Iterator[bytes]:
            yield b"first "
            raise RuntimeError("the legacy body failed")

        return app.response_class(body())

    return app


def bridged(flask_app: Flask) -> Bridge:
    bridge = Bridge(validator(flask_app), adaptive_threads=False)

    @bridge.route("/orders/<int:order_id>", methods=["GET"])
    async def order(request: Request, order_id: int) -> Response:
        return Response(f"order {order_id}")

    @bridge.route("/carts/<int:cart_id>", methods=["GET"])
    def cart(request: Request, cart_id: int) -> Response:
        return Response(f"cart {cart_id}")

    @bridge.route("/async-boom/<int:n>")
    async def async_boom(request: Request, n: int) -> Response:
        raise RuntimeError("the async view failed")

    @bridge.route("/sync-boom/<int:n>")
    def sync_boom(request: Request, n: int) -> Response:
        raise RuntimeError("the sync view failed")

    @bridge.route("/sync-body-boom/<int:n>")
    def sync_body_boom(request: Request, n: int) -> Response:
        def body() -> Iterator[bytes]:
            yield b"first "
            raise RuntimeError("the sync body failed")

        return Response(body())

    @bridge.route("/async-body-boom/<int:n>")
    async def async_body_boom(request: Request, n: int) -> Response:
        async def body() -> AsyncIterator[bytes]:
            yield b"first "
            raise RuntimeError("the async body failed")

        return Response(body())

    return bridge

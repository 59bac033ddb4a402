"""The request object that migrated views receive."""

from __future__ import annotations

from typing import Any

from werkzeug.wrappers import Request as WerkzeugRequest


class Request(WerkzeugRequest):
    """A werkzeug ``Request`` built from the same environ the legacy app would see.

    The body has been received before the view runs, so ``form``, ``files`` and
    ``get_json()`` read from memory and never block the event loop. ``scope`` is the
    ASGI scope, and ``path_params`` the values the route's rule matched.
    """

    path_params: dict[str, Any]

    @property
    def scope(self) -> dict[str, Any]:
        scope: dict[str, Any] = self.environ["asgi.scope"]
        return scope

    @property
    def state(self) -> dict[str, Any]:
        """The lifespan state as the server copied it into this request's scope.

        What ``on_startup`` hooks (those that take an argument) and mounted apps'
        lifespans stored, such as a database pool: ``request.state["db"]``.
        """
        state: dict[str, Any] = self.scope.setdefault("state", {})
        return state

"""The live feed of new items: a pub/sub on the server's event loop, and the WSGI
wrapper through which the legacy code publishes to it.

Legacy code runs in bridge's worker threads. It publishes with
`async_to_sync(feed.publish)(event)`: from a thread bridge started, `async_to_sync`
runs the coroutine on the server's own loop, the loop the subscribers wait on, and the
thread waits the few microseconds it takes. (`loop.call_soon_threadsafe` would do the
same without waiting, but needs the loop saved at startup; `async_to_sync` needs
nothing and hands any error back to the caller.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any

from asgiref.sync import async_to_sync

from sample_wsgi_app import queries
from sample_wsgi_app.api import item_json
from sample_wsgi_app.db import Database

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

logger = logging.getLogger("sample_wsgi_app")

Event = dict[str, Any]

# Events a subscriber may fall behind by before the oldest is dropped: a client that
# stops reading costs bounded memory, and publishing never waits for it.
BACKLOG = 100

# The legacy requests that create an item, and where their response points.
CREATED = {("POST", "/items/new", "303"), ("POST", "/api/items", "201")}
CREATED_LOCATION = re.compile(r"/(?:api/)?items/(\d+)$")


class ItemFeed:
    """Hands every published event to every subscriber; used on the event loop only."""

    def __init__(self, backlog: int = BACKLOG) -> None:
        self.backlog = backlog
        self._queues: set[asyncio.Queue[Event]] = set()

    @property
    def subscribers(self) -> int:
        return len(self._queues)

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[Event]]:
        """A queue that receives every event published while the block runs."""
        queue: asyncio.Queue[Event] = asyncio.Queue(self.backlog)
        self._queues.add(queue)
        try:
            yield queue
        finally:
            self._queues.discard(queue)

    async def publish(self, event: Event) -> int:
        """Queue `event` for every subscriber; returns how many there were.

        A coroutine, though it never waits, so sync code reaches it with `async_to_sync`.
        """
        for queue in self._queues:
            if queue.full():
                queue.get_nowait()  # the slow reader loses its oldest event
            queue.put_nowait(event)
        return len(self._queues)


def publish_created_items(app: WSGIApplication, db: Database, feed: ItemFeed) -> WSGIApplication:
    """Wrap the legacy app so each item it creates is published to `feed`.

    An application whose views you edit would publish right after the commit; the
    sample's views stay as they were, so this wrapper recognises a successful create
    by its method, path, status and `Location`, in the legacy request's own thread.
    """

    def publishing(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        seen: dict[str, str] = {}

        def noting_start_response(
            status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None
        ) -> Callable[[bytes], object]:
            seen["status"] = status.split(" ", 1)[0]
            seen["location"] = next((v for k, v in headers if k.lower() == "location"), "")
            return start_response(status, headers, exc_info)

        body = app(environ, noting_start_response)
        created = (environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"), seen.get("status"))
        if created in CREATED:
            match = CREATED_LOCATION.search(seen["location"])
            try:
                item = queries.get_item(db, int(match.group(1))) if match else None
                if item is not None:
                    async_to_sync(feed.publish)({"type": "item", "item": item_json(item)})
            except Exception:
                # The item is committed; a feed that missed it must not turn that into a 500.
                logger.exception("Publishing new item %s to the live feed failed.", seen)
        return body

    return publishing

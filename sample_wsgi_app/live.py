"""The live feed of new items: the WSGI wrapper through which the legacy code publishes
each item it creates to the app's `Broadcast`, on channel `items`.

Legacy code runs in bridge's worker threads. It publishes with
`broadcast.publish_sync("items", event)`, which runs the publish on the server's own
loop and waits the moment it takes (it is `async_to_sync(broadcast.publish)`). With
`memory://` the loop's subscribers get it; with `redis://` it goes to a Redis Stream
and from there to the subscribers of every worker on every host.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from bridge import Broadcast
from sample_wsgi_app import queries
from sample_wsgi_app.api import item_json
from sample_wsgi_app.db import Database

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

logger = logging.getLogger("sample_wsgi_app")

# The channel new items are published on.
CHANNEL = "items"

# The legacy requests that create an item, and where their response points.
CREATED = {("POST", "/items/new", "303"), ("POST", "/api/items", "201")}
CREATED_LOCATION = re.compile(r"/(?:api/)?items/(\d+)$")


def publish_created_items(
    app: WSGIApplication, db: Database, broadcast: Broadcast
) -> WSGIApplication:
    """Wrap the legacy app so each item it creates is published on `broadcast`.

    An application whose views you edit would publish right after the commit (see
    docs/recipes/django-live.md); the sample's views stay as they were, so this
    wrapper recognises a successful create by its method, path, status and `Location`,
    in the legacy request's own thread.
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
                    broadcast.publish_sync(CHANNEL, {"type": "item", "item": item_json(item)})
            except Exception:
                # The item is committed; a feed that missed it must not turn that into a 500.
                logger.exception("Publishing new item %s to the live feed failed.", seen)
        return body

    return publishing

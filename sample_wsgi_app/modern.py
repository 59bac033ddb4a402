"""The sample application half-way through its migration to async, served by bridge.

The legacy WSGI app still answers every page and form; beside it run an async JSON
view, two session views (one inside the legacy middleware, one reading the cookie), a
live feed of new items (websocket and server-sent events) with a page that shows it,
and the request log as ASGI middleware. docs/migration.md builds it step by step::

    bridge serve sample_wsgi_app.modern:application
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import AsyncIterator
from html import escape

from asgiref.sync import sync_to_async
from werkzeug.exceptions import NotFound
from werkzeug.wrappers import Response

from bridge import Bridge, Broadcast, Canary, Request, WebSocket
from bridge.broadcast import Subscription, event_key
from sample_wsgi_app import app as sample_app
from sample_wsgi_app import queries, templates
from sample_wsgi_app.access_log import RequestLog
from sample_wsgi_app.api import attachment_json, item_json, json_error, json_response
from sample_wsgi_app.application import NO_KEY_MESSAGE, SampleApp
from sample_wsgi_app.async_session import (
    csrf_ok,
    current_user,
    log_out,
    read_session,
    save_session,
)
from sample_wsgi_app.live import CHANNEL, publish_created_items
from sample_wsgi_app.queries import User
from sample_wsgi_app.request import SESSION_KEY, USER_KEY
from sample_wsgi_app.sessions import CSRF_SESSION_KEY, SESSION_COOKIE, csrf_token

# Eight threads serve the legacy pages; the live feed holds none of them, so a
# thousand open feeds leave all eight to the pages.
MAX_THREADS = 8
# A comment line every 15 s keeps an idle event stream open through proxies that
# drop quiet connections (nginx's proxy_read_timeout is 60 s).
SSE_HEARTBEAT_SECONDS = 15.0


def create_application(
    sample: SampleApp,
    *,
    max_threads: int = MAX_THREADS,
    broadcast: Broadcast | str | None = None,
    dashboard_token: str | None = None,
    canary: float | Canary | None = None,
) -> RequestLog:
    """Serve `sample` through bridge, with the migrated routes and the live feed beside it.

    `broadcast` carries the live feed: None takes `$BRIDGE_BROADCAST_URL` (what
    `bridge serve --broadcast redis://...` sets), else `memory://`. The result is the
    ASGI request log around the `Bridge` (its `app`). Without a session key (see
    `settings`) the server's startup fails with the reason. `dashboard_token` opens
    bridge's dashboard to whoever has it (default: loopback only). `canary` makes the
    async item view a canary route: it answers that share, the legacy view the rest.
    """
    live = Broadcast.configured(broadcast)
    db = sample.db
    secret = sample.settings.secret_key
    # Step 5: the request log is ASGI middleware now, so the legacy stack leaves it out.
    legacy = sample.wrap(sample.dispatch, log_requests=False)
    # Step 4: legacy creates publish to the live feed.
    legacy = publish_created_items(legacy, db, live)
    bridge = Bridge(
        legacy,
        max_threads=max_threads,
        broadcast=live,
        # Loopback clients only, unless dashboard_token is set.
        dashboard_path="/_bridge/",
        metrics_path="/_bridge/metrics",
        dashboard_token=dashboard_token,
        on_startup=[functools.partial(_require_key, sample)],
    )
    in_legacy_middleware = functools.partial(sample.wrap, log_requests=False)

    # Step 2: a read-only view, async. Both queries run through sync_to_async on the
    # request's one thread (bridge opens a ThreadSensitiveContext per request), so
    # they share that thread's SQLite connection, as in the legacy view.
    @bridge.route("/api/items/<int:item_id>", methods=["GET"], canary=canary)
    async def api_item_detail(request: Request, item_id: int) -> Response:
        item = await sync_to_async(queries.get_item)(db, item_id)
        if item is None:
            return json_error(404, NotFound.description)
        attachments = await sync_to_async(queries.list_attachments)(db, item_id)
        return json_response(
            {**item_json(item), "attachments": [attachment_json(a) for a in attachments]}
        )

    # Step 3a: inside the legacy middleware. The session and user are the ones
    # SessionMiddleware and AuthMiddleware put in the environ, and a new CSRF token
    # is saved by SessionMiddleware. A worker thread waits while this view runs.
    @bridge.route("/api/session", methods=["GET"], middleware=in_legacy_middleware)
    async def api_session(request: Request) -> Response:
        user = request.environ[USER_KEY]
        token = csrf_token(request.environ[SESSION_KEY])
        return json_response(
            {"user": user.username if user else None, "csrf_token": token},
            headers={"Cache-Control": "no-store"},
        )

    # Step 3b: the session read from the cookie on the loop; no thread waits, and
    # none is used at all for an anonymous visitor.
    @bridge.route("/api/me", methods=["GET"])
    async def api_me(request: Request) -> Response:
        user = await current_user(read_session(request, secret), db)
        return json_response(
            {"user": user.username if user else None}, headers={"Cache-Control": "no-store"}
        )

    @bridge.route("/api/logout", methods=["POST"])
    async def api_logout(request: Request) -> Response:
        session = read_session(request, secret)
        if not csrf_ok(request, session):  # no CSRFMiddleware out here
            return json_error(403, "Send the session's CSRF token in the X-CSRF-Token header.")
        await log_out(session, db)  # every cookie issued before now stops working
        response = json_response({"user": None}, headers={"Cache-Control": "no-store"})
        if secret is not None:
            save_session(response, request, {}, secret)
        return response

    # Step 4: the live feed. Each open connection is a coroutine waiting on its
    # subscription to app.broadcast.
    @bridge.websocket("/ws/items")
    async def item_socket(ws: WebSocket) -> None:
        await ws.accept()
        async with bridge.broadcast.subscribe(CHANNEL) as events:
            await ws.send_json({"type": "ready"})
            forward = asyncio.ensure_future(_forward(events, ws))
            try:
                async for _message in ws:  # the client only listens; this ends when it leaves
                    pass
            finally:
                forward.cancel()
                await asyncio.wait({forward})
                if not forward.cancelled():
                    forward.exception()  # a send to a departed client; nothing to report

    @bridge.route("/events/items", methods=["GET"])
    async def item_events(request: Request) -> Response:
        # A reconnecting EventSource sends the id of the last event it got: replay
        # what it missed (within the broadcast's max_len), then go live.
        last_id = request.headers.get("Last-Event-ID") or None
        try:
            if last_id is not None:
                event_key(last_id)
        except ValueError as exc:  # not an id bridge made: say so, never a 500
            return Response(f"{exc}\n", status=400, mimetype="text/plain")

        async def stream() -> AsyncIterator[str]:
            async with bridge.broadcast.subscribe(CHANNEL, last_id=last_id) as events:
                yield "retry: 2000\nevent: ready\ndata: {}\n\n"
                while True:
                    try:
                        event = await asyncio.wait_for(events.get(), SSE_HEARTBEAT_SECONDS)
                    except asyncio.TimeoutError:
                        yield ": heartbeat\n\n"
                        continue
                    except StopAsyncIteration:
                        return  # the server is stopping
                    yield event.sse("item")

        # werkzeug's types know only sync bodies; bridge sends an async one on the loop.
        return Response(
            stream(),  # type: ignore[arg-type]
            mimetype="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @bridge.route("/live", methods=["GET"])
    async def live_page(request: Request) -> Response:
        session = read_session(request, secret)
        user = await current_user(session, db)
        page = await sync_to_async(queries.list_items)(db)
        token = session.get(CSRF_SESSION_KEY) if user is not None else None
        html = _live_page(page.items, user, token if isinstance(token, str) else None)
        return Response(html, mimetype="text/html")

    # Step 5: the ported request log runs for every route, async or legacy.
    return RequestLog(bridge)


def _require_key(sample: SampleApp) -> None:
    # A startup hook: the server refuses to start, saying why, rather than serving
    # sessions nobody can trust.
    if sample.settings.secret_key is None:
        raise RuntimeError(NO_KEY_MESSAGE)


async def _forward(events: Subscription, ws: WebSocket) -> None:
    async for event in events:
        await ws.send_text(event.text)  # the JSON the publisher encoded, once for all
    await ws.close(1001)  # "going away": the server is stopping (RFC 6455 7.4.1)


LIVE_SCRIPT = """
const list = document.getElementById("live-items");
const state = document.getElementById("live-state");
function show(item) {
  const row = document.createElement("li");
  row.className = "item";
  row.dataset.itemId = item.id;
  const link = document.createElement("a");
  link.href = "/items/" + item.id;
  link.textContent = item.title;
  row.append(link, " ");
  const meta = document.createElement("span");
  meta.className = "meta";
  meta.textContent = "by " + item.owner + ", " + item.created_at;
  row.append(meta);
  list.prepend(row);
}
function connected(via) {
  state.dataset.state = "connected";
  state.textContent = "Live (" + via + ")";
}
function lost() {
  state.dataset.state = "reconnecting";
  state.textContent = "Reconnecting...";
}
if (new URLSearchParams(location.search).get("via") === "sse") {
  const source = new EventSource("/events/items");
  source.addEventListener("ready", () => connected("server-sent events"));
  source.addEventListener("item", (event) => show(JSON.parse(event.data).item));
  source.onerror = lost;
} else {
  (function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + location.host + "/ws/items");
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "ready") connected("websocket");
      else if (message.type === "item") show(message.item);
    };
    socket.onclose = () => { lost(); setTimeout(connect, 1000); };
  })();
}
"""


def _live_page(items: list[queries.Item], user: User | None, token: str | None) -> str:
    rows = "\n".join(
        f'<li class="item" data-item-id="{item.id}"><a href="/items/{item.id}">'
        f"{escape(item.title)}</a> "
        f'<span class="meta">by {escape(item.owner)}, {escape(item.created_at)}</span></li>'
        for item in items
    )
    body = (
        '<h1>Live items</h1>\n<p id="live-state" data-state="connecting">Connecting...</p>\n'
        f'<ul id="live-items">\n{rows}\n</ul>\n<script>{LIVE_SCRIPT}</script>'
    )
    return templates.page(title="Live items", body=body, user=user, csrf_token=token)


application = create_application(
    sample_app, dashboard_token=os.environ.get("BRIDGE_DASHBOARD_TOKEN") or None
)


def with_canary(share: float = 0.05) -> RequestLog:
    """The step between shadow and switch: the async item view answers ``share`` of its
    requests, one arm per session cookie (docs/migration.md, "Shift the traffic")."""
    return create_application(
        sample_app,
        dashboard_token=os.environ.get("BRIDGE_DASHBOARD_TOKEN") or None,
        canary=Canary(share=share, key=f"cookie:{SESSION_COOKIE}"),
    )

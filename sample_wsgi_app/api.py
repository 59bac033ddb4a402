"""The JSON API: items as JSON, and the session details a script needs to write."""

from __future__ import annotations

import functools
import json
from dataclasses import asdict
from typing import Any

from werkzeug.exceptions import NotFound
from werkzeug.wrappers import Response

from sample_wsgi_app import queries
from sample_wsgi_app.auth import P, View
from sample_wsgi_app.queries import Attachment, Item
from sample_wsgi_app.request import SampleRequest


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """Serialise `data` as a JSON response."""
    return Response(
        json.dumps(data, ensure_ascii=False),
        status=status,
        headers=headers,
        mimetype="application/json",
    )


def json_error(status: int, message: str) -> Response:
    """A JSON error body, `{"error": message}`."""
    return json_response({"error": message}, status=status)


def api_login_required(view: View[P]) -> View[P]:
    """Let an API view run only for a logged-in user; others get a 401 JSON response."""

    @functools.wraps(view)
    def guarded(request: SampleRequest, /, *args: P.args, **kwargs: P.kwargs) -> Response:
        if request.user is None:
            return json_error(401, "Log in first: POST /login, then send the session cookie.")
        return view(request, *args, **kwargs)

    return guarded


def item_json(item: Item) -> dict[str, Any]:
    """An item as the API shows it."""
    return {**asdict(item), "url": f"/items/{item.id}"}


def attachment_json(attachment: Attachment) -> dict[str, Any]:
    """An attachment as the API shows it; its stored path stays private."""
    data = asdict(attachment)
    del data["path"]
    return {**data, "url": f"/attachments/{attachment.id}"}


def health(request: SampleRequest) -> Response:
    """Answer `{"status": "ok"}` once the database has answered `SELECT 1`."""
    queries.ping(request.db)
    return json_response({"status": "ok"}, headers={"Cache-Control": "no-store"})


def session_info(request: SampleRequest) -> Response:
    """The logged-in user and the CSRF token to send as `X-CSRF-Token` with writes."""
    user = request.user
    return json_response(
        {"user": user.username if user else None, "csrf_token": request.csrf_token()},
        headers={"Cache-Control": "no-store"},
    )


def item_list(request: SampleRequest) -> Response:
    """One page of items, filtered by `?q=`, paged by `?page=`."""
    page = queries.list_items(
        request.db,
        page=request.args.get("page", 1, type=int),
        query=request.args.get("q", "").strip(),
    )
    return json_response(
        {
            "items": [item_json(item) for item in page.items],
            "page": page.page,
            "pages": page.pages,
            "per_page": page.per_page,
            "total": page.total,
            "q": page.query,
        }
    )


def item_detail(request: SampleRequest, item_id: int) -> Response:
    """One item with its attachments."""
    item = queries.get_item(request.db, item_id)
    if item is None:
        raise NotFound()
    attachments = queries.list_attachments(request.db, item_id)
    return json_response(
        {**item_json(item), "attachments": [attachment_json(a) for a in attachments]}
    )


@api_login_required
def item_create(request: SampleRequest) -> Response:
    """Create an item from `{"title": ..., "body": ...}`; answers 201 with the item."""
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        return json_error(400, 'Send a JSON object such as {"title": "...", "body": "..."}.')
    title, body = data.get("title", ""), data.get("body", "")
    if not isinstance(title, str) or not isinstance(body, str):
        return json_error(400, "The fields title and body must be strings.")
    errors = queries.item_errors(title, body)
    if errors:
        return json_response({"error": "The item is invalid.", "fields": errors}, status=400)
    item = queries.create_item(
        request.db, title=title.strip(), body=body, owner=request.require_user().username
    )
    return json_response(item_json(item), status=201, headers={"Location": f"/api/items/{item.id}"})

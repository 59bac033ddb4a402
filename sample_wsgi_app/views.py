"""The HTML pages, the attachment transfers and the CSV export: plain `def view(request)`."""

from __future__ import annotations

import csv
import logging
import os
import secrets
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from werkzeug.exceptions import BadRequest, Forbidden, HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import RequestRedirect
from werkzeug.utils import redirect
from werkzeug.wrappers import Response
from werkzeug.wsgi import wrap_file

from sample_wsgi_app import queries, templates
from sample_wsgi_app.api import json_error
from sample_wsgi_app.auth import authenticate, log_in, log_out, login_required, safe_next_url
from sample_wsgi_app.db import Database
from sample_wsgi_app.request import SampleRequest

logger = logging.getLogger("sample_wsgi_app")

# Chunk size for file downloads: 64 KiB, the read size of shutil.copyfileobj on
# most platforms; werkzeug's 8 KiB default costs eight times the calls.
DOWNLOAD_CHUNK = 64 * 1024
DEFAULT_CONTENT_TYPE = "application/octet-stream"


def render(request: SampleRequest, title: str, body: str, status: int = 200) -> Response:
    """Return `body` inside the layout as an HTML response."""
    token = request.csrf_token() if request.user is not None else None
    html = templates.page(title=title, body=body, user=request.user, csrf_token=token)
    return Response(html, status=status, mimetype="text/html")


def _item_or_404(db: Database, item_id: int) -> queries.Item:
    item = queries.get_item(db, item_id)
    if item is None:
        raise NotFound(f"There is no item {item_id}.")
    return item


def _changeable_item_or_404(request: SampleRequest, item_id: int) -> queries.Item:
    """The item, if the logged-in user may change it (its owner or an admin); else 403."""
    item = _item_or_404(request.db, item_id)
    if not request.require_user().may_change(item):
        raise Forbidden(
            f"Only {item.owner}, who created item {item_id}, or an admin may change it."
        )
    return item


def index(request: SampleRequest) -> Response:
    """Send the home page to the item list."""
    return redirect("/items", code=302)


def item_list(request: SampleRequest) -> Response:
    """Items, newest first, ten a page (`?page=`), filtered by `?q=`."""
    page = queries.list_items(
        request.db,
        page=request.args.get("page", 1, type=int),
        query=request.args.get("q", "").strip(),
    )
    return render(request, "Items", templates.item_list(page))


@login_required
def item_new(request: SampleRequest) -> Response:
    """Show the form for a new item, or create it."""
    title, body, errors = "", "", {}
    if request.method == "POST":
        title, body = request.form.get("title", "").strip(), request.form.get("body", "")
        errors = queries.item_errors(title, body)
        if not errors:
            owner = request.require_user().username
            item = queries.create_item(request.db, title=title, body=body, owner=owner)
            return redirect(f"/items/{item.id}", code=303)
    form = templates.item_form(
        action="/items/new",
        heading="New item",
        title=title,
        body=body,
        csrf_token=request.csrf_token(),
        errors=errors,
    )
    return render(request, "New item", form, status=400 if errors else 200)


def item_detail(request: SampleRequest, item_id: int) -> Response:
    """One item with its attachments."""
    item = _item_or_404(request.db, item_id)
    attachments = queries.list_attachments(request.db, item_id)
    token = request.csrf_token() if request.user is not None else None
    body = templates.item_detail(item, attachments, user=request.user, csrf_token=token)
    return render(request, item.title, body)


@login_required
def item_edit(request: SampleRequest, item_id: int) -> Response:
    """Show the form for an existing item, or save it (its owner or an admin only)."""
    item = _changeable_item_or_404(request, item_id)
    title, body, errors = item.title, item.body, {}
    if request.method == "POST":
        title, body = request.form.get("title", "").strip(), request.form.get("body", "")
        errors = queries.item_errors(title, body)
        if not errors:
            queries.update_item(request.db, item_id, title=title, body=body)
            return redirect(f"/items/{item_id}", code=303)
    form = templates.item_form(
        action=f"/items/{item_id}/edit",
        heading=f"Edit “{item.title}”",
        title=title,
        body=body,
        csrf_token=request.csrf_token(),
        errors=errors,
    )
    return render(request, "Edit item", form, status=400 if errors else 200)


@login_required
def item_delete(request: SampleRequest, item_id: int) -> Response:
    """Delete an item and its stored files (its owner or an admin only)."""
    _changeable_item_or_404(request, item_id)
    paths = queries.delete_item(request.db, item_id)
    if paths is None:
        raise NotFound(f"There is no item {item_id}.")
    # Files go after the commit: a failed delete must not lose data.
    for path in paths:
        (request.settings.data_dir / path).unlink(missing_ok=True)
    return redirect("/items", code=303)


@login_required
def attachment_upload(request: SampleRequest, item_id: int) -> Response:
    """Store the multipart field `file` as an attachment of the item (its owner or an admin)."""
    _changeable_item_or_404(request, item_id)
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        raise BadRequest("Choose a file to upload.")
    relative = Path("attachments") / str(item_id) / secrets.token_hex(16)
    final = request.settings.data_dir / relative
    final.parent.mkdir(parents=True, exist_ok=True)
    # werkzeug has already streamed the part to a temporary file; copy it under
    # a temporary name so a half-written file is never taken for an attachment.
    partial = final.with_suffix(".part")
    try:
        upload.save(partial, buffer_size=DOWNLOAD_CHUNK)
        os.replace(partial, final)
        queries.add_attachment(
            request.db,
            item_id=item_id,
            filename=upload.filename,
            content_type=upload.mimetype or DEFAULT_CONTENT_TYPE,
            size=final.stat().st_size,
            path=relative.as_posix(),
        )
    except BaseException:
        partial.unlink(missing_ok=True)
        final.unlink(missing_ok=True)
        raise
    return redirect(f"/items/{item_id}", code=303)


def content_disposition(filename: str) -> str:
    """An `attachment` disposition with an ASCII fallback and the exact UTF-8 name (RFC 6266)."""
    fallback = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode()
    fallback = "".join(c for c in fallback if c.isprintable() and c not in '"\\') or "download"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


@login_required
def attachment_download(request: SampleRequest, attachment_id: int) -> Response:
    """Send a stored file, to logged-in users, through the server's `wsgi.file_wrapper`."""
    attachment = queries.get_attachment(request.db, attachment_id)
    if attachment is None:
        raise NotFound(f"There is no attachment {attachment_id}.")
    try:
        file = (request.settings.data_dir / attachment.path).open("rb")
    except FileNotFoundError:
        logger.error("Attachment %d is missing its file %s.", attachment_id, attachment.path)
        raise NotFound(f"The file of attachment {attachment_id} is gone.") from None
    size = os.fstat(file.fileno()).st_size
    # wrap_file returns environ["wsgi.file_wrapper"](file, chunk) when the server
    # offers one (PEP 3333's optional platform-specific file handling), so it can
    # send the file itself, and werkzeug's FileWrapper otherwise.
    body = wrap_file(request.environ, file, DOWNLOAD_CHUNK)
    return Response(
        body,
        headers={
            "Content-Length": str(size),
            "Content-Disposition": content_disposition(attachment.filename),
            # Uploads are arbitrary; never let a browser sniff one into HTML.
            "X-Content-Type-Options": "nosniff",
        },
        content_type=attachment.content_type,
        direct_passthrough=True,
    )


def login(request: SampleRequest) -> Response:
    """Show the login form, or check the credentials and start a session."""
    next_url = safe_next_url(request.values.get("next"))
    username, failed = "", False
    if request.method == "POST":
        username = request.form.get("username", "")
        user = authenticate(request.db, username, request.form.get("password", ""))
        if user is not None:
            log_in(request.session, user)
            logger.info("User %r logged in.", user.username)
            return redirect(next_url, code=303)
        failed = True
        logger.warning("Failed login for %r.", username)
    elif request.user is not None:
        return redirect(next_url, code=303)
    form = templates.login_form(
        next_url=next_url, username=username, csrf_token=request.csrf_token(), failed=failed
    )
    return render(request, "Log in", form)


def logout(request: SampleRequest) -> Response:
    """End the session, and every earlier session of the same user."""
    log_out(request.db, request.session)
    return redirect("/items", code=303)


class _LineBuffer:
    """A write target for csv.writer that hands back each line as it is written."""

    def __init__(self) -> None:
        self.line = ""

    def write(self, text: str) -> int:
        self.line = text
        return len(text)


# A spreadsheet runs a cell that starts with one of these as a formula (OWASP, "CSV
# Injection"): "=HYPERLINK(...)" in a title would become a link or a command.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(text: str) -> str:
    """`text` as a spreadsheet shows it, never as a formula: a leading `'` neutralises it."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _csv_rows(db: Database) -> Iterator[bytes]:
    buffer = _LineBuffer()
    writer = csv.writer(buffer)
    writer.writerow(["id", "title", "body", "created_at", "owner"])
    yield buffer.line.encode()
    for item in queries.iter_items(db):
        texts = (csv_cell(item.title), csv_cell(item.body), csv_cell(item.owner))
        writer.writerow([item.id, texts[0], texts[1], item.created_at, texts[2]])
        yield buffer.line.encode()


def export_csv(request: SampleRequest) -> Response:
    """Every item as CSV, produced one row per chunk, so its length is unknown up front."""
    return Response(
        _csv_rows(request.db),
        mimetype="text/csv",
        headers={"Content-Disposition": 'attachment; filename="items.csv"'},
    )


def report(request: SampleRequest) -> Response:
    """The deliberately slow backlog report."""
    rows, elapsed_ms = queries.backlog_report(request.db)
    return render(request, "Backlog report", templates.report(rows, elapsed_ms))


def http_error(request: SampleRequest, exc: HTTPException) -> Response:
    """Render a werkzeug HTTP exception as this site's HTML page, or as JSON under /api/."""
    if isinstance(exc, RequestRedirect):
        return exc.get_response(request.environ)
    status = exc.code or 500
    message = exc.description or ""
    if request.path.startswith("/api/"):
        response = json_error(status, message)
    else:
        response = render(request, exc.name, templates.error(status, exc.name, message), status)
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        response.headers["Allow"] = ", ".join(exc.valid_methods)
    return response

"""HTML pages rendered with f-strings; every interpolated value goes through `html.escape`.

Ids and data attributes (`id="login-form"`, `data-item-id`, ...) are stable hooks
for browser tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from urllib.parse import urlencode

from sample_wsgi_app.queries import Attachment, Item, Page, ReportRow, User

STYLE = """
body { font: 16px/1.5 system-ui, sans-serif; max-width: 52rem; margin: 0 auto; padding: 0 1rem; }
nav#nav { display: flex; gap: 1rem; align-items: center; padding: .75rem 0;
          border-bottom: 1px solid #ddd; }
nav#nav .user { margin-left: auto; }
nav#nav form { display: inline; }
.errors { color: #a00; }
.meta { color: #666; font-size: .875rem; }
table { border-collapse: collapse; } td, th { padding: .25rem .75rem; text-align: right; }
label { display: block; margin-top: .75rem; }
input[type=text], input[type=password], textarea { width: 100%; box-sizing: border-box; }
"""


def _csrf_field(token: str) -> str:
    return f'<input type="hidden" name="csrf_token" value="{escape(token)}">'


def _nav(user: User | None, csrf_token: str | None) -> str:
    links = (
        '<a href="/items" id="nav-items">Items</a>'
        '<a href="/items/new" id="nav-new-item">New item</a>'
        '<a href="/report" id="nav-report">Report</a>'
        '<a href="/export.csv" id="nav-export">Export CSV</a>'
    )
    if user is None or csrf_token is None:
        state = (
            '<span class="user" id="nav-user"><a href="/login" id="login-link">Log in</a></span>'
        )
        return f'<nav id="nav" data-user="">{links}{state}</nav>'
    state = (
        f'<span class="user" id="nav-user">Signed in as <strong>{escape(user.username)}</strong>'
        f' <form method="post" action="/logout" id="logout-form">{_csrf_field(csrf_token)}'
        '<button type="submit" id="logout-button">Log out</button></form></span>'
    )
    return f'<nav id="nav" data-user="{escape(user.username)}">{links}{state}</nav>'


def page(*, title: str, body: str, user: User | None, csrf_token: str | None) -> str:
    """Wrap a page body in the layout, with the navigation showing who is logged in."""
    meta = f'<meta name="csrf-token" content="{escape(csrf_token)}">' if csrf_token else ""
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"{meta}<title>{escape(title)} · Sample</title>\n<style>{STYLE}</style>\n</head>\n"
        f'<body>\n{_nav(user, csrf_token)}\n<main id="main">\n{body}\n</main>\n</body>\n</html>\n'
    )


def _page_link(page: Page, number: int) -> str:
    params: dict[str, str | int] = {"page": number}
    if page.query:
        params["q"] = page.query
    return f"/items?{urlencode(params)}"


def item_list(page: Page) -> str:
    """The item list with its search form and pagination."""
    rows = "\n".join(
        f'<li class="item" data-item-id="{item.id}"><a href="/items/{item.id}">'
        f"{escape(item.title)}</a> "
        f'<span class="meta">by {escape(item.owner)}, {escape(item.created_at)}</span></li>'
        for item in page.items
    )
    listing = f'<ul id="item-list">\n{rows}\n</ul>' if rows else '<p id="no-items">No items.</p>'
    prev_link = (
        f'<a rel="prev" id="page-prev" href="{escape(_page_link(page, page.page - 1))}">Newer</a>'
        if page.page > 1
        else ""
    )
    next_link = (
        f'<a rel="next" id="page-next" href="{escape(_page_link(page, page.page + 1))}">Older</a>'
        if page.page < page.pages
        else ""
    )
    return (
        "<h1>Items</h1>\n"
        '<form method="get" action="/items" id="search-form" role="search">'
        f'<input type="search" name="q" id="search-input" value="{escape(page.query)}" '
        'placeholder="Search titles and bodies"> <button type="submit">Search</button></form>\n'
        f'<p id="item-count" data-total="{page.total}">{page.total} item(s)</p>\n'
        f"{listing}\n"
        f'<nav id="pagination" data-page="{page.page}" data-pages="{page.pages}">'
        f"{prev_link} Page {page.page} of {page.pages} {next_link}</nav>"
    )


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / (1024 * 1024):.1f} MiB"


def item_detail(
    item: Item, attachments: Sequence[Attachment], *, user: User | None, csrf_token: str | None
) -> str:
    """One item with its attachments; editing controls for its owner or an admin."""
    files = "\n".join(
        f'<li class="attachment" data-attachment-id="{a.id}">'
        f'<a href="/attachments/{a.id}">{escape(a.filename)}</a> '
        f'<span class="meta">{escape(a.content_type)}, {_size(a.size)}</span></li>'
        for a in attachments
    )
    controls = ""
    if user is not None and csrf_token is not None and user.may_change(item):
        controls = (
            f'<p><a href="/items/{item.id}/edit" id="edit-link">Edit</a></p>\n'
            f'<form method="post" action="/items/{item.id}/delete" id="delete-form">'
            f'{_csrf_field(csrf_token)}<button type="submit" id="delete-button">Delete</button>'
            "</form>\n"
            f'<form method="post" action="/items/{item.id}/attachments" id="upload-form" '
            f'enctype="multipart/form-data">{_csrf_field(csrf_token)}'
            '<label>Attach a file <input type="file" name="file" id="upload-input" required>'
            '</label> <button type="submit" id="upload-button">Upload</button></form>'
        )
    return (
        f'<article id="item" data-item-id="{item.id}">\n'
        f'<h1 id="item-title">{escape(item.title)}</h1>\n'
        f'<p class="meta">by <span id="item-owner">{escape(item.owner)}</span>, '
        f"{escape(item.created_at)}</p>\n"
        f'<div id="item-body" style="white-space: pre-wrap">{escape(item.body)}</div>\n'
        f'<h2>Attachments</h2>\n<ul id="attachment-list">\n{files}\n</ul>\n'
        f"{controls}\n</article>"
    )


def _errors(errors: Mapping[str, str]) -> str:
    if not errors:
        return ""
    items = "".join(
        f'<li data-field="{escape(field)}">{escape(message)}</li>'
        for field, message in errors.items()
    )
    return f'<ul class="errors" id="form-errors" role="alert">{items}</ul>'


def item_form(
    *,
    action: str,
    heading: str,
    title: str,
    body: str,
    csrf_token: str,
    errors: Mapping[str, str],
) -> str:
    """The form that creates or edits an item."""
    return (
        f"<h1>{escape(heading)}</h1>\n{_errors(errors)}\n"
        f'<form method="post" action="{escape(action)}" id="item-form">{_csrf_field(csrf_token)}'
        f'<label for="title">Title</label><input type="text" name="title" id="title" '
        f'value="{escape(title)}" required maxlength="200">'
        f'<label for="body">Body</label><textarea name="body" id="body" rows="8">'
        f"{escape(body)}</textarea>"
        '<p><button type="submit" id="save-button">Save</button></p></form>'
    )


def login_form(*, next_url: str, username: str, csrf_token: str, failed: bool) -> str:
    """The login form; `failed` adds the message for wrong credentials."""
    error = (
        '<p class="errors" id="login-error" role="alert">Wrong username or password.</p>'
        if failed
        else ""
    )
    return (
        f"<h1>Log in</h1>\n{error}\n"
        f'<form method="post" action="/login" id="login-form">{_csrf_field(csrf_token)}'
        f'<input type="hidden" name="next" value="{escape(next_url)}">'
        '<label for="username">Username</label>'
        f'<input type="text" name="username" id="username" value="{escape(username)}" '
        'autocomplete="username" required>'
        '<label for="password">Password</label>'
        '<input type="password" name="password" id="password" '
        'autocomplete="current-password" required>'
        '<p><button type="submit" id="login-button">Log in</button></p></form>'
    )


def report(rows: Sequence[ReportRow], elapsed_ms: float) -> str:
    """The backlog report table."""
    body = "\n".join(
        f'<tr data-period="{row.period}"><td>{row.period}</td><td>{row.item_hours}</td>'
        f"<td>{row.body_chars}</td></tr>"
        for row in rows
    )
    return (
        "<h1>Backlog report</h1>\n"
        f'<p class="meta" id="report-elapsed" data-elapsed-ms="{elapsed_ms:.1f}">'
        f"Computed in {elapsed_ms:.1f} ms.</p>\n"
        '<table id="report-table">\n<thead><tr><th>30-day period</th><th>Item-hours open</th>'
        f"<th>Body characters</th></tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"
    )


def error(status: int, title: str, message: str) -> str:
    """The body of a 4xx page."""
    return (
        f'<h1 id="error-title" data-status="{status}">{status} {escape(title)}</h1>\n'
        f'<p id="error-message">{escape(message)}</p>\n'
        '<p><a href="/items">Back to the items</a></p>'
    )


def server_error(error_id: str) -> str:
    """A complete 500 page; it shows nothing but an id to quote when reporting the error."""
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        "<title>Server error · Sample</title>\n</head>\n<body>\n"
        '<h1 id="error-title" data-status="500">Something went wrong</h1>\n'
        "<p>The error has been logged. Please try again later; if it keeps happening, "
        f'quote this reference: <code id="error-id">{escape(error_id)}</code>.</p>\n'
        '<p><a href="/items">Back to the items</a></p>\n</body>\n</html>\n'
    )

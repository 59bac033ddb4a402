"""Build a PEP 3333 environ from an ASGI HTTP scope: pure functions, no I/O."""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any, NamedTuple
from urllib.parse import unquote_to_bytes

from .._types import Environ, Scope
from .multiprocess import multiprocess

# The default number of request header fields, duplicates included. gunicorn's
# ``limit_request_fields`` is 100 by default; matching it means an app that worked
# behind gunicorn keeps working, and thousands of duplicate headers are refused.
DEFAULT_MAX_HEADER_COUNT = 100

# Ports by scheme, for SERVER_PORT when the Host header names none.
_DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}


class HeaderError(ValueError):
    """The request's header fields are refused; ``status`` is the answer (400 or 431)."""

    status = 400

    @property
    def text(self) -> str:
        """The body of the answer: what was wrong, and what to send instead."""
        return f"Bad Request: {self}\n"


class RequestPath(NamedTuple):
    """One request's path, derived once per request by ``locate`` and handed on."""

    route: str  # below root_path, as text: what routes, mounts, pages and metrics match
    script_name: str  # SCRIPT_NAME, latin-1 characters of the URL bytes
    path_info: str  # PATH_INFO, the same


_new_path = tuple.__new__


class TooManyHeaders(HeaderError):
    """The request carries more header fields than ``max_header_count`` allows."""

    status = 431

    @property
    def text(self) -> str:
        return "Request Header Fields Too Large\n"


class ConflictingHeaders(HeaderError):
    """The request's framing or target is ambiguous (RFC 9112 3.2 and 6.3): answer 400
    and close the connection, as gunicorn does, rather than guess which value counts."""


class ErrorStream:
    """``wsgi.errors``: a text stream whose lines go to the ``bridge.wsgi`` logger.

    PEP 3333 asks for a text-mode stream; sending it to logging rather than raw
    stderr puts application error output where the rest of the server's logs go.
    A record is whole lines: ``print("user", 42, file=errors)`` makes four writes
    and one record. Each thread has its own pending text (one stream serves every
    request at once), and a line longer than ``MAX_PENDING`` goes out in pieces of
    that size rather than growing without bound.
    """

    MAX_PENDING = 64 * 1024

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._logger = logger or logging.getLogger("bridge.wsgi")
        self._local = threading.local()

    def write(self, text: str) -> int:
        if not self._logger.hasHandlers():
            sys.stderr.write(text)  # no logging configured: stderr, as wsgiref does
            return len(text)
        pending: str = getattr(self._local, "pending", "") + text
        end = pending.rfind("\n") + 1
        if end == 0 and len(pending) >= self.MAX_PENDING:
            end = len(pending)
        if end:
            self._emit(pending[:end])
            pending = pending[end:]
        self._local.pending = pending
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        """Log this thread's incomplete last line, if any (PEP 3333: flush writes out)."""
        pending: str = getattr(self._local, "pending", "")
        self._local.pending = ""
        if pending:
            self._emit(pending)

    def _emit(self, text: str) -> None:
        message = text.rstrip("\n")
        if message.strip():
            self._logger.error(message)


ERRORS = ErrorStream()


def request_path(scope: Scope) -> tuple[str, str]:
    """Return ``(SCRIPT_NAME, PATH_INFO)`` for a scope, both latin-1 ``str`` of the URL bytes.

    The rule, one for the legacy app, routes, mounts and nested bridges:

    1. PEP 3333 gives WSGI the percent-decoded path bytes, each byte one latin-1
       character. ``path`` is the authority: ASGI middleware may rewrite it (strip a
       proxy prefix, say) and leave ``raw_path`` as the client sent it.
    2. ``raw_path`` is used only for the path segments where it agrees with ``path``
       (its decoded segment, read as UTF-8 with replacement as servers decode it,
       equals the segment of ``path``), compared from the end. There it keeps the
       bytes ``path`` has lost, such as ``%FF``; a rewritten segment comes from ``path``.
    3. ``root_path`` is stripped from the front, only at a segment boundary (a root
       path of ``/app`` leaves ``/apple`` alone), and only when present: servers
       disagree on whether ``path`` includes it (uvicorn, hypercorn and granian do,
       and bridge's mounts do, as the ASGI spec asks; some servers do not).
    """
    path_bytes = _path_bytes(scope)
    root_path = scope.get("root_path")
    if not root_path:
        return "", path_bytes.decode("latin-1")
    script_name = root_path.encode("utf-8").rstrip(b"/")
    if script_name and path_bytes.startswith(script_name):
        rest = path_bytes[len(script_name) :]
        if not rest or rest[:1] == b"/":
            path_bytes = rest
    return script_name.decode("latin-1"), path_bytes.decode("latin-1")


def _path_bytes(scope: Scope) -> bytes:
    """The decoded bytes of ``path``, with ``raw_path``'s bytes where the two agree."""
    path: str = scope["path"]
    encoded = path.encode("utf-8")
    raw_path = scope.get("raw_path")
    if not raw_path:
        return encoded
    raw: bytes = raw_path.partition(b"?")[0]
    if b"%" in raw:
        raw = unquote_to_bytes(raw)
    if raw == encoded:
        return raw  # the common case: nothing rewritten, nothing lost
    raw_segments = raw.split(b"/")
    segments = path.split("/")
    agreed = 0
    for raw_segment, segment in zip(reversed(raw_segments), reversed(segments), strict=False):
        if raw_segment.decode("utf-8", "replace") != segment:
            break
        agreed += 1
    if agreed == 0:
        return encoded
    kept = [segment.encode("utf-8") for segment in segments[: len(segments) - agreed]]
    return b"/".join(kept + raw_segments[len(raw_segments) - agreed :])


# The keys every environ has with the same value.
_CONSTANT: Environ = {
    "wsgi.version": (1, 0),
    "wsgi.errors": ERRORS,
    "wsgi.multithread": True,
    "wsgi.run_once": False,
    # The server delivers exactly the body the client sent, chunked or not, and
    # signals its end; frameworks such as Flask read chunked bodies only when this
    # is set.
    "wsgi.input_terminated": True,
}


def build_environ(
    scope: Scope,
    body: Any,
    *,
    max_header_count: int = DEFAULT_MAX_HEADER_COUNT,
    file_wrapper: Any = None,
    path: RequestPath | None = None,
) -> Environ:
    """Return the WSGI environ the legacy application sees for ``scope``.

    ``body`` becomes ``wsgi.input``; ``path`` is the scope's ``locate``, when the caller
    has it. Raises ``TooManyHeaders`` past ``max_header_count``.
    """
    _, script_name, path_info = path if path is not None else locate(scope)
    scheme = scope.get("scheme", "http")
    environ: Environ = _CONSTANT.copy()  # a copy costs less than setting each key
    environ["REQUEST_METHOD"] = scope["method"]
    environ["SCRIPT_NAME"] = script_name
    environ["PATH_INFO"] = path_info
    # The query string stays percent-encoded; any raw non-ASCII byte maps to the
    # latin-1 character of the same value, as PEP 3333 asks of all CGI values.
    environ["QUERY_STRING"] = scope.get("query_string", b"").decode("latin-1")
    environ["SERVER_PROTOCOL"] = "HTTP/" + scope.get("http_version", "1.1")
    environ["wsgi.url_scheme"] = scheme
    environ["wsgi.input"] = body
    environ["wsgi.multiprocess"] = multiprocess()
    environ["asgi.scope"] = scope
    if file_wrapper is not None:
        environ["wsgi.file_wrapper"] = file_wrapper
    client = scope.get("client")
    if client:
        environ["REMOTE_ADDR"] = client[0]
        environ["REMOTE_PORT"] = str(client[1])

    headers = scope["headers"]
    if len(headers) > max_header_count:
        raise TooManyHeaders(
            f"The request has {len(headers)} header fields; the limit is {max_header_count}."
        )
    # Repeated fields are collected and joined once at the end: joining as they come
    # copies the whole value for each repeat, quadratic in the header's size.
    repeated: dict[str, list[str]] = {}
    keys = _HEADER_KEYS
    for raw_name, raw_value in headers:
        key = keys.get(raw_name)
        if key is None:
            key = _header_key(raw_name)
        if not key:
            continue  # a name with "_": see _header_key
        value = raw_value.decode("latin-1")
        if key in environ:
            parts = repeated.get(key)
            if parts is None:
                parts = repeated[key] = [environ[key]]
            parts.append(value)
        else:
            environ[key] = value
    for key, parts in repeated.items():
        environ[key] = _combine(key, parts)
    if "CONTENT_LENGTH" in environ:
        environ["CONTENT_LENGTH"] = _content_length(environ["CONTENT_LENGTH"])
        if "HTTP_TRANSFER_ENCODING" in environ:
            # RFC 9112 6.1: a request with both "ought to be handled as an error", and
            # the server MUST close the connection after it: the two framings are how
            # requests are smuggled past a proxy that reads the other one.
            raise ConflictingHeaders(
                "The request has both Content-Length and Transfer-Encoding "
                f"({environ['HTTP_TRANSFER_ENCODING']!r}); send one of them."
            )
    host = environ.get("HTTP_HOST")
    if host:
        name, port = _split_host(host, scheme)
    else:
        server = scope.get("server")
        if server:
            name = server[0]
            port = str(server[1]) if server[1] is not None else _DEFAULT_PORTS.get(scheme, "80")
        else:
            name, port = "localhost", _DEFAULT_PORTS.get(scheme, "80")
    environ["SERVER_NAME"] = name
    environ["SERVER_PORT"] = port
    return environ


# Header names seen so far and their environ keys ("" for a dropped name): most
# requests repeat a few dozen names, and the translation is a third of the environ's
# cost. Bounded, since a client chooses its names: past the bound, names are
# translated each time.
_HEADER_KEYS: dict[bytes, str] = {}
_MAX_HEADER_KEYS = 512


def _header_key(raw_name: bytes) -> str:
    """The environ key of an ASGI header name (lowercased bytes); "" to drop it."""
    if b"_" in raw_name:
        # It would become the same key as its dashed twin ("x_forwarded_for" spoofing
        # "X-Forwarded-For"), so, as gunicorn, nginx and Apache do, it is dropped.
        key = ""
    elif raw_name == b"content-type":
        key = "CONTENT_TYPE"
    elif raw_name == b"content-length":
        key = "CONTENT_LENGTH"
    else:
        key = "HTTP_" + raw_name.decode("latin-1").upper().replace("-", "_")
    if len(_HEADER_KEYS) < _MAX_HEADER_KEYS:
        _HEADER_KEYS[raw_name] = key
    return key


def _combine(key: str, parts: list[str]) -> str:
    """One environ value for a field sent more than once."""
    if key == "HTTP_HOST":
        # RFC 9112 3.2: a server MUST answer 400 to a request with more than one
        # Host; joined, "good.example,evil.example" reaches the app as its host.
        raise ConflictingHeaders(
            f"The request has {len(parts)} Host header fields ({', '.join(map(repr, parts))}); "
            "send exactly one."
        )
    if key == "CONTENT_LENGTH":
        return ",".join(parts)  # checked by _content_length
    # RFC 9110 5.3: repeated fields combine into a comma-separated list; "," is what
    # gunicorn and wsgiref give the app. Cookie is the exception and combines with
    # "; " (RFC 6265 5.4), so no cookie swallows the next one.
    return ("; " if key == "HTTP_COOKIE" else ",").join(parts)


def _content_length(value: str) -> str:
    """A Content-Length repeated with one value is that value (RFC 9110 8.6 allows
    either); different values are refused, since each names another body."""
    if "," not in value:
        return value
    values = {part.strip() for part in value.split(",")}
    if len(values) != 1:
        raise ConflictingHeaders(
            f"The request has Content-Length values that differ ({value!r}); "
            "send one Content-Length."
        )
    return values.pop()


def _split_host(host: str, scheme: str) -> tuple[str, str]:
    """Split a Host header into name and port, as gunicorn does for SERVER_NAME/PORT."""
    if host.startswith("["):  # an IPv6 literal: "[::1]:8000"
        end = host.find("]")
        if end != -1:
            rest = host[end + 1 :]
            port = rest[1:] if rest.startswith(":") and rest[1:] else ""
            return host[: end + 1], port or _DEFAULT_PORTS.get(scheme, "80")
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit():
        return name, port
    return host, _DEFAULT_PORTS.get(scheme, "80")


def route_path(scope: Scope) -> str:
    """The request path below ``root_path``, as text (the form werkzeug rules match)."""
    return locate(scope).route


def locate(scope: Scope) -> RequestPath:
    """The request's path in both forms: ``request_path``'s for WSGI, and that read back
    as UTF-8 for routes, so a route, a mount and the legacy app always see the same path.
    """
    path: str = scope["path"]
    if not scope.get("root_path"):
        raw_path = scope.get("raw_path")
        encoded = path.encode("utf-8")
        if not raw_path or raw_path == encoded:
            # The common case, on the path of every request: tuple.__new__ skips the
            # named tuple's Python-level constructor.
            return _new_path(RequestPath, (path or "/", "", encoded.decode("latin-1")))
    script_name, path_info = request_path(scope)
    route = path_info.encode("latin-1").decode("utf-8", "replace") or "/"
    return RequestPath(route, script_name, path_info)

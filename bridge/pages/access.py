"""Who may read bridge's own pages: the dashboard and the Prometheus metrics.

One policy for both, checked in this order:

1. **Host.** The ``Host`` header (or, without one, the server's address) must be in
   ``allowed_hosts``, by default the loopback names (Django's default with ``DEBUG``:
   ``.localhost``, ``127.0.0.1``, ``[::1]``). A page answered under any name would let
   another site read it from a browser on this machine by pointing its own name at
   127.0.0.1 (DNS rebinding).
2. **Token.** With ``dashboard_token`` (``metrics_token`` for the metrics path) set,
   the request must prove it: ``Authorization: Bearer <token>``, or, for the dashboard,
   the cookie given in exchange for ``?token=`` (the page redirects to drop the token
   from its URL, so neither the page's polls nor the browser's history carry it).
   Loopback alone is not enough any more.
3. **Loopback.** Without a token, only a loopback client gets in. The client is the
   socket's peer as the server reports it. A request that carries a forwarded-address
   header (``X-Forwarded-For``, ``Forwarded``, ``X-Real-IP``) was relayed, so it is never
   loopback: a server run with ``--forwarded-allow-ips '*'`` has already replaced the
   peer with an address the client chose. With ``trusted_proxies`` named, each proxy
   is paired with the one header it sets (gunicorn's ``--forwarded-allow-ips`` names
   whom to believe, uvicorn's ``--proxy-headers`` what to read): a request from a
   trusted proxy is judged by that header alone, and any other forwarded header in it
   is the client's and ignored. Its addresses are walked from the right, past the
   trusted proxies: the first address that is not one of them is the client. A proxy
   that names no client (its header missing, or nothing but trusted proxies in it) is
   refused. This needs the server to report the real peer: under
   ``--forwarded-allow-ips '*'`` it reports an address the client chose, and only the
   default rule is sound.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, quote, urlencode

from .._types import Scope

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Django's ALLOWED_HOSTS while DEBUG is on: names that resolve to this machine only
# (RFC 6761 reserves .localhost for loopback).
DEFAULT_ALLOWED_HOSTS = (".localhost", "127.0.0.1", "::1")
# Headers a proxy adds to say whom it relays for (RFC 7239; the de facto X- forms).
FORWARDED_HEADERS = (b"x-forwarded-for", b"forwarded", b"x-real-ip")
# The header a proxy named in a plain list of trusted_proxies sets: the one uvicorn's
# --proxy-headers and gunicorn's --forwarded-allow-ips read by default.
DEFAULT_PROXY_HEADER = "x-forwarded-for"
_HEADER_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
COOKIE_NAME = "bridge_dashboard"
CSRF_HEADER = b"x-bridge-csrf"
# How long the dashboard cookie is honoured: a working day, after which the page asks
# for the token again. Jupyter's login cookie lasts 30 days; bridge's page shows
# traffic, not code, so it asks more often.
COOKIE_MAX_AGE = 12 * 3600


@dataclass(frozen=True)
class Verdict:
    """What to answer: ``allowed``, else a 403 with ``reason``; ``redirect`` and
    ``cookie`` are set when a ``?token=`` was exchanged for the cookie."""

    allowed: bool
    reason: str = ""
    redirect: str | None = None
    cookie: str | None = None


class AccessPolicy:
    """The one access rule for bridge's dashboard and metrics paths (see the module doc).

    Arguments:

    * ``dashboard_token=None``: a long random string; once set, the dashboard needs it
      (Bearer, or ``?token=`` once, exchanged for a cookie) from every client.
    * ``metrics_token=None``: the same for the metrics path, sent as Bearer (what
      Prometheus' ``authorization`` scrape setting sends).
    * ``allowed_hosts=None``: the Host names the pages answer to, as Django's
      ``ALLOWED_HOSTS`` (``".example.com"`` also matches subdomains, ``"*"`` any);
      ``None`` means the loopback names.
    * ``trusted_proxies=()``: the proxies whose forwarded address the loopback rule
      believes, each with the header it sets: ``{"10.0.0.2": "x-real-ip"}``, or a
      list of addresses or networks that set ``X-Forwarded-For``.
    """

    def __init__(
        self,
        *,
        dashboard_token: str | None = None,
        metrics_token: str | None = None,
        allowed_hosts: Sequence[str] | None = None,
        trusted_proxies: Sequence[str] | Mapping[str, str] = (),
    ) -> None:
        for option, token in (
            ("dashboard_token", dashboard_token),
            ("metrics_token", metrics_token),
        ):
            if token is not None and not token:
                raise ValueError(f"{option} must not be empty; give a long random string.")
        self.dashboard_token = dashboard_token
        self.metrics_token = metrics_token
        if isinstance(allowed_hosts, str):
            raise TypeError(
                f'allowed_hosts must be a list of names, such as ["{allowed_hosts}"]; '
                f'got the string "{allowed_hosts}".'
            )
        hosts = DEFAULT_ALLOWED_HOSTS if allowed_hosts is None else allowed_hosts
        self.allowed_hosts = tuple(_normal_host(host) for host in hosts)
        self.trusted_proxies = _proxies(trusted_proxies)
        # Every header that marks a request as relayed: the usual three and any other
        # a trusted proxy is said to set.
        names = {header.encode("latin-1") for _, header in self.trusted_proxies}
        self.relay_headers = FORWARDED_HEADERS + tuple(sorted(names - set(FORWARDED_HEADERS)))

    # -- verdicts -----------------------------------------------------------------------

    def dashboard(self, scope: Scope, *, exchange: str | None = None) -> Verdict:
        """May this request read the dashboard? ``exchange``: the request is for the page
        itself, where a ``?token=`` is traded for a cookie on this path (the dashboard's
        own, so the legacy app never receives it)."""
        refused = self._host_refused(scope)
        if refused:
            return Verdict(False, refused)
        token = self.dashboard_token
        if token is None:
            return self._loopback(scope, "dashboard_token")
        if _matches(_bearer(scope), token) or _cookie_valid(_cookie(scope), token):
            return Verdict(True)
        given = _query_token(scope)
        if exchange is not None and _matches(given, token):
            cookie = _issue_cookie(scope, token, exchange)
            return Verdict(True, redirect=_without_token(scope), cookie=cookie)
        if given is not None and exchange is None:
            return Verdict(
                False,
                "Forbidden: give the dashboard token to the page itself (?token= once, "
                "it is exchanged for a cookie), or send Authorization: Bearer.",
            )
        return Verdict(
            False,
            "Forbidden: open the dashboard with ?token=<dashboard_token> once, "
            "or send Authorization: Bearer <dashboard_token>.",
        )

    def metrics(self, scope: Scope) -> Verdict:
        """May this request read the Prometheus metrics?"""
        refused = self._host_refused(scope)
        if refused:
            return Verdict(False, refused)
        if self.metrics_token is None:
            return self._loopback(scope, "metrics_token")
        if _matches(_bearer(scope), self.metrics_token):
            return Verdict(True)
        return Verdict(
            False,
            "Forbidden: send Authorization: Bearer <metrics_token> "
            "(Prometheus: the authorization setting of the scrape job).",
        )

    def control(self, scope: Scope) -> Verdict:
        """May this request change something (the dashboard's canary controls)? Only a
        holder of the dashboard token: by Bearer, or by the cookie with the page's CSRF
        token in ``X-Bridge-CSRF``, from the page's own origin."""
        refused = self._host_refused(scope)
        if refused:
            return Verdict(False, refused)
        token = self.dashboard_token
        if token is None:
            return Verdict(
                False,
                "Forbidden: the dashboard's controls need dashboard_token, so that only its "
                "holders change what the server does; set Bridge(..., dashboard_token=...).",
            )
        if _matches(_bearer(scope), token):
            return Verdict(True)
        cookie = _cookie(scope)
        if not _cookie_valid(cookie, token):
            return Verdict(
                False,
                "Forbidden: open the dashboard with ?token=<dashboard_token> first, "
                "or send Authorization: Bearer <dashboard_token>.",
            )
        origins = _headers(scope, b"origin")
        if origins and any(not _same_origin(origin, scope) for origin in origins):
            return Verdict(False, f'Forbidden: a change from Origin "{origins[0]}" (CSRF).')
        given = _headers(scope, CSRF_HEADER)
        if not given or not _matches(given[0], _csrf(token, cookie or "")):
            return Verdict(
                False,
                "Forbidden: a change from the dashboard's cookie needs the page's "
                "X-Bridge-CSRF header; reload the dashboard and try again.",
            )
        return Verdict(True)

    def csrf(self, scope: Scope) -> str | None:
        """The CSRF token the page sends back with a change, when its cookie lets it."""
        token = self.dashboard_token
        cookie = _cookie(scope)
        if token is None or not _cookie_valid(cookie, token):
            return None
        return _csrf(token, cookie or "")

    # -- the three rules --------------------------------------------------------------

    def _host_refused(self, scope: Scope) -> str:
        host = _host_of(scope)
        if any(_host_matches(host, pattern) for pattern in self.allowed_hosts):
            return ""
        return (
            f'Forbidden: bridge\'s own pages do not answer to Host "{host}"; '
            f'add it to allowed_hosts, such as Bridge(..., allowed_hosts=["{host}"]).'
        )

    def client_is_local(self, scope: Scope) -> bool:
        """True if the client is provably on this machine (rule 3 of the module doc)."""
        client = scope.get("client")
        if not client:
            return False  # a unix socket, or a server that does not say
        peer = _address(str(client[0]))
        header = self._header_of(peer) if peer is not None else None
        if header is None:  # not relayed by a proxy the operator named
            if any(_headers(scope, name) for name in self.relay_headers):
                return False  # relayed all the same, by someone nobody vouched for
            return peer is not None and _is_loopback(peer)
        # A trusted proxy: only the header it sets is read; a forwarded header of any
        # other name came from the client, who may write what it likes there.
        chain = _forwarded_chain(scope, header.encode("latin-1"))
        # Walk back from the peer through the proxies the operator trusts.
        for hop in reversed(chain):
            if hop is None:
                return False  # an address that cannot be read: not provably local
            if self._header_of(hop) is None:
                return _is_loopback(hop)
        return False  # no header, or nothing but trusted proxies: no client to believe

    def _header_of(self, address: Address) -> str | None:
        """The header the trusted proxy at ``address`` sets; None if it is not one."""
        for network, header in self.trusted_proxies:
            if address in network:
                return header
        return None

    def _loopback(self, scope: Scope, option: str) -> Verdict:
        if self.client_is_local(scope):
            return Verdict(True)
        return Verdict(
            False,
            f"Forbidden: without {option}, bridge's own pages answer loopback clients only, "
            f"and a request relayed by a proxy (X-Forwarded-For, Forwarded) is not one; "
            f"set {option} to open them to others, or trusted_proxies to believe your proxy "
            f'and the header it sets, such as trusted_proxies={{"10.0.0.2": "x-real-ip"}}.',
        )


# -- tokens and the cookie ------------------------------------------------------------------


def _matches(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def _headers(scope: Scope, name: bytes) -> list[str]:
    return [
        bytes(value).decode("latin-1")
        for key, value in scope.get("headers", ())
        if bytes(key).lower() == name
    ]


def _bearer(scope: Scope) -> str | None:
    for value in _headers(scope, b"authorization"):
        scheme, _, credentials = value.partition(" ")
        if scheme.lower() == "bearer":
            return credentials.strip()
    return None


def _query(scope: Scope) -> list[tuple[str, str]]:
    return parse_qsl(bytes(scope.get("query_string", b"")).decode("latin-1"), True)


def _query_token(scope: Scope) -> str | None:
    return next((value for name, value in _query(scope) if name == "token"), None)


def _without_token(scope: Scope) -> str:
    """The page's own URL (root_path included), without ``token=`` in its query."""
    path = quote(scope.get("root_path", "").rstrip("/") + _strip_root(scope), safe="/")
    rest = [(name, value) for name, value in _query(scope) if name != "token"]
    return path + (f"?{urlencode(rest)}" if rest else "")


def _strip_root(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "").rstrip("/")
    return path[len(root) :] if root and path.startswith(root + "/") else path


def _signature(token: str, issued: int) -> str:
    # Keyed by the token, so changing the token ends every cookie given for the old one.
    return hmac.new(
        token.encode(), f"bridge-dashboard:{issued}".encode(), hashlib.sha256
    ).hexdigest()


def _csrf(token: str, cookie: str) -> str:
    # Bound to the cookie, and keyed by the token: another site can neither read it
    # (the page's data is same-origin) nor make it without the token.
    return hmac.new(token.encode(), f"bridge-csrf:{cookie}".encode(), hashlib.sha256).hexdigest()


def _same_origin(origin: str, scope: Scope) -> bool:
    """Whether ``Origin`` names this request's own scheme and Host."""
    scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
    hosts = _headers(scope, b"host")
    return bool(hosts) and origin.rstrip("/").lower() == f"{scheme}://{hosts[0]}".lower()


def _issue_cookie(scope: Scope, token: str, path: str) -> str:
    issued = int(time.time())
    parts = [
        f"{COOKIE_NAME}={issued}.{_signature(token, issued)}",
        f"Max-Age={COOKIE_MAX_AGE}",
        f"Path={path}",
        "HttpOnly",
        "SameSite=Strict",
    ]
    if scope.get("scheme") in ("https", "wss"):
        parts.append("Secure")
    return "; ".join(parts)


def _cookie(scope: Scope) -> str | None:
    jar: SimpleCookie = SimpleCookie()
    for value in _headers(scope, b"cookie"):
        try:
            jar.load(value)
        except Exception:  # http.cookies raises CookieError on junk; other cookies vary
            continue
    morsel = jar.get(COOKIE_NAME)
    return morsel.value if morsel is not None else None


def _cookie_valid(value: str | None, token: str) -> bool:
    if not value:
        return False
    raw_issued, _, signature = value.partition(".")
    if not raw_issued.isdigit():
        return False
    issued = int(raw_issued)
    if not 0 <= time.time() - issued <= COOKIE_MAX_AGE:
        return False  # expired, checked here and not only by the browser
    return hmac.compare_digest(signature.encode(), _signature(token, issued).encode())


# -- hosts and addresses ----------------------------------------------------------------


def _normal_host(host: str) -> str:
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise ValueError('allowed_hosts holds an empty name; give names such as "example.com".')
    return host


def _host_of(scope: Scope) -> str:
    values = _headers(scope, b"host")
    if values:
        host = values[0].strip().lower()
    else:
        server = scope.get("server")
        host = str(server[0]).lower() if server else ""
        return host
    if host.startswith("["):  # an IPv6 literal: "[::1]:8000"
        return host[1 : host.find("]")] if "]" in host else host
    name, colon, port = host.rpartition(":")
    if colon and port.isdigit():
        host = name
    return host.rstrip(".")


def _host_matches(host: str, pattern: str) -> bool:
    if pattern == "*":
        return True
    if pattern.startswith("."):
        return host == pattern[1:] or host.endswith(pattern)
    return host == pattern


def _proxies(proxies: Sequence[str] | Mapping[str, str]) -> tuple[tuple[Network, str], ...]:
    """Each trusted proxy's network and the (lowercased) header it sets."""
    if isinstance(proxies, Mapping):
        pairs = [(proxy, _header_name(proxy, header)) for proxy, header in proxies.items()]
    else:
        pairs = [(proxy, DEFAULT_PROXY_HEADER) for proxy in proxies]
    return tuple((_network(proxy), header) for proxy, header in pairs)


def _header_name(proxy: str, header: object) -> str:
    name = header.strip().lower() if isinstance(header, str) else ""
    if not _HEADER_NAME.fullmatch(name):
        raise ValueError(
            f'trusted_proxies gives proxy "{proxy}" the header {header!r}, which is not a '
            f'header name; name the one it sets, such as {{"{proxy}": "x-real-ip"}}.'
        )
    return name


def _network(proxy: str) -> Network:
    if proxy.strip() == "*":
        raise ValueError(
            'trusted_proxies "*" would believe any client\'s claim to be local; '
            'name your proxies\' addresses, such as ["127.0.0.1"] or ["10.0.0.0/8"].'
        )
    try:
        return ipaddress.ip_network(proxy.strip(), strict=False)
    except ValueError:
        raise ValueError(
            f'trusted_proxies entry "{proxy}" is not an IP address or network; '
            f'give one such as "127.0.0.1" or "10.0.0.0/8".'
        ) from None


def _address(text: str) -> Address | None:
    text = text.strip().strip('"')
    if text.startswith("["):  # "[2001:db8::1]:4711", as Forwarded writes IPv6
        text = text[1 : text.find("]")] if "]" in text else text
    elif text.count(":") == 1:  # "192.0.2.1:4711"
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None  # "unknown", an obfuscated name, or a unix socket path
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped if mapped is not None else address


def _is_loopback(address: Address) -> bool:
    return bool(address.is_loopback)


def _forwarded_chain(scope: Scope, header: bytes) -> list[Address | None]:
    """The addresses ``header`` names, oldest first (empty if the request has none)."""
    chain: list[Address | None] = []
    for value in _headers(scope, header):
        for element in value.split(","):
            if header == b"forwarded":
                pairs = (pair.partition("=") for pair in element.split(";"))
                found = [v for k, _, v in pairs if k.strip().lower() == "for"]
                chain.extend(_address(v) for v in found)
            else:
                chain.append(_address(element))
    return chain

"""Observability across the seam: what tracing tools around ``Bridge`` need to see.

- ``route.py``: ``ScopeRoute``, the matched rule written into the ASGI scope as
  OpenTelemetry's and Sentry's ASGI middleware read it, and the rule a legacy
  framework matched, learned from the environ (``RouteMiddleware`` for Django).
- ``tracers.py``: the active OpenTelemetry span and Sentry transaction, reached only
  when their libraries are already imported: the server span renamed by route, the
  trace carried into the environ.
- ``hygiene.py``: context hygiene, what bridge guarantees and what its servers set.
- ``seam.py``: ``Seam``, the legacy app as bridge calls it in the thread: the trace
  carried in before the call, the route learned after it.

docs/observability.md says what each tool reads and the setups that give one trace,
one transaction and one set of HTTP metrics per request.
"""

from __future__ import annotations

from .route import ROUTE_KEY, RouteMiddleware, ScopeRoute, routed
from .seam import Seam

__all__ = ["ROUTE_KEY", "RouteMiddleware", "ScopeRoute", "Seam", "routed"]

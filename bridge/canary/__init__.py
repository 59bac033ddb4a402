"""Canary routes: a sticky share of a route's requests goes to the view, the rest to the legacy app.

- ``config.py``: ``Canary``, a route's canary settings (data only, checked once).
- ``control.py``: ``CanaryControl``, what ``app.canary(rule)`` returns: the live share
  and state, the per-arm counts, and the automatic rollback rule.
- ``runner.py``: ``Canaries``, the per-Bridge runner: which arm answers, the fallback to
  the legacy app, the control channel across workers, and the theory of operation.
- ``fallback.py``: the two wrappers a fallback needs: the body kept, the answer held.
- ``counts.py``: the counts for the dashboard and Prometheus, summed across workers.
"""

from __future__ import annotations

from .config import Canary
from .control import CanaryControl

__all__ = ["Canary", "CanaryControl"]

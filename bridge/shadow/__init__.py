"""Shadow routes: the legacy app answers, and the migrated view runs on a copy of the request.

- ``config.py``: ``Shadow``, a route's shadow settings (data only, checked once).
- ``runner.py``: ``Shadows``, the per-Bridge runner: its budget, the request tee and
  response capture, and the theory of operation.
- ``compare.py``: the comparison of the two answers (status, chosen headers, body).
- ``stats.py``: per-route counts, kept mismatches and their Prometheus lines.
"""

from __future__ import annotations

from .config import Shadow

__all__ = ["Shadow"]

"""Shadow routes: the legacy app answers, and the migrated view runs on a copy of the request.

- ``config.py``: ``Shadow``, a route's shadow settings (data only, checked once).
- ``runner.py``: ``Shadows``, the per-Bridge runner: its budget (slots, the threads'
  share, timeouts that keep their slot), the request tee and response capture, noise
  runs, sticky sampling, replay, and the theory of operation.
- ``compare.py``: the comparison of the two answers (status, chosen headers, body),
  iterative and cheap where bodies are equal, and what a report may keep of a response.
- ``slices.py``: large JSON parsed by the C decoder a piece at a time, so the thread
  that compares it lets the event loop run.
- ``stats.py``: per-route counts, reports grouped by kind in a store bounded in bytes,
  learned noise, the counts summed and readiness decided across workers, and their
  Prometheus lines.

``bridge replay`` (``bridge.serve.replay``) runs a downloaded report again.
"""

from __future__ import annotations

from .config import Shadow

__all__ = ["Shadow"]

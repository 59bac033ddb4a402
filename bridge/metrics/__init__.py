"""What bridge counts, and how it shows the whole server.

- ``values.py``: the leaf: fixed-bucket ``Histogram``, one route's ``RouteStats``.
- ``registry.py``: ``Metrics``, the per-worker registry: label policy, one way in for
  every request (``measure``; it counts and never serves), the loop-lag probe,
  history and the dashboard's snapshot.
- ``blocking.py``: the detector that charges an async step the time it held the loop.
- ``measured.py``: what measures a request that may stay open (an async view's
  stream, a websocket): one slotted object that drives its coroutine, not a frame.
- ``prometheus.py``: the Prometheus text format of one worker.
- ``whole_server.py``: several workers counted as one server (prometheus-client's
  multiprocess files; dead workers' folded into one archive, read in a thread).
"""

from __future__ import annotations

from .registry import Metrics

__all__ = ["Metrics"]

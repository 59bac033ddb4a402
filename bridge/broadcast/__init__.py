"""Live events from any worker to every subscriber on every worker.

- ``base.py``: the leaf every backend shares: ``Event`` and its id order, the
  ``Hub`` and ``Backend`` protocols, the id clock.
- ``hub.py``: ``Broadcast``, the per-process fan-out to local subscribers, and its
  theory of operation (ids, replay, bounded queues, ``publish_sync``).
- ``memory.py`` (one process) and ``redis.py`` (Redis Streams, every worker and host):
  the backends, chosen by URL.
"""

from __future__ import annotations

from .base import Event, event_key
from .hub import BROADCAST_VARIABLE, Broadcast, Subscription

__all__ = ["BROADCAST_VARIABLE", "Broadcast", "Event", "Subscription", "event_key"]

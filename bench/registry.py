"""Every benchmark group beyond the micro workloads, by its ``--only`` name, in run order.

Each value names a function ``(plan, out, progress) -> bench.groups.Section``; it is
imported only when its group runs. A new group is one line here.
"""

from __future__ import annotations

import importlib

from .groups import Group

GROUPS: dict[str, str] = {
    "limits": "bench.limits:limits",
    "servers": "bench.groups:servers",
    "frameworks": "bench.groups:frameworks",
    "threads": "bench.groups:thread_counts",
    "idle": "bench.idle:idle",
    "fanout": "bench.fanout:fanout_group",
    "canary": "bench.canary:canary_group",
}


def load(name: str) -> Group:
    """The group function registered as ``name``."""
    module, _, attribute = GROUPS[name].partition(":")
    group: Group = getattr(importlib.import_module(module), attribute)
    return group

"""A module whose import fails inside it, as a missing dependency would."""

from __future__ import annotations

import bridge_missing_dependency_xyz  # noqa: F401

app = None

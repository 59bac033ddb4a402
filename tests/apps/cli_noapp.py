"""A module with neither ``application`` nor ``app``."""

from __future__ import annotations

something_else = None

"""``bridge serve`` and ``bridge check`` by their public name: :mod:`bridge.serve.cli`."""

from __future__ import annotations

from .serve.cli import main, run

__all__ = ["main", "run"]

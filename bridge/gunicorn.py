"""``gunicorn -k bridge.gunicorn.Worker``: the worker classes, by their public name.

The worker itself lives in :mod:`bridge.serve.worker`, beside the rest of serving.
"""

from __future__ import annotations

from .serve.worker import H11Worker, Worker

__all__ = ["H11Worker", "Worker"]

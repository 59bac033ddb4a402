# A gunicorn.conf.py whose server hooks leave a marker file each time they run.
import os
from pathlib import Path

MARKERS = Path(os.environ["BRIDGE_GUNICORN_MARKERS"])
graceful_timeout = 5


def _mark(name, pid=None):
    (MARKERS / f"{name}-{pid or os.getpid()}").touch()


def on_starting(server):
    _mark("on_starting")


def post_fork(server, worker):
    _mark("post_fork")


def post_worker_init(worker):
    _mark("post_worker_init")


def worker_int(worker):
    _mark("worker_int")


def worker_exit(server, worker):
    _mark("worker_exit")


def on_exit(server):
    _mark("on_exit")

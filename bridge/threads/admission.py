"""Admission: who may hold or wait for a worker thread, and who may be arriving meanwhile.

Two budgets, taken one after the other. A request body still arriving costs a
coroutine and a share of the ``Intake`` (a connection, and the bytes it may buffer),
never a thread slot; once its buffered part is in, the request takes its slot in
``Admission`` (``max_threads + max_pending``) and waits for a thread. A request
without a body goes straight to ``Admission``. Each budget, full, answers 503 with
``Retry-After`` and a sentence naming it. Both are used on the event loop only, so
they need no lock.
"""

from __future__ import annotations

# Request bodies that may be arriving at once: gunicorn's --worker-connections, "the
# maximum number of simultaneous clients" of its threaded and async workers, is 1000.
DEFAULT_MAX_UPLOADS = 1000
# Bytes those bodies may buffer in memory before a thread takes them: 256 bodies at the
# 1 MiB request_buffer_size. Each reserves what it declares, up to request_buffer_size,
# so small forms cost little and a slow 100 KB upload reserves 100 KB.
DEFAULT_MAX_UPLOAD_MEMORY = 256 * 1024 * 1024


class Intake:
    """At most ``max_uploads`` request bodies arriving at once, holding at most
    ``max_upload_memory`` bytes between them (each reserves its share up front)."""

    def __init__(
        self,
        max_uploads: int = DEFAULT_MAX_UPLOADS,
        max_upload_memory: int = DEFAULT_MAX_UPLOAD_MEMORY,
    ) -> None:
        self.max_uploads = max_uploads
        self.max_upload_memory = max_upload_memory
        self.uploads = 0
        self.reserved = 0

    def enter(self, size: int) -> str | None:
        """Take a connection and ``size`` bytes; None, or (nothing taken) the 503's text."""
        if self.uploads >= self.max_uploads:
            return (
                f"Service Unavailable: max_uploads={self.max_uploads} request bodies are "
                "arriving at once; retry shortly.\n"
            )
        # The first body always gets in, so a request_buffer_size above the budget
        # still serves uploads one at a time instead of none.
        if self.reserved + size > self.max_upload_memory and self.uploads:
            return (
                f"Service Unavailable: the request bodies arriving hold "
                f"max_upload_memory={self.max_upload_memory} bytes; retry shortly.\n"
            )
        self.uploads += 1
        self.reserved += size
        return None

    def leave(self, size: int) -> None:
        self.uploads -= 1
        self.reserved -= size


class Admission:
    """At most ``capacity`` requests admitted at once (``max_threads + max_pending``).

    A request takes its slot once the part of its body received before a thread
    (``request_buffer_size``) is in, and gives it back when its thread is done: the
    check and the reservation are one step, so requests cannot all pass the check
    first and overrun the bound. ``intake`` is the budget of bodies still arriving.
    """

    def __init__(self, capacity: int, intake: Intake | None = None) -> None:
        self.capacity = capacity
        self.admitted = 0
        self.intake = intake if intake is not None else Intake()

    def enter(self) -> bool:
        """Take a slot; False (and nothing taken) when every slot is taken."""
        if self.admitted >= self.capacity:
            return False
        self.admitted += 1
        return True

    def leave(self) -> None:
        self.admitted -= 1

    def refusal(self) -> str:
        """The 503's text when every slot is taken."""
        return (
            f"Service Unavailable: every worker thread is busy and {self.capacity} requests "
            "hold or wait for one (max_threads + max_pending); retry shortly.\n"
        )

"""Admission: how many requests may hold or wait for a worker thread at once."""

from __future__ import annotations


class Admission:
    """At most ``capacity`` requests admitted at once (``max_threads + max_pending``).

    A request takes its slot when it arrives, before a byte of its body is read, and
    gives it back when its thread is done: the check and the reservation are one
    step, so requests whose bodies arrive late cannot all pass the check first and
    overrun the bound. Used on the event loop only, so it needs no lock.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.admitted = 0

    def enter(self) -> bool:
        """Take a slot; False (and nothing taken) when every slot is taken."""
        if self.admitted >= self.capacity:
            return False
        self.admitted += 1
        return True

    def leave(self) -> None:
        self.admitted -= 1

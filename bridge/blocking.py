"""The blocking detector: drive an async view one step at a time and time each step.

A step is one ``send()`` into the coroutine, the stretch it runs on the loop
before it next awaits; one that runs past ``Metrics.block_threshold`` blocked every
other connection meanwhile and is reported under the route's name.
"""

from __future__ import annotations

import time
import types
from collections.abc import Coroutine, Generator
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from .metrics import Metrics, RouteStats

T = TypeVar("T")


@types.coroutine
def stepped(
    coro: Coroutine[Any, Any, T], metrics: Metrics, stats: RouteStats
) -> Generator[Any, Any, T]:
    """Drive ``coro`` like a task would, timing each step it takes on the loop."""
    clock = time.perf_counter
    value: Any = None
    error: BaseException | None = None
    while True:
        threshold = metrics.block_threshold
        start = clock()
        try:
            signal = coro.send(value) if error is None else coro.throw(error)
        except StopIteration as stop:
            if threshold is not None and clock() - start > threshold:
                metrics.blocked(stats, clock() - start)
            result: T = stop.value
            return result
        except BaseException:
            if threshold is not None and clock() - start > threshold:
                metrics.blocked(stats, clock() - start)
            raise
        elapsed = clock() - start
        if threshold is not None and elapsed > threshold:
            metrics.blocked(stats, elapsed)
        error = None
        try:
            value = yield signal
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # a cancellation, thrown into the coroutine next
            value, error = None, exc

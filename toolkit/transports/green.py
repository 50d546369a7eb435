"""Synchronous code run as greenlets on an asyncio event loop (the pattern SQLAlchemy's asyncio
support is built on).

A run whose hosts all use SSH runs each host's check → apply → verify as a `HostGreenlet` on the
SSH event loop: the task code stays synchronous, and each `await_only` suspends just that host
while the loop serves the others. Code such a greenlet calls must not block the loop: `offload`
runs a blocking call (a ledger write, a database round trip) on a worker thread and suspends
only the calling host meanwhile; called anywhere else, it just calls.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import greenlet

T = TypeVar("T")


class HostGreenlet(greenlet.greenlet):  # type: ignore[misc]
    """A host's synchronous run as a greenlet; `driver` is the coroutine's greenlet on the loop."""

    def __init__(self, fn: Callable[[], Any], driver: greenlet.greenlet) -> None:
        super().__init__(fn, driver)
        self.driver = driver


def in_host_greenlet() -> bool:
    return isinstance(greenlet.getcurrent(), HostGreenlet)


def await_only(awaitable: Awaitable[T]) -> T:
    """From a host's greenlet: wait for `awaitable` on the loop (the loop runs meanwhile)."""
    current = greenlet.getcurrent()
    assert isinstance(current, HostGreenlet)
    return current.driver.switch(awaitable)  # type: ignore[no-any-return]


async def greenlet_spawn(fn: Callable[[], T]) -> T:
    """Run synchronous `fn` on the loop; each await_only in it suspends only this coroutine."""
    child = HostGreenlet(fn, greenlet.getcurrent())
    result = child.switch()
    while not child.dead:
        try:
            value = await result
        except BaseException:
            result = child.throw(*sys.exc_info())
        else:
            result = child.switch(value)
    return result  # type: ignore[no-any-return]


def offload(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)`; from a host's greenlet, on the loop's worker threads, so the loop (and every
    other host) keeps running while it blocks."""
    if not in_host_greenlet():
        return fn(*args)
    import asyncio  # already loaded: a host greenlet runs on an asyncio loop

    loop = asyncio.get_running_loop()
    return await_only(loop.run_in_executor(None, functools.partial(fn, *args)))

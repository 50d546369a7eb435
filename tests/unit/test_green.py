"""Host greenlets on an event loop: a blocking call offloaded from one never stalls the others."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from toolkit.transports.green import await_only, greenlet_spawn, in_host_greenlet, offload


def test_outside_a_host_greenlet_offload_just_calls() -> None:
    assert not in_host_greenlet()
    assert offload(threading.get_ident) == threading.get_ident()


def test_a_blocking_call_from_a_host_greenlet_leaves_the_loop_running() -> None:
    # Host A blocks until host B has run a step; if A's call held the loop, B could never run
    # and A would time out.
    b_ran = threading.Event()
    order: list[str] = []

    def host_a() -> tuple[int, bool]:
        assert in_host_greenlet()
        where = offload(threading.get_ident)
        ok = offload(b_ran.wait, 5)
        order.append("a")
        return where, ok

    def host_b() -> None:
        await_only(asyncio.sleep(0.05))
        order.append("b")
        b_ran.set()

    async def main() -> tuple[int, bool]:
        a, _ = await asyncio.gather(greenlet_spawn(host_a), greenlet_spawn(host_b))
        return a

    started = time.monotonic()
    where, ok = asyncio.run(main())
    assert ok and order == ["b", "a"]
    assert where != threading.get_ident()  # the call ran on a worker thread
    assert time.monotonic() - started < 4


def test_an_offloaded_calls_exception_reaches_the_host() -> None:
    def fail() -> None:
        raise ValueError("disk full")

    async def main() -> None:
        await greenlet_spawn(lambda: offload(fail))

    with pytest.raises(ValueError, match="disk full"):
        asyncio.run(main())


@pytest.mark.parametrize("limit", [0, -3])
def test_a_green_run_given_no_slots_still_runs_every_host(limit: int) -> None:
    # forks = 0 once reached asyncio.Semaphore(0) here and `itops fix` waited forever; the
    # settings refuse it at load, and the loop still never builds a semaphore nobody can take.
    from toolkit.transports.ssh import LoopThread

    loop = LoopThread()
    try:
        assert loop.start_green([lambda: 1, lambda: 2], limit).result(timeout=5) == [1, 2]
    finally:
        loop.close()

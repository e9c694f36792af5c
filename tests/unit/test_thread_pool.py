"""Interruptible handler threads (dtq/worker/thread_pool.py): an interrupt stops
pure-Python code and never lands in the next job a thread runs."""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time

import pytest

from dtq.worker.app import TaskInterrupted
from dtq.worker.thread_pool import InterruptibleThreads


def spin(n: int | None = None) -> int:
    total, i = 0, 0
    while n is None or i < n:
        total += i
        i += 1
    return total


def test_timeout_interrupts_a_cpu_bound_loop_within_milliseconds() -> None:
    threads = InterruptibleThreads(1)
    stopped = threading.Event()

    def forever() -> None:
        try:
            spin()
        finally:
            stopped.set()

    async def main() -> float:
        started = time.perf_counter()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(threads.run(forever), 0.1)
        assert stopped.wait(2), "the handler's thread kept running"
        return time.perf_counter() - started

    assert asyncio.run(main()) < 1.0
    threads.close()


def test_an_interrupt_never_reaches_the_next_job() -> None:
    """Interrupts timed to land around the end of each job; every follow-up job
    on the same threads must still return its own result."""
    threads = InterruptibleThreads(4)
    rng = random.Random(7)

    async def one() -> None:
        n = rng.randint(0, 3000)
        with contextlib.suppress(TimeoutError):
            result = await asyncio.wait_for(threads.run(lambda: spin(n)), rng.random() / 2000)
            assert result == spin(n)

    async def main() -> None:
        for _ in range(100):
            await asyncio.gather(*(one() for _ in range(8)))
            results = await asyncio.gather(*(threads.run(lambda: spin(100)) for _ in range(8)))
            assert results == [spin(100)] * 8

    asyncio.run(asyncio.wait_for(main(), 30))
    threads.close()


def test_a_handler_cannot_swallow_the_interrupt_with_except_exception() -> None:
    threads = InterruptibleThreads(1)
    seen: list[str] = []

    def stubborn() -> None:
        try:
            spin()
        except Exception:
            seen.append("swallowed")
        except TaskInterrupted:
            seen.append("interrupted")
            raise

    async def main() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(threads.run(stubborn), 0.05)
        assert await threads.run(lambda: "next") == "next"

    asyncio.run(main())
    deadline = time.monotonic() + 5  # the interrupted thread records it on its own time
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen == ["interrupted"]
    threads.close()

"""The default pool: handlers run in this process, and can be interrupted.

Async handlers run on a second event loop in its own thread and are cancelled
at their next `await`. Sync handlers run on slot threads; to stop one, the
worker raises `TaskInterrupted` in its thread with `PyThreadState_SetAsyncExc`.
It lands at the next Python bytecode, so a pure-Python loop stops within
milliseconds, but a thread blocked inside C code (`time.sleep`, a socket read,
a C extension) sees it only when that call returns. Its slot is handed to a
fresh thread at once and the interrupted thread exits when it comes back.
`--pool process` (dtq/worker/process_pool.py) is the hard guarantee.

Safety of the interrupt: it is sent only while the thread runs that very job
(the job's lock guards its thread id); when the handler returns, the thread
clears an interrupt not yet delivered under the same lock; and the slot loop
swallows one that lands in the worker's own code after the handler returned.
So an interrupt never reaches the next job a thread picks up.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import ctypes
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from dtq.worker.app import Handler, TaskContext, TaskInterrupted

log = logging.getLogger(__name__)


def _raise_in(thread_id: int, exc: type[BaseException] | None) -> int:
    """Make `exc` pending in a thread (None: drop a pending one); returns the
    number of threads changed."""
    arg = ctypes.py_object(exc) if exc is not None else None  # None passes NULL
    return int(ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), arg))


class _Job:
    """One sync handler call, and the lock that makes interrupting it safe."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.lock = threading.Lock()
        self.thread_id: int | None = None  # set while the handler may run
        self.interrupted = False  # stop was asked
        self.sent = False  # an exception was sent into the thread
        self.value: Any = None
        self.error: BaseException | None = TaskInterrupted("interrupted before it ended")

    def run(self) -> None:
        """On the slot thread: run the handler and keep how it ended."""
        with self.lock:
            if self.interrupted or not self.future.set_running_or_notify_cancel():
                return
            self.thread_id = threading.get_ident()
        try:
            value = self.fn()
        except BaseException as error:  # handed to the awaiting task
            self.error = error
        else:
            self.value, self.error = value, None

    def end(self) -> None:
        """On the slot thread: from here on no interrupt can be sent or land."""
        with self.lock:
            if self.thread_id is not None:
                self.thread_id = None
                if self.sent:
                    # Only then: clearing with NULL leaves CPython's "async
                    # exception pending" flag set for the whole interpreter,
                    # which sends every thread through the slow path of the
                    # eval loop from then on (and livelocks under a tracer).
                    _raise_in(threading.get_ident(), None)

    def settle(self) -> None:
        if self.future.done() or not self.future.running():
            self.future.cancel()  # cancelled or interrupted before it began
        elif self.error is None:
            self.future.set_result(self.value)
        else:
            self.future.set_exception(self.error)

    def interrupt(self) -> bool:
        """From any thread: stop the job; True when its thread had to be interrupted."""
        with self.lock:
            if self.interrupted:
                return False
            self.interrupted = True
            if self.thread_id is not None:
                self.sent = _raise_in(self.thread_id, TaskInterrupted) == 1
            return self.sent


class InterruptibleThreads:
    """`size` slot threads running sync calls; a call can be interrupted."""

    def __init__(self, size: int) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.size = size
        for _ in range(size):
            self._start_thread()

    def _start_thread(self) -> None:
        # Daemon: a thread stuck in C code must not keep the worker from exiting.
        threading.Thread(target=self._serve, name="handler", daemon=True).start()

    async def run(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on a slot thread; cancelling the await interrupts it."""
        job = _Job(fn)
        self._jobs.put(job)
        try:
            return await asyncio.wrap_future(job.future)
        except asyncio.CancelledError:
            if job.interrupt():
                self._start_thread()  # the interrupted one leaves when it comes back
            raise

    def close(self) -> None:
        for _ in range(self.size):
            self._jobs.put(None)

    def _serve(self) -> None:
        """Main loop of a slot thread."""
        job: _Job | None = None
        while True:
            try:
                if job is None:
                    job = self._jobs.get()
                    if job is None:
                        return
                    job.run()
                job.end()  # done again if a late interrupt cut it short
                job.settle()
                if job.sent:
                    return  # a new thread took this slot when it was interrupted
                job = None
            except TaskInterrupted:
                log.debug("late_interrupt_swallowed")


class ThreadPool:
    """Handlers in this process: sync on interruptible threads, async on a loop."""

    def __init__(self, concurrency: int) -> None:
        self.threads = InterruptibleThreads(concurrency)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="async-handlers", daemon=True
        )
        self._thread.start()

    async def call(self, handler: Handler, payload: dict[str, Any], ctx: TaskContext) -> Any:
        args: tuple[Any, ...] = (payload, ctx) if handler.wants_context else (payload,)
        if not handler.is_async:
            # The caller's context (the task's execution span, for the handler's
            # own spans) goes with it; run_coroutine_threadsafe copies it too.
            context = contextvars.copy_context()
            return await self.threads.run(lambda: context.run(handler.fn, *args))
        future = asyncio.run_coroutine_threadsafe(handler.fn(*args), self.loop)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()  # cancels the coroutine on the handler loop
            raise

    async def started(self) -> None:
        return None  # threads start with their first call

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.threads.close()

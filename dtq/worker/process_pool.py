"""`dtq worker --pool process`: every slot is a child process.

Each child (multiprocessing, "spawn" start method) imports the same handler
modules and runs one task at a time, sync or async, sent over a pipe
(dtq/worker/child.py). When a task times out, is cancelled or loses its lease,
its child is stopped (SIGTERM, then SIGKILL after `KILL_GRACE`) and a fresh
child takes the slot, so even a handler blocked in C code or ignoring
`ctx.cancelled` stops for sure. A handler that takes its process down
(`os._exit`, a segfault, the OOM killer) fails the attempt with
`WorkerProcessDied`, which is retried. Outcomes, heartbeats and the stream
stay in the parent. The worker opens its stream once every child has imported
the handlers (a task's timeout does not count a child's start-up; a
replacement child's start-up still counts for the task that waits for it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import time
from typing import Any

from dtq import tracing
from dtq.worker.app import Handler, TaskContext
from dtq.worker.child import READY, ChildSpec, Job, Reply, main
from dtq.worker.children import LoopSpawner
from dtq.worker.pools import HandlerFailed, WorkerProcessDied

log = logging.getLogger(__name__)
KILL_GRACE = 1.0  # seconds between SIGTERM and SIGKILL
_spawn = multiprocessing.get_context("spawn")


class _Child:
    """One child process and the parent's end of its pipe."""

    def __init__(self, spec: ChildSpec) -> None:
        self.conn, child_end = _spawn.Pipe()
        self.process = _spawn.Process(
            target=main, args=(child_end, spec), name="dtq-handler", daemon=True
        )
        self.process.start()
        child_end.close()  # else the parent would never see the child's end close
        self.greeted = False

    async def hello(self) -> None:
        """Wait for the child's READY: its handler modules are imported."""
        if not self.greeted:
            if await self.receive() != READY:
                raise RuntimeError("a handler process did not start as expected")
            self.greeted = True

    async def send(self, job: Job) -> None:
        # In a thread: a large payload would block until a child still
        # starting up reads it, and the loop must keep heartbeats going.
        try:
            await asyncio.to_thread(self.conn.send, job)
        except OSError as error:
            raise self._died() from error

    async def receive(self) -> Reply:
        await _readable(self.conn.fileno())  # a reply, or EOF when the child died
        try:
            reply: Reply = self.conn.recv()
        except (EOFError, OSError) as error:
            await self.exited(within=KILL_GRACE)
            raise self._died() from error
        return reply

    def _died(self) -> WorkerProcessDied:
        code = self.process.exitcode
        return WorkerProcessDied(
            f"the process running the handler died (exit code {code}, pid {self.process.pid})"
        )

    async def exited(self, within: float) -> bool:
        """Wait up to `within` seconds for the child to exit; True if it did."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await _readable(self.process.sentinel)
                # Its pipes close a moment before the exit can be reaped.
                for _ in range(1000):
                    if self.process.exitcode is not None:  # reaps it
                        break
                    await asyncio.sleep(0.002)
        return self.process.exitcode is not None

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited after KILL_GRACE."""
        if self.process.exitcode is None:
            self.process.terminate()
            if not await self.exited(within=KILL_GRACE):
                self.process.kill()
                await self.exited(within=KILL_GRACE)
        self.conn.close()


class ProcessPool:
    """`concurrency` child processes, each running one handler call at a time."""

    def __init__(self, concurrency: int, spec: ChildSpec) -> None:
        self.spec = spec
        self._idle: asyncio.Queue[_Child] = asyncio.Queue()
        self._children: set[_Child] = set()
        self._stopping: set[asyncio.Task[None]] = set()
        self._closed = False
        for _ in range(concurrency):
            self._idle.put_nowait(self._start())

    def _start(self) -> _Child:
        child = _Child(self.spec)
        self._children.add(child)
        return child

    async def call(self, handler: Handler, payload: dict[str, Any], ctx: TaskContext) -> Any:
        child = await self._idle.get()
        try:
            await child.hello()  # a replacement may still be importing
            await child.send((handler.name, payload, _fields(ctx), tracing.carrier()))
            reply = await child.receive()
            while reply[0] == "submit":  # ctx.submit in the child: the call is ours
                await child.send(await _relay(ctx, reply[1]))
                reply = await child.receive()
        except BaseException:  # cancelled, timed out or died: never reuse it
            self._replace(child)
            raise
        self._idle.put_nowait(child)
        if reply[0] == "ok":
            return reply[1]
        _, type_name, message, traceback, permanent = reply
        raise HandlerFailed(type_name, message, traceback, permanent)

    async def started(self) -> None:
        await asyncio.gather(*(child.hello() for child in self._children))

    def _replace(self, child: _Child) -> None:
        """Stop `child` in the background; a new child takes its slot at once."""
        if not self._closed:
            self._idle.put_nowait(self._start())
        task = asyncio.get_running_loop().create_task(self._stop(child))
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def _stop(self, child: _Child) -> None:
        await child.stop()
        self._children.discard(child)
        log.info("handler_process_stopped", extra={"pid": child.process.pid})

    def close(self) -> None:
        """Stop every child: SIGTERM, then SIGKILL for the ones still there."""
        self._closed = True
        children = list(self._children)
        for child in children:
            if child.process.exitcode is None:
                child.process.terminate()
        deadline = time.monotonic() + KILL_GRACE
        for child in children:
            child.process.join(max(0.0, deadline - time.monotonic()))
            if child.process.exitcode is None:
                child.process.kill()
                child.process.join(KILL_GRACE)
        self._children.clear()


async def _readable(fd: int) -> None:
    """Wait until `fd` is readable, without a thread."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


def _fields(ctx: TaskContext) -> dict[str, Any]:
    return {
        "task_id": ctx.task_id,
        "type": ctx.type,
        "queue": ctx.queue,
        "attempt": ctx.attempt,
        "max_retries": ctx.max_retries,
        "timeout": ctx.timeout,
        "parent_result": ctx.parent_result,
        "parent_id": ctx.parent_id,
        "group_id": ctx.group_id,
        "root_id": ctx.root_id,
    }


async def _relay(ctx: TaskContext, blobs: list[bytes]) -> Reply:
    if not isinstance(ctx.spawner, LoopSpawner):
        return ("refused", "FAILED_PRECONDITION", "this worker cannot submit children", b"")
    return await ctx.spawner.relay(blobs)

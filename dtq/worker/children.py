"""Child tasks: a handler submits tasks of its own through `ctx.submit`.

    @app.task("crawl")
    def crawl(payload: dict, ctx: TaskContext) -> int:
        for url in payload["urls"]:
            ctx.submit("fetch", {"url": url}, queue="io")
        return len(payload["urls"])

Children go to WorkerService.SubmitChildTasks over the worker's own channel
(a worker reaches state only through the API), with the lease of the task
that runs: the server stores them with `parent_id` (that task) and `root_id`,
in its tenant, and cancels them when it is cancelled.

Deduplication on retry: each child carries an idempotency key the server
scopes to the parent. Without one of the caller's (`idempotency_key=`), it is
`#N`, the N-th child this attempt submitted (from 0): an attempt that submits
the same children in the same order as an earlier one gets the earlier ones
back (`ChildTask.deduplicated`) instead of duplicates. A handler whose
children vary from one attempt to the next names each one with its own key.

Sync handlers block on the call (run on the worker's event loop); async ones
`await ctx.asubmit(...)`; with `--pool process` the child process hands the
call to its parent over the pipe. Transient failures (UNAVAILABLE, ...) are
retried with backoff: the keys make a repeat harmless.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Protocol

import grpc
from google.rpc import status_pb2

from dtq.client.errors import DtqClientError, from_rpc_error, from_status
from dtq.client.models import TaskInfo, task_info
from dtq.client.requests import Submission, submit_request
from dtq.client.retry import RetryPolicy
from dtq.v1 import task_service_pb2, worker_service_pb2, worker_service_pb2_grpc

Requests = list[task_service_pb2.SubmitTaskRequest]
Results = list[task_service_pb2.SubmitTaskResponse]
CALL_TIMEOUT = 30.0  # seconds per try of SubmitChildTasks
WAIT_SLICE = 0.25  # a sync handler waits in slices, so an interrupt reaches it


@dataclass(frozen=True)
class ChildTask:
    """A child as the server stored it; `deduplicated` when an earlier
    attempt of the parent had submitted it already."""

    id: str
    deduplicated: bool
    task: TaskInfo


class Spawner(Protocol):
    """How a TaskContext reaches SubmitChildTasks for its task's lease."""

    def submit(self, requests: Requests) -> Results:
        """From a handler's thread: blocks until the children are committed."""
        ...

    async def asubmit(self, requests: Requests) -> Results:
        """From an async handler's loop."""
        ...


def requests_for(submissions: Iterable[Submission], next_index: Callable[[], int]) -> Requests:
    """The children's requests, each keyed by the caller's key or `#N`."""
    built = []
    for s in submissions:
        if s.after:
            raise ValueError("a child task cannot wait for another task (after)")
        request = submit_request(s)
        index = next_index()
        request.idempotency_key = s.idempotency_key or f"#{index}"
        built.append(request)
    return built


def children(results: Results) -> list[ChildTask]:
    return [ChildTask(r.task.id, r.deduplicated, task_info(r.task)) for r in results]


class Children:
    """SubmitChildTasks over the worker's channel, on the worker's event loop."""

    def __init__(self, stub: worker_service_pb2_grpc.WorkerServiceAsyncStub) -> None:
        self.stub = stub
        self.loop = asyncio.get_running_loop()
        self.retry = RetryPolicy(attempts=6)

    async def call(self, parent_id: str, token: str, requests: Requests) -> Results:
        """On the worker's loop: the call, tried again while it may help."""
        request = worker_service_pb2.SubmitChildTasksRequest(
            parent_id=parent_id, lease_token=token, children=requests
        )
        attempt = 0
        while True:
            try:
                reply = await self.stub.SubmitChildTasks(request, timeout=CALL_TIMEOUT)
                return list(reply.results)
            except grpc.aio.AioRpcError as error:
                failure = from_rpc_error(error)
            delay = self.retry.delay(failure, attempt)
            if delay is None:
                raise failure
            await asyncio.sleep(delay)
            attempt += 1

    def bind(self, parent_id: str, token: str) -> LoopSpawner:
        return LoopSpawner(self, parent_id, token)


class LoopSpawner:
    """A task's spawner in this process: threads and the handler loop hand
    the call to the worker's loop."""

    def __init__(self, children: Children, parent_id: str, token: str) -> None:
        self.children = children
        self.parent_id = parent_id
        self.token = token

    def _start(self, requests: Requests) -> concurrent.futures.Future[Results]:
        call = self.children.call(self.parent_id, self.token, requests)
        return asyncio.run_coroutine_threadsafe(call, self.children.loop)

    def submit(self, requests: Requests) -> Results:
        future = self._start(requests)
        while True:
            try:
                return future.result(timeout=WAIT_SLICE)
            except concurrent.futures.TimeoutError:
                continue
            except BaseException:
                future.cancel()
                raise

    async def asubmit(self, requests: Requests) -> Results:
        return await asyncio.wrap_future(self._start(requests))

    async def relay(self, blobs: list[bytes]) -> tuple[Any, ...]:
        """For a child process (`--pool process`): its call, answered as plain data."""
        requests = [task_service_pb2.SubmitTaskRequest.FromString(b) for b in blobs]
        try:
            results = await self.children.call(self.parent_id, self.token, requests)
        except DtqClientError as error:
            return ("refused", error.code.name, error.message, _status(error))
        return ("submitted", [r.SerializeToString() for r in results])


def _status(error: DtqClientError) -> bytes:
    """Enough of the rich status for the child to raise the same exception."""
    from google.protobuf import any_pb2
    from google.rpc import error_details_pb2

    status = status_pb2.Status(code=error.code.value[0], message=error.message)
    details: list[Any] = []
    if error.reason:
        details.append(error_details_pb2.ErrorInfo(reason=error.reason, domain="dtq"))
    if error.violations:
        bad = error_details_pb2.BadRequest()
        for v in error.violations:
            bad.field_violations.add(field=v.field, description=v.description)
        details.append(bad)
    for found in details:
        packed = any_pb2.Any()
        packed.Pack(found)
        status.details.append(packed)
    return bytes(status.SerializeToString())


class PipeSpawner:
    """A task's spawner inside a `--pool process` child: the parent makes the call."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.lock = threading.Lock()

    def submit(self, requests: Requests) -> Results:
        with self.lock:
            self.conn.send(("submit", [r.SerializeToString() for r in requests]))
            reply = self.conn.recv()
        if reply[0] == "submitted":
            return [task_service_pb2.SubmitTaskResponse.FromString(b) for b in reply[1]]
        _, code, message, status = reply
        raise from_status(grpc.StatusCode[code], message, status_pb2.Status.FromString(status))

    async def asubmit(self, requests: Requests) -> Results:
        return await asyncio.to_thread(self.submit, requests)

"""`AsyncClient`: the same surface as `Client` for asyncio applications."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, Unpack

import grpc

from dtq.client import channels
from dtq.client.coalesce import Coalescing
from dtq.client.coalesce_aio import AsyncCoalescingSubmitter
from dtq.client.errors import from_rpc_error
from dtq.client.handles import AsyncTaskHandle, Group
from dtq.client.models import QueueStats, TaskInfo, queue_stats, task_info
from dtq.client.requests import (
    Submission,
    SubmitOptions,
    batch_requests,
    group_request,
    list_request,
    submit_request,
)
from dtq.client.retry import SAFE, UNSENT, Deadline, RetryPolicy, watch_delay
from dtq.v1 import admin_service_pb2 as admin_pb
from dtq.v1 import admin_service_pb2_grpc, task_service_pb2_grpc
from dtq.v1 import task_service_pb2 as pb

if TYPE_CHECKING:
    from dtq.settings import Settings

Resp = TypeVar("Resp")


@dataclass(frozen=True)
class _Endpoint:
    channel: grpc.aio.Channel
    tasks: task_service_pb2_grpc.TaskServiceAsyncStub
    admin: admin_service_pb2_grpc.AdminServiceAsyncStub


def _endpoint(config: channels.ChannelConfig) -> Callable[[str], _Endpoint]:
    def make(address: str) -> _Endpoint:
        channel = channels.aio_channel(config, address)
        return _Endpoint(
            channel,
            task_service_pb2_grpc.TaskServiceStub(channel),
            admin_service_pb2_grpc.AdminServiceStub(channel),
        )

    return make


class AsyncClient:
    """A connection to one or more dtq servers for asyncio code.

        async with AsyncClient("127.0.0.1:50051") as client:
            handle = await client.submit("email_sending", {"to": "a@example.com"})
            print(await handle.result(timeout=30))

    Arguments (credentials and TLS included) and retries as for `Client`.
    Use it from one event loop.
    Arguments, retries and coalescing as for `Client`; concurrent awaits of
    `submit` are coalesced. Use it from one event loop.
    """

    def __init__(
        self,
        address: str | Sequence[str] = channels.DEFAULT_ADDRESS,
        *,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        balance: channels.Balance = "round_robin",
        credentials: grpc.ChannelCredentials | None = None,
        api_key: str | None = None,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        interceptors: Sequence[Any] = (),
        coalesce: bool | Coalescing = True,
        connections: int = 1,
        tenant: str | None = None,
    ) -> None:
        self.config = channels.config(
            address,
            balance,
            credentials,
            api_key,
            (tls_ca, tls_cert, tls_key),
            interceptors,
            connections,
            tenant,
        )
        self.timeout = timeout
        self.retry_policy = retry or RetryPolicy()
        self._endpoints = channels.Endpoints(self.config, _endpoint(self.config))
        self._coalescer = None
        if coalesce:
            limits = coalesce if isinstance(coalesce, Coalescing) else None
            self._coalescer = AsyncCoalescingSubmitter(self._send_batch, self._send_one, limits)

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **kwargs: Any) -> AsyncClient:
        """A client for `DTQ_SERVER_ADDRESS` (a comma-separated list allowed),
        sending `DTQ_API_KEY`, with TLS when `DTQ_TLS_CA` is set (and the client
        certificate `DTQ_TLS_CERT`/`DTQ_TLS_KEY`). `kwargs` win over the settings.
        """
        from dtq.settings import Settings  # pydantic only when asked for

        settings = settings or Settings()
        return cls(settings.server_address, **channels.from_settings(settings, kwargs))

    async def close(self) -> None:
        """Close the channels; calls in flight are cancelled."""
        for endpoint in self._endpoints.opened():
            await endpoint.channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _call(
        self,
        rpc: Callable[[_Endpoint], Callable[..., Any]],
        request: Any,
        codes: frozenset[grpc.StatusCode] = SAFE,
        timeout: float | None = None,  # noqa: ASYNC109 (per try, as in Client)
    ) -> Any:
        for attempt in range(self.retry_policy.attempts):
            endpoint = self._endpoints.pick()
            try:
                return await rpc(endpoint)(request, timeout=timeout or self.timeout)
            except grpc.RpcError as rpc_error:
                error = from_rpc_error(rpc_error)
                delay = self.retry_policy.delay(error, attempt, codes)
                if delay is None:
                    raise error from None
                self.retry_policy.waiting(error, delay)
                self._endpoints.failed(endpoint)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable: the last attempt raises")

    async def call(
        self,
        rpc: Callable[[_Endpoint], Callable[..., Any]],
        request: Any,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (per try, as in Client)
    ) -> Any:
        """A unary call of the generated stubs that this client does not wrap
        (see `Client.call`): the reply message."""
        return await self._call(rpc, request, UNSENT, timeout)

    async def submit(
        self, type: str, payload: Mapping[str, Any] | None = None, **options: Unpack[SubmitOptions]
    ) -> AsyncTaskHandle:
        """Submit one task (see `Client.submit`)."""
        request = submit_request(Submission(type, payload or {}, **options))
        if self._coalescer is not None:
            reply = await self._coalescer.submit(request)
        else:
            reply = await self._send_one(request)
        return AsyncTaskHandle(self, task_info(reply.task), reply.deduplicated)

    async def _send_one(self, request: pb.SubmitTaskRequest) -> pb.SubmitTaskResponse:
        reply: pb.SubmitTaskResponse = await self._call(lambda e: e.tasks.SubmitTask, request)
        return reply

    async def _send_batch(self, request: pb.BatchSubmitTasksRequest) -> pb.BatchSubmitTasksResponse:
        reply: pb.BatchSubmitTasksResponse = await self._call(
            lambda e: e.tasks.BatchSubmitTasks, request
        )
        return reply

    async def group(
        self, tasks: Iterable[Submission], callback: Submission
    ) -> Group[AsyncTaskHandle]:
        """Submit a group (a chord): `tasks` (up to 10,000) and a `callback`
        that waits (state `waiting`) until every task of the group is final
        (completed, dead-lettered or cancelled), then runs once with their
        outcomes as `ctx.parent_result`: a list of `{"id", "state", "result",
        "error"}` in submission order. All or none, in one call. The tasks
        take no `after` nor `idempotency_key` nor `unique_for`."""
        request = group_request(tasks, callback)
        reply = await self._call(lambda e: e.tasks.SubmitGroup, request)
        handles = [AsyncTaskHandle(self, task_info(t)) for t in reply.tasks]
        return Group(reply.group_id, handles, AsyncTaskHandle(self, task_info(reply.callback)))

    async def submit_many(
        self, submissions: Iterable[Submission]
    ) -> builtins.list[AsyncTaskHandle]:
        """Submit up to 1000 tasks atomically (all or none), in one call."""
        request = pb.BatchSubmitTasksRequest(requests=batch_requests(submissions))
        reply = await self._call(lambda e: e.tasks.BatchSubmitTasks, request)
        return [AsyncTaskHandle(self, task_info(r.task), r.deduplicated) for r in reply.results]

    async def handle(self, task_id: str) -> AsyncTaskHandle:
        """A handle for a task submitted earlier (reads it once)."""
        return AsyncTaskHandle(self, await self.get(task_id))

    async def get(self, task_id: str) -> TaskInfo:
        """The task as it is now. NotFound when no task has that id."""
        reply = await self._call(lambda e: e.tasks.GetTask, pb.GetTaskRequest(id=task_id))
        return task_info(reply.task)

    async def list(
        self,
        *,
        state: str | None = None,
        type: str | None = None,
        queue: str | None = None,
        page_size: int = 100,
        full: bool = False,
        parent_id: str | None = None,
        root_id: str | None = None,
    ) -> AsyncIterator[TaskInfo]:
        """Tasks, newest first, fetched page by page (see `Client.list`)."""
        token = ""
        while True:
            request = list_request(state, type, queue, page_size, full, token)
            request.parent_id, request.root_id = parent_id or "", root_id or ""
            reply = await self._call(lambda e: e.tasks.ListTasks, request)
            for t in reply.tasks:
                yield task_info(t)
            if not (token := reply.next_page_token):
                return

    async def cancel(self, task_id: str) -> TaskInfo:
        """Cancel a task that has not finished (FailedPrecondition if it has)."""
        request = pb.CancelTaskRequest(id=task_id)
        reply = await self._call(lambda e: e.tasks.CancelTask, request, UNSENT)
        return task_info(reply.task)

    async def retry(self, task_id: str) -> TaskInfo:
        """Queue a failed or dead-lettered task to run again now."""
        request = pb.RetryTaskRequest(id=task_id)
        reply = await self._call(lambda e: e.tasks.RetryTask, request, UNSENT)
        return task_info(reply.task)

    async def watch(
        self,
        task_id: str,
        timeout: float | None = None,  # noqa: ASYNC109 (same surface as Client)
    ) -> AsyncIterator[TaskInfo]:
        """The task now and after every change of state (see `Client.watch`)."""
        deadline, attempt = Deadline(timeout), 0
        while True:
            endpoint = self._endpoints.pick()
            call = endpoint.tasks.WatchTask(
                pb.WatchTaskRequest(id=task_id), timeout=deadline.remaining()
            )
            try:
                async for reply in call:
                    attempt, task = 0, task_info(reply.task)
                    yield task
                    if task.state.terminal:
                        return
                delay = self.retry_policy.backoff(attempt)  # ended early: a draining server
            except grpc.RpcError as rpc_error:
                delay = watch_delay(self.retry_policy, from_rpc_error(rpc_error), attempt, deadline)
            finally:
                call.cancel()
            self._endpoints.failed(endpoint)
            await asyncio.sleep(deadline.capped(delay))
            attempt += 1

    async def queue_stats(self, queue: str | None = None) -> builtins.list[QueueStats]:
        """Every queue's stats, or only `queue`'s."""
        request = admin_pb.GetQueueStatsRequest(queue=queue or "")
        reply = await self._call(lambda e: e.admin.GetQueueStats, request)
        return [queue_stats(q) for q in reply.queues]

    async def pause(self, queue: str) -> QueueStats:
        """Stop handing out leases from `queue` (running tasks go on)."""
        request = admin_pb.PauseQueueRequest(queue=queue)
        return queue_stats((await self._call(lambda e: e.admin.PauseQueue, request)).stats)

    async def resume(self, queue: str) -> QueueStats:
        """Hand out leases from `queue` again."""
        request = admin_pb.ResumeQueueRequest(queue=queue)
        return queue_stats((await self._call(lambda e: e.admin.ResumeQueue, request)).stats)

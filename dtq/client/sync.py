"""`Client`: submit tasks and follow them from threads (thread-safe)."""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, Unpack

import grpc

from dtq.client import channels
from dtq.client.coalesce import Coalescing, CoalescingSubmitter
from dtq.client.errors import from_rpc_error
from dtq.client.handles import Group, TaskHandle
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

Req = TypeVar("Req")
Resp = TypeVar("Resp")


@dataclass(frozen=True)
class _Endpoint:
    channel: grpc.Channel
    tasks: task_service_pb2_grpc.TaskServiceStub
    admin: admin_service_pb2_grpc.AdminServiceStub


Stubs = _Endpoint  # the generated stubs over one server's channel: `tasks`, `admin`


def _endpoint(config: channels.ChannelConfig) -> Callable[[str], _Endpoint]:
    def make(address: str) -> _Endpoint:
        channel = channels.sync_channel(config, address)
        return _Endpoint(
            channel,
            task_service_pb2_grpc.TaskServiceStub(channel),
            admin_service_pb2_grpc.AdminServiceStub(channel),
        )

    return make


class Client:
    """A connection to one or more dtq servers.

        with Client("127.0.0.1:50051") as client:
            handle = client.submit("email_sending", {"to": "a@example.com"})
            print(handle.result(timeout=30))

    `address` is `host:port`, `a:1,b:2` or a list; calls are spread over the
    servers (`balance`). `timeout` bounds each try of a unary call (seconds);
    calls failing with UNAVAILABLE, DEADLINE_EXCEEDED or RESOURCE_EXHAUSTED are
    tried again per `retry`. Safe to share between threads.

    Authentication and TLS: `api_key` (or a JWT) is sent as `authorization:
    Bearer ...` on every call; `tls_ca` (a PEM file, the CA of the servers'
    certificates) turns TLS on, with `tls_cert`/`tls_key` as the client's own
    certificate when the servers require one (mTLS). `interceptors`: more
    gRPC client interceptors (tracing, say). `tenant`: with an operator
    credential (tenant `*`), the tenant every call acts in (`x-dtq-tenant`).
    `from_settings` reads all of these from `DTQ_*`.
    `coalesce` (default on): submits made at the same time from several
    threads share `BatchSubmitTasks` calls, each caller still getting its own
    handle or error (see `dtq.client.coalesce`); a lone caller's submit goes
    out at once as before. Pass `Coalescing(in_flight=, max_batch=,
    max_bytes=)` to change its limits. `connections`: channels (TCP connections) per
    server, used in turn.
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
            self._coalescer = CoalescingSubmitter(self._send_batch, self._send_one, limits)

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **kwargs: Any) -> Client:
        """A client for `DTQ_SERVER_ADDRESS` (a comma-separated list allowed),
        sending `DTQ_API_KEY`, with TLS when `DTQ_TLS_CA` is set (and the client
        certificate `DTQ_TLS_CERT`/`DTQ_TLS_KEY`). `kwargs` win over the settings.
        """
        from dtq.settings import Settings  # pydantic only when asked for

        settings = settings or Settings()
        return cls(settings.server_address, **channels.from_settings(settings, kwargs))

    def close(self) -> None:
        """Close the channels; calls in flight are cancelled."""
        for endpoint in self._endpoints.opened():
            endpoint.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _call(
        self,
        rpc: Callable[[_Endpoint], Callable[..., Resp]],
        request: Any,
        codes: frozenset[grpc.StatusCode] = SAFE,
        timeout: float | None = None,
    ) -> Resp:
        for attempt in range(self.retry_policy.attempts):
            endpoint = self._endpoints.pick()
            try:
                return rpc(endpoint)(request, timeout=timeout or self.timeout)
            except grpc.RpcError as rpc_error:
                error = from_rpc_error(rpc_error)
                delay = self.retry_policy.delay(error, attempt, codes)
                if delay is None:
                    raise error from None
                self.retry_policy.waiting(error, delay)
                self._endpoints.failed(endpoint)
                time.sleep(delay)
        raise AssertionError("unreachable: the last attempt raises")

    def call(
        self,
        rpc: Callable[[Stubs], Callable[..., Resp]],
        request: Any,
        *,
        timeout: float | None = None,
    ) -> Resp:
        """A unary call of the generated stubs that this client does not wrap:

            reply = client.call(lambda s: s.admin.ListWorkers, ListWorkersRequest())

        Returns the reply message; failures raise the typed errors. Tried again
        only when the server surely did not act (UNAVAILABLE, RESOURCE_EXHAUSTED
        with RetryInfo). `timeout`: seconds per try (default: the client's).
        """
        return self._call(rpc, request, UNSENT, timeout)

    def stubs(self) -> Stubs:
        """The generated stubs over the next server's channel, for streams this
        client does not wrap; their failures are `grpc.RpcError`
        (`dtq.client.errors.from_rpc_error` types them)."""
        return self._endpoints.pick()

    def submit(
        self, type: str, payload: Mapping[str, Any] | None = None, **options: Unpack[SubmitOptions]
    ) -> TaskHandle:
        """Submit one task and return its handle once it is committed.

        The payload is checked first (TypeError/ValueError, nothing sent).
        Options: see `SubmitOptions`.
        """
        request = submit_request(Submission(type, payload or {}, **options))
        if self._coalescer is not None:
            reply = self._coalescer.submit(request)
        else:
            reply = self._send_one(request)
        return TaskHandle(self, task_info(reply.task), reply.deduplicated)

    def _send_one(self, request: pb.SubmitTaskRequest) -> pb.SubmitTaskResponse:
        return self._call(lambda e: e.tasks.SubmitTask, request)

    def _send_batch(self, request: pb.BatchSubmitTasksRequest) -> pb.BatchSubmitTasksResponse:
        return self._call(lambda e: e.tasks.BatchSubmitTasks, request)

    def group(self, tasks: Iterable[Submission], callback: Submission) -> Group[TaskHandle]:
        """Submit a group (a chord): `tasks` (up to 10,000) and a `callback`
        that waits (state `waiting`) until every task of the group is final
        (completed, dead-lettered or cancelled), then runs once with their
        outcomes as `ctx.parent_result`: a list of `{"id", "state", "result",
        "error"}` in submission order. All or none, in one call. The tasks
        take no `after` nor `idempotency_key` nor `unique_for`."""
        request = group_request(tasks, callback)
        reply = self._call(lambda e: e.tasks.SubmitGroup, request)
        handles = [TaskHandle(self, task_info(t)) for t in reply.tasks]
        return Group(reply.group_id, handles, TaskHandle(self, task_info(reply.callback)))

    def submit_many(self, submissions: Iterable[Submission]) -> builtins.list[TaskHandle]:
        """Submit up to 1000 tasks atomically (all or none), in one call."""
        request = pb.BatchSubmitTasksRequest(requests=batch_requests(submissions))
        reply = self._call(lambda e: e.tasks.BatchSubmitTasks, request)
        return [TaskHandle(self, task_info(r.task), r.deduplicated) for r in reply.results]

    def handle(self, task_id: str) -> TaskHandle:
        """A handle for a task submitted earlier (reads it once)."""
        return TaskHandle(self, self.get(task_id))

    def get(self, task_id: str) -> TaskInfo:
        """The task as it is now. NotFound when no task has that id."""
        reply = self._call(lambda e: e.tasks.GetTask, pb.GetTaskRequest(id=task_id))
        return task_info(reply.task)

    def list(
        self,
        *,
        state: str | None = None,
        type: str | None = None,
        queue: str | None = None,
        page_size: int = 100,
        full: bool = False,
        parent_id: str | None = None,
        root_id: str | None = None,
    ) -> Iterator[TaskInfo]:
        """Tasks, newest first, fetched page by page as you iterate.

        `state` is a TaskState value ("running"); `full` includes payloads and results.
        `parent_id`: only that task's children (and chain steps); `root_id`: only
        the tasks of the tree below that task.
        """
        token = ""
        while True:
            request = list_request(state, type, queue, page_size, full, token)
            request.parent_id, request.root_id = parent_id or "", root_id or ""
            reply = self._call(lambda e: e.tasks.ListTasks, request)
            yield from (task_info(t) for t in reply.tasks)
            if not (token := reply.next_page_token):
                return

    def cancel(self, task_id: str) -> TaskInfo:
        """Cancel a task that has not finished (FailedPrecondition if it has)."""
        reply = self._call(lambda e: e.tasks.CancelTask, pb.CancelTaskRequest(id=task_id), UNSENT)
        return task_info(reply.task)

    def retry(self, task_id: str) -> TaskInfo:
        """Queue a failed or dead-lettered task to run again now."""
        reply = self._call(lambda e: e.tasks.RetryTask, pb.RetryTaskRequest(id=task_id), UNSENT)
        return task_info(reply.task)

    def watch(self, task_id: str, timeout: float | None = None) -> Iterator[TaskInfo]:
        """The task now and after every change of state, until it finishes.

        Reconnects when the stream breaks; `TimeoutError` after `timeout` seconds.
        """
        deadline, attempt = Deadline(timeout), 0
        while True:
            endpoint = self._endpoints.pick()
            call = endpoint.tasks.WatchTask(
                pb.WatchTaskRequest(id=task_id), timeout=deadline.remaining()
            )
            try:
                for reply in call:
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
            time.sleep(deadline.capped(delay))
            attempt += 1

    def queue_stats(self, queue: str | None = None) -> builtins.list[QueueStats]:
        """Every queue's stats, or only `queue`'s."""
        request = admin_pb.GetQueueStatsRequest(queue=queue or "")
        reply = self._call(lambda e: e.admin.GetQueueStats, request)
        return [queue_stats(q) for q in reply.queues]

    def pause(self, queue: str) -> QueueStats:
        """Stop handing out leases from `queue` (running tasks go on)."""
        reply = self._call(lambda e: e.admin.PauseQueue, admin_pb.PauseQueueRequest(queue=queue))
        return queue_stats(reply.stats)

    def resume(self, queue: str) -> QueueStats:
        """Hand out leases from `queue` again."""
        reply = self._call(lambda e: e.admin.ResumeQueue, admin_pb.ResumeQueueRequest(queue=queue))
        return queue_stats(reply.stats)

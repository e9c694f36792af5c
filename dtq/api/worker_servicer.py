"""WorkerService: registration, the lease stream, unary outcomes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from dtq import tracing
from dtq.api import convert, convert_flows
from dtq.api.errors import streaming, unary
from dtq.app.admin import Admin
from dtq.app.dispatch import Push, Session
from dtq.app.leasing import Leasing
from dtq.app.streams import Streams
from dtq.app.tasks import Tasks
from dtq.domain import validation
from dtq.domain.errors import DtqError
from dtq.domain.ids import lease_ref
from dtq.domain.model import Outcome
from dtq.v1 import task_service_pb2 as task_pb
from dtq.v1 import worker_service_pb2 as pb
from dtq.v1 import worker_service_pb2_grpc

log = logging.getLogger(__name__)
Ctx = grpc.aio.ServicerContext[Any, Any]


class WorkerServicer(worker_service_pb2_grpc.WorkerServiceServicer):
    def __init__(
        self, admin: Admin, leasing: Leasing, streams: Streams, heartbeat: float, tasks: Tasks
    ) -> None:
        self.admin = admin
        self.tasks = tasks
        self.leasing = leasing
        self.streams = streams
        self.heartbeat_interval = heartbeat

    @unary
    async def RegisterWorker(
        self, request: pb.RegisterWorkerRequest, context: Ctx
    ) -> pb.RegisterWorkerResponse:
        worker = await self.admin.register(convert.worker_info(request))
        return pb.RegisterWorkerResponse(
            worker_id=worker.id,
            heartbeat_interval=convert.duration(self.heartbeat_interval),
            lease_duration=convert.duration(self.leasing.default_lease),
        )

    @streaming
    async def LeaseTasks(
        self, request_iterator: AsyncIterator[pb.LeaseTasksRequest], context: Ctx
    ) -> AsyncIterator[pb.LeaseTasksResponse]:
        first = await anext(aiter(request_iterator), None)
        if first is None or not first.HasField("open"):
            raise DtqError.invalid("open", "the first message of a lease stream must carry open")
        session = await self.streams.open(*convert.stream_open(first.open))
        reader = asyncio.get_running_loop().create_task(
            self._read(session, first, request_iterator)
        )
        try:
            while (push := await session.outbox.get()) is not None:
                yield convert.push(_merge(push, session))
            if (error := await reader) is not None:
                raise error  # a bad message ends the stream with its status, not OK
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            await self.streams.close(session)

    async def _read(
        self,
        session: Session,
        first: pb.LeaseTasksRequest,
        rest: AsyncIterator[pb.LeaseTasksRequest],
    ) -> DtqError | None:
        """Handle the worker's messages; the error of a bad one (a message that
        does not decode, an invalid field) ends the stream."""
        pending: set[asyncio.Task[None]] = set()
        goodbye = False
        try:
            await self._handle(session, first, pending)
            async for message in rest:
                await self._handle(session, message, pending)
                goodbye = goodbye or message.goodbye
        except DtqError as error:
            log.info(
                "stream_refused", extra={"worker_id": session.worker_id, "reason": error.reason}
            )
            return error
        except Exception as error:
            log.info(
                "stream_read_ended", extra={"worker_id": session.worker_id, "error": repr(error)}
            )
        finally:
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
            session.end(goodbye)
        return None

    async def _handle(
        self, session: Session, message: pb.LeaseTasksRequest, pending: set[asyncio.Task[None]]
    ) -> None:
        self.streams.heard(session)
        if message.HasField("capacity"):
            self.streams.set_capacity(session, message.capacity)
        if message.outcomes:
            outcomes = [
                convert.outcome(o, f"outcomes[{i}]") for i, o in enumerate(message.outcomes)
            ]
            # Outcomes of one stream are recorded concurrently, so that group
            # commit can batch them with other streams' outcomes.
            task = asyncio.get_running_loop().create_task(self._report(session, outcomes))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if message.releases:
            await self.streams.release(session, convert.refs(message.releases, "releases"))
        if message.heartbeats:
            try:
                await self.streams.heartbeat(
                    session, convert.refs(message.heartbeats, "heartbeats")
                )
            except DtqError as error:
                log.warning(
                    "heartbeat_failed",
                    extra={"worker_id": session.worker_id, "reason": error.reason},
                )

    async def _report(self, session: Session, outcomes: list[Outcome]) -> None:
        try:
            await self.streams.on_outcomes(session, outcomes)
        except DtqError as error:
            # Not recorded (e.g. PostgreSQL unreachable): the worker keeps the
            # outcome and sends it again.
            session.outbox.put_nowait(Push(acks=[(o.task_id, error) for o in outcomes]))

    @unary
    async def CompleteTask(
        self, request: pb.CompleteTaskRequest, context: Ctx
    ) -> pb.CompleteTaskResponse:
        ref = lease_ref(request.task_id, request.lease_token)
        result = None
        if request.HasField("result"):
            validation.nesting(convert.depth(request.result), "result")
            result = request.result.SerializeToString()
        task = await self.leasing.report_one(Outcome(ref.task_id, ref.token, result=result))
        return pb.CompleteTaskResponse(task=convert.task(task))

    @unary
    async def FailTask(self, request: pb.FailTaskRequest, context: Ctx) -> pb.FailTaskResponse:
        ref = lease_ref(request.task_id, request.lease_token)
        error = convert.reported_error(request.error)
        task = await self.leasing.report_one(Outcome(ref.task_id, ref.token, error=error))
        return pb.FailTaskResponse(task=convert.task(task))

    @unary
    async def SubmitChildTasks(
        self, request: pb.SubmitChildTasksRequest, context: Ctx
    ) -> pb.SubmitChildTasksResponse:
        parent, specs = convert_flows.children(request, tracing.carrier())
        submitted = await self.tasks.submit_children(parent, specs)
        results = [
            task_pb.SubmitTaskResponse(task=convert.task(s.task), deduplicated=s.deduplicated)
            for s in submitted
        ]
        return pb.SubmitChildTasksResponse(results=results)

    @unary
    async def ExtendLease(
        self, request: pb.ExtendLeaseRequest, context: Ctx
    ) -> pb.ExtendLeaseResponse:
        ref = lease_ref(request.task_id, request.lease_token)
        seconds = (
            validation.lease_seconds(convert.seconds_of(request.lease_duration), 0.0)
            if request.HasField("lease_duration")
            else None
        )
        deadline = await self.leasing.extend_one(ref, seconds)
        return pb.ExtendLeaseResponse(expire_at=convert.timestamp(deadline))


def _merge(push: Push, session: Session) -> Push:
    """Fold every message already waiting into one, to send fewer frames."""
    while not session.outbox.empty():
        nxt = session.outbox.get_nowait()
        if nxt is None:
            session.outbox.put_nowait(None)
            break
        push.leases += nxt.leases
        push.acks += nxt.acks
        push.revoked += nxt.revoked
        push.draining = push.draining or nxt.draining
    return push

"""AdminService: queue statistics, pause/resume, workers, health, dead letters."""

from __future__ import annotations

from typing import Any

import grpc

from dtq.api import convert
from dtq.api.errors import unary
from dtq.app.admin import Admin
from dtq.app.audit import Audit
from dtq.v1 import admin_service_pb2 as pb
from dtq.v1 import admin_service_pb2_grpc
from dtq.version import __version__

Ctx = grpc.aio.ServicerContext[Any, Any]


class AdminServicer(admin_service_pb2_grpc.AdminServiceServicer):
    def __init__(self, admin: Admin, audit: Audit) -> None:
        self.admin = admin
        self.audit = audit

    @unary
    async def GetQueueStats(
        self, request: pb.GetQueueStatsRequest, context: Ctx
    ) -> pb.GetQueueStatsResponse:
        stats = await self.admin.queue_stats(request.queue)
        return pb.GetQueueStatsResponse(queues=[convert.queue_stats(s) for s in stats])

    @unary
    async def PauseQueue(
        self, request: pb.PauseQueueRequest, context: Ctx
    ) -> pb.PauseQueueResponse:
        stats = await self.admin.set_paused(request.queue, paused=True)
        return pb.PauseQueueResponse(stats=convert.queue_stats(stats))

    @unary
    async def ResumeQueue(
        self, request: pb.ResumeQueueRequest, context: Ctx
    ) -> pb.ResumeQueueResponse:
        stats = await self.admin.set_paused(request.queue, paused=False)
        return pb.ResumeQueueResponse(stats=convert.queue_stats(stats))

    @unary
    async def DeleteQueue(
        self, request: pb.DeleteQueueRequest, context: Ctx
    ) -> pb.DeleteQueueResponse:
        await self.admin.delete_queue(request.queue)
        return pb.DeleteQueueResponse()

    @unary
    async def ListWorkers(
        self, request: pb.ListWorkersRequest, context: Ctx
    ) -> pb.ListWorkersResponse:
        workers, token = await self.admin.workers(request.page_size, request.page_token)
        return pb.ListWorkersResponse(
            workers=[convert.worker(w, self.admin.status(w)) for w in workers],
            next_page_token=token,
        )

    @unary
    async def GetSystemHealth(
        self, request: pb.GetSystemHealthRequest, context: Ctx
    ) -> pb.GetSystemHealthResponse:
        return convert.health(await self.admin.health(), __version__)

    @unary
    async def RequeueDeadLetters(
        self, request: pb.RequeueDeadLettersRequest, context: Ctx
    ) -> pb.RequeueDeadLettersResponse:
        count = await self.admin.requeue_dead_letters(
            request.queue, request.task_type, request.limit
        )
        return pb.RequeueDeadLettersResponse(requeued_count=count)

    @unary
    async def PurgeDeadLetters(
        self, request: pb.PurgeDeadLettersRequest, context: Ctx
    ) -> pb.PurgeDeadLettersResponse:
        count = await self.admin.purge_dead_letters(
            request.queue, request.task_type, request.confirm, request.validate_only
        )
        return pb.PurgeDeadLettersResponse(purged_count=count)

    @unary
    async def ListAuditEvents(
        self, request: pb.ListAuditEventsRequest, context: Ctx
    ) -> pb.ListAuditEventsResponse:
        since = convert.seconds_of(request.since) if request.HasField("since") else None
        events, token = await self.audit.page(
            since, request.actor or None, request.page_size, request.page_token
        )
        return pb.ListAuditEventsResponse(
            events=[convert.audit_event(e) for e in events], next_page_token=token
        )

"""AdminService: queue statistics, pause/resume, workers, health, dead letters,
the audit log, tenants, schedules."""

from __future__ import annotations

from typing import Any

import grpc

from dtq.api import convert
from dtq.api import convert_schedule as sc
from dtq.api.errors import unary
from dtq.app.admin import Admin
from dtq.app.audit import Audit
from dtq.app.limits_admin import LimitSettings
from dtq.app.schedules import Schedules
from dtq.app.tenants import TenantBook
from dtq.v1 import admin_service_pb2 as pb
from dtq.v1 import admin_service_pb2_grpc
from dtq.version import __version__

Ctx = grpc.aio.ServicerContext[Any, Any]


class AdminServicer(admin_service_pb2_grpc.AdminServiceServicer):
    def __init__(
        self,
        admin: Admin,
        audit: Audit,
        limits: LimitSettings,
        tenants: TenantBook,
        schedules: Schedules,
    ) -> None:
        self.admin = admin
        self.audit = audit
        self.limits = limits
        self.tenants = tenants
        self.schedules = schedules

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

    @unary
    async def GetTenantLimits(
        self, request: pb.GetTenantLimitsRequest, context: Ctx
    ) -> pb.GetTenantLimitsResponse:
        limits = await self.limits.tenant_limits(request.tenant)
        return pb.GetTenantLimitsResponse(limits=convert.tenant_limits(limits))

    @unary
    async def ListTenantLimits(
        self, request: pb.ListTenantLimitsRequest, context: Ctx
    ) -> pb.ListTenantLimitsResponse:
        every = await self.limits.all_tenant_limits()
        return pb.ListTenantLimitsResponse(limits=[convert.tenant_limits(t) for t in every])

    @unary
    async def SetTenantLimits(
        self, request: pb.SetTenantLimitsRequest, context: Ctx
    ) -> pb.SetTenantLimitsResponse:
        stored = await self.limits.set_tenant_limits(convert.tenant_limits_of(request.limits))
        return pb.SetTenantLimitsResponse(limits=convert.tenant_limits(stored))

    @unary
    async def SetDispatchRate(
        self, request: pb.SetDispatchRateRequest, context: Ctx
    ) -> pb.SetDispatchRateResponse:
        r = request.rate
        stored = await self.limits.set_dispatch_rate(r.queue, r.task_type, r.rate, r.burst or None)
        return pb.SetDispatchRateResponse(rate=convert.dispatch_rate(stored))

    @unary
    async def ListDispatchRates(
        self, request: pb.ListDispatchRatesRequest, context: Ctx
    ) -> pb.ListDispatchRatesResponse:
        rates = await self.limits.dispatch_rates(request.queue)
        return pb.ListDispatchRatesResponse(rates=[convert.dispatch_rate(r) for r in rates])

    @unary
    async def DeleteDispatchRate(
        self, request: pb.DeleteDispatchRateRequest, context: Ctx
    ) -> pb.DeleteDispatchRateResponse:
        await self.limits.delete_dispatch_rate(request.queue, request.task_type)
        return pb.DeleteDispatchRateResponse()

    @unary
    async def CreateTenant(
        self, request: pb.CreateTenantRequest, context: Ctx
    ) -> pb.CreateTenantResponse:
        tenant = await self.tenants.create(request.tenant.name, request.tenant.weight)
        return pb.CreateTenantResponse(tenant=convert.tenant(tenant))

    @unary
    async def ListTenants(
        self, request: pb.ListTenantsRequest, context: Ctx
    ) -> pb.ListTenantsResponse:
        tenants, token = await self.tenants.page(request.page_size, request.page_token)
        return pb.ListTenantsResponse(
            tenants=[convert.tenant(t) for t in tenants], next_page_token=token
        )

    # -- schedules ------------------------------------------------------------------------

    @unary
    async def CreateSchedule(
        self, request: pb.CreateScheduleRequest, context: Ctx
    ) -> pb.CreateScheduleResponse:
        created = await self.schedules.create(sc.schedule_of(request.schedule))
        return pb.CreateScheduleResponse(schedule=sc.schedule(created))

    @unary
    async def GetSchedule(
        self, request: pb.GetScheduleRequest, context: Ctx
    ) -> pb.GetScheduleResponse:
        found = await self.schedules.get(request.name)
        return pb.GetScheduleResponse(schedule=sc.schedule(found))

    @unary
    async def ListSchedules(
        self, request: pb.ListSchedulesRequest, context: Ctx
    ) -> pb.ListSchedulesResponse:
        found, token = await self.schedules.page(request.page_size, request.page_token)
        return pb.ListSchedulesResponse(
            schedules=[sc.schedule(s) for s in found], next_page_token=token
        )

    @unary
    async def UpdateSchedule(
        self, request: pb.UpdateScheduleRequest, context: Ctx
    ) -> pb.UpdateScheduleResponse:
        current = await self.schedules.get(request.schedule.name)
        wanted = sc.updated(current, request.schedule, request.update_mask)
        return pb.UpdateScheduleResponse(schedule=sc.schedule(await self.schedules.update(wanted)))

    @unary
    async def DeleteSchedule(
        self, request: pb.DeleteScheduleRequest, context: Ctx
    ) -> pb.DeleteScheduleResponse:
        await self.schedules.delete(request.name)
        return pb.DeleteScheduleResponse()

    @unary
    async def PauseSchedule(
        self, request: pb.PauseScheduleRequest, context: Ctx
    ) -> pb.PauseScheduleResponse:
        paused = await self.schedules.set_paused(request.name, paused=True)
        return pb.PauseScheduleResponse(schedule=sc.schedule(paused))

    @unary
    async def ResumeSchedule(
        self, request: pb.ResumeScheduleRequest, context: Ctx
    ) -> pb.ResumeScheduleResponse:
        resumed = await self.schedules.set_paused(request.name, paused=False)
        return pb.ResumeScheduleResponse(schedule=sc.schedule(resumed))

    @unary
    async def TriggerSchedule(
        self, request: pb.TriggerScheduleRequest, context: Ctx
    ) -> pb.TriggerScheduleResponse:
        schedule, task = await self.schedules.trigger(request.name)
        return pb.TriggerScheduleResponse(
            schedule=sc.schedule(schedule), task=convert.task(task, full=False)
        )

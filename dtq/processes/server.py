"""The `dtq server` process: a stateless gRPC API server.

Serves TaskService, WorkerService, AdminService, grpc.health.v1.Health and
server reflection on one port, plus /metrics, /health and /ready on the
metrics port. SIGTERM: report NOT_SERVING, tell workers to reconnect elsewhere,
let calls finish for `DTQ_SERVER_GRACE` seconds, stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from dtq import tracing
from dtq.adapters.jwt_tokens import JwtVerifier
from dtq.adapters.pg_api_keys import PgApiKeys
from dtq.adapters.pg_audit import PgAuditLog
from dtq.adapters.pg_limits import PgLimits
from dtq.adapters.pg_queues import PgQueues
from dtq.adapters.pg_schedules import PgSchedules
from dtq.adapters.pg_tenants import PgTenants
from dtq.adapters.redis_limits import RedisBuckets
from dtq.adapters.redis_notify import RedisNotifier
from dtq.api import server as grpc_server
from dtq.api.auth import Authentication
from dtq.app.admin import Admin
from dtq.app.audit import Audit
from dtq.app.dispatch import Dispatcher
from dtq.app.identity import Identity
from dtq.app.limits import LimitsCache, Quotas
from dtq.app.limits_admin import LimitSettings
from dtq.app.presence import Presence
from dtq.app.queue_cap import QueueCap
from dtq.app.schedules import Schedules
from dtq.app.streams import Streams
from dtq.app.tasks import Tasks
from dtq.app.tenants import TenantBook
from dtq.domain.errors import DtqError
from dtq.ops_http import HealthBoard, serve_ops
from dtq.processes.core import Core, build_core, stop_on_signals, watch_dependencies
from dtq.settings import Settings

log = logging.getLogger(__name__)


async def flush_deferred(tasks: Tasks, every: float = 0.25) -> None:
    """Index tasks accepted while Redis was down, as soon as it is back."""
    while True:
        await asyncio.sleep(every)
        with contextlib.suppress(DtqError):
            await tasks.flush_deferred()


def tokens(settings: Settings) -> JwtVerifier | None:
    if not settings.auth_jwks:
        return None
    return JwtVerifier(
        settings.auth_jwks,
        settings.auth_issuer,
        settings.auth_audience,
        settings.auth_role_claim,
        settings.auth_subject_claim,
        settings.auth_queues_claim,
        settings.auth_leeway,
        settings.auth_tenant_claim,
    )


async def rate_limits(
    settings: Settings, core: Core, dispatcher: Dispatcher
) -> tuple[LimitsCache, Quotas]:
    """The limits every server reads, the submit checks, the dispatch rates."""
    limits = LimitsCache(PgLimits(core.pg), settings.limits_refresh)
    with contextlib.suppress(DtqError):  # else at the next refresh
        await limits.load()
    core.leasing.rates_of = limits.rates_of
    core.leasing.share_of = limits.share_of
    core.leasing.on_throttled.append(dispatcher.throttled)
    quotas = Quotas(
        limits,
        RedisBuckets(core.queue.calls),
        fail_open=settings.rate_limit_failure == "open",
        count_refresh=settings.queued_count_refresh,
    )
    return limits, quotas


async def serve(settings: Settings, ready: asyncio.Event | None = None) -> None:
    tracing.setup("dtq-server")
    auth = Authentication()
    server, port = grpc_server.listening(settings, auth)  # first: a taken port stops it here
    board = HealthBoard("server")
    ops = serve_ops(board, settings)
    core = build_core(settings)
    notifier = RedisNotifier(core.redis, ready=True, cancels=True)
    dispatcher = Dispatcher(
        core.leasing, settings.worker_poll_interval, 2 * settings.heartbeat_interval
    )
    queue_cap = QueueCap(core.index, settings.max_queues)
    limits, quotas = await rate_limits(settings, core, dispatcher)
    tenants = TenantBook(PgTenants(core.pg), core.clock)
    tasks = Tasks(
        core.store,
        core.queue,
        core.clock,
        core.limits,
        watches=notifier,
        on_ready=[dispatcher.notify],
        queue_cap=queue_cap,
        quotas=quotas,
        tenants=tenants,
    )
    admin = Admin(
        core.store,
        core.queue,
        core.index,
        core.workers,
        core.clock,
        settings.heartbeat_interval,
        PgQueues(core.pg),
        on_deleted=[queue_cap.forget],
        max_workers=settings.max_workers,
    )
    presence = Presence(core.workers, core.clock, lambda: list(dispatcher.sessions.values()))
    streams = Streams(
        core.leasing, dispatcher, core.workers, core.store, core.clock, presence, admin.room_for
    )
    notifier.on_ready.append(dispatcher.notify)
    notifier.on_cancel.append(dispatcher.cancel)
    notifier.on_resync.append(dispatcher.sweep)
    auth.audit = Audit(PgAuditLog(core.pg), core.clock)
    schedules = Schedules(PgSchedules(core.pg), tasks, core.clock, core.limits)
    health = grpc_server.add_services(
        server,
        tasks,
        admin,
        auth.audit,
        core.leasing,
        streams,
        settings.heartbeat_interval,
        LimitSettings(limits.store, limits),
        tenants,
        schedules,
    )

    stop = asyncio.Event()
    stop_on_signals(stop)
    notifier.start()
    dispatcher.start()
    loop = asyncio.get_running_loop()
    loops = [
        loop.create_task(watch_dependencies(core, board)),
        loop.create_task(flush_deferred(tasks)),
        loop.create_task(presence.run()),
        loop.create_task(limits.run()),
    ]
    if settings.auth == "on":
        auth.identity = Identity(
            PgApiKeys(core.pg),
            core.clock,
            tokens(settings),
            cache_seconds=settings.auth_cache_seconds,
        )
        loops.append(loop.create_task(auth.identity.record_use()))
    await server.start()
    await grpc_server.serving(health)
    log.info("server_started", extra={"address": f"{settings.server_host}:{port}"})
    if ready:
        ready.set()

    await stop.wait()
    log.info("server_stopping", extra={"grace_seconds": settings.server_grace})
    board.stopping = True
    await health.enter_graceful_shutdown()
    dispatcher.drain_all()
    await server.stop(settings.server_grace)
    for part in (dispatcher.stop(), notifier.stop()):
        await part
    for loop_task in loops:
        loop_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop_task
    if ops:
        ops.stop()
    await core.close()
    log.info("server_stopped")

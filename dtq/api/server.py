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

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from dtq import tracing
from dtq.adapters.pg_queues import PgQueues
from dtq.adapters.redis_notify import RedisNotifier
from dtq.api.admin_servicer import AdminServicer
from dtq.api.malformed import MalformedRequests
from dtq.api.rpc_tracing import server_interceptors
from dtq.api.task_servicer import TaskServicer
from dtq.api.worker_servicer import WorkerServicer
from dtq.app.admin import Admin
from dtq.app.dispatch import Dispatcher
from dtq.app.presence import Presence
from dtq.app.streams import Streams
from dtq.app.tasks import Tasks
from dtq.domain.errors import DtqError
from dtq.listen import ListenError, PortInUse, port_free
from dtq.ops_http import HealthBoard, serve_ops
from dtq.settings import Settings
from dtq.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    task_service_pb2,
    task_service_pb2_grpc,
    worker_service_pb2,
    worker_service_pb2_grpc,
)
from dtq.wiring import build_core, stop_on_signals, watch_dependencies

log = logging.getLogger(__name__)
MIB = 1024 * 1024
SERVICES = [
    task_service_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name,
    worker_service_pb2.DESCRIPTOR.services_by_name["WorkerService"].full_name,
    admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
]
OPTIONS = [
    ("grpc.max_receive_message_length", 64 * MIB),
    ("grpc.max_send_message_length", 64 * MIB),
    # Above Envoy's 60 KiB header limit: a long REST URL (copied into
    # x-envoy-original-path) reaches the handlers, which say what is wrong with it,
    # rather than a RESOURCE_EXHAUSTED from the metadata limit (8 KiB by default).
    ("grpc.max_metadata_size", 128 * 1024),
    ("grpc.absolute_max_metadata_size", 128 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
]


async def flush_deferred(tasks: Tasks, every: float = 0.25) -> None:
    """Index tasks accepted while Redis was down, as soon as it is back."""
    while True:
        await asyncio.sleep(every)
        with contextlib.suppress(DtqError):
            await tasks.flush_deferred()


def _listen(server: grpc.aio.Server, host: str, port: int, shared: bool) -> int:
    """Bind the gRPC port. Checked first (unless `shared` by a server group on
    purpose): gRPC would log its own multi-line error for a taken port."""
    if not shared and port and not port_free(host, port):
        raise PortInUse("gRPC port", port, "server_port")
    try:
        got = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:  # grpcio raises where it used to return 0
        got = 0
    if got:
        return got
    if not port_free(host, port):
        raise PortInUse("gRPC port", port, "server_port")
    raise ListenError(f"cannot listen on {host}:{port}")


async def serve(settings: Settings, ready: asyncio.Event | None = None) -> None:
    tracing.setup("dtq-server")
    # A second server on a taken port must fail, not steal calls, unless it is
    # one of a `dtq server --processes N` group, which share the port on purpose.
    options = [*OPTIONS, ("grpc.so_reuseport", int(settings.server_reuseport))]
    interceptors = [MalformedRequests(), *server_interceptors()]
    server = grpc.aio.server(options=options, interceptors=interceptors)
    # Ports first: a taken one stops the process before it opens anything else.
    port = _listen(server, settings.server_host, settings.server_port, settings.server_reuseport)
    board = HealthBoard("server")
    ops = serve_ops(board, settings)
    core = build_core(settings)
    notifier = RedisNotifier(core.redis, ready=True, cancels=True)
    dispatcher = Dispatcher(core.leasing, settings.worker_poll_interval)
    tasks = Tasks(core.store, core.queue, core.clock, core.limits, notifier, [dispatcher.notify])
    admin = Admin(
        core.store,
        core.queue,
        core.queue,
        core.clock,
        settings.heartbeat_interval,
        PgQueues(core.store),
    )
    presence = Presence(core.queue, core.clock, lambda: list(dispatcher.sessions.values()))
    streams = Streams(core.leasing, dispatcher, core.queue, core.store, core.clock, presence)
    notifier.on_ready.append(dispatcher.notify)
    notifier.on_cancel.append(dispatcher.cancel)
    notifier.on_resync.append(dispatcher.sweep)

    task_service_pb2_grpc.add_TaskServiceServicer_to_server(TaskServicer(tasks), server)
    worker_service_pb2_grpc.add_WorkerServiceServicer_to_server(
        WorkerServicer(admin, core.leasing, streams, settings.heartbeat_interval), server
    )
    admin_service_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(admin), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    stop = asyncio.Event()
    stop_on_signals(stop)
    notifier.start()
    dispatcher.start()
    watcher = asyncio.get_running_loop().create_task(watch_dependencies(core, board))
    catch_up = asyncio.get_running_loop().create_task(flush_deferred(tasks))
    live = asyncio.get_running_loop().create_task(presence.run())
    await server.start()
    for name in ["", *SERVICES]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("server_started", extra={"address": f"{settings.server_host}:{port}"})
    if ready:
        ready.set()

    await stop.wait()
    log.info("server_stopping", extra={"grace_seconds": settings.server_grace})
    board.stopping = True
    await health_servicer.enter_graceful_shutdown()
    dispatcher.drain_all()
    await server.stop(settings.server_grace)
    for part in (dispatcher.stop(), notifier.stop()):
        await part
    for loop_task in (watcher, catch_up, live):
        loop_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop_task
    if ops:
        ops.stop()
    await core.close()
    log.info("server_stopped")

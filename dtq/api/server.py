"""The gRPC server of `dtq server`: its options, port, services and health.

Built around use cases it is given (see `dtq.processes.server`, which makes
them); it knows nothing of the adapters behind them.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from dtq import tls
from dtq.api.admin_servicer import AdminServicer
from dtq.api.auth import Authentication
from dtq.api.malformed import MalformedRequests
from dtq.api.rpc_tracing import server_interceptors
from dtq.api.task_servicer import TaskServicer
from dtq.api.worker_servicer import WorkerServicer
from dtq.app.admin import Admin
from dtq.app.audit import Audit
from dtq.app.leasing import Leasing
from dtq.app.limits_admin import LimitSettings
from dtq.app.schedules import Schedules
from dtq.app.streams import Streams
from dtq.app.tasks import Tasks
from dtq.app.tenants import TenantBook
from dtq.domain.validation import message_limit
from dtq.listen import ListenError, PortInUse, loopback, port_free
from dtq.settings import Settings
from dtq.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    task_service_pb2,
    task_service_pb2_grpc,
    worker_service_pb2,
    worker_service_pb2_grpc,
)

MIB = 1024 * 1024
SERVICES = [
    task_service_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name,
    worker_service_pb2.DESCRIPTOR.services_by_name["WorkerService"].full_name,
    admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
]
OPTIONS = [
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


def listening(settings: Settings, auth: Authentication) -> tuple[grpc.aio.Server, int]:
    """A server bound to its port (checked first: a taken port stops the
    process before it opens anything else), with no services yet. With
    authentication off it listens on loopback only."""
    if settings.auth == "off" and not loopback(settings.server_host):
        raise ListenError(
            f"authentication is off (DTQ_AUTH=off), so the server listens on loopback only, "
            f"not {settings.server_host}: set DTQ_AUTH=on and give clients API keys "
            f"(dtq apikey create)"
        )
    # A second server on a taken port must fail, not steal calls, unless it is
    # one of a `dtq server --processes N` group, which share the port on purpose.
    limit = message_limit(settings.max_payload_bytes)
    options = [
        *OPTIONS,
        ("grpc.so_reuseport", int(settings.server_reuseport)),
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", 64 * MIB),  # a full page of large results
    ]
    interceptors = [MalformedRequests(), *server_interceptors(), auth]
    server = grpc.aio.server(options=options, interceptors=interceptors)
    credentials = None
    if settings.tls_cert or settings.tls_key:
        if not (settings.tls_cert and settings.tls_key):
            raise ListenError("TLS needs both DTQ_TLS_CERT and DTQ_TLS_KEY")
        try:
            credentials = tls.server_credentials(
                settings.tls_cert, settings.tls_key, settings.tls_client_ca
            )
        except ValueError as error:
            raise ListenError(f"TLS: {error}") from None
    port = _listen(
        server, settings.server_host, settings.server_port, settings.server_reuseport, credentials
    )
    return server, port


def _listen(
    server: grpc.aio.Server,
    host: str,
    port: int,
    shared: bool,
    credentials: grpc.ServerCredentials | None = None,
) -> int:
    """Bind the gRPC port. Checked first (unless `shared` by a server group on
    purpose): gRPC would log its own multi-line error for a taken port."""
    if not shared and port and not port_free(host, port):
        raise PortInUse("gRPC port", port, "server_port")
    try:
        address = f"{host}:{port}"
        if credentials is None:
            got = server.add_insecure_port(address)
        else:
            got = server.add_secure_port(address, credentials)
    except RuntimeError:  # grpcio raises where it used to return 0
        got = 0
    if got:
        return got
    if not port_free(host, port):
        raise PortInUse("gRPC port", port, "server_port")
    raise ListenError(f"cannot listen on {host}:{port}")


def add_services(
    server: grpc.aio.Server,
    tasks: Tasks,
    admin: Admin,
    audit: Audit,
    leasing: Leasing,
    streams: Streams,
    heartbeat_interval: float,
    limits: LimitSettings,
    tenants: TenantBook,
    schedules: Schedules,
) -> health.aio.HealthServicer:
    """TaskService, WorkerService, AdminService, health and reflection."""
    task_service_pb2_grpc.add_TaskServiceServicer_to_server(TaskServicer(tasks), server)
    worker_service_pb2_grpc.add_WorkerServiceServicer_to_server(
        WorkerServicer(admin, leasing, streams, heartbeat_interval, tasks), server
    )
    admin_service_pb2_grpc.add_AdminServiceServicer_to_server(
        AdminServicer(admin, audit, limits, tenants, schedules), server
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    return health_servicer


async def serving(health_servicer: health.aio.HealthServicer) -> None:
    for name in ["", *SERVICES]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)

"""The `dtq worker` process: load handlers, connect, run until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc

from dtq import metrics, tls, tracing
from dtq.ops_http import HealthBoard, serve_ops
from dtq.settings import Settings
from dtq.worker.child import ChildSpec
from dtq.worker.execution import Executor
from dtq.worker.loader import LoadError, load
from dtq.worker.pools import HandlerPool
from dtq.worker.process_pool import ProcessPool
from dtq.worker.runtime import Worker, WorkerConfig
from dtq.worker.thread_pool import ThreadPool

log = logging.getLogger(__name__)


def client_tls(settings: Settings) -> grpc.ChannelCredentials | None:
    """The clients' TLS credentials, when DTQ_TLS_CA is set."""
    if not settings.tls_ca:
        return None
    try:
        return tls.channel_credentials(settings.tls_ca, settings.tls_cert, settings.tls_key)
    except ValueError as error:
        raise SystemExit(f"dtq worker: TLS: {error}") from None


async def run(settings: Settings, modules: list[str], worker_id: str | None = None) -> int:
    tracing.setup("dtq-worker")
    metrics.cap_labels(settings.metrics_max_queues, settings.metrics_max_types)
    try:
        app = load(modules)
    except LoadError as error:
        log.error("handlers_not_loaded", extra={"error": str(error)})
        return 2
    board = HealthBoard("worker")
    board.set("server", False, "connecting")
    ops = serve_ops(board, settings)
    executor = Executor(app, make_pool(settings, modules))
    worker = Worker(
        WorkerConfig(
            server_address=settings.server_address,
            queues=settings.worker_queues,
            concurrency=settings.worker_concurrency,
            prefetch=settings.worker_prefetch,
            worker_id=worker_id or "",
            shutdown_grace=settings.worker_shutdown_grace,
            metrics_address=ops.address if ops else "",
            api_key=settings.api_key.get_secret_value() if settings.api_key else None,
            credentials=client_tls(settings),
        ),
        executor,
        board,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    log.info(
        "worker_starting",
        extra={
            "server": settings.server_address,
            "types": sorted(app.handlers),
            "concurrency": settings.worker_concurrency,
            "prefetch": settings.worker_prefetch,
            "pool": settings.worker_pool,
        },
    )
    try:
        return await worker.run()
    finally:
        board.stopping = True
        executor.close()
        if ops:
            ops.stop()


def make_pool(settings: Settings, modules: list[str]) -> HandlerPool:
    """Threads of this process, or one child process per slot (`--pool process`)."""
    if settings.worker_pool == "process":
        spec = ChildSpec(modules, settings.log_level, settings.log_format)
        return ProcessPool(settings.worker_concurrency, spec)
    return ThreadPool(settings.worker_concurrency)

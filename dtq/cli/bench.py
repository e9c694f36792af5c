"""`dtq bench`: measure a running system (see dtq/bench/)."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer

from dtq.cli.client import ServerOpt, bad_input, fail

WORKLOADS_HELP = (
    "Comma-separated: burst, latency, fan-in, backlog (backlog leaves its tasks), client "
    "(--threads application threads each calling dtq.Client.submit), client-latency (one "
    "thread calling it at --rate)."
)


def bench(
    server: ServerOpt = None,
    tasks: Annotated[int, typer.Option(help="Tasks per burst.", min=1)] = 20_000,
    workloads: Annotated[str, typer.Option(help=WORKLOADS_HELP)] = "burst,latency,fan-in",
    queue: Annotated[
        str, typer.Option(help="Queue to use (workers must take it: dtq worker -q QUEUE).")
    ] = "bench",
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    callers: Annotated[int, typer.Option(help="Concurrent SubmitTask callers.", min=1)] = 64,
    connections: Annotated[
        int,
        typer.Option(
            help="Client connections the calls are spread over (as several client "
            "processes would; a `dtq server --processes N` group shares them out).",
            min=1,
        ),
    ] = 16,
    batch_size: Annotated[int, typer.Option(help="Tasks per BatchSubmitTasks.", min=1)] = 500,
    batch_callers: Annotated[int, typer.Option(help="Concurrent batch calls.", min=1)] = 4,
    rate: Annotated[float, typer.Option(help="Latency: tasks per second.", min=0.1)] = 200.0,
    duration: Annotated[float, typer.Option(help="Latency: seconds.", min=0.1)] = 15.0,
    rest: Annotated[
        str | None, typer.Option(help="Envoy URL for REST latency, e.g. http://127.0.0.1:8080.")
    ] = None,
    rest_rate: Annotated[float, typer.Option(help="REST requests per second.", min=0.1)] = 500.0,
    idle_workers: Annotated[int, typer.Option(help="Fan-in: idle worker streams.", min=1)] = 200,
    idle_seconds: Annotated[float, typer.Option(help="Fan-in: CPU sampling seconds.")] = 10.0,
    server_pid: Annotated[
        int | None, typer.Option(help="Server pid for RSS/CPU (else --server-metrics).")
    ] = None,
    server_metrics: Annotated[
        str, typer.Option(help="Server /metrics URL (process_* metrics) when no pid is given.")
    ] = "http://127.0.0.1:9090/metrics",
    backlog_tasks: Annotated[int, typer.Option("--backlog", help="Backlog size.", min=1)] = (
        1_000_000
    ),
    timeout: Annotated[float, typer.Option(help="Seconds to wait for completions.")] = 600.0,
    threads: Annotated[
        int, typer.Option(help="Client: application threads, each submitting one at a time.", min=1)
    ] = 64,
    coalesce: Annotated[
        bool, typer.Option(help="Client: coalesce concurrent submits into batches.")
    ] = True,
    client_connections: Annotated[
        int, typer.Option(help="Client: dtq.Client connections to the server.", min=1)
    ] = 1,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="DTQ_API_KEY",
            show_envvar=False,
            help="API key (DTQ_API_KEY) for auth-on servers.",
        ),
    ] = None,
) -> None:
    """Benchmark a running dtq system (server, workers taking QUEUE with the noop handler)."""
    from dtq.bench import backlog, burst, client, fanin, latency, report, runner
    from dtq.bench.api import BenchError
    from dtq.bench.stats import ProcessProbe
    from dtq.settings import Settings

    chosen = tuple(w.strip() for w in workloads.split(",") if w.strip())
    unknown = sorted(set(chosen) - set(runner.WORKLOADS))
    if unknown or not chosen:
        bad_input(f"unknown workloads {unknown}: choose from {', '.join(runner.WORKLOADS)}")
    settings = Settings()
    lat = latency.LatencyConfig(rate, duration, rest, rest_rate, timeout)
    config = runner.BenchConfig(
        server=server or settings.server_address,
        queue=queue,
        workloads=chosen,
        burst=burst.BurstConfig(tasks, callers, batch_size, batch_callers, timeout),
        latency=lat,
        fanin=fanin.FanInConfig(idle_workers, idle_seconds, lat),
        backlog=backlog.BacklogConfig(backlog_tasks, settings.redis_dsn, settings.database_dsn),
        client=client.ClientConfig(
            tasks, threads, coalesce, client_connections, rate, duration, timeout
        ),
        probe=ProcessProbe(server_pid, None if server_pid else server_metrics),
        connections=connections,
        api_key=api_key,
    )
    try:
        results = asyncio.run(runner.run(config))
    except BenchError as error:
        fail(str(error))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    typer.echo(json.dumps(results, indent=2) if as_json else report.table(results))


def register(app: typer.Typer) -> None:
    app.command()(bench)

"""Operator commands: `dtq queue ...`, `dtq worker list`, `dtq system health`."""

from __future__ import annotations

import functools
from typing import Annotated

import typer

from dtq.cli import live, output
from dtq.cli.client import Target, connect, remote
from dtq.cli.output import JsonOpt
from dtq.cli.processes import worker_app
from dtq.v1 import admin_service_pb2 as pb

queue_app = typer.Typer(help="Queue statistics, pause, resume and delete.", no_args_is_help=True)
system_app = typer.Typer(help="System health.", no_args_is_help=True)

QueueArg = Annotated[str, typer.Argument(metavar="QUEUE", help="Queue name.")]
WORKER_PAGE = 1000


@queue_app.command()
@remote
def stats(
    queue: Annotated[
        str | None, typer.Option(metavar="NAME", help="Only this queue [default: all].")
    ] = None,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Refresh in place until Ctrl-C.")
    ] = False,
    interval: Annotated[
        float, typer.Option(metavar="S", min=0.1, help="With --watch: seconds between refreshes.")
    ] = 2.0,
    count: Annotated[
        int | None,
        typer.Option(metavar="N", min=1, help="With --watch: stop after N refreshes."),
    ] = None,
    json_out: JsonOpt = False,
    *,
    target: Target,
) -> None:
    """Depth, running, scheduled, dead-lettered and throughput of each queue.

    --watch refreshes the table in place on a terminal, and prints it again
    each time in a pipe; with --json, one JSON line per refresh."""
    request = pb.GetQueueStatsRequest(queue=queue or "")
    with connect(target) as client:
        if watch or count is not None:
            fetch = functools.partial(client.call, lambda s: s.admin.GetQueueStats, request)
            live.watch_stats(fetch, interval, count, json_out)
            return
        reply = client.call(lambda s: s.admin.GetQueueStats, request)
    if json_out:
        output.emit_json(reply)
    else:
        output.queue_table(reply.queues)


@queue_app.command()
@remote
def pause(queue: QueueArg, json_out: JsonOpt = False, *, target: Target) -> None:
    """Stop handing out tasks of QUEUE; submissions are still accepted."""
    with connect(target) as client:
        reply = client.call(lambda s: s.admin.PauseQueue, pb.PauseQueueRequest(queue=queue))
    if json_out:
        output.emit_json(reply)
    else:
        output.queue_table([reply.stats], f"queue {queue} paused")


@queue_app.command()
@remote
def resume(queue: QueueArg, json_out: JsonOpt = False, *, target: Target) -> None:
    """Hand out tasks of a paused QUEUE again."""
    with connect(target) as client:
        reply = client.call(lambda s: s.admin.ResumeQueue, pb.ResumeQueueRequest(queue=queue))
    if json_out:
        output.emit_json(reply)
    else:
        output.queue_table([reply.stats], f"queue {queue} resumed")


@queue_app.command()
@remote
def delete(queue: QueueArg, json_out: JsonOpt = False, *, target: Target) -> None:
    """Forget an empty QUEUE (its name, pause flag and statistics)."""
    with connect(target) as client:
        reply = client.call(lambda s: s.admin.DeleteQueue, pb.DeleteQueueRequest(queue=queue))
    if json_out:
        output.emit_json(reply)
    else:
        typer.echo(f"queue {queue} deleted")


@remote
def list_workers(json_out: JsonOpt = False, *, target: Target) -> None:
    """Workers known to the system, most recently seen first."""
    everyone = pb.ListWorkersResponse()
    with connect(target) as client:
        request = pb.ListWorkersRequest(page_size=WORKER_PAGE)
        while True:
            reply = client.call(lambda s: s.admin.ListWorkers, request)
            everyone.workers.extend(reply.workers)
            if not reply.next_page_token:
                break
            request.page_token = reply.next_page_token
    if json_out:
        output.emit_json(everyone)
    else:
        output.worker_table(everyone.workers)


@system_app.command()
@remote
def health(json_out: JsonOpt = False, *, target: Target) -> None:
    """Health of PostgreSQL, Redis and the workers; exit 1 when unhealthy."""
    with connect(target) as client:
        reply = client.call(lambda s: s.admin.GetSystemHealth, pb.GetSystemHealthRequest())
    if json_out:
        output.emit_json(reply)
    else:
        output.health(reply)
    if reply.status == pb.HEALTH_STATUS_UNHEALTHY:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(queue_app, name="queue")
    worker_app.command("list")(list_workers)
    app.add_typer(system_app, name="system")

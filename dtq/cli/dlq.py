"""`dtq dlq ...`: list, inspect, re-queue and purge dead-lettered tasks."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from dtq.cli import output
from dtq.cli.client import (
    Client,
    Target,
    bad_input,
    connect,
    fail,
    remote,
)
from dtq.cli.output import JsonOpt
from dtq.cli.tasks import IdArg, fetch_page, show_task
from dtq.v1 import admin_service_pb2, task_pb2, task_service_pb2

dlq_app = typer.Typer(
    help="The dead letter queue: list, inspect, re-queue and purge.", no_args_is_help=True
)
DEAD = task_pb2.Task.State.STATE_DEAD_LETTERED
BULK_DEADLINE = 120.0  # seconds: re-queueing or purging a big dead letter queue takes a while

TypeOpt = Annotated[str | None, typer.Option("--type", metavar="TYPE", help="Only this task type.")]


@dlq_app.command("list")
@remote
def list_dead(
    queue: Annotated[
        str | None, typer.Option(metavar="NAME", help="Only this queue [default: all].")
    ] = None,
    task_type: TypeOpt = None,
    page: Annotated[int, typer.Option(min=1, help="Page number, from 1.")] = 1,
    size: Annotated[int, typer.Option(min=1, max=1000, help="Tasks per page.")] = 20,
    json_out: JsonOpt = False,
    *,
    target: Target,
) -> None:
    """List dead-lettered tasks, newest first, with their last error."""
    request = task_service_pb2.ListTasksRequest(
        page_size=size, state=DEAD, type=task_type or "", queue=queue or ""
    )
    with connect(target) as client:
        reply = fetch_page(client, request, page)
    if json_out:
        output.emit_json(reply)
    else:
        output.dead_letter_table(reply, page)


@dlq_app.command()
@remote
def inspect(task_id: IdArg, json_out: JsonOpt = False, *, target: Target) -> None:
    """Show a task in full: payload, attempts, last error and its traceback."""
    request = task_service_pb2.GetTaskRequest(id=task_id, view=task_pb2.TASK_VIEW_FULL)
    with connect(target) as client:
        reply = client.call(lambda s: s.tasks.GetTask, request)
    if json_out:
        output.emit_json(reply)
    else:
        output.dead_letter_detail(reply.task)


@dlq_app.command()
@remote
def requeue(
    task_id: Annotated[
        str | None, typer.Argument(metavar="[ID]", help="The dead-lettered task (UUID).")
    ] = None,
    every: Annotated[
        bool, typer.Option("--all", help="Every dead-lettered task (of --queue, --type).")
    ] = False,
    queue: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="With --all: only this queue [default: all]."),
    ] = None,
    task_type: TypeOpt = None,
    json_out: JsonOpt = False,
    *,
    target: Target,
) -> None:
    """Queue dead-lettered tasks to run again now, with a fresh retry budget."""
    if (task_id is None) != every:
        bad_input("give either a task ID or --all")
    if task_id is not None and (queue or task_type):
        bad_input("--queue and --type select tasks for --all; not with an ID")
    with connect(target) as client:
        if task_id is not None:
            _requeue_one(client, task_id, json_out)
        else:
            _requeue_all(client, queue, task_type or "", json_out)


def _requeue_one(client: Client, task_id: str, json_out: bool) -> None:
    request = task_service_pb2.GetTaskRequest(id=task_id, view=task_pb2.TASK_VIEW_BASIC)
    task = client.call(lambda s: s.tasks.GetTask, request).task
    if task.state != DEAD:
        fail(f"task {task_id} is {output.state_name(task.state)}, not dead-lettered")
    retry = task_service_pb2.RetryTaskRequest(id=task_id)
    show_task(client.call(lambda s: s.tasks.RetryTask, retry), "Task queued again", json_out)


def _requeue_all(client: Client, queue: str | None, task_type: str, json_out: bool) -> None:
    stats = [] if queue else client.api.queue_stats()
    queues = [queue] if queue else [q.queue for q in stats if q.dead_lettered]
    total = admin_service_pb2.RequeueDeadLettersResponse()
    for name in queues:
        request = admin_service_pb2.RequeueDeadLettersRequest(queue=name, task_type=task_type)
        reply = client.call(lambda s: s.admin.RequeueDeadLetters, request, BULK_DEADLINE)
        total.requeued_count += reply.requeued_count
        if not json_out and reply.requeued_count:
            typer.echo(f"requeued {reply.requeued_count} dead-lettered task(s) from queue {name}")
    if json_out:
        output.emit_json(total)
    elif not total.requeued_count:
        typer.echo("no dead-lettered tasks to requeue")


@dlq_app.command()
@remote
def purge(
    queue: Annotated[str, typer.Option(metavar="NAME", help="The queue to purge.")],
    task_type: TypeOpt = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask (needed when not on a terminal).")
    ] = False,
    json_out: JsonOpt = False,
    *,
    target: Target,
) -> None:
    """Delete the dead-lettered tasks of a queue for good, after confirmation."""
    if not yes and not sys.stdin.isatty():
        fail("refusing to purge without --yes: there is no terminal to confirm on")
    request = admin_service_pb2.PurgeDeadLettersRequest(queue=queue, task_type=task_type or "")
    with connect(target) as client:
        if not yes:
            request.validate_only = True
            count = client.call(lambda s: s.admin.PurgeDeadLetters, request).purged_count
            request.validate_only = False
            if count:
                _confirm(count, queue, task_type)
        request.confirm = True
        reply = client.call(lambda s: s.admin.PurgeDeadLetters, request, BULK_DEADLINE)
    if json_out:
        output.emit_json(reply)
    else:
        typer.echo(f"purged {reply.purged_count} dead-lettered task(s) from queue {queue}")


def _confirm(count: int, queue: str, task_type: str | None) -> None:
    kind = f" of type {task_type}" if task_type else ""
    question = f"Purge {count} dead-lettered tasks{kind} from queue {queue}?"
    try:
        agreed = typer.confirm(question, default=False, err=True)
    except typer.Abort:  # end of input
        agreed = False
    if not agreed:
        fail("nothing purged")


def register(app: typer.Typer) -> None:
    app.add_typer(dlq_app, name="dlq")

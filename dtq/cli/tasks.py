"""`dtq task ...`: submit, get, list, cancel, retry and watch tasks."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from google.protobuf import struct_pb2

from dtq.cli import live, output
from dtq.cli.client import (
    INTERRUPTED_EXIT,
    Client,
    Target,
    bad_input,
    connect,
    fail,
    remote,
)
from dtq.cli.output import JsonOpt
from dtq.cli.priority import PRIORITY, PriorityChoice
from dtq.v1 import task_pb2, task_service_pb2

task_app = typer.Typer(help="Submit, inspect and steer tasks.", no_args_is_help=True)
State = task_pb2.Task.State
STATE_ALIASES = {"RETRYING": "FAILED", "DEAD": "DEAD_LETTERED", "CANCELED": "CANCELLED"}
STATE_NAMES = [v.name.removeprefix("STATE_") for v in State.DESCRIPTOR.values if v.number]

IdArg = Annotated[str, typer.Argument(metavar="ID", help="Task id (UUID).")]


# -- local input ------------------------------------------------------------------


def parse_payload(text: str) -> struct_pb2.Struct:
    """A JSON object from the argument, `@file.json` or `-` (stdin)."""
    if text == "-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as error:
            bad_input(f"cannot read PAYLOAD file {text[1:]}: {error.strerror}")
    try:
        value: Any = json.loads(text)
    except json.JSONDecodeError as error:
        bad_input(f"PAYLOAD is not valid JSON: {error}")
    if not isinstance(value, dict):
        bad_input(f"PAYLOAD must be a JSON object, not {type(value).__name__}")
    payload = struct_pb2.Struct()
    payload.update(value)
    return payload


def parse_time(text: str) -> datetime:
    """ISO 8601; without an offset it is local time."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        bad_input(f"--scheduled-at: {text!r} is not an ISO 8601 time, e.g. 2024-01-15T10:00:00Z")
    return moment if moment.tzinfo else moment.astimezone()


def parse_state(text: str) -> State.ValueType:
    """`completed`, `dead-lettered`, `STATE_PENDING`... (any case)."""
    name = text.strip().upper().replace("-", "_").removeprefix("STATE_")
    name = STATE_ALIASES.get(name, name)
    if name not in STATE_NAMES:
        names = ", ".join(n.lower() for n in STATE_NAMES)
        bad_input(f"--status: unknown state {text!r}; one of {names}")
    return State.Value(f"STATE_{name}")


def _submit_request(
    task_type: str,
    payload: str,
    priority: PriorityChoice | None,
    timeout: float | None,
    scheduled_at: str | None,
    max_retries: int | None,
    queue: str | None,
    idempotency_key: str | None,
    lease_duration: float | None,
    fairness_key: str | None = None,
) -> task_service_pb2.SubmitTaskRequest:
    request = task_service_pb2.SubmitTaskRequest(
        type=task_type,
        payload=parse_payload(payload),
        priority=PRIORITY[priority] if priority else task_pb2.PRIORITY_UNSPECIFIED,
        queue=queue or "",
        max_retries=max_retries,
        idempotency_key=idempotency_key or "",
        fairness_key=fairness_key or "",
    )
    if timeout is not None:
        request.timeout.FromNanoseconds(round(timeout * 1e9))
    if lease_duration is not None:
        request.lease_duration.FromNanoseconds(round(lease_duration * 1e9))
    if scheduled_at is not None:
        request.scheduled_at.FromDatetime(parse_time(scheduled_at))
    return request


# -- following a task ---------------------------------------------------------------


def follow(
    client: Client,
    task_id: str,
    on_change: Callable[[task_pb2.Task], None],
    status_line: bool = False,
) -> task_pb2.Task | None:
    """Stream the task's changes until the server ends the stream (a terminal
    state); `status_line`: show a live one on a terminal meanwhile. Ctrl-C
    stops following (exit 130), not the task."""
    stream = client.api.stubs().tasks.WatchTask(task_service_pb2.WatchTaskRequest(id=task_id))
    changes = (message.task for message in stream)
    try:
        if status_line:
            return live.follow_with_status(task_id, changes, on_change)
        last: task_pb2.Task | None = None
        for last in changes:
            on_change(last)
        return last
    except KeyboardInterrupt:
        stream.cancel()
        hint = f"stopped following; task {task_id} goes on (dtq task watch {task_id})"
        typer.echo(hint, err=True)
        raise typer.Exit(INTERRUPTED_EXIT) from None


def require_completed(task_id: str, last: task_pb2.Task | None) -> None:
    """Exit 1 unless the task ended COMPLETED: `--wait` and `watch` gate scripts."""
    if last is None or last.state != State.STATE_COMPLETED:
        ended = output.state_name(last.state) if last else "in an unknown state"
        fail(f"task {task_id} ended {ended}, not completed")


def complete_state(incomplete: str) -> list[str]:
    """Shell completion of --status."""
    names = [n.lower() for n in STATE_NAMES] + ["retrying", "dead"]
    return [n for n in names if n.startswith(incomplete.lower())]


def show_task(reply: Any, title: str, json_out: bool) -> None:
    """A reply holding one `task`: JSON, or a panel titled `title`."""
    if json_out:
        output.emit_json(reply)
    else:
        output.task_detail(reply.task, title)


# -- commands ---------------------------------------------------------------------


@task_app.command()
@remote
def submit(
    task_type: Annotated[
        str, typer.Argument(metavar="TYPE", help="Task type, the handler's name.")
    ],
    payload: Annotated[
        str, typer.Argument(metavar="PAYLOAD", help="JSON object, @file.json, or - for stdin.")
    ] = "{}",
    priority: Annotated[
        PriorityChoice | None,
        typer.Option(case_sensitive=False, help="Priority within the queue [default: medium]."),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(metavar="SECONDS", help="Longest run of one attempt [server default 300]."),
    ] = None,
    scheduled_at: Annotated[
        str | None,
        typer.Option(metavar="ISO8601", help="Run no earlier than this (no offset: local time)."),
    ] = None,
    max_retries: Annotated[
        int | None,
        typer.Option(metavar="N", min=0, help="Retries after the first attempt [server default]."),
    ] = None,
    queue: Annotated[
        str | None, typer.Option(metavar="NAME", help="Queue [default: default].")
    ] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(metavar="KEY", help="Submit at most once per key and queue.")
    ] = None,
    lease_duration: Annotated[
        float | None, typer.Option(metavar="SECONDS", help="Lease length without a heartbeat.")
    ] = None,
    fairness_key: Annotated[
        str | None,
        typer.Option(
            metavar="KEY", help="Fair dispatch key (e.g. a customer id): keys take turns."
        ),
    ] = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="Follow the task to its end (live on a terminal); exit 1 unless it completes.",
        ),
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print only the task id (for scripts).")
    ] = False,
    json_out: JsonOpt = False,
    *,
    target: Target,
) -> None:
    """Submit a task of TYPE with a JSON PAYLOAD.

    Many tasks at once: dtq task submit-batch FILE.jsonl."""
    request = _submit_request(
        task_type,
        payload,
        priority,
        timeout,
        scheduled_at,
        max_retries,
        queue,
        idempotency_key,
        lease_duration,
        fairness_key,
    )
    with connect(target) as client:
        reply = client.call(lambda s: s.tasks.SubmitTask, request)
        title = "Task already submitted (same key)" if reply.deduplicated else "Task submitted"
        if quiet:
            typer.echo(reply.task.id)
        elif not wait:
            show_task(reply, title, json_out)
        if not wait:
            return
        if json_out or quiet:  # JSON: one document, the submission with the task as it ended
            last = follow(client, reply.task.id, reply.task.CopyFrom)
            if json_out and not quiet:
                output.emit_json(reply)
        else:
            output.task_detail(reply.task, title)
            last = follow(client, reply.task.id, output.watch_line, status_line=True)
    require_completed(reply.task.id, last)


@task_app.command()
@remote
def get(task_id: IdArg, json_out: JsonOpt = False, *, target: Target) -> None:
    """Show one task, with its payload and result."""
    with connect(target) as client:
        reply = client.call(lambda s: s.tasks.GetTask, task_service_pb2.GetTaskRequest(id=task_id))
    show_task(reply, "Task", json_out)


def fetch_page(
    client: Client, request: task_service_pb2.ListTasksRequest, page: int
) -> task_service_pb2.ListTasksResponse:
    """Page `page` (from 1), reached by following `next_page_token`s."""
    for _ in range(page - 1):
        reply = client.call(lambda s: s.tasks.ListTasks, request)
        if not reply.next_page_token:
            return task_service_pb2.ListTasksResponse()
        request.page_token = reply.next_page_token
    return client.call(lambda s: s.tasks.ListTasks, request)


@task_app.command("list")
@remote
def list_tasks(
    status: Annotated[
        str | None,
        typer.Option(
            metavar="STATE",
            help="Only this state: pending, completed, dead-lettered...",
            autocompletion=complete_state,
        ),
    ] = None,
    task_type: Annotated[str | None, typer.Option("--type", help="Only this task type.")] = None,
    queue: Annotated[str | None, typer.Option(help="Only this queue.")] = None,
    parent: Annotated[
        str | None, typer.Option(help="Only the children (and chain steps) of this task id.")
    ] = None,
    root: Annotated[str | None, typer.Option(help="Only the tree below this task id.")] = None,
    page: Annotated[int, typer.Option(min=1, help="Page number, from 1.")] = 1,
    size: Annotated[int, typer.Option(min=1, max=1000, help="Tasks per page.")] = 20,
    json_out: JsonOpt = False,
    *,
    target: Target,
) -> None:
    """List tasks, newest first."""
    request = task_service_pb2.ListTasksRequest(
        page_size=size,
        state=parse_state(status) if status else State.STATE_UNSPECIFIED,
        type=task_type or "",
        queue=queue or "",
        parent_id=parent or "",
        root_id=root or "",
    )
    with connect(target) as client:
        reply = fetch_page(client, request, page)
    if json_out:
        output.emit_json(reply)
    else:
        output.task_table(reply, page)


@task_app.command()
@remote
def cancel(task_id: IdArg, json_out: JsonOpt = False, *, target: Target) -> None:
    """Cancel a task that has not finished (a running one is interrupted)."""
    with connect(target) as client:
        request = task_service_pb2.CancelTaskRequest(id=task_id)
        reply = client.call(lambda s: s.tasks.CancelTask, request)
    show_task(reply, "Task cancelled", json_out)


@task_app.command()
@remote
def retry(task_id: IdArg, json_out: JsonOpt = False, *, target: Target) -> None:
    """Run a failed or dead-lettered task again now."""
    with connect(target) as client:
        reply = client.call(
            lambda s: s.tasks.RetryTask, task_service_pb2.RetryTaskRequest(id=task_id)
        )
    show_task(reply, "Task queued again", json_out)


@task_app.command()
@remote
def watch(
    task_id: IdArg,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print only the state the task ended in.")
    ] = False,
    json_out: JsonOpt = False,
    *,
    target: Target,
) -> None:
    """Print each change of state until the task ends (a live status line on a
    terminal); exit 1 unless it completed. --json: one JSON line per change."""

    def show(task: task_pb2.Task) -> None:
        if json_out:
            output.emit_json(task_service_pb2.WatchTaskResponse(task=task), line=True)
        elif not quiet:
            output.watch_line(task)

    with connect(target) as client:
        last = follow(client, task_id, show, status_line=not (json_out or quiet))
    if quiet and last is not None:
        typer.echo(output.state_name(last.state))
    require_completed(task_id, last)


def register(app: typer.Typer) -> None:
    from dtq.cli import batch

    task_app.command("submit-batch")(batch.submit_batch)
    app.add_typer(task_app, name="task")

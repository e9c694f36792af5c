"""`dtq schedule ...`: recurring schedules: create, list, get, delete, pause,
resume, trigger, and sync those declared in code (`@app.periodic`)."""

from __future__ import annotations

import enum
import re
from typing import Annotated

import typer
from google.protobuf import duration_pb2, struct_pb2

from dtq.cli import output, schedule_output
from dtq.cli.client import Client, Target, bad_input, connect, remote
from dtq.cli.output import JsonOpt
from dtq.cli.priority import PRIORITY, PriorityChoice
from dtq.cli.tasks import parse_payload
from dtq.v1 import admin_service_pb2 as pb
from dtq.v1 import schedule_pb2, task_pb2

schedule_app = typer.Typer(
    help="Recurring schedules: cron or interval, fired by the queue manager.",
    no_args_is_help=True,
)
Pb = schedule_pb2.Schedule
NameArg = Annotated[str, typer.Argument(metavar="NAME", help="Schedule name.")]
SPAN_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)?\Z")
UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
PAGE = 1000


class OverlapChoice(enum.StrEnum):
    allow = "allow"
    skip = "skip"
    cancel_previous = "cancel_previous"


class CatchUpChoice(enum.StrEnum):
    skip = "skip"
    one = "one"
    all = "all"


OVERLAP = {
    "allow": Pb.OVERLAP_POLICY_ALLOW,
    "skip": Pb.OVERLAP_POLICY_SKIP,
    "cancel_previous": Pb.OVERLAP_POLICY_CANCEL_PREVIOUS,
}
CATCH_UP = {
    "skip": Pb.CATCH_UP_POLICY_SKIP,
    "one": Pb.CATCH_UP_POLICY_ONE,
    "all": Pb.CATCH_UP_POLICY_ALL,
}


def parse_span(text: str, option: str = "--every") -> float:
    """`30s`, `5m`, `1h`, `2d`, `250ms` or plain seconds."""
    found = SPAN_RE.match(text.strip())
    if not found:
        bad_input(f"{option}: {text!r} is not a duration, e.g. 30s, 5m, 1h")
    return float(found[1]) * UNITS[found[2] or "s"]


def duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def build(
    name: str,
    task_type: str,
    payload: struct_pb2.Struct,
    cron: str = "",
    every: float = 0.0,
    tz: str = "",
    queue: str = "",
    priority: str = "",
    max_retries: int | None = None,
    timeout: float | None = None,
    overlap: str = "skip",
    catch_up: str = "one",
    catch_up_limit: int = 0,
    declared_in_code: bool = False,
) -> schedule_pb2.Schedule:
    """The Schedule message of a command line or an `@app.periodic`."""
    template = schedule_pb2.TaskTemplate(
        type=task_type,
        payload=payload,
        queue=queue,
        priority=PRIORITY[PriorityChoice(priority)] if priority else task_pb2.PRIORITY_UNSPECIFIED,
        max_retries=max_retries,
    )
    if timeout is not None:
        template.timeout.CopyFrom(duration(timeout))
    msg = Pb(
        name=name,
        cron=cron,
        time_zone=tz if cron else "",
        task=template,
        overlap_policy=OVERLAP[overlap],
        catch_up_policy=CATCH_UP[catch_up],
        catch_up_limit=catch_up_limit,
        declared_in_code=declared_in_code,
    )
    if every:
        msg.interval.CopyFrom(duration(every))
    return msg


def show(reply_schedule: schedule_pb2.Schedule, json_out: bool, title: str) -> None:
    if json_out:
        output.emit_json(reply_schedule)
    else:
        schedule_output.schedule_detail(reply_schedule, title)


@schedule_app.command()
@remote
def create(
    name: NameArg,
    task_type: Annotated[str, typer.Argument(metavar="TYPE", help="Task type to submit.")],
    payload: Annotated[
        str, typer.Argument(metavar="PAYLOAD", help="JSON object, @file.json or - (stdin).")
    ] = "{}",
    cron: Annotated[
        str | None,
        typer.Option(metavar="EXPR", help='Cron expression, 5 or 6 fields: "*/5 * * * *".'),
    ] = None,
    every: Annotated[
        str | None, typer.Option(metavar="SPAN", help="Or a fixed interval: 30s, 5m, 1h.")
    ] = None,
    tz: Annotated[
        str, typer.Option("--tz", metavar="ZONE", help="IANA time zone of --cron.")
    ] = "UTC",
    queue: Annotated[str | None, typer.Option(metavar="NAME", help="Queue of the tasks.")] = None,
    priority: Annotated[PriorityChoice | None, typer.Option(help="Priority of the tasks.")] = None,
    max_retries: Annotated[int | None, typer.Option(metavar="N", help="Retries per task.")] = None,
    timeout: Annotated[
        float | None, typer.Option(metavar="S", help="Seconds one attempt may run.")
    ] = None,
    overlap: Annotated[
        OverlapChoice, typer.Option(help="While the previous run is unfinished.")
    ] = OverlapChoice.skip,
    catch_up: Annotated[
        CatchUpChoice, typer.Option(help="Missed fire times after downtime.")
    ] = CatchUpChoice.one,
    catch_up_limit: Annotated[
        int,
        typer.Option(
            metavar="N", help="With --catch-up all: at most N [default 100].", show_default=False
        ),
    ] = 0,
    json_out: JsonOpt = False,
    *,
    target: Target,
) -> None:
    """Create schedule NAME, submitting TYPE with PAYLOAD at each fire time."""
    if bool(cron) == bool(every):
        bad_input("give --cron or --every (one of them)")
    msg = build(
        name,
        task_type,
        parse_payload(payload),
        cron or "",
        parse_span(every) if every else 0.0,
        tz,
        queue or "",
        priority.value if priority else "",
        max_retries,
        timeout,
        overlap.value,
        catch_up.value,
        catch_up_limit,
    )
    with connect(target) as client:
        reply = client.call(
            lambda s: s.admin.CreateSchedule, pb.CreateScheduleRequest(schedule=msg)
        )
    show(reply.schedule, json_out, f"schedule {name} created")


def list_all(client: Client) -> list[schedule_pb2.Schedule]:
    found: list[schedule_pb2.Schedule] = []
    request = pb.ListSchedulesRequest(page_size=PAGE)
    while True:
        reply = client.call(lambda s: s.admin.ListSchedules, request)
        found += reply.schedules
        if not reply.next_page_token:
            return found
        request.page_token = reply.next_page_token


@schedule_app.command("list")
@remote
def list_schedules(json_out: JsonOpt = False, *, target: Target) -> None:
    """Schedules with their next and last fire times and the last run's state."""
    with connect(target) as client:
        found = list_all(client)
    if json_out:
        output.emit_json(pb.ListSchedulesResponse(schedules=found))
    else:
        schedule_output.schedule_table(found)


@schedule_app.command()
@remote
def get(name: NameArg, json_out: JsonOpt = False, *, target: Target) -> None:
    """One schedule in full."""
    with connect(target) as client:
        reply = client.call(lambda s: s.admin.GetSchedule, pb.GetScheduleRequest(name=name))
    show(reply.schedule, json_out, f"schedule {name}")


@schedule_app.command()
@remote
def delete(name: NameArg, json_out: JsonOpt = False, *, target: Target) -> None:
    """Delete schedule NAME (the tasks it submitted stay)."""
    with connect(target) as client:
        reply = client.call(lambda s: s.admin.DeleteSchedule, pb.DeleteScheduleRequest(name=name))
    if json_out:
        output.emit_json(reply)
    else:
        typer.echo(f"schedule {name} deleted")


@schedule_app.command()
@remote
def pause(name: NameArg, json_out: JsonOpt = False, *, target: Target) -> None:
    """Stop schedule NAME from firing."""
    with connect(target) as client:
        reply = client.call(lambda s: s.admin.PauseSchedule, pb.PauseScheduleRequest(name=name))
    show(reply.schedule, json_out, f"schedule {name} paused")


@schedule_app.command()
@remote
def resume(name: NameArg, json_out: JsonOpt = False, *, target: Target) -> None:
    """Let a paused schedule fire again (from its next fire time after now)."""
    with connect(target) as client:
        reply = client.call(lambda s: s.admin.ResumeSchedule, pb.ResumeScheduleRequest(name=name))
    show(reply.schedule, json_out, f"schedule {name} resumed")


@schedule_app.command()
@remote
def trigger(name: NameArg, json_out: JsonOpt = False, *, target: Target) -> None:
    """Submit schedule NAME's task now; prints the task id."""
    with connect(target) as client:
        reply = client.call(lambda s: s.admin.TriggerSchedule, pb.TriggerScheduleRequest(name=name))
    if json_out:
        output.emit_json(reply)
    else:
        typer.echo(reply.task.id)


def register(app: typer.Typer) -> None:
    from dtq.cli.schedule_sync import sync

    schedule_app.command()(sync)
    app.add_typer(schedule_app, name="schedule")

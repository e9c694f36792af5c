"""`dtq schedule sync -m MODULE`: make the server's code-declared schedules
those the modules declare with `@app.periodic`.

Creates the missing ones, updates the changed ones, deletes the code-declared
ones no longer declared. Schedules made by hand (`dtq schedule create`, the
API) are never changed or deleted: a declared name that one of them holds is
an error.
"""

from __future__ import annotations

from typing import Annotated

import typer
from google.protobuf import field_mask_pb2, struct_pb2

from dtq.cli.client import Target, bad_input, connect, fail, remote
from dtq.cli.output import JsonOpt
from dtq.cli.schedule import build, list_all
from dtq.v1 import admin_service_pb2 as pb
from dtq.v1 import schedule_pb2, task_pb2
from dtq.worker.app import Periodic

# What sync compares and writes: the definition, never the state.
DEFINITION = [
    "cron",
    "time_zone",
    "interval",
    "task",
    "overlap_policy",
    "catch_up_policy",
    "catch_up_limit",
    "declared_in_code",
]


def declared(modules: list[str]) -> dict[str, schedule_pb2.Schedule]:
    from dtq.worker.loader import LoadError, load

    try:
        app = load(modules)
    except (LoadError, ValueError, TypeError) as error:
        bad_input(str(error))
    return {p.name: normalized(_message(p)) for p in app.periodics.values()}


def normalized(msg: schedule_pb2.Schedule) -> schedule_pb2.Schedule:
    """With the defaults the server fills in, so that an unchanged one compares equal."""
    msg.cron = " ".join(msg.cron.split())
    if msg.cron and not msg.time_zone:
        msg.time_zone = "UTC"
    msg.catch_up_limit = msg.catch_up_limit or 100
    msg.task.queue = msg.task.queue or "default"
    msg.task.priority = msg.task.priority or task_pb2.PRIORITY_MEDIUM
    if not msg.task.payload.fields:
        msg.task.ClearField("payload")  # the server keeps no empty payload
    return msg


def _message(p: Periodic) -> schedule_pb2.Schedule:
    payload = struct_pb2.Struct()
    payload.update(p.payload)
    return build(
        p.name,
        p.task_type,
        payload,
        p.cron,
        p.every,
        p.tz,
        p.queue,
        p.priority,
        p.max_retries,
        p.timeout,
        p.overlap,
        p.catch_up,
        declared_in_code=True,
    )


def definition(msg: schedule_pb2.Schedule) -> schedule_pb2.Schedule:
    kept = schedule_pb2.Schedule()
    field_mask_pb2.FieldMask(paths=DEFINITION).MergeMessage(msg, kept)
    return kept


@remote
def sync(
    modules: Annotated[
        list[str],
        typer.Option("--module", "-m", metavar="MODULE", help="Module with an App (repeatable)."),
    ],
    dry_run: Annotated[bool, typer.Option(help="Print what would change; change nothing.")] = False,
    json_out: JsonOpt = False,
    *,
    target: Target,
) -> None:
    """Create, update and delete the code-declared schedules to match @app.periodic."""
    wanted = declared(modules)
    with connect(target) as client:
        existing = {s.name: s for s in list_all(client)}
        clash = [n for n in wanted if n in existing and not existing[n].declared_in_code]
        if clash:
            fail(f"schedules {', '.join(clash)} were made by hand: delete or rename them first")
        created = [n for n in wanted if n not in existing]
        updated = [
            n for n in wanted if n in existing and definition(existing[n]) != definition(wanted[n])
        ]
        removed = [n for n, s in existing.items() if s.declared_in_code and n not in wanted]
        if not dry_run:
            for n in created:
                request = pb.CreateScheduleRequest(schedule=wanted[n])
                client.call(lambda s: s.admin.CreateSchedule, request)
            for n in updated:
                change = pb.UpdateScheduleRequest(schedule=wanted[n])
                client.call(lambda s: s.admin.UpdateSchedule, change)
            for n in removed:
                client.call(lambda s: s.admin.DeleteSchedule, pb.DeleteScheduleRequest(name=n))
    report = {"created": created, "updated": updated, "deleted": removed}
    if json_out:
        import json

        typer.echo(json.dumps(report, indent=2))
        return
    verb = "would be " if dry_run else ""
    for what, names in report.items():
        typer.echo(f"{len(names)} {verb}{what}" + (f": {', '.join(names)}" if names else ""))

"""Schedules between protos and the domain (beside convert.py, which holds the
scalars; like it, the only place that knows both)."""

from __future__ import annotations

from google.protobuf import field_mask_pb2

from dtq.api.convert import STATE_TO_PB, _at, depth, duration, seconds_of
from dtq.domain import schedule as sch
from dtq.domain import validation
from dtq.domain.errors import DtqError
from dtq.domain.schedule import CatchUp, Origin, Overlap, Schedule, Template
from dtq.v1 import schedule_pb2, task_pb2

Pb = schedule_pb2.Schedule
OVERLAP = {
    Pb.OVERLAP_POLICY_ALLOW: Overlap.ALLOW,
    Pb.OVERLAP_POLICY_SKIP: Overlap.SKIP,
    Pb.OVERLAP_POLICY_CANCEL_PREVIOUS: Overlap.CANCEL_PREVIOUS,
}
CATCH_UP = {
    Pb.CATCH_UP_POLICY_SKIP: CatchUp.SKIP,
    Pb.CATCH_UP_POLICY_ONE: CatchUp.ONE,
    Pb.CATCH_UP_POLICY_ALL: CatchUp.ALL,
}
OVERLAP_TO_PB = {v: k for k, v in OVERLAP.items()}
CATCH_UP_TO_PB = {v: k for k, v in CATCH_UP.items()}
# What UpdateSchedule may change (a path, or a path under `task.`).
UPDATABLE = frozenset(
    {
        "cron",
        "time_zone",
        "interval",
        "task",
        "overlap_policy",
        "catch_up_policy",
        "catch_up_limit",
        "declared_in_code",
    }
)


def schedule_of(msg: Pb, path: str = "schedule") -> Schedule:
    """A schedule as a request defines it (output-only fields ignored)."""
    name = sch.name(msg.name, f"{path}.name")
    interval = seconds_of(msg.interval) if msg.HasField("interval") else 0.0
    try:
        timing = sch.timing(msg.cron, msg.time_zone, interval)
        limit = sch.catch_up_limit(msg.catch_up_limit)
    except DtqError as error:
        raise error.prefixed(path) from None
    if msg.overlap_policy and msg.overlap_policy not in OVERLAP:
        raise DtqError.invalid(f"{path}.overlap_policy", f"unknown policy {msg.overlap_policy}")
    if msg.catch_up_policy and msg.catch_up_policy not in CATCH_UP:
        raise DtqError.invalid(f"{path}.catch_up_policy", f"unknown policy {msg.catch_up_policy}")
    if not msg.HasField("task"):
        raise DtqError.invalid(f"{path}.task", "is required")
    return Schedule(
        name,
        timing,
        template_of(msg.task, f"{path}.task"),
        OVERLAP.get(msg.overlap_policy, Overlap.SKIP),
        CATCH_UP.get(msg.catch_up_policy, CatchUp.ONE),
        limit,
        origin=Origin.CODE if msg.declared_in_code else Origin.API,
    )


def template_of(msg: schedule_pb2.TaskTemplate, path: str) -> Template:
    return Template(
        type=msg.type,
        payload=msg.payload.SerializeToString(deterministic=True),
        queue=msg.queue or validation.DEFAULT_QUEUE,
        priority=validation.priority(msg.priority, f"{path}.priority"),
        max_retries=msg.max_retries if msg.HasField("max_retries") else None,
        timeout=seconds_of(msg.timeout) if msg.HasField("timeout") else None,
        payload_depth=depth(msg.payload),
    )


def updated(current: Schedule, msg: Pb, mask: field_mask_pb2.FieldMask) -> Schedule:
    """`current` with the fields of `msg` that `mask` names (none named: all)."""
    if not mask.paths:
        return schedule_of(msg)
    for field_path in mask.paths:
        if field_path.split(".")[0] not in UPDATABLE:
            raise DtqError.invalid("update_mask", f"{field_path!r} cannot be updated")
    if not mask.IsValidForDescriptor(Pb.DESCRIPTOR):
        raise DtqError.invalid("update_mask", "names a field a schedule does not have")
    merged = schedule(current)
    mask.MergeMessage(msg, merged, replace_message_field=True, replace_repeated_field=True)
    return schedule_of(merged)


def schedule(s: Schedule) -> Pb:
    msg = Pb(
        name=s.name,
        cron=s.timing.cron,
        time_zone=s.timing.time_zone if s.timing.cron else "",
        task=template(s.task),
        overlap_policy=OVERLAP_TO_PB[s.overlap],
        catch_up_policy=CATCH_UP_TO_PB[s.catch_up],
        catch_up_limit=s.catch_up_limit,
        paused=s.paused,
        declared_in_code=s.origin == Origin.CODE,
        last_task_id=str(s.last_task_id) if s.last_task_id else "",
    )
    if s.timing.interval:
        msg.interval.CopyFrom(duration(s.timing.interval))
    if s.last_task_state is not None:
        msg.last_task_state = STATE_TO_PB[s.last_task_state]
    for field, value in (
        (msg.next_fire_time, s.next_fire_at),
        (msg.last_fire_time, s.last_fire_at),
        (msg.created_at, s.created_at),
        (msg.updated_at, s.updated_at),
    ):
        if value:
            _at(field, value)
    return msg


def template(t: Template) -> schedule_pb2.TaskTemplate:
    msg = schedule_pb2.TaskTemplate(
        type=t.type,
        queue=t.queue,
        priority=task_pb2.Priority.ValueType(t.priority),
        max_retries=t.max_retries,
    )
    if t.payload:
        msg.payload.MergeFromString(t.payload)
    if t.timeout is not None:
        msg.timeout.CopyFrom(duration(t.timeout))
    return msg

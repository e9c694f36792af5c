"""Schedules between protos and the domain: round trip, defaults, field masks, errors."""

from __future__ import annotations

import pytest
from google.protobuf import duration_pb2, field_mask_pb2, struct_pb2

from dtq.api import convert_schedule as sc
from dtq.domain.errors import DtqError
from dtq.domain.model import Priority
from dtq.domain.schedule import CatchUp, Origin, Overlap, Timing
from dtq.v1 import schedule_pb2, task_pb2

Pb = schedule_pb2.Schedule


def message(**fields: object) -> schedule_pb2.Schedule:
    payload = struct_pb2.Struct()
    payload.update({"a": 1})
    task = schedule_pb2.TaskTemplate(type="report", payload=payload, queue="q")
    base: dict[str, object] = {"name": "n", "cron": "*/5 * * * *", "time_zone": "Europe/Paris"}
    return Pb(task=task, **{**base, **fields})  # type: ignore[arg-type]


def test_defaults_of_a_minimal_schedule() -> None:
    s = sc.schedule_of(message())
    assert s.timing == Timing("*/5 * * * *", "Europe/Paris")
    assert (s.overlap, s.catch_up, s.catch_up_limit) == (Overlap.SKIP, CatchUp.ONE, 100)
    assert s.task.priority == Priority.MEDIUM and s.task.max_retries is None
    assert s.origin == Origin.API


def test_round_trip() -> None:
    msg = message(
        overlap_policy=Pb.OVERLAP_POLICY_CANCEL_PREVIOUS,
        catch_up_policy=Pb.CATCH_UP_POLICY_ALL,
        catch_up_limit=7,
        declared_in_code=True,
    )
    msg.task.max_retries = 0
    msg.task.timeout.FromSeconds(60)
    msg.task.priority = task_pb2.PRIORITY_HIGH
    again = sc.schedule(sc.schedule_of(msg))
    assert again.task == msg.task
    assert (again.cron, again.time_zone, again.catch_up_limit) == (msg.cron, msg.time_zone, 7)
    assert again.overlap_policy == msg.overlap_policy and again.declared_in_code


def test_interval_schedules() -> None:
    msg = message(cron="", time_zone="", interval=duration_pb2.Duration(seconds=90))
    s = sc.schedule_of(msg)
    assert s.timing == Timing(interval=90.0)
    assert sc.schedule(s).interval.seconds == 90


def test_update_mask_changes_only_the_named_fields() -> None:
    current = sc.schedule_of(message())
    change = Pb(name="n", cron="0 9 * * *", task=schedule_pb2.TaskTemplate(type="other"))
    moved = sc.updated(current, change, field_mask_pb2.FieldMask(paths=["cron"]))
    assert moved.timing == Timing("0 9 * * *", "Europe/Paris") and moved.task == current.task
    retyped = sc.updated(current, change, field_mask_pb2.FieldMask(paths=["task.type"]))
    assert retyped.task.type == "other" and retyped.task.queue == "q"


@pytest.mark.parametrize("path", ["name", "paused", "next_fire_time", "nope", "task.nope"])
def test_update_mask_refuses_what_cannot_change(path: str) -> None:
    with pytest.raises(DtqError) as caught:
        sc.updated(sc.schedule_of(message()), message(), field_mask_pb2.FieldMask(paths=[path]))
    assert [v.field for v in caught.value.violations] == ["update_mask"]


@pytest.mark.parametrize(
    ("msg", "field"),
    [
        (message(name=""), "schedule.name"),
        (message(cron="* *"), "schedule.cron"),
        (message(interval=duration_pb2.Duration(seconds=5)), "schedule.interval"),
        (message(overlap_policy=9), "schedule.overlap_policy"),
        (message(catch_up_policy=9), "schedule.catch_up_policy"),
        (Pb(name="n", cron="* * * * *"), "schedule.task"),
    ],
)
def test_errors_name_the_request_field(msg: schedule_pb2.Schedule, field: str) -> None:
    with pytest.raises(DtqError) as caught:
        sc.schedule_of(msg)
    assert [v.field for v in caught.value.violations] == [field]

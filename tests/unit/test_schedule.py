"""Schedules: cron and interval fire times, DST, catch-up and overlap policies, validation."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from dtq.domain import schedule as sch
from dtq.domain.errors import Code, DtqError
from dtq.domain.model import TaskState
from dtq.domain.schedule import Action, CatchUp, Overlap, Schedule, Template, Timing

PARIS = ZoneInfo("Europe/Paris")


def at(*parts: int, zone: ZoneInfo = PARIS) -> float:
    return datetime(*parts, tzinfo=zone).timestamp()  # type: ignore[misc]


def local(ts: float) -> str:
    return datetime.fromtimestamp(ts, PARIS).isoformat()


def fires(timing: Timing, start: float, n: int) -> list[str]:
    return [local(t) for t in itertools.islice(timing.after(start), n)]


def test_interval_fires_on_multiples_since_the_epoch() -> None:
    every = Timing(interval=30)
    assert list(itertools.islice(every.after(100.0), 3)) == [120.0, 150.0, 180.0]
    assert every.next_after(120.0) == 150.0  # strictly after
    assert list(itertools.islice(every.before(120.0), 2)) == [90.0, 60.0]


def test_five_and_six_field_cron() -> None:
    start = at(2026, 6, 1, 10, 1, 30)
    assert fires(Timing("*/5 * * * *", "Europe/Paris"), start, 2) == [
        "2026-06-01T10:05:00+02:00",
        "2026-06-01T10:10:00+02:00",
    ]
    assert fires(Timing("*/10 * * * * *", "Europe/Paris"), start, 2) == [
        "2026-06-01T10:01:40+02:00",
        "2026-06-01T10:01:50+02:00",
    ]


def test_time_zone_decides_the_hour() -> None:
    start = at(2026, 6, 1, 0, 0)
    paris = Timing("0 9 * * *", "Europe/Paris").next_after(start)
    utc = Timing("0 9 * * *", "UTC").next_after(start)
    assert utc - paris == 2 * 3600  # 09:00 in Paris is 07:00 UTC in summer


def test_spring_forward_a_skipped_time_fires_once_right_after_the_gap() -> None:
    # Europe/Paris, 2026-03-29: 02:00 -> 03:00. 02:30 does not exist that night.
    got = fires(Timing("30 2 * * *", "Europe/Paris"), at(2026, 3, 28, 12, 0), 3)
    assert got == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]


def test_fall_back_a_repeated_time_fires_once() -> None:
    # Europe/Paris, 2026-10-25: 03:00 -> 02:00. 02:30 happens twice that night.
    timing = Timing("30 2 * * *", "Europe/Paris")
    got = fires(timing, at(2026, 10, 24, 12, 0), 2)
    assert got == ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]
    # Asked from inside the repeated hour (its second pass), it does not fire again.
    second_pass = at(2026, 10, 25, 1, 10, zone=ZoneInfo("UTC"))  # 02:10+01:00
    assert local(timing.next_after(second_pass)) == "2026-10-26T02:30:00+01:00"


def test_step_expressions_follow_elapsed_time_through_dst() -> None:
    got = fires(Timing("*/30 * * * *", "Europe/Paris"), at(2026, 10, 25, 1, 50), 4)
    assert got == [
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:00:00+01:00",
        "2026-10-25T02:30:00+01:00",
    ]


def test_fire_times_are_strictly_increasing_through_a_year_of_dst() -> None:
    timing = Timing("30 1,2,3 * * *", "Europe/Paris")
    times = list(itertools.islice(timing.after(at(2026, 1, 1, 0, 0)), 3 * 365))
    assert all(a < b for a, b in itertools.pairwise(times))


def daily(**fields: object) -> Schedule:
    base = Schedule("s", Timing(interval=60), Template("t"), next_fire_at=600.0)
    return replace(base, **fields)  # type: ignore[arg-type]


def test_plan_on_time_fires_the_due_time() -> None:
    p = sch.plan(daily(), now=600.2, grace=5)
    assert p.fires == [600.0] and not p.dropped and p.next_fire_at == 660.0


def test_plan_not_due_fires_nothing() -> None:
    p = sch.plan(daily(), now=599.9, grace=5)
    assert p.fires == [] and p.next_fire_at == 600.0


@pytest.mark.parametrize(
    ("policy", "limit", "expected", "dropped"),
    [
        (CatchUp.SKIP, 100, [], True),
        (CatchUp.ONE, 100, [900.0], True),
        (CatchUp.ALL, 100, [600.0, 660.0, 720.0, 780.0, 840.0, 900.0], False),
        (CatchUp.ALL, 2, [840.0, 900.0], True),
    ],
)
def test_plan_after_downtime_follows_the_catch_up_policy(
    policy: CatchUp, limit: int, expected: list[float], dropped: bool
) -> None:
    # Due at 600, the manager is back at 962: 600..900 are missed (more than
    # 5 s late); 960 is within the grace and fires whatever the policy.
    p = sch.plan(daily(catch_up=policy, catch_up_limit=limit), now=962.0, grace=5)
    assert p.fires == [*expected, 960.0]
    assert p.dropped is dropped
    assert p.next_fire_at == 1020.0


def test_overlap_policies() -> None:
    running, done = TaskState.RUNNING, TaskState.COMPLETED
    assert sch.on_overlap(Overlap.SKIP, running) == Action.SKIP
    assert sch.on_overlap(Overlap.SKIP, done) == Action.FIRE
    assert sch.on_overlap(Overlap.SKIP, None) == Action.FIRE
    assert sch.on_overlap(Overlap.ALLOW, running) == Action.FIRE
    assert sch.on_overlap(Overlap.CANCEL_PREVIOUS, TaskState.PENDING) == Action.CANCEL_THEN_FIRE
    assert sch.on_overlap(Overlap.CANCEL_PREVIOUS, TaskState.DEAD_LETTERED) == Action.FIRE


def test_fire_key_is_the_same_for_the_same_fire_time() -> None:
    assert sch.fire_key("nightly", 1_800_000_000.0) == "schedule:nightly:2027-01-15T08:00:00.000Z"
    assert sch.fire_key("n", 1.5) != sch.fire_key("n", 2.5)


@pytest.mark.parametrize(
    ("cron", "tz", "interval", "field"),
    [
        ("", "", 0.0, "cron"),
        ("* * * *", "UTC", 0.0, "cron"),
        ("61 * * * *", "UTC", 0.0, "cron"),
        ("0 0 31 2 *", "UTC", 0.0, "cron"),
        ("* * * * *", "Mars/Olympus", 0.0, "time_zone"),
        ("* * * * *", "", 30.0, "interval"),
        ("", "Europe/Paris", 30.0, "time_zone"),
        ("", "", 0.5, "interval"),
    ],
)
def test_bad_timing_names_the_field(cron: str, tz: str, interval: float, field: str) -> None:
    with pytest.raises(DtqError) as caught:
        sch.timing(cron, tz, interval)
    assert caught.value.code == Code.INVALID_ARGUMENT
    assert [v.field for v in caught.value.violations] == [field]


def test_good_timing() -> None:
    assert sch.timing("*/5  * * * *", "", 0.0) == Timing("*/5 * * * *", "UTC")
    assert sch.timing("", "", 2.0) == Timing(interval=2.0)


@pytest.mark.parametrize("bad", ["", "-x", "a b", "x\n", "a" * 129])
def test_bad_names(bad: str) -> None:
    with pytest.raises(DtqError):
        sch.name(bad)

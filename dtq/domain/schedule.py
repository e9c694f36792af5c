"""Recurring schedules: when they fire, which fire times a late manager still
fires (catch-up), and what a fire does while the previous run is unfinished
(overlap).

Time: a cron expression of 5 fields (minute hour day month weekday) or 6
(seconds first), read by `cronsim` in an IANA time zone, or a fixed interval,
whose fire times are the multiples of the interval since the Unix epoch (every
30 s fires at :00 and :30 of each minute, on every manager alike).

Daylight saving time (5-field expressions at fixed hours and minutes, as Debian
cron does): a fire time that does not exist (02:30 on a spring-forward night)
fires once, at the first minute that exists after it (03:00); a fire time that
happens twice (01:30 on an autumn night) fires once, at its first occurrence.
Expressions with a `*` minute or hour (`*/5 * * * *`) and 6-field ones follow
elapsed time: they fire every 5 minutes of real time through either change.
"""

from __future__ import annotations

import enum
import math
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from dtq.domain.errors import DtqError
from dtq.domain.model import Priority, TaskState
from dtq.domain.states import TERMINAL
from dtq.domain.validation import SubmitSpec

# `\Z`, not `$`: `$` also matches before a trailing newline.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}\Z")
MIN_INTERVAL, MAX_INTERVAL = 1.0, 366 * 86400.0
MAX_CRON = 256  # characters of a cron expression
MAX_CATCH_UP, DEFAULT_CATCH_UP = 1000, 100
MAX_SCAN = 10_000  # fire times looked at in one plan (a bound on CPU, never reached in use)
KEY_PREFIX = "schedule:"


class Overlap(enum.StrEnum):
    """What a fire does while the schedule's previous run is unfinished."""

    ALLOW = "allow"  # submit anyway: runs may overlap
    SKIP = "skip"  # submit nothing for this fire time
    CANCEL_PREVIOUS = "cancel_previous"  # cancel the previous run, then submit


class CatchUp(enum.StrEnum):
    """Which fire times missed while no manager ran (more than the grace late) still fire."""

    SKIP = "skip"  # none: the next fire time is the next to fire
    ONE = "one"  # the latest missed one
    ALL = "all"  # each, up to the schedule's catch_up_limit (the latest ones)


class Origin(enum.StrEnum):
    """Who made a schedule: `dtq schedule sync` removes only CODE ones."""

    API = "api"
    CODE = "code"


@dataclass(frozen=True)
class Timing:
    """When a schedule fires: `cron` in `time_zone`, or every `interval` seconds."""

    cron: str = ""
    time_zone: str = "UTC"
    interval: float = 0.0

    def zone(self) -> tzinfo:
        return UTC if self.time_zone == "UTC" else ZoneInfo(self.time_zone)

    def after(self, t: float) -> Iterator[float]:
        """Fire times strictly after `t` (Unix s), ascending."""
        if self.interval:
            k = math.floor(t / self.interval) + 1
            while True:
                yield k * self.interval
                k += 1
        last = t
        start = datetime.fromtimestamp(math.floor(t), self.zone())
        for fire in CronSim(self.cron, start):
            at = fire.timestamp()
            if at > last:  # a DST fix-up may land on a time already given
                last = at
                yield at

    def before(self, t: float) -> Iterator[float]:
        """Fire times strictly before `t`, descending."""
        if self.interval:
            k = math.ceil(t / self.interval) - 1
            while True:
                yield k * self.interval
                k -= 1
        last = t
        start = datetime.fromtimestamp(math.ceil(t), self.zone())
        for fire in CronSim(self.cron, start, reverse=True):
            at = fire.timestamp()
            if at < last:
                last = at
                yield at

    def next_after(self, t: float) -> float:
        return next(iter(self.after(t)))


@dataclass(frozen=True)
class Template:
    """The task each fire submits."""

    type: str
    payload: bytes = b""
    queue: str = "default"
    priority: Priority = Priority.MEDIUM
    max_retries: int | None = None
    timeout: float | None = None
    payload_depth: int = 0  # JSON nesting of the payload (checked, not stored)

    def spec(self, idempotency_key: str) -> SubmitSpec:
        return SubmitSpec(
            type=self.type,
            payload=self.payload,
            priority=int(self.priority),
            queue=self.queue,
            max_retries=self.max_retries,
            timeout=self.timeout,
            idempotency_key=idempotency_key,
            payload_depth=self.payload_depth,
        )


@dataclass(frozen=True)
class Schedule:
    """A recurring schedule and what it last did."""

    name: str
    timing: Timing
    task: Template
    overlap: Overlap = Overlap.ALLOW
    catch_up: CatchUp = CatchUp.ONE
    catch_up_limit: int = DEFAULT_CATCH_UP
    paused: bool = False
    origin: Origin = Origin.API
    next_fire_at: float | None = None  # None while paused
    last_fire_at: float | None = None
    last_task_id: uuid.UUID | None = None
    last_task_state: TaskState | None = None  # read with the schedule, not stored on it
    created_at: float = 0.0
    updated_at: float = 0.0

    def same_definition(self, other: Schedule) -> bool:
        """Whether `other` defines the same fires (what `dtq schedule sync` compares)."""
        fields = ("timing", "task", "overlap", "catch_up", "catch_up_limit", "origin")
        return all(getattr(self, f) == getattr(other, f) for f in fields)


@dataclass(frozen=True)
class Plan:
    """What a manager does with a due schedule now."""

    fires: list[float]  # fire times to submit, ascending
    dropped: bool  # missed fire times were left out by the catch-up policy
    next_fire_at: float


def plan(schedule: Schedule, now: float, grace: float) -> Plan:
    """The fire times due at `now`: every one at most `grace` seconds late, and
    of the older (missed) ones those the catch-up policy keeps."""
    start = schedule.next_fire_at
    assert start is not None
    cut = now - grace
    late: list[float] = []
    dropped = False
    if start < cut:
        keep = {CatchUp.SKIP: 0, CatchUp.ONE: 1, CatchUp.ALL: schedule.catch_up_limit}
        wanted = keep[schedule.catch_up]
        for at in schedule.timing.before(cut + 1e-6):  # at <= cut, newest first
            if at < start:
                break
            if len(late) == wanted:
                dropped = True
                break
            late.append(at)
        late.reverse()
    fresh: list[float] = []
    for at in schedule.timing.after(max(start, cut) - 1e-6):
        if at > now or len(fresh) >= MAX_SCAN:
            break
        if not late or at > late[-1]:
            fresh.append(at)
    return Plan(late + fresh, dropped, schedule.timing.next_after(now))


class Action(enum.Enum):
    FIRE = "fire"
    SKIP = "skip"
    CANCEL_THEN_FIRE = "cancel_then_fire"


def on_overlap(policy: Overlap, previous: TaskState | None) -> Action:
    """What a fire does, given the state of the previous run (None: none, or gone)."""
    if previous is None or previous in TERMINAL or policy == Overlap.ALLOW:
        return Action.FIRE
    return Action.SKIP if policy == Overlap.SKIP else Action.CANCEL_THEN_FIRE


def fire_key(name: str, at: float) -> str:
    """The idempotency key of the task of one fire time: the same on every
    manager, so that the submit path's deduplication keeps one task per fire."""
    moment = datetime.fromtimestamp(at, UTC)
    return f"{KEY_PREFIX}{name}:{moment.isoformat(timespec='milliseconds').replace('+00:00', 'Z')}"


def trigger_key(name: str) -> str:
    """The key of a run asked for by hand (TriggerSchedule)."""
    return f"{KEY_PREFIX}{name}:trigger:{uuid.uuid4().hex}"


# -- validation -------------------------------------------------------------------------


def name(value: str, field_path: str = "name") -> str:
    if not value:
        raise DtqError.invalid(field_path, "is required")
    if not NAME_RE.match(value):
        raise DtqError.invalid(
            field_path,
            "must be 1-128 characters: a letter or digit, then letters, digits, '_', '.' or '-'",
        )
    return value


def timing(cron: str, time_zone: str, interval: float) -> Timing:
    """A validated cron (5 or 6 fields) with a time zone, or an interval; not both."""
    if cron and interval:
        raise DtqError.invalid("interval", "cannot be set together with cron")
    if not cron and not interval:
        raise DtqError.invalid("cron", "is required (or an interval)")
    zone = time_zone or "UTC"
    if interval:
        if time_zone and time_zone != "UTC":
            raise DtqError.invalid("time_zone", "applies to cron only")
        if not (math.isfinite(interval) and MIN_INTERVAL <= interval <= MAX_INTERVAL):
            raise DtqError.invalid("interval", "must be between 1 s and 366 days")
        return Timing(interval=interval)
    found = Timing(cron=" ".join(cron.split()), time_zone=_zone(zone))
    if len(cron) > MAX_CRON or len(found.cron.split()) not in (5, 6):
        raise DtqError.invalid(
            "cron", "must have 5 fields (minute hour day month weekday) or 6 (seconds first)"
        )
    try:
        found.next_after(0.0)
    except (CronSimError, StopIteration, ValueError) as error:
        raise DtqError.invalid("cron", f"is not a valid cron expression: {error}") from None
    return found


def _zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise DtqError.invalid(
            "time_zone", f"{value[:64]!r} is not an IANA time zone (e.g. Europe/Paris)"
        ) from None
    return value


def catch_up_limit(value: int) -> int:
    if value == 0:
        return DEFAULT_CATCH_UP
    if not 1 <= value <= MAX_CATCH_UP:
        raise DtqError.invalid("catch_up_limit", f"must be between 1 and {MAX_CATCH_UP}")
    return value


def starting(schedule: Schedule, now: float) -> Schedule:
    """The schedule with its next fire time after `now` (None while paused)."""
    next_at = None if schedule.paused else schedule.timing.next_after(now)
    return replace(schedule, next_fire_at=next_at)

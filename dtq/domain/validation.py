"""Rules for what a submission may contain, and the defaults it gets."""

from __future__ import annotations

import hashlib
import math
import re
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from dtq.domain.errors import DtqError
from dtq.domain.ids import uuid7
from dtq.domain.model import (
    NewTask,
    Outcome,
    Priority,
    Subscription,
    TaskError,
    TaskState,
    Unique,
    WorkerInfo,
)

# `\Z`, not `$`: `$` also matches before a trailing newline ("default\n").
TYPE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,127}\Z")
QUEUE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}\Z")
WORKER_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}\Z")
ADDRESS_RE = re.compile(r"[A-Za-z0-9_.:\-\[\]]{1,255}:[0-9]{1,5}")
MAX_IDEMPOTENCY_KEY = 256
MAX_FAIRNESS_KEY = 128
MAX_RETRIES = 100
MIN_TIMEOUT, MAX_TIMEOUT = 1.0, 24 * 3600.0
MIN_LEASE, MAX_LEASE = 1.0, 3600.0
MAX_BATCH = 1000
MIN_UNIQUE, MAX_UNIQUE = 1.0, 30 * 86400.0  # seconds of a unique_for window
MAX_CAPACITY = 10_000  # slots of one worker
TRACE_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,63}\Z")
MAX_TRACE_ENTRIES, MAX_TRACE_BYTES = 16, 4096
# Deepest JSON nesting of a payload or result (objects and arrays count one
# level each). Protobuf decoders (upb, C++, Java) stop at 100 message levels;
# an object level costs three (Struct, map entry, Value) and a lease wraps the
# payload in three more (LeaseTasksResponse, Lease, Task): 32 is the most that
# every client and worker decodes.
MAX_DEPTH = 32
DEFAULT_QUEUE = "default"
# C0 and C1 control characters and DEL: PostgreSQL text (and jsonb) cannot hold
# NUL at all, and the others only hide in logs and listings.
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# What protobuf's Timestamp and Python's datetime can hold: years 1 to 9999 (UTC).
MIN_TIME, END_TIME = -62_135_596_800.0, 253_402_300_800.0


@dataclass(frozen=True)
class Limits:
    """Defaults and limits from settings."""

    max_payload_bytes: int = 1024 * 1024
    default_max_retries: int = 3
    default_timeout: float = 300.0
    default_lease_duration: float = 30.0
    max_watches: int = 100  # open WatchTask streams per caller, per server


def message_limit(max_payload_bytes: int) -> int:
    """Largest gRPC message (and REST body) worth reading: a batch of payloads
    near the limit, never less than 4 MiB, never more than 64 MiB."""
    return min(64 * 1024 * 1024, max(4 * 1024 * 1024, 16 * max_payload_bytes))


@dataclass(frozen=True)
class SubmitSpec:
    """A submission as the client sent it; `None` means not set."""

    type: str
    payload: bytes
    priority: int = 0
    queue: str = ""
    max_retries: int | None = None
    timeout: float | None = None
    scheduled_at: float | None = None
    idempotency_key: str = ""
    lease_duration: float | None = None
    trace_context: dict[str, str] | None = None
    payload_depth: int = 0  # JSON nesting depth of the payload
    unique_for: float | None = None
    unique_key: str = ""
    unique_states: tuple[TaskState, ...] = ()
    fairness_key: str = ""
    after: str = ""  # a chain: the id of the task this one waits for


def after_id(value: str, field_path: str = "after") -> uuid.UUID | None:
    """The parent of a chain step, or None."""
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        raise DtqError.invalid(field_path, "must be a task id (a UUID)") from None


def task_type(value: str, field_path: str = "type") -> str:
    if not value:
        raise DtqError.invalid(field_path, "is required")
    if not TYPE_RE.match(value):
        raise DtqError.invalid(
            field_path,
            "must be 1-128 characters: a letter, then letters, digits, '_', '.' or '-'",
        )
    return value


def queue_name(value: str, field_path: str = "queue") -> str:
    if not value:
        return DEFAULT_QUEUE
    if not QUEUE_RE.match(value):
        raise DtqError.invalid(
            field_path,
            "must be 1-64 characters: a letter or digit, then letters, digits, '_' or '-'",
        )
    return value


def worker_id(value: str, field_path: str = "worker_id") -> str:
    if not WORKER_ID_RE.match(value):
        raise DtqError.invalid(field_path, "must be 1-128 characters of [A-Za-z0-9_.:-]")
    return value


def address(value: str, field_path: str) -> str:
    """An optional `host:port` (empty allowed)."""
    if value and not ADDRESS_RE.fullmatch(value):
        raise DtqError.invalid(field_path, "must be host:port, at most 261 characters")
    return value


def priority(value: int, field_path: str = "priority") -> Priority:
    if value == 0:
        return Priority.MEDIUM
    try:
        return Priority(value)
    except ValueError:
        raise DtqError.invalid(field_path, f"unknown priority {value}") from None


def trace_context(
    value: dict[str, str] | None, field_path: str = "trace_context"
) -> dict[str, str] | None:
    """Propagation fields (`traceparent`, ...): bounded, lowercase keys; None when empty."""
    if not value:
        return None
    if len(value) > MAX_TRACE_ENTRIES:
        raise DtqError.invalid(field_path, f"must hold at most {MAX_TRACE_ENTRIES} entries")
    for key in value:
        if not TRACE_KEY_RE.match(key):
            raise DtqError.invalid(
                field_path, f"key {key[:64]!r}: keys must be 1-64 characters of [a-z0-9_.-]"
            )
    if sum(len(k) + len(v) for k, v in value.items()) > MAX_TRACE_BYTES:
        raise DtqError.invalid(field_path, f"must be at most {MAX_TRACE_BYTES} characters in all")
    return value


def idempotency_key(value: str, field_path: str = "idempotency_key") -> str:
    """A client's idempotency key: plain text, at most MAX_IDEMPOTENCY_KEY characters."""
    if len(value) > MAX_IDEMPOTENCY_KEY:
        raise DtqError.invalid(field_path, f"must be at most {MAX_IDEMPOTENCY_KEY} characters")
    return plain_text(value, field_path)


def plain_text(value: str, field_path: str) -> str:
    """A string stored as text: no control characters (NUL, newline, ...)."""
    if found := CONTROL_RE.search(value):
        raise DtqError.invalid(
            field_path,
            f"must not contain control characters (U+{ord(found.group()):04X} at {found.start()})",
        )
    return value


def trace_text(value: dict[str, str] | None, field_path: str = "trace_context") -> None:
    """Keys and values of the trace context are stored as jsonb text."""
    for key, item in (value or {}).items():
        plain_text(key, field_path)
        plain_text(item, f"{field_path}.{key}")


def nesting(depth: int, field_path: str) -> None:
    """A payload or result every protobuf decoder can read back (MAX_DEPTH)."""
    if depth > MAX_DEPTH:
        raise DtqError.invalid(
            field_path,
            f"is nested more than {MAX_DEPTH} levels deep (objects and arrays)",
            reason="NESTED_TOO_DEEP",
        )


def storable_text(value: str) -> str:
    """Text of a worker's report, as PostgreSQL can hold it: NUL, which text
    columns cannot hold, becomes U+FFFD (the Unicode replacement character).
    Refusing it instead would leave the task running: the worker cannot take
    back what its handler raised."""
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def task_error(message: str, type_: str, traceback: str, permanent: bool) -> TaskError:
    """A failure as a worker reported it, storable (see `storable_text`)."""
    return TaskError(
        storable_text(message or "failed"),
        storable_text(type_),
        storable_text(traceback),
        permanent,
    )


def outcome(task_id: uuid.UUID, token: str, result: bytes | None, result_depth: int) -> Outcome:
    """A success reported on the lease stream. A result nested deeper than
    MAX_DEPTH (no client could read it back) fails the attempt instead: the
    outcome still settles the task, and the worker is not asked to resend it."""
    if result_depth <= MAX_DEPTH:
        return Outcome(task_id, token, result=result)
    error = TaskError(
        f"result: is nested more than {MAX_DEPTH} levels deep (objects and arrays)",
        "ResultTooDeep",
    )
    return Outcome(task_id, token, error=error)


def point_in_time(value: float | None, field_path: str) -> float | None:
    """A timestamp the wire format, PostgreSQL and Python all can hold."""
    if value is not None and not (math.isfinite(value) and MIN_TIME <= value < END_TIME):
        raise DtqError.invalid(field_path, "must be between 0001-01-01 and 9999-12-31 (UTC)")
    return value


def _bounded(value: float | None, default: float, lo: float, hi: float, path: str) -> float:
    if value is None:
        return default
    if not lo <= value <= hi:
        raise DtqError.invalid(path, f"must be between {lo:g}s and {hi:g}s")
    return value


def lease_seconds(value: float | None, default: float, path: str = "lease_duration") -> float:
    """A lease's duration: `default` when not given, else 1 s to 1 h."""
    return _bounded(value, default, MIN_LEASE, MAX_LEASE, path)


def subscription(queues: Sequence[str], task_types: Sequence[str], path: str = "") -> Subscription:
    """Validated queues and task types of a worker."""
    if not task_types:
        raise DtqError.invalid(f"{path}task_types", "must name at least one task type")
    qs = tuple(dict.fromkeys(queue_name(q, f"{path}queues") for q in queues or [""]))
    ts = tuple(dict.fromkeys(task_type(t, f"{path}task_types") for t in task_types))
    return Subscription(qs, ts)


def capacity(value: int, path: str = "capacity") -> int:
    """A worker's slots: 1 to MAX_CAPACITY."""
    if not 1 <= value <= MAX_CAPACITY:
        raise DtqError.invalid(path, f"must be between 1 and {MAX_CAPACITY}")
    return value


def new_task(spec: SubmitSpec, limits: Limits, now: float) -> NewTask:
    """Validate `spec` and fill in defaults; INVALID_ARGUMENT names the field."""
    if len(spec.payload) > limits.max_payload_bytes:
        raise DtqError.invalid(
            "payload",
            f"is {len(spec.payload)} bytes encoded; the limit is {limits.max_payload_bytes}",
            reason="PAYLOAD_TOO_LARGE",
        )
    nesting(spec.payload_depth, "payload")
    max_retries = limits.default_max_retries if spec.max_retries is None else spec.max_retries
    if not 0 <= max_retries <= MAX_RETRIES:
        raise DtqError.invalid("max_retries", f"must be between 0 and {MAX_RETRIES}")
    idempotency_key(spec.idempotency_key)
    if len(spec.fairness_key) > MAX_FAIRNESS_KEY:
        raise DtqError.invalid("fairness_key", f"must be at most {MAX_FAIRNESS_KEY} characters")
    plain_text(spec.fairness_key, "fairness_key")
    trace_text(spec.trace_context)
    point_in_time(spec.scheduled_at, "scheduled_at")
    scheduled_at = spec.scheduled_at if spec.scheduled_at and spec.scheduled_at > now else None
    kind, queue = task_type(spec.type), queue_name(spec.queue)
    level = priority(spec.priority)
    timeout = _bounded(spec.timeout, limits.default_timeout, MIN_TIMEOUT, MAX_TIMEOUT, "timeout")
    lease = lease_seconds(spec.lease_duration, limits.default_lease_duration)
    # The client's own scheduled_at (not the clamped one) defines the request.
    digest = hashlib.sha256(b"%s\0%s\0" % (kind.encode(), queue.encode()))
    digest.update(
        struct.pack("!iiddd", level, max_retries, timeout, lease, spec.scheduled_at or 0.0)
    )
    digest.update(spec.payload)
    parent = after_id(spec.after)
    if parent is not None:
        digest.update(parent.bytes)
    return NewTask(
        id=uuid7(now),
        type=kind,
        queue=queue,
        payload=spec.payload,
        priority=level,
        max_retries=max_retries,
        timeout=timeout,
        lease_duration=lease,
        scheduled_at=scheduled_at,
        idempotency_key=spec.idempotency_key or None,
        request_hash=digest.digest()[:16],
        trace_context=trace_context(spec.trace_context),
        unique=unique(spec, kind),
        fairness_key=spec.fairness_key,
        after=parent,
    )


def unique(spec: SubmitSpec, kind: str) -> Unique | None:
    """The uniqueness rule of a submission, None without `unique_for`."""
    if spec.unique_for is None:
        if spec.unique_key or spec.unique_states:
            raise DtqError.invalid("unique_for", "is required with unique_key or unique_states")
        return None
    if not MIN_UNIQUE <= spec.unique_for <= MAX_UNIQUE:
        raise DtqError.invalid("unique_for", f"must be {MIN_UNIQUE:.0f} s to 30 days")
    if len(spec.unique_key) > MAX_IDEMPOTENCY_KEY:
        raise DtqError.invalid("unique_key", f"must be at most {MAX_IDEMPOTENCY_KEY} characters")
    plain_text(spec.unique_key, "unique_key")
    digest = hashlib.sha256(b"%s\0" % kind.encode())
    digest.update(b"k\0" + spec.unique_key.encode() if spec.unique_key else b"p\0" + spec.payload)
    return Unique(digest.digest()[:16], spec.unique_for, tuple(sorted(set(spec.unique_states))))


def batch_size(count: int, field_path: str = "requests") -> None:
    if count == 0:
        raise DtqError.invalid(field_path, "must hold at least one request")
    if count > MAX_BATCH:
        raise DtqError.invalid(field_path, f"must hold at most {MAX_BATCH} requests")


def page_size(value: int, default: int, maximum: int = 1000) -> int:
    if value < 0:
        raise DtqError.invalid("page_size", "must not be negative")
    return min(value or default, maximum)


# -- what a worker says about itself (shown by `dtq worker list`) ---------------------

LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,62}\Z")
MAX_LABELS, MAX_TEXT = 32, 256
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1 control characters


def text(value: str, field_path: str, max_len: int = MAX_TEXT) -> str:
    """Free text shown to operators: bounded, no control characters, no padding."""
    if len(value) > max_len:
        raise DtqError.invalid(field_path, f"must be at most {max_len} characters")
    if CONTROL_RE.search(value) or value != value.strip():
        raise DtqError.invalid(
            field_path, "must not hold control characters or leading or trailing spaces"
        )
    return value


def labels(value: dict[str, str], field_path: str = "labels") -> dict[str, str]:
    if len(value) > MAX_LABELS:
        raise DtqError.invalid(field_path, f"must hold at most {MAX_LABELS} entries")
    for key, label in value.items():
        if not LABEL_KEY_RE.match(key):
            raise DtqError.invalid(
                field_path, f"key {key[:64]!r}: keys must be 1-63 characters of [A-Za-z0-9_.-/]"
            )
        text(label, f"{field_path}[{key}]")
    return value


def worker_details(worker: WorkerInfo) -> None:
    """The free-form fields of a registration; the id, queues and types have their own."""
    text(worker.hostname, "hostname")
    text(worker.version, "version")
    labels(worker.labels)

"""Rules for what a submission may contain, and the defaults it gets."""

from __future__ import annotations

import hashlib
import math
import re
import struct
from dataclasses import dataclass

from dtq.domain.errors import DtqError
from dtq.domain.ids import uuid7
from dtq.domain.model import NewTask, Priority, WorkerInfo

# `\Z`, not `$`: `$` also matches before a trailing newline ("default\n").
TYPE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,127}\Z")
QUEUE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}\Z")
WORKER_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}\Z")
ADDRESS_RE = re.compile(r"[A-Za-z0-9_.:\-\[\]]{1,255}:[0-9]{1,5}")
MAX_IDEMPOTENCY_KEY = 256
MAX_RETRIES = 100
MIN_TIMEOUT, MAX_TIMEOUT = 1.0, 24 * 3600.0
MIN_LEASE, MAX_LEASE = 1.0, 3600.0
MAX_BATCH = 1000
TRACE_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,63}\Z")
MAX_TRACE_ENTRIES, MAX_TRACE_BYTES = 16, 4096
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


def new_task(spec: SubmitSpec, limits: Limits, now: float) -> NewTask:
    """Validate `spec` and fill in defaults; INVALID_ARGUMENT names the field."""
    if len(spec.payload) > limits.max_payload_bytes:
        raise DtqError.invalid(
            "payload",
            f"is {len(spec.payload)} bytes encoded; the limit is {limits.max_payload_bytes}",
            reason="PAYLOAD_TOO_LARGE",
        )
    max_retries = limits.default_max_retries if spec.max_retries is None else spec.max_retries
    if not 0 <= max_retries <= MAX_RETRIES:
        raise DtqError.invalid("max_retries", f"must be between 0 and {MAX_RETRIES}")
    if len(spec.idempotency_key) > MAX_IDEMPOTENCY_KEY:
        raise DtqError.invalid(
            "idempotency_key", f"must be at most {MAX_IDEMPOTENCY_KEY} characters"
        )
    plain_text(spec.idempotency_key, "idempotency_key")
    trace_text(spec.trace_context)
    point_in_time(spec.scheduled_at, "scheduled_at")
    scheduled_at = spec.scheduled_at if spec.scheduled_at and spec.scheduled_at > now else None
    kind, queue = task_type(spec.type), queue_name(spec.queue)
    level = priority(spec.priority)
    timeout = _bounded(spec.timeout, limits.default_timeout, MIN_TIMEOUT, MAX_TIMEOUT, "timeout")
    lease = _bounded(
        spec.lease_duration, limits.default_lease_duration, MIN_LEASE, MAX_LEASE, "lease_duration"
    )
    # The client's own scheduled_at (not the clamped one) defines the request.
    digest = hashlib.sha256(b"%s\0%s\0" % (kind.encode(), queue.encode()))
    digest.update(
        struct.pack("!iiddd", level, max_retries, timeout, lease, spec.scheduled_at or 0.0)
    )
    digest.update(spec.payload)
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
    )


def batch_size(count: int) -> None:
    if count == 0:
        raise DtqError.invalid("requests", "must hold at least one request")
    if count > MAX_BATCH:
        raise DtqError.invalid("requests", f"must hold at most {MAX_BATCH} requests")


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

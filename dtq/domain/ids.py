"""Task ids: UUID version 7 (RFC 9562), time-ordered.

Time order keeps PostgreSQL's primary-key index appending at its right edge
(no random page splits) and makes "newest first" an index scan on the key.
"""

from __future__ import annotations

import os
import re
import threading
import time
import uuid

from dtq.domain.errors import DtqError
from dtq.domain.model import LeaseRef

TOKEN_RE = re.compile(r"^[0-9a-f]{32}\Z")  # \Z: `$` would allow a trailing newline

_RAND_BITS = 74
_RAND_MASK = (1 << _RAND_BITS) - 1
_lock = threading.Lock()
_last = 0


def uuid7(now: float | None = None) -> uuid.UUID:
    """A new UUIDv7; ids made by one process are strictly increasing."""
    global _last  # noqa: PLW0603 - one monotonic counter per process
    ms = int((time.time() if now is None else now) * 1000)
    rand = int.from_bytes(os.urandom(10), "big")
    # 48 bits of milliseconds, then 74 random bits (exactly what the UUID
    # holds, so the counter orders like the UUIDs); within one millisecond the
    # value is bumped so that ids stay ordered.
    value = (ms << _RAND_BITS) | (rand & _RAND_MASK)
    with _lock:
        if value <= _last:
            value = _last + 1
        _last = value
    ms_part, low = value >> _RAND_BITS, value & _RAND_MASK
    rand_a, rand_b = low >> 62, low & ((1 << 62) - 1)
    return uuid.UUID(int=(ms_part << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b)


CLOCK_SLACK = 600.0  # seconds an id's time may run ahead of its created_at


def floor(seconds: float) -> uuid.UUID:
    """The smallest UUIDv7 of the millisecond `seconds` falls in (0 before 1970)."""
    return uuid.UUID(int=max(int(seconds * 1000), 0) << 80)


def parse_task_id(text: str, field_path: str = "id") -> uuid.UUID:
    """The UUID in `text`, or INVALID_ARGUMENT."""
    try:
        return uuid.UUID(text.strip())
    except (ValueError, AttributeError):
        raise DtqError.invalid(field_path, f"not a task id (UUID): {text[:64]!r}") from None


def lease_ref(task_id: str, token: str, field_path: str = "") -> LeaseRef:
    """A validated (task id, lease token) pair, or INVALID_ARGUMENT."""
    prefix = f"{field_path}." if field_path else ""
    if not TOKEN_RE.match(token):
        raise DtqError.invalid(f"{prefix}lease_token", "is not a lease token (32 hex digits)")
    return LeaseRef(parse_task_id(task_id, f"{prefix}task_id"), token)

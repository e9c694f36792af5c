"""Reading ids in tests."""

from __future__ import annotations

import uuid


def time_of(task_id: uuid.UUID) -> float:
    """Unix seconds encoded in a UUIDv7 (the product never needs to read it back)."""
    return (task_id.int >> 80) / 1000

"""The one-message-per-batch format of task state changes (dtq:changes)."""

from __future__ import annotations

import uuid

from dtq.adapters import redis_keys as keys


def test_changes_round_trip_many_tasks_in_one_message() -> None:
    items = [(uuid.uuid4(), state) for state in ("running", "completed", "dead_lettered", "")]
    data = keys.changes(items)
    assert list(keys.split_changes(data)) == [(i.bytes, s) for i, s in items]


def test_a_truncated_message_yields_only_whole_records() -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    data = keys.changes([(first, "running"), (second, "completed")])
    assert [s for _, s in keys.split_changes(data[:-12])] == ["running"]
    assert list(keys.split_changes(b"")) == []

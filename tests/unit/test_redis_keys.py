"""The one-message-per-batch format of task state changes (dtq:changes), and
the hash tags of the rate limit buckets."""

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


def test_rate_buckets_live_in_the_slot_of_their_queue_or_tenant() -> None:
    assert keys.dispatch_bucket("mail", "send") == "dtq:{mail}:rate:send"
    assert keys.dispatch_bucket("mail", "send").split("}")[0] == keys.leases("mail").split("}")[0]
    assert keys.submit_bucket("acme") == "dtq:tenant:{acme}:submit"

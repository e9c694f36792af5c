"""Every Lua script touches one Redis Cluster slot: the KEYS the adapters pass
(built by the same functions, for sample and generated arguments) hash to
one slot, and so do the keys lease.lua builds itself (`shared .. '#' .. key`)."""

from __future__ import annotations

import string
import uuid
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from dtq.adapters import redis_keys as keys
from dtq.adapters.redis_conn import SCRIPTS
from dtq.adapters.redis_queue import RedisQueue
from dtq.domain.model import Priority
from dtq.ports import Ready

queues = st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=20)
tenants = st.sampled_from(["default", "acme", "a-b_c"])
words = st.text(min_size=1, max_size=12)  # task types and fairness keys: any text
priorities = st.sampled_from(list(Priority))


def tag(tenant: str, queue: str) -> str:
    return keys.queue_tag(tenant, queue)


def enqueue_keys(q: str, types: list[str], fair: list[str]) -> list[str]:
    items = [
        Ready(uuid.uuid4(), q, t, p, f)
        for t in types
        for f in fair
        for p in (Priority.HIGH, Priority.LOW)
    ]
    return RedisQueue._enqueue_args(q, items)[0]


# script name -> KEYS the adapter passes it, from (queue tag, task types, fairness keys)
CALLS: dict[str, Callable[[str, list[str], list[str]], list[str]]] = {
    "enqueue": enqueue_keys,
    "lease": lambda q, types, _: keys.lease_keys(q, types, types[:1]),
    "extend": lambda q, _t, _f: [keys.leases(q)],
    "claim_expired": lambda q, _t, _f: [keys.leases(q), *keys.lease_counts(q)],
    "end_leases": lambda q, _t, _f: [keys.leases(q), *keys.lease_counts(q)],
    "restore_leases": lambda q, _t, _f: [keys.leases(q), keys.holders(q), keys.running(q)],
    "clock": lambda q, _t, _f: [keys.leases(q)],
    "join_turns": lambda q, types, _: [keys.turns(q, types[0], Priority.MEDIUM)],
    # One bucket per call, in its tenant's slot (not the queue's).
    "take_tokens": lambda q, _t, _f: [keys.submit_bucket("acme")],
}


def slots(names: list[str]) -> set[int]:
    return {key_slot(name.encode()) for name in names}


def test_every_script_has_a_slot_check() -> None:
    assert set(CALLS) == set(SCRIPTS)


def test_sample_calls_touch_one_slot_each() -> None:
    for tenant, queue in [("default", "emails"), ("acme", "emails")]:
        q = tag(tenant, queue)
        for name, build in CALLS.items():
            built = build(q, ["send", "bounce.check"], ["", "customer-42"])
            assert len(slots(built)) == 1, (name, built)


@settings(max_examples=40, deadline=None)
@given(tenants, queues, st.lists(words, min_size=1, max_size=3), st.lists(words, max_size=3))
def test_generated_calls_touch_one_slot_each(
    tenant: str, queue: str, types: list[str], fair: list[str]
) -> None:
    q = tag(tenant, queue)
    for name, build in CALLS.items():
        assert len(slots(build(q, types, ["", *fair]))) == 1, name


@settings(max_examples=40, deadline=None)
@given(tenants, queues, words, priorities, words)
def test_lists_lease_lua_builds_share_the_slot_of_its_keys(
    tenant: str, queue: str, task_type: str, priority: Priority, fairness_key: str
) -> None:
    q = tag(tenant, queue)
    shared = keys.ready(q, task_type, priority)
    assert keys.ready(q, task_type, priority, fairness_key) == f"{shared}#{fairness_key}"
    assert slots([shared + "#" + fairness_key, keys.leases(q)]) == slots([shared])

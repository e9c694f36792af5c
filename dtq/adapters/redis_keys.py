"""Every Redis key and channel dtq uses, built in one place.

Keys of one queue share the hash tag `{q}`, so each Lua script touches a
single Redis Cluster slot. `q` is a tenant's queue: `queue_tag(tenant, queue)`,
the one builder of it (`emails` in the default tenant, `acme/emails` in tenant
acme, so a tenant's queue still lives in one slot). The default tenant keeps
the keys it had before tenants existed: an upgrade finds its ready tasks,
leases and pause flags where they were. A worker's key carries its tenant the
same way (`dtq:worker:acme/w1`): worker ids are the workers' choice, and one
tenant's must not overwrite another's.

| key                          | type   | meaning                                            |
|------------------------------|--------|----------------------------------------------------|
| dtq:{q}:ready:{type}:{h,m,l} | ZSET   | ready task ids (16 bytes), score = ready time (us) |
|   ...:{h,m,l}#{fairness key} | ZSET   | the same, of the tasks with that fairness key      |
| dtq:{q}:turns:{type}:{h,m,l} | ZSET   | fairness keys with ready tasks ('' = the list      |
|                              |        | without #), score = pass: the lowest goes next     |
| dtq:{q}:types                | SET    | task types ever made ready in the queue            |
| dtq:{q}:leases               | ZSET   | id (16 B) + token (16 B), score = deadline (ms)    |
| dtq:{q}:holders              | HASH   | lease member -> its task's fairness key            |
| dtq:{q}:running              | HASH   | 'all' -> leases held, '#'+key -> those of the key  |
|                              |        | (what max_running caps are checked against)        |
| dtq:{q}:capped               | SET    | '#'+key / 'all' passed over at their cap           |
| dtq:{q}:paused               | STRING | present while the queue is paused                  |
| dtq:{q}:rate:{type}          | HASH   | dispatch rate bucket: t tokens, ts (ms); TTL: full |
| dtq:tenant:{t}:submit        | HASH   | a tenant's submit rate bucket (as above)           |
| dtq:{q}:completed:{bucket}   | STRING | completions in a 10 s bucket (expires in 2 min)    |
| dtq:{q}:failed:{bucket}      | STRING | failed attempts in a 10 s bucket (expires in 2 min)|
| dtq:queues                   | SET    | names of every queue that had a ready task         |
| dtq:epoch                    | STRING | set by the reconciler; missing = Redis lost data   |
| dtq:worker:{t/id}            | HASH   | a worker's registration, liveness (expires 1 day)  |
| dtq:workers                  | ZSET   | t/id of every worker, score = last seen (Unix s)   |
| dtq:workers:{t}              | ZSET   | ids of a tenant's workers, score = last seen       |

| channel             | message                    | who listens                       |
|---------------------|----------------------------|-----------------------------------|
| dtq:{q}:notify      | task type made ready       | servers with streams on the queue |
| dtq:cancel          | worker id, task id         | the server holding that stream    |
| dtq:changes         | (task id, new state) pairs | servers while a WatchTask is open |
| dtq:schedule        | due time (Unix s)          | queue managers                    |
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Sequence

from dtq.domain.model import Priority
from dtq.domain.tenants import split_tenant_queue, tenant_queue

BUCKET_SECONDS = 10
PRIORITY_ORDER = (Priority.HIGH, Priority.MEDIUM, Priority.LOW)

QUEUES = "dtq:queues"
EPOCH = "dtq:epoch"
WORKERS = "dtq:workers"
CANCEL_CHANNEL = "dtq:cancel"
SCHEDULE_CHANNEL = "dtq:schedule"
NOTIFY_PATTERN = "dtq:{*}:notify"


def queue_tag(tenant: str, queue: str) -> str:
    """The name of a tenant's queue inside its keys' hash tag."""
    return tenant_queue(tenant, queue)


def split_tag(name: str) -> tuple[str, str]:
    """(tenant, queue) of a `queue_tag`."""
    return split_tenant_queue(name)


def ready(queue: str, task_type: str, priority: Priority, fairness_key: str = "") -> str:
    """The ready list of one fairness key; "" is the list of tasks without a key
    (the key of every task before fair dispatch). lease.lua builds the keyed
    names itself the same way (`base .. '#' .. key`): they share the hash tag."""
    base = f"dtq:{{{queue}}}:ready:{task_type}:{priority.letter}"
    return f"{base}#{fairness_key}" if fairness_key else base


def turns(queue: str, task_type: str, priority: Priority) -> str:
    """The fairness keys of a type and priority that have ready tasks."""
    return f"dtq:{{{queue}}}:turns:{task_type}:{priority.letter}"


def steps(queue: str, task_types: Sequence[str]) -> list[str]:
    """Per type and priority (high to medium to low), its shared ready list then
    its turns: the pairs of keys lease.lua takes, in `ready_keys` order."""
    pairs = [(ready(queue, t, p), turns(queue, t, p)) for t in task_types for p in PRIORITY_ORDER]
    return [k for pair in pairs for k in pair]


def lease_keys(queue: str, task_types: Sequence[str], rated: Sequence[str]) -> list[str]:
    """The KEYS of lease.lua: leases, paused, the running counts, the steps,
    one bucket per rated type."""
    buckets = [dispatch_bucket(queue, t) for t in rated]
    counts = lease_counts(queue)
    return [leases(queue), paused(queue), *counts, *steps(queue, task_types), *buckets]


def ready_keys(queue: str, task_types: Sequence[str]) -> list[str]:
    """The ready keys of these types: three per type, high to medium to low.
    lease.lua takes them in this order (a key's place gives its priority step)."""
    return [ready(queue, t, p) for t in task_types for p in PRIORITY_ORDER]


def of_ready_key(task_types: Sequence[str], index: int) -> tuple[str, Priority]:
    """The type and priority of `ready_keys(queue, task_types)[index]`."""
    kind, step = divmod(index, len(PRIORITY_ORDER))
    return task_types[kind], PRIORITY_ORDER[step]


def types(queue: str) -> str:
    return f"dtq:{{{queue}}}:types"


def leases(queue: str) -> str:
    return f"dtq:{{{queue}}}:leases"


def holders(queue: str) -> str:
    return f"dtq:{{{queue}}}:holders"


def running(queue: str) -> str:
    return f"dtq:{{{queue}}}:running"


def capped(queue: str) -> str:
    return f"dtq:{{{queue}}}:capped"


def lease_counts(queue: str) -> list[str]:
    """The keys that end_leases.lua and claim_expired.lua take after the leases."""
    return [holders(queue), running(queue), capped(queue)]


def paused(queue: str) -> str:
    return f"dtq:{{{queue}}}:paused"


def dispatch_bucket(queue: str, task_type: str) -> str:
    return f"dtq:{{{queue}}}:rate:{task_type}"


def submit_bucket(tenant: str) -> str:
    """In the tenant's own slot: every server replica takes from the same bucket."""
    return f"dtq:tenant:{{{tenant}}}:submit"


def counter(queue: str, kind: str, bucket: int) -> str:
    return f"dtq:{{{queue}}}:{kind}:{bucket}"


def notify_channel(queue: str) -> str:
    return f"dtq:{{{queue}}}:notify"


def queue_of_channel(channel: str) -> str:
    """`dtq:{q}:notify` -> `q`."""
    return channel[channel.index("{") + 1 : channel.rindex("}")]


# Changes of task state, many per message (see `changes` / `split_changes`):
# one PUBLISH per batch of grants or outcomes, not one per task. Only servers
# with a WatchTask open subscribe.
CHANGES_CHANNEL = "dtq:changes"


def changes(items: Iterable[tuple[uuid.UUID, str]]) -> bytes:
    """(task id, new state) pairs as one message: per task, the id's 16 bytes,
    the state's length (one byte), the state."""
    return b"".join(i.bytes + bytes((len(s),)) + s.encode() for i, s in items)


def split_changes(data: bytes) -> Iterator[tuple[bytes, str]]:
    """(id bytes, state) pairs of a `changes` message."""
    at = 0
    while at + 17 <= len(data):
        size = data[at + 16]
        yield data[at : at + 16], data[at + 17 : at + 17 + size].decode()
        at += 17 + size


def worker_member(tenant: str, worker_id: str) -> str:
    """A worker's name across tenants (its member of WORKERS)."""
    return tenant_queue(tenant, worker_id)


def worker(tenant: str, worker_id: str) -> str:
    return f"dtq:worker:{worker_member(tenant, worker_id)}"


def workers_of(tenant: str) -> str:
    return f"dtq:workers:{tenant}"


def lease_member(task_id: uuid.UUID, token: str) -> bytes:
    """Lease ZSET member: the id's 16 bytes then the token's 16 bytes."""
    return task_id.bytes + bytes.fromhex(token)


def split_member(member: bytes) -> tuple[uuid.UUID, str]:
    return uuid.UUID(bytes=member[:16]), member[16:].hex()

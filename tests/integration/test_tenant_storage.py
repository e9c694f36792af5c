"""Tenants in the real PostgreSQL and Redis: idempotency keys per tenant, dead
letters and pause flags per tenant, and the reconciler rebuilding every
tenant's queues under its own hash tag."""

from __future__ import annotations

import dataclasses
import time

import redis

from dtq.adapters import redis_keys as keys
from dtq.adapters.pg_queues import PgQueues
from dtq.adapters.redis_index import RedisIndex
from dtq.app.leasing import Leasing
from dtq.domain.model import NewTask, Subscription, TaskFilter
from dtq.domain.retry import RetryPolicy
from dtq.manager.reconciler import Reconciler
from dtq.ports import Ready, SystemClock
from tests.integration.helpers import async_test, new_task, pg_store, redis_queue


def of(tenant: str, task: NewTask) -> NewTask:
    return dataclasses.replace(task, tenant=tenant)


@async_test
async def test_the_same_idempotency_key_in_two_tenants_makes_two_tasks(
    pg_url: str, clean: None
) -> None:
    async with pg_store(pg_url) as store:
        acme, globex = of("acme", new_task(idempotency_key="k")), of("globex", new_task())
        globex = dataclasses.replace(globex, idempotency_key="k")
        first = await store.insert([acme, globex], time.time())
        assert [s.deduplicated for s in first] == [False, False]
        again = await store.insert([of("acme", new_task(idempotency_key="k"))], time.time())
        assert (again[0].deduplicated, again[0].task.id, again[0].task.tenant) == (
            True,
            acme.id,
            "acme",
        )
        listed = await store.list_tasks(TaskFilter(tenant="globex"), None, 10, False)
        assert [t.id for t in listed] == [globex.id]
        counts = await store.state_counts(None, "acme")
        assert counts == {}  # both pending: not counted here


@async_test
async def test_the_reconciler_rebuilds_each_tenants_queue_in_its_own_slot(
    pg_url: str, redis_url: str, clean: None
) -> None:
    async with pg_store(pg_url) as store, redis_queue(redis_url) as queue:
        index = RedisIndex(queue.calls)
        leasing = Leasing(store, queue, SystemClock(), RetryPolicy())
        settings = PgQueues(store.pg)
        mine = [of("acme", new_task(queue="q")) for _ in range(3)]
        plain = [new_task(queue="q") for _ in range(2)]
        await store.insert(mine + plain, time.time())
        await queue.enqueue([Ready.of(t) for t in mine + plain])
        acme_q = keys.queue_tag("acme", "q")
        ((lease,),) = await leasing.grant_many(
            Subscription((acme_q,), ("email.send",)), acme_q, [("w1", 1)]
        )
        assert lease.task.tenant == "acme"
        await settings.set_paused("q", True, tenant="acme")
        client = redis.Redis.from_url(redis_url)
        client.flushdb()
        client.close()

        restored = await Reconciler(store, queue, index, settings).reconcile("test")

        assert restored == {"ready": 4, "leases": 1, "paused": 1}
        acme, default = await index.stats(acme_q), await index.stats("q")
        assert (acme.pending, acme.running, acme.paused) == (2, 1, True)
        assert (default.pending, default.running, default.paused) == (2, 0, False)
        assert await index.queues() == {"q", "acme/q"}
        # The paused acme queue leases nothing; the default tenant's "q" is another queue.
        acme_sub = Subscription((acme_q,), ("email.send",))
        assert await leasing.grant_many(acme_sub, acme_q, [("w", 5)]) == [[]]
        sub = Subscription(("q",), ("email.send",))
        (leased,) = await leasing.grant_many(sub, "q", [("w", 5)])
        assert {x.task.id for x in leased} == {t.id for t in plain}

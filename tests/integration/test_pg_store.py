"""Contract of the TaskStore port, run against PgStore on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence

import pytest

from dtq.adapters.pg_store import PgStore
from dtq.domain.errors import Code, DtqError
from dtq.domain.model import LeaseRef, NewTask, Submitted, Task, TaskError, TaskFilter, TaskState
from dtq.ports import Decide, Grant, Resolution
from tests.integration.helpers import PAYLOAD_BYTES, async_test, new_task, pg_store, token

pytestmark = pytest.mark.usefixtures("clean")
S = TaskState
LATER = 3600.0
BOOM = TaskError("boom", "ValueError", "Traceback ...", permanent=False)


def to(state: TaskState, scheduled_at: float | None = None) -> Decide:
    """A decide callback that sends every task to `state`."""
    return lambda _task, _error: Resolution(state, scheduled_at)


async def insert_one(store: PgStore, task: NewTask | None = None) -> Task:
    (submitted,) = await store.insert([task or new_task()], time.time())
    return submitted.task


async def lease_one(store: PgStore, task_id: uuid.UUID) -> Task:
    (leased,) = await store.lease([Grant(task_id, token(), "w-1")], time.time())
    return leased


def ref(task: Task) -> LeaseRef:
    assert task.lease_token is not None
    return LeaseRef(task.id, task.lease_token)


async def in_state(store: PgStore, state: TaskState, **spec: object) -> Task:
    """A stored task brought to `state` through the store's own transitions."""
    if state == S.SCHEDULED:
        spec.setdefault("scheduled_at", time.time() + LATER)
    task = await insert_one(store, new_task(**spec))
    if state in (S.PENDING, S.SCHEDULED):
        return task
    if state == S.CANCELLED:
        return (await store.cancel(task.id, time.time()))[0]
    running = await lease_one(store, task.id)
    now = time.time()
    if state == S.COMPLETED:
        (task_or_none,) = await store.complete([(ref(running), b"ok")], now)
    elif state == S.FAILED:
        (task_or_none,) = await store.fail([(ref(running), BOOM)], to(S.FAILED, now + LATER), now)
    elif state == S.DEAD_LETTERED:
        (task_or_none,) = await store.fail([(ref(running), BOOM)], to(S.DEAD_LETTERED), now)
    else:
        return running
    assert task_or_none is not None
    return task_or_none


def error_of(caught: pytest.ExceptionInfo[DtqError]) -> tuple[Code, str]:
    return caught.value.code, caught.value.reason


async def count(store: PgStore) -> int:
    return len(await store.list_tasks(TaskFilter(), None, 10_000, False))


# -- submit and read -----------------------------------------------------------------


@async_test
async def test_insert_then_get(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        spec = new_task(queue="emails", priority=3, max_retries=5, timeout=9.5, idempotency_key="k")
        (submitted,) = await store.insert([spec], 1_700_000_000.25)
        assert not submitted.deduplicated
        got = await store.get(spec.id)
    assert got == submitted.task
    assert (got.type, got.queue, got.priority, got.state) == ("email.send", "emails", 3, S.PENDING)
    assert (got.attempts, got.max_retries, got.timeout, got.lease_duration) == (0, 5, 9.5, 30.0)
    assert (got.payload, got.idempotency_key) == (PAYLOAD_BYTES, "k")
    assert got.created_at == got.updated_at == 1_700_000_000.25
    assert got.lease_token is None


@async_test
async def test_get_without_payload_and_of_an_unknown_id(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        task = await insert_one(store)
        assert (await store.get(task.id, with_payload=False)).payload is None
        assert await store.get(uuid.uuid4()) is None
        assert [t.id for t in await store.get_many([task.id, uuid.uuid4()])] == [task.id]
        assert await store.get_many([]) == []


@async_test
async def test_a_future_submission_is_scheduled(pg_url: str) -> None:
    when = time.time() + 600.123456
    async with pg_store(pg_url) as store:
        task = await insert_one(store, new_task(scheduled_at=when))
        got = await store.get(task.id)
    assert task.state == got.state == S.SCHEDULED
    assert got.scheduled_at == pytest.approx(when, abs=1e-6)


# -- idempotency -----------------------------------------------------------------------


@async_test
async def test_same_key_same_request_is_deduplicated(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        first = await insert_one(store, new_task(idempotency_key="order-1"))
        (again,) = await store.insert([new_task(idempotency_key="order-1")], time.time())
        assert again.deduplicated
        assert again.task.id == first.id
        assert await count(store) == 1


@async_test
async def test_same_key_different_payload_already_exists(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        await insert_one(store, new_task(idempotency_key="order-1"))
        with pytest.raises(DtqError) as caught:
            await store.insert([new_task(idempotency_key="order-1", payload=b"{}")], time.time())
        assert error_of(caught) == (Code.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")
        assert await count(store) == 1


@async_test
async def test_keys_are_unique_per_queue(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        one = await insert_one(store, new_task(idempotency_key="k", queue="a"))
        two = await insert_one(store, new_task(idempotency_key="k", queue="b", payload=b"{}"))
        assert one.id != two.id


@async_test
async def test_concurrent_submissions_with_one_key_make_one_task(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        results: list[list[Submitted]] = await asyncio.gather(
            *(store.insert([new_task(idempotency_key="k")], time.time()) for _ in range(64))
        )
        subs = [s for r in results for s in r]
        assert sum(not s.deduplicated for s in subs) == 1
        assert len({s.task.id for s in subs}) == 1
        assert await count(store) == 1


@async_test
async def test_concurrent_conflicting_submissions_keep_the_first(pg_url: str) -> None:
    payloads = [b'{"v":1}', b'{"v":2}'] * 20
    async with pg_store(pg_url) as store:
        results = await asyncio.gather(
            *(
                store.insert([new_task(idempotency_key="k", payload=p)], time.time())
                for p in payloads
            ),
            return_exceptions=True,
        )
        (stored,) = await store.list_tasks(TaskFilter(), None, 10, True)
    for payload, result in zip(payloads, results, strict=True):
        if payload == stored.payload:
            assert [s.task.id for s in result] == [stored.id]
        else:
            assert isinstance(result, DtqError)
            assert result.code == Code.ALREADY_EXISTS


@async_test
async def test_a_batch_with_one_conflicting_key_stores_nothing(pg_url: str) -> None:
    async with pg_store(pg_url, pool_size=2) as store:  # one insert flush at a time
        await insert_one(store, new_task(idempotency_key="taken"))
        bad = [new_task(), new_task(idempotency_key="taken", payload=b"{}"), new_task()]
        good = [new_task(), new_task(idempotency_key="free")]
        # The first call flushes alone; the two batches then share one flush.
        results = await asyncio.gather(
            store.insert([new_task()], time.time()),
            store.insert(bad, time.time()),
            store.insert(good, time.time()),
            return_exceptions=True,
        )
        assert isinstance(results[1], DtqError)
        assert results[1].code == Code.ALREADY_EXISTS
        assert [await store.get(t.id) for t in bad] == [None] * len(bad)
        assert None not in [await store.get(t.id) for t in good]
        assert await count(store) == 1 + 1 + len(good)


@async_test
async def test_a_key_repeated_inside_one_batch_is_one_task(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        first, second = await store.insert(
            [new_task(idempotency_key="k"), new_task(idempotency_key="k")], time.time()
        )
        assert not first.deduplicated
        assert second.deduplicated
        assert second.task.id == first.task.id


# -- leases and outcomes ---------------------------------------------------------------


@async_test
async def test_lease_moves_pending_tasks_to_running(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        a, b = await insert_one(store), await insert_one(store)
        grants = [Grant(a.id, token(), "w-1"), Grant(b.id, token(), "w-2")]
        now = time.time()
        leased = await store.lease(grants, now)
    assert [t.id for t in leased] == [a.id, b.id]
    for task, grant in zip(leased, grants, strict=True):
        assert (task.state, task.attempts) == (S.RUNNING, 1)
        assert (task.lease_token, task.worker_id) == (grant.token, grant.worker_id)
        assert task.started_at == pytest.approx(now, abs=1e-6)


@async_test
async def test_only_a_pending_task_can_be_leased(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        running = await in_state(store, S.RUNNING)
        scheduled = await in_state(store, S.SCHEDULED)
        grants = [Grant(running.id, token(), "w-2"), Grant(scheduled.id, token(), "w-2")]
        assert await store.lease(grants, time.time()) == []
        again = await store.get(running.id)
        assert (again.lease_token, again.attempts) == (running.lease_token, 1)
        assert await store.lease([], time.time()) == []


@async_test
async def test_attempts_count_every_lease(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        task = await insert_one(store)
        for attempt in (1, 2, 3):
            running = await lease_one(store, task.id)
            assert running.attempts == attempt
            await store.expire([ref(running)], to(S.PENDING), time.time())


@async_test
async def test_two_leases_of_one_task_in_one_flush_grant_one(pg_url: str) -> None:
    async with pg_store(pg_url, pool_size=4) as store:  # one lease flush at a time
        other, task = await insert_one(store), await insert_one(store)
        first, second = Grant(task.id, token(), "w-1"), Grant(task.id, token(), "w-2")
        results = await asyncio.gather(
            store.lease([Grant(other.id, token(), "w-0")], time.time()),
            store.lease([first], time.time()),
            store.lease([second], time.time()),
        )
        stored = await store.get(task.id)
    won = [g for g, r in zip((first, second), results[1:], strict=True) if r]
    assert len(won) == 1
    assert stored.lease_token == won[0].token
    for grant, result in zip((first, second), results[1:], strict=True):
        assert all(t.lease_token == grant.token for t in result)


@async_test
async def test_complete_with_the_right_token(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        running = await in_state(store, S.RUNNING)
        now = time.time()
        (done,) = await store.complete([(ref(running), b'{"ok":true}')], now)
        got = await store.get(running.id)
    assert done is not None
    assert (done.state, got.state) == (S.COMPLETED, S.COMPLETED)
    assert got.result == b'{"ok":true}'
    assert got.finished_at == pytest.approx(now, abs=1e-6)
    assert got.lease_token is None


@async_test
async def test_complete_with_a_wrong_token_changes_nothing(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        running = await in_state(store, S.RUNNING)
        right = ref(running)
        wrong = LeaseRef(running.id, token())
        assert await store.complete([(wrong, None)], time.time()) == [None]
        assert (await store.get(running.id)).state == S.RUNNING
        assert await store.complete([(right, None)], time.time()) != [None]
        assert await store.complete([(right, None)], time.time()) == [None]


@async_test
async def test_complete_answers_each_item_in_order(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        a, b = await in_state(store, S.RUNNING), await in_state(store, S.RUNNING)
        items = [(LeaseRef(a.id, token()), None), (ref(b), None), (ref(a), b"1")]
        results = await store.complete(items, time.time())
    assert results[0] is None
    assert [r.id if r else None for r in results[1:]] == [b.id, a.id]


@async_test
async def test_fail_to_a_retry(pg_url: str) -> None:
    seen: list[tuple[Task, TaskError]] = []
    retry_at = time.time() + 42

    def decide(task: Task, error: TaskError) -> Resolution:
        seen.append((task, error))
        return Resolution(S.FAILED, retry_at)

    async with pg_store(pg_url) as store:
        running = await in_state(store, S.RUNNING)
        (failed,) = await store.fail([(ref(running), BOOM)], decide, time.time())
        got = await store.get(running.id)
    assert [(t.id, t.attempts, e) for t, e in seen] == [(running.id, 1, BOOM)]
    assert failed is not None
    assert (failed.state, got.state) == (S.FAILED, S.FAILED)
    assert got.scheduled_at == pytest.approx(retry_at, abs=1e-6)
    assert got.error == BOOM
    assert (got.finished_at, got.lease_token) == (None, None)


@async_test
async def test_fail_to_the_dead_letters(pg_url: str) -> None:
    permanent = TaskError("bad input", "KeyError", "", permanent=True)
    async with pg_store(pg_url) as store:
        running = await in_state(store, S.RUNNING)
        now = time.time()
        (dead,) = await store.fail([(ref(running), permanent)], to(S.DEAD_LETTERED), now)
        got = await store.get(running.id)
    assert dead is not None
    assert got.state == S.DEAD_LETTERED
    assert got.error == permanent
    assert got.finished_at == pytest.approx(now, abs=1e-6)


@async_test
async def test_fail_with_a_wrong_token_is_not_decided(pg_url: str) -> None:
    def decide(task: Task, error: TaskError) -> Resolution:
        raise AssertionError("decided a stale outcome")

    async with pg_store(pg_url) as store:
        running = await in_state(store, S.RUNNING)
        stale = [(LeaseRef(running.id, token()), BOOM), (LeaseRef(uuid.uuid4(), token()), BOOM)]
        assert await store.fail(stale, decide, time.time()) == [None, None]
        assert (await store.get(running.id)).state == S.RUNNING
        assert await store.fail([], decide, time.time()) == []


@async_test
async def test_fail_truncates_huge_error_text(pg_url: str) -> None:
    huge = TaskError("m" * 10_000, "T" * 1000, "t" * 100_000)
    async with pg_store(pg_url) as store:
        running = await in_state(store, S.RUNNING)
        await store.fail([(ref(running), huge)], to(S.FAILED, time.time()), time.time())
        error = (await store.get(running.id)).error
    assert error is not None
    assert (len(error.message), len(error.type), len(error.traceback)) == (4096, 256, 32768)


# -- cancel and retry ---------------------------------------------------------------------


@pytest.mark.parametrize("state", [S.PENDING, S.SCHEDULED, S.FAILED, S.RUNNING])
@async_test
async def test_cancel_from_a_live_state(pg_url: str, state: TaskState) -> None:
    async with pg_store(pg_url) as store:
        task = await in_state(store, state)
        now = time.time()
        cancelled, was, held, _ = await store.cancel(task.id, now)
        got = await store.get(task.id)
    assert (cancelled.state, got.state, was) == (S.CANCELLED, S.CANCELLED, state)
    assert held == task.lease_token
    assert (held is not None) == (state == S.RUNNING)
    assert got.lease_token is None
    assert got.finished_at == pytest.approx(now, abs=1e-6)


@pytest.mark.parametrize("state", [S.COMPLETED, S.CANCELLED, S.DEAD_LETTERED])
@async_test
async def test_cancel_of_a_finished_task_is_refused(pg_url: str, state: TaskState) -> None:
    async with pg_store(pg_url) as store:
        task = await in_state(store, state)
        with pytest.raises(DtqError) as caught:
            await store.cancel(task.id, time.time())
        assert error_of(caught) == (Code.FAILED_PRECONDITION, "INVALID_TRANSITION")
        assert (await store.get(task.id)).state == state


@async_test
async def test_cancel_and_retry_of_an_unknown_task(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        for action in (store.cancel, store.retry):
            with pytest.raises(DtqError) as caught:
                await action(uuid.uuid4(), time.time())
            assert error_of(caught) == (Code.NOT_FOUND, "TASK_NOT_FOUND")


@async_test
async def test_retry_of_a_failed_task(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        failed = await in_state(store, S.FAILED, max_retries=3)
        again = await store.retry(failed.id, time.time())
    assert again.state == S.PENDING
    assert (again.scheduled_at, again.finished_at) == (None, None)
    assert (again.attempts, again.max_retries) == (1, 3)


@async_test
async def test_retry_of_a_dead_letter_gets_a_fresh_budget(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        dead = await in_state(store, S.DEAD_LETTERED, max_retries=2)
        again = await store.retry(dead.id, time.time())
    assert again.state == S.PENDING
    assert again.finished_at is None
    # Three more attempts (the first and two retries) before it is exhausted again.
    assert again.max_retries - again.attempts == 2


@pytest.mark.parametrize("state", [S.PENDING, S.SCHEDULED, S.RUNNING, S.COMPLETED, S.CANCELLED])
@async_test
async def test_retry_is_refused_otherwise(pg_url: str, state: TaskState) -> None:
    async with pg_store(pg_url) as store:
        task = await in_state(store, state)
        with pytest.raises(DtqError) as caught:
            await store.retry(task.id, time.time())
        assert error_of(caught) == (Code.FAILED_PRECONDITION, "INVALID_TRANSITION")
        assert (await store.get(task.id)).state == state


# -- scheduling -------------------------------------------------------------------------


async def insert_due(store: PgStore, offsets: Sequence[float], now: float) -> list[Task]:
    """Scheduled tasks due at now + offset (submitted an hour earlier)."""
    new = [new_task(now - LATER, scheduled_at=now + o) for o in offsets]
    return [s.task for s in await store.insert(new, now - LATER)]


@async_test
async def test_promote_due_takes_only_due_tasks_earliest_first(pg_url: str) -> None:
    now = time.time()
    async with pg_store(pg_url) as store:
        late, early, future = await insert_due(store, [-5, -10, +100], now)
        failed = await in_state(store, S.FAILED)  # its retry is an hour away
        (first,) = await store.promote_due(now, limit=1)
        rest = await store.promote_due(now, limit=10)
        assert (first.id, first.state) == (early.id, S.PENDING)
        assert [t.id for t in rest] == [late.id]
        assert await store.promote_due(now, limit=10) == []
        assert (await store.get(future.id)).state == S.SCHEDULED
        assert (await store.get(failed.id)).state == S.FAILED
        retried = await store.promote_due(now + LATER + 1, limit=10)
        assert {t.id for t in retried} == {future.id, failed.id}


@async_test
async def test_concurrent_promoters_never_promote_twice(pg_url: str) -> None:
    now = time.time()
    async with pg_store(pg_url) as one, pg_store(pg_url) as two:
        due = await insert_due(one, [-float(i) for i in range(300)], now)
        batches = await asyncio.gather(
            *(store.promote_due(now, limit=40) for store in (one, two) * 6)
        )
    promoted = [t.id for batch in batches for t in batch]
    assert len(promoted) == len(set(promoted))
    assert set(promoted) <= {t.id for t in due}
    assert len(promoted) == 300


@async_test
async def test_next_due(pg_url: str) -> None:
    now = time.time()
    async with pg_store(pg_url) as store:
        assert await store.next_due() is None
        await insert_one(store)
        assert await store.next_due() is None
        await insert_due(store, [300, 200], now)
        assert await store.next_due() == pytest.approx(now + 200, abs=1e-6)
        failed = await in_state(store, S.FAILED)
        assert await store.next_due() == pytest.approx(now + 200, abs=1e-6)
        assert failed.scheduled_at is not None
        assert failed.scheduled_at > now + 200


# -- listing and counts ----------------------------------------------------------------------


@async_test
async def test_list_tasks_newest_first_by_keyset(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        made = [await insert_one(store) for _ in range(7)]
        newest_first = [t.id for t in reversed(made)]
        page1 = await store.list_tasks(TaskFilter(), None, 3, False)
        page2 = await store.list_tasks(TaskFilter(), page1[-1].id, 3, False)
        page3 = await store.list_tasks(TaskFilter(), page2[-1].id, 3, True)
    assert [t.id for t in page1 + page2 + page3] == newest_first
    assert all(t.payload is None for t in page1)
    assert all(t.payload is not None for t in page3)


@async_test
async def test_list_tasks_filters(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        a = await insert_one(store, new_task(type="a", queue="q1"))
        b = await insert_one(store, new_task(type="b", queue="q1"))
        c = await insert_one(store, new_task(type="a", queue="q2"))
        await lease_one(store, c.id)

        async def ids(**filters: object) -> list[uuid.UUID]:
            found = await store.list_tasks(TaskFilter(**filters), None, 100, False)  # type: ignore[arg-type]
            return [t.id for t in found]

        assert await ids(type="a") == [c.id, a.id]
        assert await ids(queue="q1") == [b.id, a.id]
        assert await ids(state=S.RUNNING) == [c.id]
        assert await ids(type="a", queue="q1", state=S.PENDING) == [a.id]
        assert await ids(type="zzz") == []


@async_test
async def test_state_counts(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        for state, queue in [(S.SCHEDULED, "a"), (S.SCHEDULED, "a"), (S.FAILED, "a")]:
            await in_state(store, state, queue=queue)
        for state in (S.DEAD_LETTERED, S.PENDING, S.RUNNING, S.COMPLETED, S.CANCELLED):
            await in_state(store, state, queue="b")
        every = await store.state_counts(None)
        only_b = await store.state_counts("b")
    assert every == {("a", S.SCHEDULED): 2, ("a", S.FAILED): 1, ("b", S.DEAD_LETTERED): 1}
    assert only_b == {("b", S.DEAD_LETTERED): 1}


# -- expiry ------------------------------------------------------------------------------------


@async_test
async def test_expire_moves_held_leases_and_finds_orphans(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        held = await in_state(store, S.RUNNING)
        taken = await in_state(store, S.RUNNING)  # its lease was replaced: wrong token
        orphan = await in_state(store, S.PENDING)  # popped from Redis, never marked running
        done = await in_state(store, S.COMPLETED)
        refs = [ref(held), LeaseRef(taken.id, token()), LeaseRef(orphan.id, token())]
        refs.append(LeaseRef(done.id, token()))
        moved, orphans = await store.expire(refs, to(S.PENDING), time.time())
        assert (await store.get(taken.id)).state == S.RUNNING
    assert [t.id for t in moved] == [held.id]
    assert (moved[0].state, moved[0].lease_token) == (S.PENDING, None)
    assert moved[0].error is not None
    assert moved[0].error.type == "LeaseExpired"
    assert [t.id for t in orphans] == [orphan.id]


@async_test
async def test_expire_can_dead_letter(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        held = await in_state(store, S.RUNNING)
        moved, orphans = await store.expire([ref(held)], to(S.DEAD_LETTERED), time.time())
    assert [(t.id, t.state) for t in moved] == [(held.id, S.DEAD_LETTERED)]
    assert moved[0].finished_at is not None
    assert orphans == []


@async_test
async def test_ping(pg_url: str) -> None:
    async with pg_store(pg_url) as store:
        await store.ping()

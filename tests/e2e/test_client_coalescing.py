"""Concurrent `client.submit()` calls coalesced into BatchSubmitTasks, against a
real `dtq server`: each caller gets its own task or its own error, and a lost
reply is retried without duplicates. `tests/support/relay.py` sits between the
client and the server where the test needs calls held in flight or a reply lost.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dtq import AsyncClient, Client
from dtq.client import Coalescing, InvalidArgument, TaskHandle
from tests.conftest import Server
from tests.e2e.test_metrics import scrape, value
from tests.support.procs import wait_until
from tests.support.relay import Relay

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean")]
THREADS = 32


@pytest.fixture
def relay(server: Server) -> Iterator[Relay]:
    r = Relay(server.address)
    yield r
    r.close()


def batch_calls(server: Server, code: str = "OK", method: str = "BatchSubmitTasks") -> float:
    samples = scrape(server.metrics_port)
    return value(samples, "dtq_grpc_requests_total", method=method, code=code)


def in_threads(n: int, work: Callable[[int], Any]) -> list[Any]:
    """work(i) for i < n, each in its own thread, started together; results or errors."""
    out: list[Any] = [None] * n
    start = threading.Barrier(n)

    def one(i: int) -> None:
        start.wait(10)
        try:
            out[i] = work(i)
        except Exception as error:  # each caller's own error is inspected
            out[i] = error

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    return out


def held(client: Client, relay: Relay, queued: int, work: Callable[[int], Any]) -> list[Any]:
    """One submission in flight with its reply held by the relay while `queued`
    callers queue behind it (in_flight=1), then the reply let through: the
    queued ones go out together."""
    relay.hold()
    first = threading.Thread(target=client.submit, args=("noop",))
    first.start()
    coalescer = client._coalescer  # how many wait: the sync point
    assert coalescer is not None
    results: list[Any] = []
    rest = threading.Thread(target=lambda: results.extend(in_threads(queued, work)))
    rest.start()
    wait_until(lambda: coalescer.queued == queued, 20, f"{queued} queued submissions")
    relay.release()
    first.join(30)
    rest.join(60)
    return results


def test_many_threads_each_get_their_own_task(server: Server) -> None:
    before = batch_calls(server)
    with Client(server.address) as client:
        handles = in_threads(
            THREADS, lambda i: [client.submit("noop", {"n": i, "k": k}) for k in range(20)]
        )
        listed = {t.id for t in client.list()}
    for i, mine in enumerate(handles):
        assert [h.task.payload for h in mine] == [{"n": i, "k": k} for k in range(20)]
    ids = {h.id for mine in handles for h in mine}
    assert ids == listed
    assert len(ids) == THREADS * 20
    assert batch_calls(server) > before  # some submissions were coalesced


def test_a_bad_submission_fails_only_its_caller(server: Server, relay: Relay) -> None:
    before = batch_calls(server, "INVALID_ARGUMENT")
    alone = batch_calls(server, "INVALID_ARGUMENT", "SubmitTask")

    def work(i: int) -> TaskHandle:
        return client.submit("9-not-a-type" if i == 3 else "noop", {"n": i})

    with Client(relay.address, coalesce=Coalescing(in_flight=1)) as client:
        client.submit("noop")  # connected before the relay holds anything
        results = held(client, relay, 8, work)
    bad = results.pop(3)
    assert isinstance(bad, InvalidArgument)
    assert [v.field for v in bad.violations] == ["type"]  # as if submitted alone
    assert [r.task.payload for r in results] == [{"n": i} for i in range(8) if i != 3]
    assert batch_calls(server, "INVALID_ARGUMENT") == before + 1  # it was in a batch
    assert batch_calls(server, "INVALID_ARGUMENT", "SubmitTask") == alone  # named, not searched


def test_one_idempotency_key_twice_at_once_gives_one_task(server: Server, relay: Relay) -> None:
    def work(i: int) -> TaskHandle:
        return client.submit("noop", idempotency_key="same" if i < 2 else f"k{i}")

    with Client(relay.address, coalesce=Coalescing(in_flight=1)) as client:
        client.submit("noop")
        results = held(client, relay, 6, work)
    assert results[0].id == results[1].id
    assert sorted([results[0].deduplicated, results[1].deduplicated]) == [False, True]
    assert len({r.id for r in results}) == 5


def test_a_lost_batch_reply_is_retried_without_duplicates(server: Server, relay: Relay) -> None:
    with Client(relay.address, coalesce=Coalescing(in_flight=1)) as client:
        client.submit("noop")
        relay.drop_reply(2)  # the held single's reply passes, the batch's is lost
        results = held(client, relay, 10, lambda i: client.submit("noop", {"n": i}))
        assert relay.dropped == 1
        assert [r.task.payload for r in results] == [{"n": i} for i in range(10)]
        assert all(r.deduplicated for r in results)  # answered by the retry, from the first
        assert len(list(client.list())) == 1 + 1 + 10


def test_async_client_coalesces_concurrent_awaits(server: Server) -> None:
    before = batch_calls(server)

    async def main() -> list[Any]:
        async with AsyncClient(server.address) as client:

            async def one(i: int) -> Any:
                return await client.submit("9-bad" if i == 7 else "noop", {"n": i})

            return await asyncio.gather(*(one(i) for i in range(200)), return_exceptions=True)

    results = asyncio.run(main())
    bad = results.pop(7)
    assert isinstance(bad, InvalidArgument)
    assert [v.field for v in bad.violations] == ["type"]
    assert [r.task.payload for r in results] == [{"n": i} for i in range(200) if i != 7]
    assert len({r.id for r in results}) == 199
    assert batch_calls(server) + batch_calls(server, "INVALID_ARGUMENT") > before

"""Unique for a window (`unique_for`, Oban's `unique: [period: ...]`): the
server gives back the earlier task for the same type, queue and payload (or
unique key), also to many concurrent submitters, through dtq.Client."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest

from dtq.client import Client, InvalidArgument
from dtq.v1 import task_service_pb2 as pb
from dtq.v1 import task_service_pb2_grpc
from tests.conftest import Server

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean")]
LATER = 3600  # seconds: nobody runs them, they stay scheduled


@pytest.fixture
def client(server: Server) -> Any:
    with Client(server.address) as made:
        yield made


def test_the_same_submission_within_the_window_gives_back_the_first(client: Client) -> None:
    first = client.submit("report", {"day": 1}, unique_for=60, delay=LATER)
    again = client.submit("report", {"day": 1}, unique_for=60, delay=LATER)
    other = client.submit("report", {"day": 2}, unique_for=60, delay=LATER)
    plain = client.submit("report", {"day": 1}, delay=LATER)
    assert (again.id, again.deduplicated, first.deduplicated) == (first.id, True, False)
    assert len({first.id, other.id, plain.id}) == 3
    keyed = client.submit("report", {"x": 1}, unique_for=60, unique_key="k", delay=LATER)
    same_key = client.submit("report", {"x": 2}, unique_for=60, unique_key="k", delay=LATER)
    assert same_key.id == keyed.id


def test_only_earlier_tasks_in_the_states_named_count(client: Client) -> None:
    options: Any = {"unique_for": 60, "unique_states": ["scheduled", "pending", "running"]}
    first = client.submit("sync", {"account": 7}, **options, delay=LATER)
    assert client.submit("sync", {"account": 7}, **options, delay=LATER).id == first.id
    first.cancel()
    after = client.submit("sync", {"account": 7}, **options, delay=LATER)
    assert after.id != first.id and not after.deduplicated


def test_the_window_ends(client: Client) -> None:
    first = client.submit("tick", {}, unique_for=1, delay=LATER)
    time.sleep(1.3)
    assert client.submit("tick", {}, unique_for=1, delay=LATER).id != first.id


def test_concurrent_submitters_get_one_task(server: Server, client: Client) -> None:
    def submit(_: int) -> str:
        return client.submit("once", {"n": 1}, unique_for=60, delay=LATER).id

    with ThreadPoolExecutor(32) as pool:
        ids = set(pool.map(submit, range(64)))
    with Client(server.address) as second:  # another connection, another flush
        ids.add(second.submit("once", {"n": 1}, unique_for=60, delay=LATER).id)
    assert len(ids) == 1
    listed = client.list(type="once")
    assert len(list(listed)) == 1


def test_bad_uniqueness_is_refused(server: Server, client: Client) -> None:
    with pytest.raises(InvalidArgument) as refused:
        client.submit("t", {}, unique_for=0.5)
    assert refused.value.violations[0].field == "unique_for"
    with pytest.raises(ValueError):
        client.submit("t", {}, unique_key="k")
    with server.channel() as channel:
        stub = task_service_pb2_grpc.TaskServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raw:
            stub.SubmitTask(pb.SubmitTaskRequest(type="t", unique_key="k"), timeout=10)
    assert raw.value.code() == grpc.StatusCode.INVALID_ARGUMENT

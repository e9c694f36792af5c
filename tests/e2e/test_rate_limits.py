"""Quotas and rate limits through real servers, workers, Redis and Envoy.

A tenant's submit rate is one token bucket in Redis that every server takes
from; past it a submission answers RESOURCE_EXHAUSTED with RetryInfo (HTTP 429
with Retry-After through Envoy) and goes in once the bucket refills. The
queued cap counts pending and scheduled tasks. A task type's dispatch rate
holds across two workers without slowing the other types. dtq.Client and the
CLI wait and retry. With Redis unreachable the limit fails open, or closed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from dtq import Client
from dtq.v1 import admin_service_pb2 as apb
from dtq.v1 import admin_service_pb2_grpc, task_service_pb2, task_service_pb2_grpc
from tests.conftest import Server, WorkerFactory, start_server
from tests.e2e.test_cli import dtq
from tests.e2e.test_metrics import scrape, value
from tests.e2e.test_rest import RESOURCE_EXHAUSTED, Reply, Rest, assert_error
from tests.support.env import reset
from tests.support.envoy import running_envoy
from tests.support.procs import free_port, wait_until
from tests.support.tasks import State, error_reason, submit, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean", "no_limits")]
REFRESH = 0.3  # seconds: how often the servers here re-read limits and queued counts
FAST = {"DTQ_LIMITS_REFRESH": str(REFRESH), "DTQ_QUEUED_COUNT_REFRESH": str(REFRESH)}
RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
COMPLETED = State.Value("STATE_COMPLETED")


@pytest.fixture(scope="module")
def server_env() -> dict[str, str]:
    return FAST


@pytest.fixture(scope="module")
def admin(channel: grpc.Channel) -> admin_service_pb2_grpc.AdminServiceStub:
    return admin_service_pb2_grpc.AdminServiceStub(channel)


@pytest.fixture(scope="module")
def tasks(channel: grpc.Channel) -> task_service_pb2_grpc.TaskServiceStub:
    return task_service_pb2_grpc.TaskServiceStub(channel)


@pytest.fixture
def no_limits(
    admin: admin_service_pb2_grpc.AdminServiceStub, pg_url: str, redis_url: str
) -> Iterator[None]:
    """The tables were emptied: the server forgets what it knew of them at once
    (its own SetTenantLimits), and its dispatch rates at the next read. After
    the test no limit or rate stays in PostgreSQL: the next module's server reads the
    table when it starts, before that module's `clean` empties it."""
    set_limits(admin)
    time.sleep(REFRESH + 0.1)
    yield
    reset(pg_url, redis_url)


def set_limits(admin: admin_service_pb2_grpc.AdminServiceStub, **limits: float) -> None:
    request = apb.SetTenantLimitsRequest(limits=apb.TenantLimits(tenant="default", **limits))
    admin.SetTenantLimits(request, timeout=10)


def retry_delay(error: grpc.RpcError) -> float:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToNanoseconds() / 1e9
    raise AssertionError("no RetryInfo detail")


def refused(stub: task_service_pb2_grpc.TaskServiceStub, reason: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        submit(stub, "noop")
    error = caught.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
    assert error_reason(error) == reason
    return error


@pytest.fixture
def second(pg_url: str, redis_url: str) -> Iterator[Server]:
    other = start_server(pg_url, redis_url, **FAST)
    yield other
    other.proc.stop()


def test_submit_rate_is_shared_by_servers_and_refills(
    server: Server, admin, tasks, second: Server
) -> None:
    with second.channel() as ch, running_envoy(server.address) as envoy:
        other = task_service_pb2_grpc.TaskServiceStub(ch)
        set_limits(admin, submit_rate=1.0, submit_burst=5)
        time.sleep(2 * REFRESH)  # the second server has read them
        for stub in (tasks, other, tasks, other, tasks):  # the burst, from both servers
            submit(stub, "noop")
        error = refused(other, "RATE_LIMITED")  # one bucket for both
        delay = retry_delay(error)
        assert 0 < delay <= 1.0  # one token at 1/s
        assert dict(error.trailing_metadata())["retry-after"] == "1"

        conn = Rest(envoy.port).connect()
        conn.request("POST", "/api/v1/tasks", body=json.dumps({"type": "noop"}), headers={})
        response = conn.getresponse()
        body = response.read()
        retry_after = response.getheader("retry-after")
        conn.close()
        status = assert_error(
            Reply(response.status, response.getheader("content-type", ""), body),
            429,
            RESOURCE_EXHAUSTED,
            "RATE_LIMITED",
        )
        assert retry_after == "1"
        assert RETRY_INFO in {d["@type"] for d in status["details"]}

        time.sleep(delay + 0.05)
        submit(tasks, "noop")  # refilled
    labels = {"tenant": "default", "reason": "rate_limited"}
    assert value(scrape(second.metrics_port), "dtq_rate_limited_total", **labels) == 1  # gRPC
    assert value(scrape(server.metrics_port), "dtq_rate_limited_total", **labels) >= 1  # REST
    listed = tasks.ListTasks(task_service_pb2.ListTasksRequest(page_size=100), timeout=10)
    assert len(listed.tasks) == 6


def test_a_batch_takes_tokens_all_or_nothing(admin, tasks) -> None:
    set_limits(admin, submit_rate=1.0, submit_burst=4)
    requests = [task_service_pb2.SubmitTaskRequest(type="noop") for _ in range(3)]
    batch = task_service_pb2.BatchSubmitTasksRequest(requests=requests)
    tasks.BatchSubmitTasks(batch, timeout=10)  # 3 of 4
    with pytest.raises(grpc.RpcError) as caught:
        tasks.BatchSubmitTasks(batch, timeout=10)  # 3 more: only 1 left
    assert error_reason(caught.value) == "RATE_LIMITED"
    submit(tasks, "noop")  # the last token was not taken by the refused batch


def test_queued_cap_counts_pending_and_scheduled(admin, tasks) -> None:
    set_limits(admin, max_queued=3)
    first = submit(tasks, "noop")
    submit(tasks, "noop", scheduled_at={"seconds": int(time.time()) + 3600})
    submit(tasks, "noop")
    error = refused(tasks, "QUEUED_CAP")
    assert 0 < retry_delay(error) <= REFRESH
    tasks.CancelTask(task_service_pb2.CancelTaskRequest(id=first.id), timeout=10)
    time.sleep(REFRESH + 0.1)  # the count is read again
    submit(tasks, "noop")
    refused(tasks, "QUEUED_CAP")


def started_at(tasks, ids: list[str]) -> list[float]:
    """When each task was leased (server clock), once all completed; sorted."""
    done = [wait_for(tasks, t, {COMPLETED}, timeout=20) for t in ids]
    return sorted(t.started_at.ToNanoseconds() / 1e9 for t in done)


def test_dispatch_rate_holds_across_two_workers(
    server: Server, tasks, start_worker: WorkerFactory
) -> None:
    rate, burst, n = 5.0, 2, 17
    result = dtq(server, "rate", "set", "default", "noop", f"{rate:g}/s", "--burst", str(burst))
    assert result.returncode == 0, result.stderr
    listed = dtq(server, "rate", "list", "--json")
    assert json.loads(listed.stdout)["rates"][0]["task_type"] == "noop"
    # All queued first, the rated type in front: the workers' first lease call
    # meets both types together.
    slow = [submit(tasks, "noop").id for _ in range(n)]
    other = [submit(tasks, "test_task").id for _ in range(4)]
    workers = [start_worker("--concurrency", "4", wait=False) for _ in range(2)]
    for w in workers:
        wait_until(lambda w=w: "worker_connected" in w.output(), 30, "worker stream")
    starts, others = started_at(tasks, slow), started_at(tasks, other)
    # A token bucket lets at most burst + rate * t leases out in any t seconds.
    # started_at is the server's clock when PostgreSQL recorded the lease, a few
    # ms after Redis granted it: 50 ms of slack absorbs that jitter (a quarter
    # of a token at 5/s), far less than one token's 200 ms.
    for i in range(n):
        for j in range(i, n):
            assert j - i + 1 <= burst + rate * (starts[j] - starts[i] + 0.05), (i, j, starts)
    ideal = (n - burst) / rate  # 3 s
    span = starts[-1] - starts[0]
    assert ideal - 0.05 <= span <= ideal + 1.0  # woken at each refill, not at the 1 s sweep
    # The other type is not held back: it goes out with the first burst, not
    # after the rated ones (3 s later).
    assert others[-1] - starts[0] < 1.0, (others, starts)
    assert dtq(server, "rate", "clear", "default", "noop").returncode == 0
    assert json.loads(dtq(server, "rate", "list", "--json").stdout).get("rates", []) == []


def test_the_sdk_waits_through_a_limit(server: Server, admin) -> None:
    set_limits(admin, submit_rate=4.0, submit_burst=2)
    began = time.monotonic()
    with Client(server.address) as client:
        handles = [client.submit("noop") for _ in range(6)]
    took = time.monotonic() - began
    assert len({h.id for h in handles}) == 6
    assert took >= (6 - 2) / 4.0 - 0.1  # it waited for the tokens


def test_the_cli_waits_and_says_so(server: Server, tasks) -> None:
    set_rate = ("tenant", "set-limits", "default", "--submit-rate", "30/m", "--burst", "1")
    result = dtq(server, *set_rate)
    assert result.returncode == 0, result.stderr
    shown = json.loads(dtq(server, "tenant", "limits", "default", "--json").stdout)
    assert shown["limits"]["submit_rate"] == 0.5 and shown["limits"]["submit_burst"] == 1
    table = dtq(server, "tenant", "limits").stdout
    assert "default" in table and "30/m" in table, table
    submit(tasks, "noop")  # the one token: the next in 2 s
    second = dtq(server, "task", "submit", "noop", "-q")
    assert second.returncode == 0, second.stderr
    assert "RESOURCE_EXHAUSTED RATE_LIMITED: retrying in" in second.stderr


@pytest.mark.parametrize("failure", ["open", "closed"])
def test_redis_unreachable_fails_open_or_closed(pg_url: str, admin, failure: str) -> None:
    set_limits(admin, submit_rate=1.0, submit_burst=1)  # in PostgreSQL, for every server
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    blind = start_server(pg_url, dead_redis, DTQ_RATE_LIMIT_FAILURE=failure, **FAST)
    try:
        with blind.channel() as ch:
            stub = task_service_pb2_grpc.TaskServiceStub(ch)
            if failure == "open":
                for _ in range(3):  # past the burst: the limit is not enforced
                    submit(stub, "noop")
            else:
                with pytest.raises(grpc.RpcError) as caught:
                    submit(stub, "noop")
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
                assert error_reason(caught.value) == "REDIS_UNAVAILABLE"
    finally:
        blind.proc.stop()

"""Schedule faults: a schedule firing every second while one manager is killed
with SIGKILL and Redis is flushed, then every manager is down for a while and
one comes back (catch-up `all`). No fire time may be lost or fire twice, and
every task it submitted runs once."""

from __future__ import annotations

import signal
import time
from datetime import datetime

import pytest
import redis
from google.protobuf import duration_pb2, struct_pb2

from dtq.v1 import admin_service_pb2 as pb
from dtq.v1 import admin_service_pb2_grpc, schedule_pb2
from tests.faults.checker import assert_contract
from tests.faults.harness import Cluster

pytestmark = pytest.mark.faults
Pb = schedule_pb2.Schedule
KEY = "schedule:beat:"


def beat() -> schedule_pb2.Schedule:
    payload = struct_pb2.Struct()
    payload.update({"sleep": 0.05})
    return Pb(
        name="beat",
        interval=duration_pb2.Duration(seconds=1),
        task=schedule_pb2.TaskTemplate(type="fault", payload=payload),
        overlap_policy=Pb.OVERLAP_POLICY_ALLOW,
        catch_up_policy=Pb.CATCH_UP_POLICY_ALL,
    )


def fired(cluster: Cluster) -> list[tuple[str, float, float]]:
    """(task id, fire time, commit time) of the schedule's tasks, by fire time."""
    rows = cluster.backends.sql(
        "SELECT id::text, idempotency_key, extract(epoch FROM created_at)::float8 FROM tasks"
        " WHERE idempotency_key LIKE %s ORDER BY idempotency_key",
        (KEY + "2%",),
    )
    return [(r[0], datetime.fromisoformat(r[1][len(KEY) :]).timestamp(), r[2]) for r in rows]


def test_manager_kill_and_redis_flush_lose_and_double_no_fire_time(cluster: Cluster) -> None:
    # Fire times more than 0.5 s late count as missed: the 3 s without a manager
    # are caught up by the policy (`all`), not by the grace.
    cluster.env["DTQ_SCHEDULE_GRACE"] = "0.5"
    cluster.start(managers=2, workers=2, concurrency=4)
    admin = admin_service_pb2_grpc.AdminServiceStub(cluster.channel())
    created = admin.CreateSchedule(pb.CreateScheduleRequest(schedule=beat()), timeout=10)
    time.sleep(3)
    fault = cluster.fault()
    cluster.managers[0].signal(signal.SIGKILL)
    client = redis.Redis.from_url(cluster.backends.redis.url)
    client.flushall()
    client.close()
    time.sleep(2.5)  # the other manager fires alone, over an empty Redis
    cluster.managers[1].signal(signal.SIGKILL)
    down = time.time()
    time.sleep(3)  # no manager: these fire times are missed
    cluster.start_manager()
    time.sleep(2)
    admin.PauseSchedule(pb.PauseScheduleRequest(name="beat"), timeout=10)
    stopped = time.time()
    time.sleep(0.5)

    found = fired(cluster)
    times = [at for _, at, _ in found]
    first = created.schedule.next_fire_time.seconds
    assert times[0] == first, "the first fire time did not fire"
    assert times == [float(t) for t in range(first, first + len(times))], "a fire time was lost"
    assert times[-1] >= stopped - 2.0, "firing did not go on to the pause"
    for _, at, committed in found:
        assert committed >= at, "a task was submitted before its fire time"
        if at < down - 1.0:  # before every manager was down: on time
            assert committed - at < 1.0, f"fired {committed - at:.2f}s late"
    verdict = cluster.verify(
        "schedule: manager kill -9, FLUSHALL",
        [task_id for task_id, _, _ in found],
        timeout=30,
        fault=fault,
        notes=f"every 1 s, then no manager for 3 s: {len(found)} fire times, each once",
    )
    assert_contract(verdict)

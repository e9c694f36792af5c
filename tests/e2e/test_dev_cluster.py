"""`dtq dev --redis-cluster`: the stack on a local Redis Cluster (3 masters,
3 replicas) that the supervisor starts, watches and stops with the rest."""

from __future__ import annotations

import signal
from pathlib import Path

import grpc
import pytest

from dtq.v1 import task_service_pb2_grpc
from tests.e2e.test_dev import Dev, assert_all_gone, data_dir  # noqa: F401 (fixture)
from tests.support.tasks import State, submit, wait_for

pytestmark = pytest.mark.e2e


def test_dev_runs_on_a_redis_cluster_and_leaves_no_process(data_dir: Path) -> None:  # noqa: F811
    dev = Dev(data_dir, "--redis-cluster", "--no-envoy")
    assert dev.endpoints["redis_url"].startswith("redis+cluster://127.0.0.1:")
    nodes = {f"redis-node{i}" for i in range(6)}
    assert set(dev.endpoints["pids"]) >= {"postgres", "server", "manager", "worker", *nodes}
    with grpc.insecure_channel(f"127.0.0.1:{dev.grpc}") as channel:
        tasks = task_service_pb2_grpc.TaskServiceStub(channel)
        ids = [submit(tasks, "noop", queue=q).id for q in ("default", "default", "default")]
        for task_id in ids:
            assert wait_for(tasks, task_id).state == State.Value("STATE_COMPLETED")
    family = dev.family()
    dev.proc.signal(signal.SIGTERM)
    assert dev.proc.popen.wait(30) == 0
    assert_all_gone(family)

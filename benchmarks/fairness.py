#!/usr/bin/env python
"""Fair dispatch: B's submit->start latency with tenant key A idle, then with A
holding a large backlog in the same queue and busying the same worker.

One `dtq server`, `dtq manager` and `dtq worker --concurrency C` on a fresh
database and Redis db. Phase "idle": B submits `test_task` (no sleep) at
--rate per second for --seconds, fairness key "b". Phase "backlog": A submits
--backlog tasks (BatchSubmitTasks of 1000, key "a", each sleeping --a-sleep s,
so the worker never runs dry), then B submits as before. B's latency is the
task's started_at minus its created_at (both the server's clock). The rest of
A's backlog is dropped with the database at the end.

    python benchmarks/fairness.py [--backlog 100000] [--rate 20] [--seconds 15]
    python benchmarks/fairness.py --key-max-running 6   # each key runs 6 at most

`--key-max-running N` sets the default tenant's per-key running cap before
the phases (dtq tenant set-limits --key-max-running N): A's flood then holds
at most N of the worker's slots, and B finds one free.
"""

from __future__ import annotations

import argparse
import time

import grpc
from auth_cost import server
from run_dtq import migrated_stack, wait_until

from dtq import Client
from dtq.client import Submission
from dtq.v1 import admin_service_pb2 as apb
from dtq.v1 import admin_service_pb2_grpc

QUEUE = "fair-bench"


def b_latencies(client: Client, rate: float, seconds: float) -> list[float]:
    """Submit B's tasks at `rate`/s; each one's submit->start in seconds."""
    ids: list[str] = []
    began = time.monotonic()
    for i in range(int(rate * seconds)):
        time.sleep(max(0.0, began + i / rate - time.monotonic()))
        ids.append(client.submit("test_task", {}, queue=QUEUE, fairness_key="b").id)
    out: list[float] = []
    for task_id in ids:
        deadline = time.monotonic() + 120
        while True:
            got = client.get(task_id)
            if got.started_at is not None or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if got.started_at is None or got.created_at is None:
            raise RuntimeError(f"task {task_id} did not start in 120 s ({got.state})")
        out.append((got.started_at - got.created_at).total_seconds())
    return out


def flood(client: Client, n: int, sleep: float) -> float:
    """Queue n tasks of key A; seconds it took."""
    began = time.monotonic()
    a = Submission("test_task", {"sleep_duration": sleep}, queue=QUEUE, fairness_key="a")
    for start in range(0, n, 1000):
        client.submit_many([a] * min(1000, n - start))
    return time.monotonic() - began


def cap_keys(address: str, cap: int) -> None:
    """The default tenant's per-key running cap (the server applies it at once)."""
    limits = apb.TenantLimits(tenant="default", key_max_running=cap)
    with grpc.insecure_channel(address) as channel:
        admin = admin_service_pb2_grpc.AdminServiceStub(channel)
        admin.SetTenantLimits(apb.SetTenantLimitsRequest(limits=limits), timeout=30)


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backlog", type=int, default=100_000, help="A's queued tasks")
    parser.add_argument("--rate", type=float, default=20.0, help="B's submissions per second")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each B phase")
    parser.add_argument("--concurrency", type=int, default=8, help="the worker's slots")
    parser.add_argument("--a-sleep", type=float, default=0.01, help="each A task's run (s)")
    parser.add_argument("--key-max-running", type=int, help="running cap per fairness key")
    args = parser.parse_args()
    with migrated_stack() as (stack, _env):
        address, _ = server(stack, "server", "off")
        stack.start("manager", "manager", "--metrics-port", "0")
        log = stack.logs / "worker.log"
        stack.start(
            "worker", "worker", "--server", address, "--queue", QUEUE,
            "--concurrency", str(args.concurrency), "--metrics-port", "0",
        )  # fmt: skip
        wait_until(lambda: log.exists() and "worker_connected" in log.read_text(), 60, "worker")
        if args.key_max_running:
            cap_keys(address, args.key_max_running)
        with Client(address, timeout=60) as client:
            b_latencies(client, args.rate, 2.0)  # warm up
            idle = b_latencies(client, args.rate, args.seconds)
            took = flood(client, args.backlog, args.a_sleep)
            stack.check_alive()
            busy = b_latencies(client, args.rate, args.seconds)
            (stats,) = client.queue_stats(QUEUE)
    print(
        f"fair dispatch: worker --concurrency {args.concurrency}"
        + (f", --key-max-running {args.key_max_running}" if args.key_max_running else "")
        + f"; B at {args.rate:g}/s for "
        f"{args.seconds:g} s ({len(idle)} tasks a phase)"
    )
    print(f"  A idle: B submit->start p50 {pct(idle, 0.5):.1f} ms, p99 {pct(idle, 0.99):.1f} ms")
    print(
        f"  A {args.backlog:,} queued: B submit->start p50 {pct(busy, 0.5):.1f} ms, "
        f"p99 {pct(busy, 0.99):.1f} ms (A queued in {took:.1f} s; {stats.pending:,} still "
        f"pending at the end)"
    )
    print(f"  p99 ratio backlog/idle: {pct(busy, 0.99) / max(pct(idle, 0.99), 1e-9):.2f}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""What a tenant's limits cost a SubmitTask: no limits, against a submit rate
and a queued cap set high enough never to refuse (one Redis Lua call per
request, a cached count).

One `dtq server` on a fresh database; each round sends the same SubmitTask
calls (16 threads, one task a call) with the tenant's limits removed, then set,
and reads the server's CPU time (/proc) and each call's latency.

    python benchmarks/limits_cost.py [--calls 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
from auth_cost import cpu_seconds, server
from run_dtq import migrated_stack

from dtq.v1 import admin_service_pb2 as apb
from dtq.v1 import admin_service_pb2_grpc, task_service_pb2_grpc
from dtq.v1 import task_service_pb2 as pb

HIGH = {"submit_rate": 1e6, "submit_burst": 1_000_000, "max_queued": 10**12}


def burst(address: str, calls: int) -> list[float]:
    """Latency of each call (s)."""
    with grpc.insecure_channel(address) as channel:
        stub = task_service_pb2_grpc.TaskServiceStub(channel)
        request = pb.SubmitTaskRequest(type="noop", queue="limits-cost")

        def one(_: int) -> float:
            began = time.perf_counter()
            stub.SubmitTask(request, timeout=30)
            return time.perf_counter() - began

        with ThreadPoolExecutor(16) as pool:
            return list(pool.map(one, range(calls)))


def set_limits(address: str, limits: dict[str, float]) -> None:
    with grpc.insecure_channel(address) as channel:
        admin = admin_service_pb2_grpc.AdminServiceStub(channel)
        wanted = apb.TenantLimits(tenant="default", **limits)
        admin.SetTenantLimits(apb.SetTenantLimitsRequest(limits=wanted), timeout=10)


def p(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with migrated_stack() as (stack, _env):
        address, pid = server(stack, "server", "off")
        burst(address, 200)  # warm up: connections, caches
        cpu: dict[str, list[float]] = {"none": [], "limits": []}
        lat: dict[str, list[float]] = {"none": [], "limits": []}
        for _ in range(args.rounds):
            for side, limits in (("none", {}), ("limits", HIGH)):
                set_limits(address, limits)  # this server applies it at once
                before = cpu_seconds(pid)
                lat[side] += burst(address, args.calls)
                cpu[side].append((cpu_seconds(pid) - before) / args.calls * 1e6)
    print(f"SubmitTask, 16 callers ({args.calls} calls x {args.rounds} rounds)")
    for side, values in cpu.items():
        runs = " ".join(f"{v:.0f}" for v in values)
        median, calls = statistics.median(values), lat[side]
        print(
            f"  {side:6}: server CPU median {median:.0f} µs/call (runs: {runs}); "
            f"latency p50 {p(calls, 0.5):.2f} ms, p99 {p(calls, 0.99):.2f} ms"
        )
    none, limited = (statistics.median(cpu[s]) for s in ("none", "limits"))
    print(f"  limits cost {limited - none:+.0f} µs of server CPU per call")


if __name__ == "__main__":
    main()

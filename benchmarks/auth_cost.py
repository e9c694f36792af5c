#!/usr/bin/env python
"""Server CPU per SubmitTask with authentication off and on (an API key).

Two `dtq server` processes on one fresh database: one with DTQ_AUTH=off, one
with DTQ_AUTH=on and an admin key made by `dtq apikey create`. Each round
sends the same SubmitTask calls (16 threads, one task a call) to each, in
turn, and reads the server's own CPU time (/proc) before and after.

    python benchmarks/auth_cost.py [--calls 3000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from run_dtq import Stack, free_port, http_ok, migrated_stack, wait_until

from dtq.v1 import task_service_pb2 as pb
from dtq.v1 import task_service_pb2_grpc

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def server(stack: Stack, name: str, auth: str) -> tuple[str, int]:
    port, metrics = free_port(), free_port()
    stack.env["DTQ_AUTH"] = auth
    proc = stack.start(name, "server", "--port", str(port), "--metrics-port", str(metrics))
    wait_until(lambda: http_ok(f"http://127.0.0.1:{metrics}/ready"), 60, f"{name}")
    return f"127.0.0.1:{port}", proc.pid


def burst(address: str, key: str | None, calls: int) -> None:
    metadata = [("authorization", f"Bearer {key}")] if key else None
    with grpc.insecure_channel(address) as channel:
        stub = task_service_pb2_grpc.TaskServiceStub(channel)
        request = pb.SubmitTaskRequest(type="noop", queue="auth-cost")

        def one(_: int) -> None:
            stub.SubmitTask(request, metadata=metadata, timeout=30)

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(one, range(calls)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with migrated_stack() as (stack, env):
        made = subprocess.run(
            ["dtq", "apikey", "create", "--role", "admin", "--json"],
            env=env, check=True, capture_output=True, text=True,
        )  # fmt: skip
        key = json.loads(made.stdout)["key"]
        sides = {
            "off": (*server(stack, "server-off", "off"), None),
            "on": (*server(stack, "server-on", "on"), key),
        }
        for address, _, credential in sides.values():
            burst(address, credential, 200)  # warm up: connections, caches
        per_call: dict[str, list[float]] = {"off": [], "on": []}
        for _ in range(args.rounds):
            for side, (address, pid, credential) in sides.items():
                before = cpu_seconds(pid)
                burst(address, credential, args.calls)
                per_call[side].append((cpu_seconds(pid) - before) / args.calls * 1e6)
    print(f"server CPU per SubmitTask, µs ({args.calls} calls x {args.rounds} rounds)")
    for side, values in per_call.items():
        runs = " ".join(f"{v:.0f}" for v in values)
        print(f"  auth {side:3}: median {statistics.median(values):.0f}  (runs: {runs})")
    off, on = (statistics.median(per_call[s]) for s in ("off", "on"))
    print(f"  auth on costs {on - off:+.0f} µs per call ({(on / off - 1) * 100:+.1f} %)")


if __name__ == "__main__":
    main()

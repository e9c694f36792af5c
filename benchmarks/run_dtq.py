#!/usr/bin/env python
"""Start a dtq stack the way a user would, run `dtq bench` against it, stop it.

The stack: `dtq db upgrade` on a fresh PostgreSQL database, `dtq server`,
`dtq manager`, two `dtq worker` processes (built-in handlers, noop among them)
taking one queue of their own, and `dtq envoy` for REST. Redis: a free logical
database of the local server, claimed like the test suite claims one.

    python benchmarks/run_dtq.py                       # all workloads, one run
    python benchmarks/run_dtq.py --runs 3              # three runs, each on a fresh stack
    python benchmarks/run_dtq.py --workloads burst --profile   # py-spy on server and a worker

Results (JSON, one file per run) and profiles go to benchmarks/results/.
Every wait is bounded; every process started is stopped, even on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import claims  # benchmarks/claims.py, next to this script
import cpu  # benchmarks/cpu.py
from sqlalchemy import create_engine, text

from dtq.process_tree import descendants

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PG_ADMIN = os.environ.get("DTQ_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("DTQ_BENCH_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def sa_url(url: str) -> str:
    return "postgresql+psycopg2://" + url.split("://", 1)[1]


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    name = f"dtq_bench_{secrets.token_hex(4)}"
    admin = create_engine(sa_url(PG_ADMIN), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def free_redis_db() -> contextlib.AbstractContextManager[str]:
    return claims.free_redis_db(REDIS, "bench")


class Stack:
    """The dtq processes of one run; `stop()` ends every one of them."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("wb")
        dtq = shutil.which("dtq") or "dtq"
        proc = subprocess.Popen([dtq, *args], env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}): see {self.logs}/{name}.log")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)


@contextlib.contextmanager
def migrated_stack() -> Iterator[tuple[Stack, dict[str, str]]]:
    """A fresh database (migrated) and Redis database, and a Stack over them;
    every process it started is stopped at the end."""
    with (
        fresh_database() as db,
        free_redis_db() as redis_url,
        tempfile.TemporaryDirectory() as logs,
    ):
        env = {**os.environ, "DTQ_DATABASE_URL": sa_url(db), "DTQ_REDIS_URL": redis_url}
        stack = Stack(env, Path(logs))
        try:
            subprocess.run(["dtq", "db", "upgrade"], env=env, check=True, capture_output=True)
            yield stack, env
        finally:
            stack.stop()


def up(stack: Stack, queue: str, concurrency: int, prefetch: int, processes: int) -> dict[str, Any]:
    port, metrics, rest, admin = free_port(), free_port(), free_port(), free_port()
    address = f"127.0.0.1:{port}"
    subprocess.run(["dtq", "db", "upgrade"], env=stack.env, check=True, capture_output=True)
    server = stack.start(
        "server", "server", "--port", str(port), "--metrics-port", str(metrics),
        "--processes", str(processes),
    )  # fmt: skip
    ready = f"http://127.0.0.1:{metrics}/ready"
    wait_until(lambda: http_ok(ready) or server.poll() is not None, 60, "dtq server")
    stack.check_alive()
    stack.start("manager", "manager", "--metrics-port", "0")
    worker_args = [
        "worker", "--server", address, "--queue", queue, "--concurrency", str(concurrency),
        "--prefetch", str(prefetch), "--metrics-port", "0",
    ]  # fmt: skip
    workers = [start_worker(stack, i, worker_args) for i in (1, 2)]
    stack.start(
        "envoy", "envoy", "--port", str(rest), "--backend", address, "--admin-port", str(admin)
    )
    wait_until(lambda: http_ok(f"http://127.0.0.1:{rest}/api/v1/health"), 60, "envoy")
    moves = spread_workers(stack, worker_args, metrics, processes) if processes > 1 else 0
    workers[1] = stack.procs["worker2"].pid
    stack.check_alive()
    # With --processes N the server is a supervisor: profile its children.
    serving = sorted(descendants(server.pid)) if processes > 1 else [server.pid]
    return {"address": address, "rest": f"http://127.0.0.1:{rest}", "server_pid": server.pid,
            "serving_pids": serving, "worker_pid": workers[0], "worker_moves": moves}  # fmt: skip


def start_worker(stack: Stack, i: int, args: list[str]) -> int:
    log = stack.logs / f"worker{i}.log"
    log.unlink(missing_ok=True)
    proc = stack.start(f"worker{i}", *args)
    wait_until(lambda: log.exists() and "worker_connected" in log.read_text(), 60, "worker stream")
    return proc.pid


def streams(metrics: int, processes: int) -> list[int]:
    """Open worker streams on each server process (process i: metrics port + i)."""
    out = []
    for i in range(processes):
        url = f"http://127.0.0.1:{metrics + i}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            text_ = reply.read().decode()
        found = re.search(r"^dtq_worker_streams (\S+)$", text_, re.M)
        out.append(int(float(found.group(1))) if found else 0)
    return out


def spread_workers(stack: Stack, args: list[str], metrics: int, processes: int) -> int:
    """The kernel gives each connection to a random server process: with two
    worker connections, both land on one process half the time, and that one
    does all the dispatching. Reconnect worker 2 until each process holds a
    stream (a fleet of many workers evens out by itself). Returns the moves."""
    for moves in range(20):
        if min(streams(metrics, processes)) > 0:
            return moves
        proc = stack.procs["worker2"]
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        start_worker(stack, 2, args)
        wait_until(lambda: sum(streams(metrics, processes)) == 2, 30, "one stream per worker")
    raise RuntimeError("worker streams stayed on one server process after 20 reconnects")


def profile(pid: int, out: Path, seconds: int, gil: bool) -> subprocess.Popen[bytes]:
    """py-spy on `pid` for `seconds`, collapsed stacks (one line per stack); with `gil`,
    only the thread holding the GIL is sampled (where the interpreter's time goes)."""
    return subprocess.Popen(
        ["py-spy", "record", "--pid", str(pid), "--format", "raw", "--rate", "100",
         "--duration", str(seconds), "--nonblocking", "-o", str(out), *(["--gil"] if gil else [])],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip


def one_run(args: argparse.Namespace, run: int, stamp: str) -> dict[str, Any]:
    logs = RESULTS / f"{stamp}-run{run}"
    logs.mkdir(parents=True, exist_ok=True)
    queue = f"bench-{stamp}-{run}"
    with fresh_database() as db, free_redis_db() as redis_url:
        env = {**os.environ, "DTQ_DATABASE_URL": db, "DTQ_REDIS_URL": redis_url,
               "DTQ_LOG_FORMAT": "json", "DTQ_LOG_LEVEL": "INFO"}  # fmt: skip
        stack = Stack(env, logs)
        spies: list[subprocess.Popen[bytes]] = []
        try:
            where = up(stack, queue, args.concurrency, args.prefetch, args.server_processes)
            if args.profile:
                pids = dict(enumerate(where["serving_pids"]))
                targets = {f"server-{i}": pid for i, pid in pids.items()}
                for name, pid in {**targets, "worker": where["worker_pid"]}.items():
                    out = logs / f"{name}.pyspy.txt"
                    spies.append(profile(int(pid), out, args.profile_seconds, args.gil))
            command = [
                "dtq", "bench", "--server", str(where["address"]), "--queue", queue,
                "--workloads", args.workloads, "--tasks", str(args.tasks), "--json",
                "--rest", str(where["rest"]), "--server-pid", str(where["server_pid"]),
                "--backlog", str(args.backlog), "--duration", str(args.duration), *args.extra,
            ]  # fmt: skip
            names = {p.pid: name for name, p in stack.procs.items()}
            for i, pid in enumerate(sorted(descendants(int(where["server_pid"])))):
                names[pid] = f"server-{i}"
            before = cpu.snapshot(names)
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            cpu_seconds = cpu.spent(before, cpu.snapshot(names))
            stack.check_alive()
            if done.returncode != 0:
                raise RuntimeError(f"dtq bench failed:\n{done.stderr}")
            results: dict[str, object] = json.loads(done.stdout)
            results["cpu_seconds"] = cpu_seconds
            results["worker_moves"] = where["worker_moves"]
        finally:
            for spy in spies:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    spy.wait(args.profile_seconds + 30)
                if spy.poll() is None:
                    spy.kill()
                    spy.wait(5)
            stack.stop()
    results["concurrency"] = args.concurrency
    results["prefetch"] = args.prefetch
    results["server_processes"] = args.server_processes
    (logs / "results.json").write_text(json.dumps(results, indent=2))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--workloads", default="burst,latency,fan-in,backlog")
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--backlog", type=int, default=1_000_000)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, default=16, help="per worker process")
    parser.add_argument(
        "--prefetch", type=int, default=128, help="leases a worker holds beyond its concurrency"
    )
    parser.add_argument(
        "--server-processes", type=int, default=2, help="dtq server --processes (one per core)"
    )
    parser.add_argument("--profile", action="store_true", help="py-spy the server and a worker")
    parser.add_argument("--profile-seconds", type=int, default=30)
    parser.add_argument("--gil", action="store_true", help="profile only the GIL holder")
    parser.add_argument("--out", type=Path, help="also write the last run's results here")
    parser.add_argument("extra", nargs="*", help="after --: more `dtq bench` options")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks
    from dtq.bench.report import table

    stamp = time.strftime("%Y%m%d-%H%M%S")
    for run in range(1, args.runs + 1):
        results = one_run(args, run, stamp)
        print(f"--- run {run}/{args.runs} ---")
        print(table(results), flush=True)
        print("CPU seconds by program:", results["cpu_seconds"], flush=True)
        if args.out:
            args.out.write_text(json.dumps(results, indent=2))
    print(f"results: {RESULTS}/{stamp}-run*/results.json")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""The burst and latency workloads on pgqueuer, Dramatiq and Celery, side by side
with dtq (the results JSON of benchmarks/run_dtq.py): the ratio dtq/peer per figure.

Run with the peers' virtualenv (never the project's):

    python -m venv benchmarks/.venv
    benchmarks/.venv/bin/pip install -r benchmarks/requirements-peers.txt
    benchmarks/.venv/bin/python benchmarks/peers.py --dtq benchmarks/results/<run>/results.json

Each peer runs 2 worker processes on the local PostgreSQL/Redis (a fresh
database, a free Redis db): pgqueuer (`pgq run`, two processes), Dramatiq (Redis
broker, `--processes 2`), Celery (Redis broker, two `--pool solo` workers, no
result backend). Same N, same batch size, same callers, same rate as dtq.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import claims  # benchmarks/claims.py, next to this script
import cpu  # benchmarks/cpu.py
import redis

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
PG = os.environ.get("DTQ_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("DTQ_BENCH_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
PEERS = ("pgqueuer", "dramatiq", "celery")


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return round(ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo), 2)


def wait_until(check: Callable[[], bool], timeout: float, what: str, every: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def redis_db() -> contextlib.AbstractContextManager[str]:
    return claims.free_redis_db(REDIS, "peers")


@contextlib.contextmanager
def pg_db() -> Iterator[str]:
    import asyncpg

    name = f"peers_{secrets.token_hex(4)}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield PG.rsplit("/", 1)[0] + f"/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


class Workers:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], env: dict[str, str], log: Path) -> None:
        out = log.open("wb")
        self.procs.append(
            subprocess.Popen(args, env=env, cwd=HERE, stdout=out, stderr=subprocess.STDOUT)
        )

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


# -- clients -------------------------------------------------------------------


def threaded(n: int, callers: int, send: Callable[[int], None]) -> float:
    """send(i) for i < n from `callers` threads; seconds taken."""
    counter = iter(range(n))
    lock = threading.Lock()

    def loop() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            send(i)

    began = time.perf_counter()
    with ThreadPoolExecutor(callers) as pool:
        for f in [pool.submit(loop) for _ in range(callers)]:
            f.result()
    return time.perf_counter() - began


def latency_figures(start: list[float], rpc: list[float]) -> dict[str, Any]:
    return {
        "submit_to_start_ms": {"p50": pct(start, 50), "p95": pct(start, 95), "p99": pct(start, 99)},
        "rpc_ms": {"p50": pct(rpc, 50), "p99": pct(rpc, 99)},
    }


def paced(rate: float, duration: float, send: Callable[[], None]) -> list[float]:
    """One client at a steady rate; the send times in ms."""
    total, began, ms = round(rate * duration), time.perf_counter(), []
    for i in range(total):
        delay = began + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        t = time.perf_counter()
        send()
        ms.append((time.perf_counter() - t) * 1000)
    return ms


class RedisTracked:
    """Completion of Dramatiq and Celery tasks, counted by the tasks in Redis."""

    def __init__(self, url: str) -> None:
        self.r = redis.Redis.from_url(url)

    def reset(self) -> None:
        self.r.delete("bench:done", "bench:last", "bench:start_ms")

    def wait(self, n: int, timeout: float) -> float:
        wait_until(lambda: int(self.r.get("bench:done") or 0) >= n, timeout, f"{n} tasks")
        return float(self.r.get("bench:last") or 0)

    def start_ms(self) -> list[float]:
        return [float(x) for x in self.r.lrange("bench:start_ms", 0, -1)]


def sync_peer(name: str, args: argparse.Namespace, broker: str) -> dict[str, Any]:
    env = {**os.environ, "PEER": name, "PEER_REDIS_URL": broker}
    os.environ.update(env)
    sys.path.insert(0, str(HERE))
    import peer_apps

    workers = Workers()
    logs = HERE / "results"
    logs.mkdir(exist_ok=True)
    if name == "dramatiq":
        workers.start([str(BIN / "dramatiq"), "--processes", "2", "--threads", "8", "peer_apps"],
                      env, logs / "peer-dramatiq.log")  # fmt: skip
        task = peer_apps.noop

        def send(t: float | None = None) -> None:
            task.send(t)

        def bulk(n: int) -> None:
            for _ in range(n):  # the Redis broker has no bulk enqueue
                task.send(None)
    else:
        for i in (1, 2):
            workers.start([str(BIN / "celery"), "-A", "peer_apps:celery_app", "worker",
                           "--pool", "solo", "-n", f"w{i}@%h", "--loglevel", "WARNING"],
                          env, logs / f"peer-celery{i}.log")  # fmt: skip
        from celery import group

        ctask = peer_apps.celery_noop

        def send(t: float | None = None) -> None:
            ctask.delay(t)

        def bulk(n: int) -> None:
            group(ctask.s(None) for _ in range(n)).apply_async()

    track = RedisTracked(broker)
    try:
        track.reset()
        send(None)  # warm-up: the workers are up once one task went through
        track.wait(1, 60)
        time.sleep(args.warmup)
        return measure_sync(args, track, send, bulk)
    finally:
        workers.stop()


def measure_sync(
    args: argparse.Namespace,
    track: RedisTracked,
    send: Callable[..., None],
    bulk: Callable[[int], None],
) -> dict[str, Any]:
    n, out = args.tasks, {}
    track.reset()
    before = cpu.snapshot({os.getpid(): "client"})
    first = time.time()
    took = threaded(n, args.callers, lambda _: send(None))
    last = track.wait(n, args.timeout)
    used = cpu.spent(before, cpu.snapshot({os.getpid(): "client"}))
    out["single"] = {"accepted_per_s": n / took, "e2e_tasks_per_s": n / (last - first),
                     "cpu_seconds": used}  # fmt: skip
    track.reset()
    sizes = [min(args.batch_size, n - s) for s in range(0, n, args.batch_size)]
    first = time.time()
    took = threaded(len(sizes), args.batch_callers, lambda i: bulk(sizes[i]))
    last = track.wait(n, args.timeout)
    out["batch"] = {"accepted_per_s": n / took, "e2e_tasks_per_s": n / (last - first)}
    track.reset()
    rpc = paced(args.rate, args.duration, lambda: send(time.time()))
    track.wait(len(rpc), args.timeout)
    start = track.start_ms()
    out["latency"] = latency_figures(start, rpc)
    return out


# -- pgqueuer ------------------------------------------------------------------


def pgqueuer_peer(args: argparse.Namespace, broker: str) -> dict[str, Any]:
    with pg_db() as dsn:
        env = {**os.environ, "PGDSN": dsn, "PEER": "pgqueuer", "PEER_TRACK_URL": broker}
        subprocess.run([str(BIN / "pgq"), "install"], env=env, check=True, capture_output=True)
        workers = Workers()
        logs = HERE / "results"
        logs.mkdir(exist_ok=True)
        for i in (1, 2):
            workers.start([str(BIN / "pgq"), "run", "peer_apps:pgqueuer_main"], env,
                          logs / f"peer-pgqueuer{i}.log")  # fmt: skip
        try:
            time.sleep(args.warmup)
            return asyncio.run(measure_pgqueuer(args, dsn, RedisTracked(broker)))
        finally:
            workers.stop()


async def measure_pgqueuer(
    args: argparse.Namespace, dsn: str, track: RedisTracked
) -> dict[str, Any]:
    import asyncpg
    from pgqueuer.db import AsyncpgPoolDriver
    from pgqueuer.queries import Queries

    pool = await asyncpg.create_pool(dsn, min_size=args.callers, max_size=args.callers)
    queries = Queries(AsyncpgPoolDriver(pool))
    n, out = args.tasks, {}

    def bulk_of(k: int) -> tuple[list[str], list[bytes | None], list[int]]:
        return ["noop"] * k, [None] * k, [0] * k

    async def drained(within: float) -> float:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if await pool.fetchval("SELECT count(*) FROM pgqueuer") == 0:
                last = await pool.fetchval(
                    "SELECT extract(epoch FROM max(created)) FROM pgqueuer_log"
                    " WHERE status = 'successful'"
                )
                return float(last)
            await asyncio.sleep(0.01)
        raise TimeoutError("pgqueuer did not drain")

    async def run(calls: int, callers: int, one: Callable[[int], Any]) -> float:
        counter = iter(range(calls))

        async def caller() -> None:
            for i in counter:
                await one(i)

        began = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        return time.perf_counter() - began

    await queries.enqueue("noop", None)  # warm-up: the workers are up once it is done
    await drained(60)
    for kind, calls, callers, one in (
        ("single", n, args.callers, lambda _: queries.enqueue("noop", None)),
        ("batch", -(-n // args.batch_size), args.batch_callers,
         lambda i: queries.enqueue(*bulk_of(min(args.batch_size, n - i * args.batch_size)))),
    ):  # fmt: skip
        await pool.execute("TRUNCATE pgqueuer_log")
        first = time.time()
        took = await run(calls, callers, one)
        last = await drained(args.timeout)
        out[kind] = {"accepted_per_s": n / took, "e2e_tasks_per_s": n / (last - first)}
    track.reset()
    rpc: list[float] = []
    total, began = round(args.rate * args.duration), time.perf_counter()
    for i in range(total):
        delay = began + i / args.rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        t = time.perf_counter()
        await queries.enqueue("noop", json.dumps({"t": time.time()}).encode())
        rpc.append((time.perf_counter() - t) * 1000)
    await drained(args.timeout)
    wait_until(lambda: len(track.start_ms()) >= total, 30, "latency samples")
    start = track.start_ms()
    out["latency"] = latency_figures(start, rpc)
    await pool.close()
    return out


# -- comparison ----------------------------------------------------------------

FIGURES = [  # (label, path in peer results, path in dtq results, higher is better)
    ("burst e2e tasks/s, one submit/task", ("single", "e2e_tasks_per_s"),
     ("burst", "single", "e2e_tasks_per_s"), True),
    ("burst e2e tasks/s, bulk submit", ("batch", "e2e_tasks_per_s"),
     ("burst", "batch", "e2e_tasks_per_s"), True),
    ("accepted/s, one submit/task", ("single", "accepted_per_s"),
     ("burst", "single", "accepted_per_s"), True),
    ("accepted/s, bulk submit", ("batch", "accepted_per_s"),
     ("burst", "batch", "accepted_per_s"), True),
    ("submit->start p50 ms", ("latency", "submit_to_start_ms", "p50"),
     ("latency", "submit_to_start_ms", "p50"), False),
    ("submit->start p99 ms", ("latency", "submit_to_start_ms", "p99"),
     ("latency", "submit_to_start_ms", "p99"), False),
    ("submit call p50 ms", ("latency", "rpc_ms", "p50"), ("latency", "rpc_ms", "p50"), False),
    ("submit call p99 ms", ("latency", "rpc_ms", "p99"), ("latency", "rpc_ms", "p99"), False),
]  # fmt: skip


def dig(data: Any, path: tuple[str, ...]) -> float | None:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return float(data)


def compare(peers: dict[str, dict[str, Any]], dtq: dict[str, Any] | None) -> str:
    names = list(peers)
    head = ["figure", "dtq", *names, *(f"dtq/{p}" for p in names)]
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for label, ppath, dpath, _higher in FIGURES:
        ours = dig(dtq, dpath) if dtq else None
        theirs = [dig(peers[p], ppath) for p in names]
        cells = [label, _fmt(ours), *(_fmt(v) for v in theirs)]
        cells += [f"{ours / v:.2f}" if ours and v else "-" for v in theirs]
        lines.append(" | ".join(cells))
    return "\n".join(f"| {line} |" for line in lines)


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if v >= 100 else f"{v:.2f}"


def child(name: str, args: argparse.Namespace) -> None:
    with redis_db() as broker:
        if name == "pgqueuer":
            result = pgqueuer_peer(args, broker)
        else:
            result = sync_peer(name, args, broker)
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", default=",".join(PEERS))
    parser.add_argument("--dtq", type=Path, action="append", default=[],
                        help="results.json of run_dtq.py (repeat: medians)")  # fmt: skip
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--batch-callers", type=int, default=4)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help="write every figure as JSON here")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.child:
        child(args.child, args)
        return
    runs: dict[str, list[dict[str, Any]]] = {}
    passthrough = without_option(sys.argv[1:], "--out")
    for _ in range(args.runs):
        for name in args.peers.split(","):
            command = [sys.executable, __file__, *passthrough, "--child", name]
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=3600, check=False
            )
            if done.returncode != 0:
                print(f"{name} failed:\n{done.stderr[-3000:]}", file=sys.stderr)
                continue
            runs.setdefault(name, []).append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"{name}: {done.stdout.strip().splitlines()[-1]}", flush=True)
    peers = {name: median_of(results) for name, results in runs.items()}
    dtq = median_of([json.loads(p.read_text()) for p in args.dtq]) if args.dtq else None
    if args.out:
        args.out.write_text(json.dumps({"peers": peers, "runs": runs, "dtq": dtq}, indent=2))
    print(compare(peers, dtq))


def without_option(argv: list[str], name: str) -> list[str]:
    """`argv` without `name VALUE` and `name=VALUE`."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(f"{name}="):
            out.append(arg)
    return out


def median_of(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The per-figure median of several runs' nested results."""
    first = results[0]
    out: dict[str, Any] = {}
    for key, value in first.items():
        if isinstance(value, dict):
            out[key] = median_of([r[key] for r in results if isinstance(r.get(key), dict)])
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = statistics.median(r[key] for r in results if key in r)
        else:
            out[key] = value
    return out


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Soak (issue 17): --minutes (default 30) at --load (default 0.7) of the
capacity measured first, on private PostgreSQL and Redis servers
(tests/faults/backends.py) with retention on (completed tasks kept
--retention s). Every minute: the RSS of every dtq process, PostgreSQL's
`tasks` table and index sizes, Redis's used memory, and the submit->start
latency of the tasks that finished in that minute (first attempts, not
scheduled). Prints the per-minute table, RSS growth per process after the
warm-up (least squares, MiB/min), p99 per 5-minute window, and draws the plot
(needs matplotlib: pip install matplotlib).

    python benchmarks/soak.py [--minutes 30] [--load 0.7] [--png benchmarks/soak.png]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.faults import chaos
from tests.faults.backends import Backends
from tests.faults.harness import Cluster

MiB = 1024 * 1024
WARM_UP = 5  # minutes left out of the growth figures
LATENCY_SQL = """
SELECT extract(epoch FROM started_at - created_at)::float8 FROM tasks
WHERE finished_at > to_timestamp(%s) AND finished_at <= to_timestamp(%s)
  AND attempts = 1 AND scheduled_at IS NULL AND started_at IS NOT NULL
"""
SIZES_SQL = """
SELECT pg_relation_size('tasks'), pg_indexes_size('tasks'), count(*) FROM tasks
"""


@dataclass
class Minute:
    at: float
    rss: dict[str, float]  # process name -> MiB
    table_mib: float
    index_mib: float
    rows: int
    redis_mib: float
    latencies: list[float] = field(default_factory=list)


def processes(cluster: Cluster) -> dict[str, int]:
    named = {f"server{i}": s.proc.pid for i, s in enumerate(cluster.servers) if s.proc}
    named |= {f"manager{i}": m.pid for i, m in enumerate(cluster.managers)}
    named |= {f"worker{i}": w.proc.pid for i, w in enumerate(cluster.workers)}
    return named


def rss_mib(pid: int) -> float:
    """The process and its children (a worker's handler processes, if any)."""
    try:
        root = psutil.Process(pid)
        family = [root, *root.children(recursive=True)]
        return sum(p.memory_info().rss for p in family) / MiB
    except psutil.NoSuchProcess:
        return float("nan")


def sample(cluster: Cluster, since: float) -> Minute:
    now = time.time()
    table, index, rows = cluster.backends.sql(SIZES_SQL)[0]
    client = redis.Redis.from_url(cluster.backends.redis.url)
    used = int(client.info("memory")["used_memory"])
    client.close()
    latencies = [r[0] for r in cluster.backends.sql(LATENCY_SQL, (since, now))]
    return Minute(
        at=now,
        rss={name: rss_mib(pid) for name, pid in processes(cluster).items()},
        table_mib=table / MiB,
        index_mib=index / MiB,
        rows=rows,
        redis_mib=used / MiB,
        latencies=latencies,
    )


def p99(values: list[float]) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def slope(ys: list[float]) -> float:
    """Least-squares growth per sample (MiB/min for one sample a minute)."""
    if len(ys) < 2:
        return 0.0
    xs = list(range(len(ys)))
    return statistics.linear_regression(xs, ys).slope


HEADER = (
    f"{'min':>3} {'rows':>7} {'table MiB':>9} {'index MiB':>9} {'redis MiB':>9} "
    f"{'done':>6} {'p50 ms':>7} {'p99 ms':>7}  rss MiB per process"
)


def row(i: int, m: Minute) -> str:
    lat = m.latencies
    p50 = statistics.median(lat) * 1000 if lat else float("nan")
    rss = " ".join(f"{v:.0f}" for v in m.rss.values())
    return (
        f"{i:>3} {m.rows:>7} {m.table_mib:>9.1f} {m.index_mib:>9.1f} {m.redis_mib:>9.1f} "
        f"{len(lat):>6} {p50:>7.1f} {p99(lat) * 1000:>7.1f}  {rss}"
    )


def summary(minutes: list[Minute]) -> list[str]:
    lines = [HEADER, *(row(i, m) for i, m in enumerate(minutes, 1))]
    steady = minutes[WARM_UP:]
    if len(steady) < 2:
        return lines
    lines.append(f"RSS growth after minute {WARM_UP} (MiB/min, target < 0.5):")
    for name in minutes[-1].rss:
        series = [m.rss[name] for m in steady if name in m.rss]
        lines.append(f"  {name:<10} {slope(series):+.3f}  ({series[0]:.0f} -> {series[-1]:.0f})")
    for label, pick in (
        ("tasks table MiB", lambda m: m.table_mib),
        ("tasks indexes MiB", lambda m: m.index_mib),
        ("redis used MiB", lambda m: m.redis_mib),
    ):
        series = [pick(m) for m in steady]
        lines.append(f"{label:<18} {slope(series):+.3f}/min  ({series[0]:.1f} -> {series[-1]:.1f})")
    lines.append("submit->start p99 per 5-minute window (ms):")
    for start in range(0, len(minutes), 5):
        window = [x for m in minutes[start : start + 5] for x in m.latencies]
        lines.append(
            f"  min {start + 1:>2}-{start + 5:<2} {p99(window) * 1000:7.1f}  n={len(window)}"
        )
    return lines


def plot(minutes: list[Minute], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = list(range(1, len(minutes) + 1))
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), sharex=True)
    for name in minutes[-1].rss:
        axes[0][0].plot(xs, [m.rss.get(name, float("nan")) for m in minutes], label=name)
    axes[0][0].set(title="RSS per process (MiB)")
    axes[0][0].legend(fontsize=7, ncol=2)
    axes[0][1].plot(xs, [m.table_mib for m in minutes], label="tasks table")
    axes[0][1].plot(xs, [m.index_mib for m in minutes], label="tasks indexes")
    axes[0][1].set(title="PostgreSQL (MiB), retention on")
    axes[0][1].legend(fontsize=7)
    axes[1][0].plot(xs, [m.redis_mib for m in minutes])
    axes[1][0].set(title="Redis used memory (MiB)", xlabel="minute")
    axes[1][1].plot(xs, [p99(m.latencies) * 1000 for m in minutes], label="p99")
    axes[1][1].plot(
        xs,
        [statistics.median(m.latencies) * 1000 if m.latencies else 0 for m in minutes],
        label="p50",
    )
    axes[1][1].set(title="submit->start latency (ms), per minute", xlabel="minute")
    axes[1][1].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--load", type=float, default=0.7)
    parser.add_argument("--servers", type=int, default=2)
    parser.add_argument("--managers", type=int, default=1)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--retention", type=float, default=120.0)
    parser.add_argument("--png", type=Path, default=Path("benchmarks/soak.png"))
    args = parser.parse_args()
    with Backends.running() as backends:
        cluster = Cluster(backends, "benchmarks/soak.py")
        cluster.env["DTQ_RETENTION_COMPLETED"] = str(args.retention)
        cluster.env["DTQ_RETENTION_INTERVAL"] = "10"
        minutes: list[Minute] = []
        try:
            chaos.start(cluster, args.servers, args.managers, args.workers)
            capacity = chaos.measure_capacity(cluster, 2000)
            rate = capacity * args.load
            print(f"measured capacity {capacity:.0f} tasks/s; soak at {rate:.0f}/s", flush=True)
            producer = chaos.Producer(cluster, rate, random.Random(1))
            producer.start()
            try:
                last = time.time()
                for _ in range(args.minutes):
                    time.sleep(60)
                    minutes.append(sample(cluster, last))
                    last = minutes[-1].at
                    print(row(len(minutes), minutes[-1]), flush=True)
            finally:
                producer.stopping.set()
                producer.join(90)
        finally:
            cluster.close()
    for line in summary(minutes):
        print(line)
    title = (
        f"dtq soak: {args.minutes} min at {rate:.0f} tasks/s "
        f"({args.load:.0%} of {capacity:.0f}/s), "
        f"{args.servers} servers, {args.managers} manager, {args.workers} workers x4"
    )
    plot(minutes, args.png, title)
    print(f"plot: {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""One submit per call, side by side in one run: application threads each
calling `dtq.Client.submit()` (coalescing on, then off) against Dramatiq's
`actor.send()` (and optionally Celery's `.delay()`), interleaved round by round
on the same cores; medians of the rounds, and CPU per task by program.

Run with the project's Python (the peers run in their own virtualenv):

    python benchmarks/per_call.py --runs 3 [--peers dramatiq,celery] [--out FILE]

Per round: dtq `client` workload with coalescing, each peer's burst (its
`single` phase: `--threads` threads, one send per call) and latency (one caller
at `--rate`), dtq `client` without coalescing, then dtq `client-latency` (one
thread at `--rate`) with and without coalescing. Each dtq run is a fresh stack
(`benchmarks/run_dtq.py`), so its CPU seconds belong to that workload alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv" / "bin" / "python"
# Program groups of the CPU table: a program counts for the first group it matches.
GROUPS = (
    ("server", ("server-",)),
    ("postgres", ("postgres",)),
    ("client", ("children", "client")),
    ("workers", ("worker", "dramatiq", "celery")),
    ("redis", ("redis-server",)),
)


def dtq_run(args: argparse.Namespace, workload: str, coalesce: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "results.json"
        command = [
            sys.executable, str(HERE / "run_dtq.py"), "--workloads", workload,
            "--tasks", str(args.tasks), "--duration", str(args.duration), "--out", str(out),
            "--", "--threads", str(args.threads), "--rate", str(args.rate),
            "--coalesce" if coalesce else "--no-coalesce",
            "--client-connections", str(args.connections),
        ]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True, timeout=1800)
        results: dict[str, Any] = json.loads(out.read_text())
    figures: dict[str, Any] = results[workload]
    figures["cpu_ms_per_task"] = per_task(results["cpu_seconds"], figures["accepted"])
    return figures


def peer_run(args: argparse.Namespace, name: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ("DTQ_TREE", "PYTHONPATH")}
    command = [
        str(VENV), str(HERE / "peers.py"), "--child", name, "--tasks", str(args.tasks),
        "--callers", str(args.threads), "--rate", str(args.rate),
        "--duration", str(args.duration),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    single = result["single"]
    single["cpu_ms_per_task"] = per_task(single.pop("cpu_seconds"), args.tasks)
    return result


def per_task(cpu_seconds: dict[str, float], tasks: int) -> dict[str, float]:
    """CPU ms per task by program group (the machine is shared: other programs left out)."""
    out = dict.fromkeys([g for g, _ in GROUPS], 0.0)
    for program, seconds in cpu_seconds.items():
        group = next((g for g, marks in GROUPS if any(m in program for m in marks)), None)
        if group:
            out[group] += seconds * 1000 / tasks
    out["total"] = sum(out.values())
    return {k: round(v, 3) for k, v in out.items()}


ROWS = [  # label, path in the dtq `client` / `client-latency` figures, path in a peer's
    ("e2e tasks/s, threads one submit at a time", ("client", "e2e_tasks_per_s"),
     ("single", "e2e_tasks_per_s")),
    ("  submit p50 ms (threads)", ("client", "submit_ms", "p50"), None),
    ("  submit p99 ms (threads)", ("client", "submit_ms", "p99"), None),
    ("  tasks per call (threads)", ("client", "tasks_per_call"), None),
    ("one caller at RATE/s: submit p50 ms", ("client-latency", "submit_ms", "p50"),
     ("latency", "rpc_ms", "p50")),
    ("one caller at RATE/s: submit p99 ms", ("client-latency", "submit_ms", "p99"),
     ("latency", "rpc_ms", "p99")),
    ("one caller: submit->start p50 ms", ("client-latency", "submit_to_start_ms", "p50"),
     ("latency", "submit_to_start_ms", "p50")),
    ("one caller: submit->start p99 ms", ("client-latency", "submit_to_start_ms", "p99"),
     ("latency", "submit_to_start_ms", "p99")),
] + [
    (f"CPU ms/task, {g} (threads)", ("client", "cpu_ms_per_task", g),
     ("single", "cpu_ms_per_task", g))
    for g in [*(g for g, _ in GROUPS), "total"]
]  # fmt: skip


def dig(data: Any, path: tuple[str, ...] | None) -> float | None:
    for key in path or ():
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return float(data) if path else None


def cell(values: list[float | None]) -> str:
    found = [v for v in values if v is not None]
    if not found:
        return "-"
    med = statistics.median(found)
    runs = " / ".join(f"{v:,.1f}" if v >= 100 else f"{v:.2f}" for v in found)
    return f"**{med:,.0f}** ({runs})" if med >= 100 else f"**{med:.2f}** ({runs})"


def table(runs: dict[str, list[dict[str, Any]]], rate: float) -> str:
    names = list(runs)
    lines = ["| figure | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label, dpath, ppath in ROWS:
        cells = []
        for name in names:
            path = dpath if name.startswith("dtq") else ppath
            cells.append(cell([dig(r, path) for r in runs[name]]))
        lines.append(f"| {label.replace('RATE', f'{rate:g}')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--peers", default="dramatiq")
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--connections", type=int, default=1, help="dtq.Client connections")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, Any]]] = {}
    for i in range(args.runs):
        steps: list[tuple[str, Any]] = [
            ("dtq coalesced", lambda: {"client": dtq_run(args, "client", True)})
        ]
        steps += [(p, lambda p=p: peer_run(args, p)) for p in args.peers.split(",") if p]
        steps += [
            ("dtq per call", lambda: {"client": dtq_run(args, "client", False)}),
            ("dtq coalesced", lambda: {"client-latency": dtq_run(args, "client-latency", True)}),
            ("dtq per call", lambda: {"client-latency": dtq_run(args, "client-latency", False)}),
        ]
        for name, step in steps:
            load = os.getloadavg()[0]
            figures = step()
            mine = runs.setdefault(name, [])
            if name.startswith("dtq") and len(mine) > i:
                mine[i].update(figures)  # the latency half of this round's dtq run
            else:
                mine.append(figures)
            mine[i].setdefault("load", []).append(round(load, 1))
            print(f"round {i + 1} {name} (load {load:.1f}): {json.dumps(figures)}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(runs, indent=2))
    print(table(runs, args.rate))


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Chaos run (issue 17): 3 API servers, 2 managers and 6 workers on private
PostgreSQL and Redis servers (tests/faults/backends.py) while, every 5-10 s, a
random process gets SIGKILL, SIGSTOP/SIGCONT or a restart (server, manager,
worker, Redis; PostgreSQL once) and a producer submits at --load of the
capacity measured first. Bounded: --seconds of chaos (default 300), then at
most 90 s to drain. Prints the table of tests/faults/chaos.py; exits 1 when
the checker finds a problem.

    python benchmarks/chaos.py [--seconds 300] [--load 0.5] [--seed 1]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.faults import chaos
from tests.faults.backends import Backends
from tests.faults.harness import Cluster


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--load", type=float, default=0.5, help="share of measured capacity")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--servers", type=int, default=3)
    parser.add_argument("--managers", type=int, default=2)
    parser.add_argument("--workers", type=int, default=6)
    args = parser.parse_args()
    with Backends.running() as backends:
        cluster = Cluster(backends, "benchmarks/chaos.py")
        try:
            chaos.start(cluster, args.servers, args.managers, args.workers)
            capacity = chaos.measure_capacity(cluster, 2000)
            print(f"measured capacity: {capacity:.0f} tasks/s", flush=True)
            report = chaos.run(
                cluster, args.seconds, capacity * args.load, interval=(5.0, 10.0), seed=args.seed
            )
        finally:
            cluster.close()
    print("\n".join(report.table()))
    problems = report.problems()
    for problem in problems:
        print("PROBLEM:", problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

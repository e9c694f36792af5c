"""The short chaos run: 3 API servers, 2 managers and 4 workers while every
kind of fault (server, manager and worker SIGKILL and SIGSTOP, Redis kill -9,
one PostgreSQL restart) lands in a random order, 2-4 s apart, under a steady
producer, a canceller and a schedule firing every second. benchmarks/chaos.py
is the long one (5 minutes, 6 workers, at half the measured capacity)."""

from __future__ import annotations

import pytest

from tests.faults import chaos
from tests.faults.harness import Cluster

pytestmark = pytest.mark.faults


def test_every_fault_kind_in_a_row_loses_and_doubles_nothing(cluster: Cluster) -> None:
    chaos.start(cluster, servers=3, managers=2, workers=4)
    faults = len(chaos.KINDS)
    report = chaos.run(cluster, seconds=0, rate=40, interval=(2.0, 4.0), seed=7, faults=faults)
    print("\n".join(report.table()))
    assert {i.kind for i in report.injections} == set(chaos.KINDS), "a fault kind never ran"
    assert report.accepted > 500, "the producer hardly ran"
    assert report.cancelled, "no cancel went through"
    assert len(report.fire_times) >= 20, "the schedule hardly fired"
    assert not report.problems(), report.problems()

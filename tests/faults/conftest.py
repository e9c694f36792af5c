"""Fixtures of the fault-injection suite: private backends for the session, a
fresh cluster of dtq processes per scenario, and the fault table at the end."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.faults import checker
from tests.faults.backends import Backends
from tests.faults.harness import Cluster


@pytest.fixture(scope="session")
def backends() -> Iterator[Backends]:
    with Backends.running() as started:
        yield started


@pytest.fixture
def cluster(backends: Backends, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    backends.ensure_up()
    backends.reset()
    started = Cluster(backends, request.node.nodeid)
    try:
        yield started
    finally:
        started.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call" or (report.when == "setup" and report.failed):
        checker.OUTCOMES[item.nodeid] = report.outcome
    return report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not checker.RESULTS:
        return
    terminalreporter.section("fault injection")
    terminalreporter.write_line(
        "recovery s: from the fault until every task open at that moment was terminal"
    )
    for line in checker.summary_lines():
        terminalreporter.write_line(line)
    checker.write_table()

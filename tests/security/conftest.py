"""Fixtures of the fuzz suite: one `dtq server` and one Envoy for the whole
package (so a crash anywhere shows as a changed pid), and the table at the end."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Server, start_server
from tests.security import tally
from tests.support.env import reset
from tests.support.envoy import Envoy, running_envoy


@pytest.fixture(scope="package")
def server(pg_url: str, redis_url: str) -> Iterator[Server]:
    """The package's server: overrides the module-scoped one of tests/conftest.py.
    It starts on empty tables: what earlier modules left (rows written below the
    API, by integration tests) is not the fuzzers' to read."""
    reset(pg_url, redis_url)
    srv = start_server(pg_url, redis_url)
    yield srv
    srv.proc.stop()


@pytest.fixture(scope="package")
def server_pid(server: Server) -> int:
    return server.proc.popen.pid


@pytest.fixture(scope="package")
def envoy(server: Server) -> Iterator[Envoy]:
    with running_envoy(server.address) as started:
        yield started


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not tally.TRIED:
        return
    terminalreporter.section("fuzzing")
    for line in tally.lines():
        terminalreporter.write_line(line)

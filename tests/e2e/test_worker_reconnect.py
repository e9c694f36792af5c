"""A worker whose server is down keeps trying to connect at a bounded pace, so
it is back within seconds of the server, however long the outage was.

gRPC's own reconnect backoff grows to 120 s by default (x1.6 from 1 s): after a
long outage a worker sat disconnected for up to two minutes after its server was
back (issue 10, item 4: after a kill -9 and restart, one of two workers had not
reconnected when the fault test looked). The "server" here accepts each TCP
connection and closes it at once, as a dead server's port does: every attempt of
the worker's channel is counted.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.conftest import process_env
from tests.support.procs import Proc, dtq_args, wait_until

pytestmark = pytest.mark.e2e
WATCH = 16.0  # seconds; the default backoff's 5th gap (5.2-7.9 s) starts before 11.2 s
MAX_GAP = 4.0  # seconds between two connection attempts (the fix: 2 s, +20% jitter)


class DeadPort:
    """A listening socket that closes every connection it accepts, and records when."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.attempts: list[float] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.attempts.append(time.monotonic())
            conn.close()


@pytest.fixture
def dead_port() -> Iterator[DeadPort]:
    port = DeadPort()
    yield port
    port.sock.close()


def test_worker_retries_a_dead_server_at_a_bounded_pace(
    dead_port: DeadPort, pg_url: str, redis_url: str
) -> None:
    environ = process_env(pg_url, redis_url, DTQ_SERVER_ADDRESS=f"127.0.0.1:{dead_port.port}")
    worker = Proc(
        "worker", dtq_args("worker", "-m", "tests.faults.handlers", "--metrics-port", "0"), environ
    )
    try:
        wait_until(lambda: bool(dead_port.attempts), 30, "the worker's first connection attempt")
        start = dead_port.attempts[0]
        wait_until(
            lambda: time.monotonic() - start > WATCH or not worker.alive(),
            WATCH + 5,
            "the end of the watch window",
        )
        assert worker.alive(), worker.output()[-2000:]
        times = [*dead_port.attempts, time.monotonic()]  # the gap still open counts too
        gaps = [round(b - a, 2) for a, b in itertools.pairwise(times)]
        assert max(gaps) <= MAX_GAP, f"gaps between connection attempts: {gaps}"
    finally:
        worker.stop()

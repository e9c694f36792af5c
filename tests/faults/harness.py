"""The fault-injection harness: real `dtq server`, `dtq manager` and `dtq worker`
processes with short leases (DTQ_LEASE_DURATION=2) over the suite's private
PostgreSQL and Redis (backends.py), the tasks' executions as recorded by
handlers.py, and the one checker (checker.py) every scenario ends with.
"""

from __future__ import annotations

import os
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from google.protobuf import struct_pb2

from dtq.v1 import task_service_pb2, task_service_pb2_grpc
from tests.faults.backends import Backends
from tests.faults.checker import (
    FINAL_SQL,
    RESULTS,
    TERMINAL,
    Execution,
    Fault,
    Row,
    Verdict,
    final_of,
    judge,
)
from tests.support.procs import Proc, dtq_args, free_port, grpc_serving, wait_until

T = TypeVar("T")
LEASE = 2.0  # seconds: DTQ_LEASE_DURATION of every process
SETTLE = 1.0  # seconds a finished scenario is watched for terminal states that change


# -- dtq processes ---------------------------------------------------------------------------


@dataclass
class ApiServer:
    """A `dtq server` on its own ports; restartable on the same ones."""

    port: int
    metrics_port: int
    env: dict[str, str]
    proc: Proc | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        args = ["server", "--port", str(self.port), "--metrics-port", str(self.metrics_port)]
        self.proc = Proc("faults-server", dtq_args(*args), self.env)

    def ready(self) -> bool:
        assert self.proc is not None
        if not self.proc.alive():
            raise RuntimeError(f"dtq server exited:\n{self.proc.output()[-3000:]}")
        return grpc_serving(self.address)

    def metric(self, name: str) -> float:
        return scrape(self.metrics_port, name)


def scrape(port: int, name: str) -> float:
    """Sum of every sample of metric `name` on a /metrics endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


@dataclass
class Worker:
    """A `dtq worker` that the cluster restarts when it dies (if supervised)."""

    args: list[str]
    env: dict[str, str]
    supervised: bool
    proc: Proc
    incarnations: list[Proc] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return "".join(p.output() for p in [*self.incarnations, self.proc])


def wait_all(checks: list[Callable[[], bool]], timeout: float, what: str) -> None:
    wait_until(lambda: all(check() for check in checks), timeout, what, every=0.1)


# -- the cluster of one scenario -----------------------------------------------------------


class Cluster:
    """dtq processes of one scenario over the shared private backends."""

    def __init__(self, backends: Backends, nodeid: str, redis_url: str | None = None) -> None:
        """`redis_url`: another Redis than the backends' (a Redis Cluster)."""
        self.backends = backends
        self.nodeid = nodeid
        self.env = {
            **os.environ,
            "DTQ_DATABASE_URL": backends.pg.url,
            "DTQ_REDIS_URL": redis_url or backends.redis.url,
            "DTQ_FAULTS_DSN": backends.pg.url,
            "DTQ_LOG_FORMAT": "json",
            "DTQ_LOG_LEVEL": "INFO",
            "DTQ_SERVER_GRACE": "1",
            "DTQ_LEASE_DURATION": str(LEASE),
            "DTQ_WORKER_MAX_RETRY_BACKOFF": "0.2",
            "DTQ_WORKER_POLL_INTERVAL": "0.5",
            "DTQ_WORKER_SHUTDOWN_GRACE": "2",
            "PYTHONUNBUFFERED": "1",
        }
        self.servers: list[ApiServer] = []
        self.managers: list[Proc] = []
        self.workers: list[Worker] = []
        self._channels: dict[str, grpc.Channel] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._supervisor = threading.Thread(target=self._supervise, daemon=True)
        self._supervisor.start()

    # processes

    def start(
        self, servers: int = 1, managers: int = 1, workers: int = 2, concurrency: int = 4
    ) -> None:
        """Start processes and wait (in parallel) until each is ready."""
        for _ in range(servers):
            self.servers.append(ApiServer(free_port(), free_port(), self.env))
            self.servers[-1].start()
        wait_all([s.ready for s in self.servers], 60, "dtq servers")
        for _ in range(managers):
            self.start_manager(wait=False)
        for _ in range(workers):
            self.start_worker(concurrency=concurrency, wait=False)
        self.wait_ready()

    def wait_ready(self) -> None:
        checks = [self._manager_ready(m) for m in self.managers]
        checks += [self._worker_ready(w) for w in self.workers]
        wait_all(checks, 60, "dtq managers and workers")

    def start_manager(self, wait: bool = True) -> Proc:
        proc = Proc("faults-manager", dtq_args("manager", "--metrics-port", "0"), self.env)
        self.managers.append(proc)
        if wait:
            wait_all([self._manager_ready(proc)], 60, "dtq manager")
        return proc

    @staticmethod
    def _manager_ready(proc: Proc) -> Callable[[], bool]:
        def ready() -> bool:
            if not proc.alive():
                raise RuntimeError(f"dtq manager exited:\n{proc.output()[-3000:]}")
            return "manager_started" in proc.output()

        return ready

    def start_worker(
        self,
        concurrency: int = 4,
        server: str | None = None,
        supervised: bool = True,
        wait: bool = True,
        **env: str,
    ) -> Worker:
        """A worker running tests/faults/handlers.py, on `server` (default: the first)."""
        address = server or self.servers[0].address
        environ = {**self.env, "DTQ_SERVER_ADDRESS": address, **env}
        args = dtq_args(
            "worker", "-m", "tests.faults.handlers", "-c", str(concurrency), "--metrics-port", "0"
        )
        worker = Worker(args, environ, supervised, Proc("faults-worker", args, environ))
        with self._lock:
            self.workers.append(worker)
        if wait:
            wait_all([self._worker_ready(worker)], 60, "dtq worker")
        return worker

    @staticmethod
    def _worker_ready(worker: Worker) -> Callable[[], bool]:
        def ready() -> bool:
            if not worker.proc.alive() and not worker.supervised:
                raise RuntimeError(f"dtq worker exited:\n{worker.output()[-3000:]}")
            return "worker_connected" in worker.proc.output()

        return ready

    def _supervise(self) -> None:
        """Restart supervised workers that died, like a process supervisor would."""
        while not self._closing.wait(0.2):
            with self._lock:
                for worker in self.workers:
                    if worker.supervised and not worker.proc.alive():
                        worker.incarnations.append(worker.proc)
                        worker.proc = Proc("faults-worker", worker.args, worker.env)

    def restart_server(self, server: ApiServer, down_for: float = 0.0) -> None:
        time.sleep(down_for)
        server.start()
        wait_all([server.ready], 60, "restarted dtq server")

    def close(self) -> None:
        self._closing.set()
        self._supervisor.join(5)
        with self._lock:
            procs = [p for w in self.workers for p in [*w.incarnations, w.proc]]
        procs += self.managers + [s.proc for s in self.servers if s.proc]
        for proc in procs:
            proc.signal(9)
        for proc in procs:
            proc.stop(5)
        for channel in self._channels.values():
            channel.close()

    # tasks

    def channel(self, server: ApiServer | None = None) -> grpc.Channel:
        """A channel to `server` (default: the first), closed with the cluster."""
        address = (server or self.servers[0]).address
        if address not in self._channels:
            self._channels[address] = grpc.insecure_channel(address)
        return self._channels[address]

    def stub(self, server: ApiServer | None = None) -> task_service_pb2_grpc.TaskServiceStub:
        return task_service_pb2_grpc.TaskServiceStub(self.channel(server))

    def submit(
        self,
        requests: Sequence[task_service_pb2.SubmitTaskRequest],
        via: ApiServer | None = None,
        patience: float = 15.0,
    ) -> list[str]:
        """BatchSubmitTasks in chunks; the accepted ids, in order. UNAVAILABLE
        is retried for `patience` seconds, like a client would (the requests
        carry idempotency keys, so a retry never submits twice)."""
        ids: list[str] = []
        stub = self.stub(via)
        for start in range(0, len(requests), 500):
            batch = task_service_pb2.BatchSubmitTasksRequest(requests=requests[start : start + 500])
            reply = retry_unavailable(
                lambda b=batch: stub.BatchSubmitTasks(b, timeout=30), patience
            )
            ids += [r.task.id for r in reply.results]
        return ids

    def states(self, ids: Sequence[str]) -> dict[str, str]:
        rows = self.backends.sql(
            "SELECT id::text, state FROM tasks WHERE id = ANY(%s::uuid[])", (list(ids),)
        )
        return dict(rows)

    def executions(self, ids: Sequence[str] | None = None) -> list[Execution]:
        """(task_id, attempt, worker_pid, phase, at) rows, oldest first."""
        sql = (
            "SELECT task_id::text, attempt, worker_pid, phase, extract(epoch FROM at)::float8 "
            "FROM fault_executions {} ORDER BY at"
        )
        if ids is None:
            rows = self.backends.sql(sql.format(""))
        else:
            rows = self.backends.sql(sql.format("WHERE task_id = ANY(%s::uuid[])"), (list(ids),))
        return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def in_flight(self, worker: Worker, phase: str) -> list[str]:
        """Tasks this worker process started and that are still RUNNING,
        with (phase="effect") or without (phase="started") their side effect."""
        rows = self.backends.sql(
            """
            SELECT s.task_id::text FROM fault_executions s JOIN tasks t ON t.id = s.task_id
            WHERE s.worker_pid = %s AND s.phase = 'started'
              AND t.state = 'running' AND t.attempts = s.attempt
              AND EXISTS (
                SELECT 1 FROM fault_executions x WHERE x.task_id = s.task_id
                  AND x.attempt = s.attempt AND x.worker_pid = s.worker_pid AND x.phase = 'effect'
              ) = %s
            """,
            (worker.pid, phase == "effect"),
        )
        return [r[0] for r in rows]

    def fault(self) -> Fault:
        """Call just before injecting a fault: when, and what was open."""
        rows = self.backends.sql(
            "SELECT id::text FROM tasks WHERE state NOT IN %s", (tuple(TERMINAL),)
        )
        return Fault(time.time(), [r[0] for r in rows])

    def terminal(self, ids: Sequence[str]) -> bool:
        """True when every task of `ids` is in a terminal state."""
        rows = self.backends.sql(
            "SELECT count(*) FROM tasks WHERE id = ANY(%s::uuid[]) AND state IN %s",
            (list(ids), tuple(TERMINAL)),
        )
        return bool(rows[0][0] == len(set(ids)))

    def wait_terminal(self, ids: Sequence[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.terminal(ids):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True

    # the one checker

    def verify(
        self,
        scenario: str,
        ids: Sequence[str],
        timeout: float,
        expect: dict[str, str] | None = None,
        fault: Fault | None = None,
        notes: str = "",
        record: bool = True,
    ) -> Verdict:
        """Wait (bounded) until every task is terminal, then judge; the
        figures go to the summary table whether or not they pass."""
        self.wait_terminal(ids, timeout)
        first = final_of(self.backends.sql(FINAL_SQL, (list(ids),)))
        time.sleep(SETTLE)
        again = final_of(self.backends.sql(FINAL_SQL, (list(ids),)))
        verdict = judge(scenario, ids, first, again, self.executions(ids), expect, fault)
        verdict.notes = notes
        if record:
            RESULTS.append(Row(self.nodeid, verdict))
        return verdict


def request(
    payload: dict[str, Any] | None = None, **fields: Any
) -> task_service_pb2.SubmitTaskRequest:
    """A SubmitTaskRequest for the `fault` handler (or `type`), with a fresh
    idempotency key."""
    body = struct_pb2.Struct()
    body.update(payload or {})
    fields.setdefault("idempotency_key", uuid.uuid4().hex)
    fields.setdefault("type", "fault")
    return task_service_pb2.SubmitTaskRequest(payload=body, **fields)


def retry_unavailable(call: Callable[[], T], patience: float) -> T:
    """`call()`, again while it fails with UNAVAILABLE, for up to `patience` s."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return call()
        except grpc.RpcError as error:
            code = error.code()  # type: ignore[attr-defined]
            if code != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            time.sleep(0.2)

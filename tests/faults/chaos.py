"""Chaos: random faults on a running cluster while producers submit.

Every few seconds one process gets SIGKILL, SIGSTOP/SIGCONT or a restart (an
API server, a manager, a worker, Redis; PostgreSQL once) while a producer
submits at a set rate, cancels some tasks and a schedule fires every second.
The report is judged by the suite's one checker (checker.judge) plus what
chaos adds: no task is leased after its cancel was acknowledged (a lease
granted before it may still run its handler, to its effect: cancellation is
cooperative, and the outcome is then refused), each fire time of the
schedule made one task, and every duplicate is matched to an expired or
revoked lease (the task's last error).

Used by tests/faults/test_chaos.py (short) and benchmarks/chaos.py (5 minutes).
"""

from __future__ import annotations

import random
import signal
import statistics
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import grpc
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2

from dtq.v1 import admin_service_pb2 as admin_pb
from dtq.v1 import admin_service_pb2_grpc, schedule_pb2, task_service_pb2
from tests.faults.checker import FINAL_SQL, Verdict, final_of
from tests.faults.harness import Cluster, request, retry_unavailable

KINDS = (
    "worker_kill",
    "worker_stop",
    "server_kill",
    "server_stop",
    "manager_kill",
    "manager_stop",
    "redis_kill",
    "postgres_restart",
)
STOP_FOR = 3.0  # seconds a SIGSTOPped process stays stopped
DOWN_FOR = 1.0  # seconds a killed server, manager or store stays down
RETRY = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
BEAT = "chaos-beat"
BEAT_KEY = f"schedule:{BEAT}:"


@dataclass
class Injection:
    kind: str
    at: float
    open_ids: list[str]


@dataclass
class Report:
    """What a chaos run did and what the checker found."""

    seconds: float
    rate: float
    injections: list[Injection]
    verdict: Verdict
    accepted: int
    unacknowledged: int
    cancelled: list[str]
    started_after_cancel: list[str]
    ran_while_cancelled: list[str]
    fire_times: list[float]
    duplicate_causes: Counter[str]
    errors: Counter[str]
    recoveries: list[float] = field(default_factory=list)

    def problems(self) -> list[str]:
        found = list(self.verdict.problems())
        if self.started_after_cancel:
            found.append(f"{len(self.started_after_cancel)} leased after being cancelled")
        doubled = len(self.fire_times) - len(set(self.fire_times))
        if doubled:
            found.append(f"{doubled} schedule fire times fired twice")
        if self.fire_times and len(set(self.fire_times)) != gap_free(self.fire_times):
            found.append("a schedule fire time was skipped")
        odd = {c: n for c, n in self.errors.items() if c not in {r.name for r in RETRY}}
        if odd:
            found.append(f"calls refused with {odd}")
        if self.duplicate_causes["no cause"]:
            found.append("a duplicate without an expired or revoked lease")
        return found

    def table(self) -> list[str]:
        kinds = Counter(i.kind for i in self.injections)
        p50, p99 = percentiles(self.recoveries)
        lines = [
            f"chaos: {self.seconds:.0f} s, producer at {self.rate:.0f} tasks/s",
            f"{'fault':<18} {'injected':>8}",
            *(f"{k:<18} {kinds[k]:>8}" for k in KINDS if kinds[k]),
            f"{'tasks accepted':<30} {self.accepted:>8}",
            f"{'submits never acknowledged':<30} {self.unacknowledged:>8}",
            f"{'lost':<30} {len(self.verdict.lost):>8}",
            f"{'cancelled':<30} {len(self.cancelled):>8}",
            f"{'  of them running at the cancel':<30} {len(self.ran_while_cancelled):>8}",
            f"{'leased after the cancel':<30} {len(self.started_after_cancel):>8}",
            f"{'schedule fire times':<30} {len(self.fire_times):>8}",
            *(f"  refused, retried: {c:<13} {n:>8}" for c, n in sorted(self.errors.items())),
            f"{'duplicates':<30} {len(self.verdict.duplicates):>8}",
            *(f"  cause: {c:<22} {n:>8}" for c, n in sorted(self.duplicate_causes.items())),
            f"{'recovery s p50 / p99':<30} {p50:>8.2f} / {p99:.2f}",
        ]
        return lines


def gap_free(times: list[float]) -> int:
    """How many fire times a 1 s schedule has from its first to its last one."""
    return round(max(times) - min(times)) + 1


def percentiles(values: list[float]) -> tuple[float, float]:
    if not values:
        return 0.0, 0.0
    if len(values) == 1:
        return values[0], values[0]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return statistics.median(values), cuts[98]


class Producer(threading.Thread):
    """Submits `rate` tasks a second over random servers until stopped. One in
    ten fails its first attempt; one in twenty is scheduled 3 s ahead and
    cancelled a moment later. A batch is retried with the same idempotency
    keys until a server acknowledges it."""

    def __init__(self, cluster: Cluster, rate: float, rng: random.Random) -> None:
        super().__init__(daemon=True)
        self.cluster, self.rate, self.rng = cluster, rate, rng
        self.stopping = threading.Event()
        self.accepted: list[str] = []
        self.cancelled: list[str] = []
        self.cancelled_at: dict[str, float] = {}  # epoch of the acknowledgement
        self.unacknowledged = 0
        self.errors: Counter[str] = Counter()  # status codes of refused calls, retried
        self.maybe_cancelled: list[str] = []  # the cancel's answer was lost
        self._to_cancel: list[tuple[float, str]] = []

    def run(self) -> None:
        owed = 0.0
        while not self.stopping.wait(0.1):
            owed += self.rate * 0.1
            n, owed = int(owed), owed - int(owed)
            if n:
                self._submit([self._request() for _ in range(n)])
            self._cancel_due()

    def _request(self) -> task_service_pb2.SubmitTaskRequest:
        roll = self.rng.random()
        payload = {"sleep": round(self.rng.uniform(0.02, 0.2), 3)}
        if roll < 0.05:
            at = timestamp_pb2.Timestamp()
            at.FromNanoseconds(int((time.time() + 3) * 1e9))
            return request(payload, max_retries=20, scheduled_at=at, idempotency_key="c" + uid())
        if roll < 0.15:
            payload["fail_times"] = 1
        return request(payload, max_retries=20)

    def _submit(self, requests: list[task_service_pb2.SubmitTaskRequest]) -> None:
        batch = task_service_pb2.BatchSubmitTasksRequest(requests=requests)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            server = self.rng.choice(self.cluster.servers)
            try:
                reply = self.cluster.stub(server).BatchSubmitTasks(batch, timeout=5)
            except grpc.RpcError as error:
                self.errors[error.code().name] += 1  # type: ignore[attr-defined]
                time.sleep(0.2)
                continue
            for req, result in zip(requests, reply.results, strict=True):
                self.accepted.append(result.task.id)
                if req.idempotency_key.startswith("c"):
                    self._to_cancel.append((time.monotonic() + 0.5, result.task.id))
            return
        self.unacknowledged += len(requests)

    def _cancel_due(self) -> None:
        now = time.monotonic()
        due = [t for at, t in self._to_cancel if at <= now]
        self._to_cancel = [(at, t) for at, t in self._to_cancel if at > now]
        for task_id in due:
            try:
                stub = self.cluster.stub(self.rng.choice(self.cluster.servers))
                stub.CancelTask(task_service_pb2.CancelTaskRequest(id=task_id), timeout=5)
            except grpc.RpcError as error:
                code = error.code()  # type: ignore[attr-defined]
                if code in RETRY:
                    self.maybe_cancelled.append(task_id)
                elif code != grpc.StatusCode.FAILED_PRECONDITION:  # already running
                    self.errors[code.name] += 1
                continue
            self.cancelled.append(task_id)
            self.cancelled_at[task_id] = time.time()


def uid() -> str:
    return uuid.uuid4().hex


class Chaos:
    """Injects one random fault every `interval` seconds into `cluster`."""

    def __init__(
        self, cluster: Cluster, rng: random.Random, kinds: tuple[str, ...] = KINDS
    ) -> None:
        self.cluster, self.rng = cluster, rng
        self.kinds = list(kinds)
        self.injections: list[Injection] = []

    def next_kind(self) -> str:
        """Each kind once in a random order, then again (PostgreSQL only once)."""
        if not self.kinds:
            self.kinds = [k for k in KINDS if k != "postgres_restart"]
        return self.kinds.pop(self.rng.randrange(len(self.kinds)))

    def inject(self, kind: str) -> None:
        fault = self.cluster.fault()
        self.injections.append(Injection(kind, fault.at, fault.open_ids))
        getattr(self, kind)()

    def worker_kill(self) -> None:  # the harness's supervisor starts it again
        self.rng.choice(self.cluster.workers).proc.signal(signal.SIGKILL)

    def worker_stop(self) -> None:
        self._pause(self.rng.choice(self.cluster.workers).proc.signal)

    def server_kill(self) -> None:
        server = self.rng.choice(self.cluster.servers)
        assert server.proc is not None
        server.proc.signal(signal.SIGKILL)
        server.proc.stop(5)
        self.cluster.restart_server(server, down_for=DOWN_FOR)

    def server_stop(self) -> None:
        server = self.rng.choice(self.cluster.servers)
        assert server.proc is not None
        self._pause(server.proc.signal)

    def manager_kill(self) -> None:
        victim = self.rng.choice(self.cluster.managers)
        victim.signal(signal.SIGKILL)
        victim.stop(5)
        self.cluster.managers.remove(victim)
        time.sleep(DOWN_FOR)
        self.cluster.start_manager()

    def manager_stop(self) -> None:
        self._pause(self.rng.choice(self.cluster.managers).signal)

    def redis_kill(self) -> None:
        redis = self.cluster.backends.redis
        redis.kill()
        time.sleep(DOWN_FOR)
        redis.start()
        redis.wait_ready(30)

    def postgres_restart(self) -> None:
        pg = self.cluster.backends.pg
        pg.stop()
        time.sleep(DOWN_FOR)
        pg.start()
        pg.wait_ready(30)

    @staticmethod
    def _pause(send: object) -> None:
        assert callable(send)
        send(signal.SIGSTOP)
        time.sleep(STOP_FOR)
        send(signal.SIGCONT)


def start(cluster: Cluster, servers: int, managers: int, workers: int) -> None:
    """Processes of a chaos run; each worker spreads its streams over every server."""
    cluster.start(servers=servers, managers=managers, workers=0)
    every = ",".join(s.address for s in cluster.servers)
    for _ in range(workers):
        cluster.start_worker(concurrency=4, server=every, wait=False)
    cluster.wait_ready()


def start_beat(cluster: Cluster) -> None:
    """A schedule firing every second (catch-up `all`: no fire time skipped)."""
    payload = struct_pb2.Struct()
    payload.update({"sleep": 0.02})
    beat = schedule_pb2.Schedule(
        name=BEAT,
        interval=duration_pb2.Duration(seconds=1),
        task=schedule_pb2.TaskTemplate(type="fault", payload=payload, max_retries=20),
        overlap_policy=schedule_pb2.Schedule.OVERLAP_POLICY_ALLOW,
        catch_up_policy=schedule_pb2.Schedule.CATCH_UP_POLICY_ALL,
    )
    admin = admin_service_pb2_grpc.AdminServiceStub(cluster.channel())
    admin.CreateSchedule(admin_pb.CreateScheduleRequest(schedule=beat), timeout=10)


def pause_beat(cluster: Cluster) -> None:
    admin = admin_service_pb2_grpc.AdminServiceStub(cluster.channel())
    pause = admin_pb.PauseScheduleRequest(name=BEAT)
    retry_unavailable(lambda: admin.PauseSchedule(pause, timeout=10), patience=30)


def fired(cluster: Cluster) -> list[tuple[str, float]]:
    """(task id, fire time) of the schedule's tasks."""
    rows = cluster.backends.sql(
        "SELECT id::text, idempotency_key FROM tasks WHERE idempotency_key LIKE %s",
        (BEAT_KEY + "2%",),
    )
    return [(r[0], datetime.fromisoformat(r[1][len(BEAT_KEY) :]).timestamp()) for r in rows]


def measure_capacity(cluster: Cluster, n: int) -> float:
    """Tasks a second the cluster completes, from a burst of `n` like the producer's."""
    started = time.monotonic()
    ids = cluster.submit([request({"sleep": 0.11}) for _ in range(n)])
    if not cluster.wait_terminal(ids, 120):
        raise RuntimeError("the capacity burst did not finish")
    return n / (time.monotonic() - started)


def run(
    cluster: Cluster,
    seconds: float,
    rate: float,
    interval: tuple[float, float],
    seed: int,
    faults: int = 0,
    settle: float = 90.0,
) -> Report:
    """Chaos for `seconds` and at least `faults` faults, then wait (bounded
    by `settle`) and judge."""
    rng = random.Random(seed)
    start_beat(cluster)
    producer = Producer(cluster, rate, random.Random(seed + 1))
    chaos = Chaos(cluster, rng)
    producer.start()
    began = time.monotonic()
    try:
        while time.monotonic() - began < seconds or len(chaos.injections) < faults:
            time.sleep(rng.uniform(*interval))
            chaos.inject(chaos.next_kind())
    finally:
        producer.stopping.set()
        producer.join(90)
    pause_beat(cluster)
    beats = fired(cluster)
    ids = producer.accepted + [task_id for task_id, _ in beats]
    if producer.maybe_cancelled:  # a lost answer: the state tells whether it happened
        states = cluster.states(producer.maybe_cancelled)
        lost = [t for t, s in states.items() if s == "cancelled"]
        producer.cancelled += lost
        producer.cancelled_at |= {t: time.time() for t in lost}  # no earlier bound known
    expect = {task_id: "cancelled" for task_id in producer.cancelled}
    verdict = cluster.verify(f"chaos, seed {seed}", ids, timeout=settle, expect=expect)
    return report(cluster, time.monotonic() - began, rate, chaos, producer, beats, verdict)


def report(
    cluster: Cluster,
    seconds: float,
    rate: float,
    chaos: Chaos,
    producer: Producer,
    beats: list[tuple[str, float]],
    verdict: Verdict,
) -> Report:
    executions = cluster.executions(verdict_ids(producer, beats))
    effects = {t for t, _, _, phase, _ in executions if phase == "effect"}
    final = final_of(cluster.backends.sql(FINAL_SQL, (verdict_ids(producer, beats),)))
    cause_of = dict(
        cluster.backends.sql(
            "SELECT id::text, error_type FROM tasks WHERE id = ANY(%s::uuid[])"
            " AND error_type IN ('LeaseExpired', 'LeaseRevoked')",
            (verdict.duplicates,),
        )
    )
    names = {"LeaseExpired": "lease expired", "LeaseRevoked": "lease revoked"}
    causes: Counter[str] = Counter(
        names[cause_of[d]] if d in cause_of and d not in verdict.unexplained else "no cause"
        for d in verdict.duplicates
    )
    recoveries = []
    for injection in chaos.injections:
        ends = [f.finished_at for i in injection.open_ids if (f := final.get(i)) and f.finished_at]
        if ends:
            recoveries.append(max(ends) - injection.at)
    return Report(
        seconds=seconds,
        rate=rate,
        injections=chaos.injections,
        verdict=verdict,
        accepted=len(producer.accepted),
        unacknowledged=producer.unacknowledged,
        cancelled=producer.cancelled,
        started_after_cancel=leased_after_cancel(cluster, producer),
        ran_while_cancelled=sorted(effects & set(producer.cancelled)),
        fire_times=[at for _, at in beats],
        duplicate_causes=causes,
        errors=producer.errors,
        recoveries=recoveries,
    )


def leased_after_cancel(cluster: Cluster, producer: Producer) -> list[str]:
    """Cancelled tasks whose last lease (PostgreSQL's started_at) came after the
    cancel was acknowledged. A lease granted before it may still start its
    handler afterwards (the worker hears of the cancel a moment later)."""
    rows = cluster.backends.sql(
        "SELECT id::text, extract(epoch FROM started_at)::float8 FROM tasks"
        " WHERE id = ANY(%s::uuid[]) AND started_at IS NOT NULL",
        (producer.cancelled,),
    )
    return sorted(t for t, at in rows if at > producer.cancelled_at[t])


def verdict_ids(producer: Producer, beats: list[tuple[str, float]]) -> list[str]:
    return producer.accepted + [task_id for task_id, _ in beats]

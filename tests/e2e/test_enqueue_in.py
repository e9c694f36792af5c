"""`dtq.enqueue_in`: a task inserted in the application's own SQLAlchemy
transaction exists only if it commits, and then runs at once: the commit's
NOTIFY wakes the queue manager (real server, manager and worker)."""

from __future__ import annotations

import statistics
import time
import urllib.request
import uuid
from collections.abc import Iterator

import grpc
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session

import dtq
from dtq.domain.errors import DtqError
from dtq.v1 import task_service_pb2_grpc
from tests.conftest import Server, WorkerFactory
from tests.support.env import sqlalchemy_url
from tests.support.procs import Proc, dtq_args, free_port, wait_until
from tests.support.tasks import State, get, wait_for

COMPLETED = State.Value("STATE_COMPLETED")
pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean")]


@pytest.fixture(scope="module")
def engine(pg_url: str) -> Iterator[Engine]:
    made = create_engine(sqlalchemy_url(pg_url))
    with made.begin() as conn:  # the application's own table, next to dtq's
        conn.execute(text("CREATE TABLE IF NOT EXISTS signups (email text PRIMARY KEY)"))
    yield made
    with made.begin() as conn:  # the schema tests compare the database with dtq's tables
        conn.execute(text("DROP TABLE signups"))
    made.dispose()


@pytest.fixture(scope="module")
def manager(server: Server) -> Iterator[tuple[Proc, int]]:
    port = free_port()
    proc = Proc("manager", dtq_args("manager", "--metrics-port", str(port)), server.env)
    wait_until(lambda: "manager_started" in proc.output() or not proc.alive(), 30, "dtq manager")
    yield proc, port
    proc.stop()


@pytest.fixture
def tasks(
    server: Server, start_worker: WorkerFactory
) -> Iterator[task_service_pb2_grpc.TaskServiceStub]:
    start_worker("--concurrency", "2")
    with server.channel() as channel:
        yield task_service_pb2_grpc.TaskServiceStub(channel)


def notified(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith("dtq_scheduler_notified_total "):
                return float(line.split()[1])
    return 0.0


def signup(engine: Engine, email: str, commit: bool = True) -> uuid.UUID:
    with Session(engine) as session:
        session.execute(text("INSERT INTO signups VALUES (:e)"), {"e": email})
        task_id = dtq.enqueue_in(session, "noop", {"email": email})
        if commit:
            session.commit()
        else:
            session.rollback()
    return task_id


def test_a_rolled_back_transaction_leaves_no_task_and_a_committed_one_runs(
    engine: Engine, manager: tuple[Proc, int], tasks: task_service_pb2_grpc.TaskServiceStub
) -> None:
    _, port = manager
    before = notified(port)
    lost = signup(engine, f"{uuid.uuid4()}@example.com", commit=False)
    with pytest.raises(grpc.RpcError) as missing:
        get(tasks, str(lost))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]

    waits = []
    for _ in range(3):
        email = f"{uuid.uuid4()}@example.com"
        committed = time.time()
        task_id = signup(engine, email)
        done = wait_for(tasks, str(task_id), timeout=20)
        assert done.state == COMPLETED
        assert done.payload.fields["email"].string_value == email
        waits.append(done.started_at.ToDatetime().timestamp() - committed)
    # Each commit woke the manager once; the rolled-back one never did.
    proc, _ = manager
    wait_until(lambda: notified(port) - before == 3, 5, f"three NOTIFYs:\n{proc.output()[-3000:]}")
    print(f"enqueue_in commit -> started: median {statistics.median(waits) * 1000:.0f} ms")


def test_an_idempotency_key_returns_the_same_task_and_refuses_another_request(
    engine: Engine, manager: tuple[Proc, int]
) -> None:
    with Session(engine) as session, session.begin():
        first = dtq.enqueue_in(session, "noop", {"n": 1}, idempotency_key="signup-42")
    with Session(engine) as session, session.begin():
        again = dtq.enqueue_in(session, "noop", {"n": 1}, idempotency_key="signup-42")
    assert again == first
    with Session(engine) as session, session.begin(), pytest.raises(DtqError) as reused:
        dtq.enqueue_in(session, "noop", {"n": 2}, idempotency_key="signup-42")
    assert reused.value.reason == "IDEMPOTENCY_KEY_REUSED"


def test_bad_input_is_refused_before_anything_is_written(engine: Engine) -> None:
    with Session(engine) as session:
        with pytest.raises(TypeError):
            dtq.enqueue_in(session, "noop", {"when": object()})  # type: ignore[dict-item]
        with pytest.raises(DtqError) as bad:
            dtq.enqueue_in(session, "noop", {}, queue="no spaces allowed")
        assert bad.value.violations[0].field == "queue"
        count = session.execute(text("SELECT count(*) FROM tasks")).scalar()
    assert count == 0

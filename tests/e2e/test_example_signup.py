"""The signup example (examples/signup): its FastAPI app submits through an
AsyncClient to a real server, and a real worker runs its handler module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Server, WorkerFactory

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean")]


@pytest.fixture
def web(
    server: Server, start_worker: WorkerFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    start_worker("--module", "examples.signup.tasks")
    monkeypatch.setenv("DTQ_SERVER_ADDRESS", server.address)
    from examples.signup.api import api

    with TestClient(api) as client:  # runs the lifespan: the AsyncClient opens and closes
        yield client


def test_a_signup_runs_the_welcome_task_and_reads_its_result(web: TestClient) -> None:
    accepted = web.post("/signups", json={"email": "ada@example.com"})
    assert accepted.status_code == 202, accepted.text
    task_id = accepted.json()["task_id"]
    status = web.get(f"/signups/{task_id}", params={"wait": 20}).json()
    assert status["state"] == "completed", status
    assert status["result"]["sent_to"] == "ada@example.com"
    assert status["result"]["attempt"] == 1


def test_the_same_signup_twice_is_one_task(web: TestClient) -> None:
    first = web.post("/signups", json={"email": "bob@example.com"}).json()
    again = web.post("/signups", json={"email": "bob@example.com"}).json()
    assert again["task_id"] == first["task_id"]


def test_a_permanent_failure_and_unknown_ids_are_answered(web: TestClient) -> None:
    task_id = web.post("/signups", json={"email": "x@invalid.example"}).json()["task_id"]
    status = web.get(f"/signups/{task_id}", params={"wait": 20}).json()
    assert status == {"state": "dead_lettered", "error": "no mailbox at x@invalid.example"}
    assert web.get("/signups/0192f0a0-0000-7000-8000-000000000000").status_code == 404
    assert web.get("/signups/not-a-task").status_code == 404
    assert web.post("/signups", json={"email": "no at sign"}).status_code == 422

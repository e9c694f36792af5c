"""The dead-letter routes of AdminService, as REST through Envoy in front of a
real `dtq server`: `POST /api/v1/queues/{queue}/deadLetters:requeue|:purge`."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from tests.conftest import Server
from tests.e2e.test_rest import INVALID_ARGUMENT, Rest, assert_error
from tests.support.envoy import Envoy, running_envoy
from tests.support.stub_worker import completed, dead_letter

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def envoy(server: Server) -> Iterator[Envoy]:
    with running_envoy(server.address) as running:
        yield running


@pytest.fixture
def rest(envoy: Envoy, clean: None) -> Rest:
    return Rest(envoy.port)


def state(rest: Rest, task_id: str) -> str:
    return str(rest.ok("GET", f"/api/v1/tasks/{task_id}")["task"]["state"])


def test_requeue_route_honours_type_and_limit(rest: Rest, channel: grpc.Channel) -> None:
    a = [dead_letter(channel, "a", "jobs") for _ in range(3)]
    b = dead_letter(channel, "b", "jobs")
    path = "/api/v1/queues/jobs/deadLetters:requeue"
    assert rest.ok("POST", path, {"task_type": "a", "limit": 2}) == {"requeued_count": 2}
    assert [state(rest, t.id) for t in a] == ["STATE_PENDING"] * 2 + ["STATE_DEAD_LETTERED"]
    assert rest.ok("POST", path) == {"requeued_count": 2}  # the rest, every type
    assert state(rest, b.id) == "STATE_PENDING"
    again = rest.ok("GET", f"/api/v1/tasks/{b.id}")["task"]
    assert again["max_retries"] - again["attempts"] == b.max_retries
    assert rest.ok("POST", "/api/v1/queues/elsewhere/deadLetters:requeue") == {"requeued_count": 0}


def test_purge_route_needs_confirm_and_counts_with_validate_only(
    rest: Rest, channel: grpc.Channel
) -> None:
    dead = [dead_letter(channel, "a", "jobs") for _ in range(2)]
    done = completed(channel, "a", "jobs")
    path = "/api/v1/queues/jobs/deadLetters:purge"
    refused = rest.post(path, {"task_type": "a"})
    assert_error(refused, 400, INVALID_ARGUMENT, "CONFIRMATION_REQUIRED", ("confirm",))
    assert rest.ok("POST", path, {"validate_only": True}) == {"purged_count": 2}
    assert state(rest, dead[0].id) == "STATE_DEAD_LETTERED"
    assert rest.ok("POST", path, {"confirm": True}) == {"purged_count": 2}
    for t in dead:
        assert rest.get(f"/api/v1/tasks/{t.id}").status == 404
    assert state(rest, done) == "STATE_COMPLETED"  # purging dead letters touches nothing else


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/queues/jobs/deadLetters:requeue", {"limit": -1}, "limit"),
        ("/api/v1/queues/bad%20name/deadLetters:requeue", {}, "queue"),
        ("/api/v1/queues/jobs/deadLetters:requeue", {"task_type": "no spaces"}, "task_type"),
        ("/api/v1/queues/bad%20name/deadLetters:purge", {"confirm": True}, "queue"),
    ],
)
def test_invalid_requests_are_400_with_the_field(
    rest: Rest, path: str, body: dict[str, object], field: str
) -> None:
    assert_error(rest.post(path, body), 400, INVALID_ARGUMENT, "INVALID_FIELD", (field,))

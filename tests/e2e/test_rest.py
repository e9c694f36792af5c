"""REST through Envoy in front of a real `dtq server`.

Every `google.api.http` route, the JSON mapping (snake_case names, enums as
names, primitives always printed), gRPC codes turned into HTTP codes with JSON
`google.rpc.Status` bodies, the NDJSON watch stream, native gRPC on the same
port, server reflection, and the checked-in `envoy/envoy.yaml`.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import grpc
import pytest
import yaml
from grpc_status import rpc_status

from dtq.envoy import SERVICES, render, repo_config
from dtq.v1 import task_service_pb2 as pb
from dtq.v1 import task_service_pb2_grpc
from tests.conftest import Server, WorkerFactory, start_server
from tests.support.envoy import Envoy, running_envoy
from tests.support.procs import ROOT

pytestmark = pytest.mark.e2e

ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
MIB = 1024 * 1024
MISSING_ID = "01a22029-0000-7000-8000-000000000000"
INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION = 3, 5, 6, 9
RESOURCE_EXHAUSTED, UNAVAILABLE = 8, 14


# -- a tiny REST client ---------------------------------------------------------------


@dataclass
class Reply:
    status: int
    content_type: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Rest:
    """HTTP/1.1 calls to Envoy's REST front, one connection per call."""

    def __init__(self, port: int) -> None:
        self.port = port

    def connect(self, timeout: float = 30.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> Reply:
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn = self.connect()
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            return Reply(response.status, response.getheader("content-type", ""), response.read())
        finally:
            conn.close()

    def get(self, path: str, **query: Any) -> Reply:
        return self.call("GET", f"{path}?{urlencode(query)}" if query else path)

    def post(self, path: str, body: Any = None, raw: bytes | None = None) -> Reply:
        return self.call("POST", path, {} if body is None and raw is None else body, raw)

    def ok(self, method: str, path: str, body: Any = None, **query: Any) -> Any:
        reply = self.get(path, **query) if method == "GET" else self.post(path, body)
        assert reply.status == 200, reply.body
        assert reply.content_type.startswith("application/json")
        return reply.json()

    def submit(self, **fields: Any) -> dict[str, Any]:
        task: dict[str, Any] = self.ok("POST", "/api/v1/tasks", {"type": "email", **fields})["task"]
        return task


def assert_error(
    reply: Reply, http_status: int, code: int, reason: str, fields: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A backend error: HTTP status, JSON google.rpc.Status, ErrorInfo, BadRequest."""
    assert reply.status == http_status, reply.body
    assert reply.content_type.startswith("application/json"), reply.content_type
    status: dict[str, Any] = reply.json()
    assert status["code"] == code
    by_type = {d["@type"]: d for d in status.get("details", [])}
    assert by_type[ERROR_INFO]["reason"] == reason
    assert by_type[ERROR_INFO]["domain"] == "dtq"
    if fields:
        violations = by_type[BAD_REQUEST]["field_violations"]
        assert tuple(v["field"] for v in violations) == fields
    return status


def nanos(timestamp: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 UTC timestamp as proto JSON prints it."""
    whole, _, fraction = timestamp.removesuffix("Z").partition(".")
    seconds = datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp()
    return int(seconds) * 10**9 + int(fraction.ljust(9, "0"))


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def envoy(server: Server) -> Iterator[Envoy]:
    with running_envoy(server.address) as running:
        yield running


@pytest.fixture
def rest(envoy: Envoy, clean: None) -> Rest:
    return Rest(envoy.port)


# -- TaskService ---------------------------------------------------------------------------


def test_submit_returns_the_stored_task_in_snake_case(rest: Rest) -> None:
    reply = rest.ok(
        "POST",
        "/api/v1/tasks",
        {
            "type": "email_sending",
            "payload": {"to": "a@example.com", "n": 2, "tags": ["x"]},
            "priority": "PRIORITY_HIGH",
            "queue": "mail",
            "max_retries": 5,
            "timeout": "30s",
            "lease_duration": "15s",
            "idempotency_key": "snake-1",
        },
    )
    task = reply["task"]
    assert reply["deduplicated"] is False
    assert task["type"] == "email_sending"
    assert task["payload"] == {"to": "a@example.com", "n": 2, "tags": ["x"]}
    assert task["priority"] == "PRIORITY_HIGH"
    assert task["state"] == "STATE_PENDING"
    assert task["queue"] == "mail"
    assert task["max_retries"] == 5
    assert task["timeout"] == "30s"
    assert task["lease_duration"] == "15s"
    assert task["idempotency_key"] == "snake-1"
    assert task["attempts"] == 0  # primitives are printed even when zero
    assert task["worker_id"] == ""
    assert task["created_at"].endswith("Z")


def test_submit_accepts_camel_case_field_names(rest: Rest) -> None:
    task = rest.submit(
        maxRetries=0, leaseDuration="5s", idempotencyKey="camel-1", priority="PRIORITY_LOW"
    )
    assert task["max_retries"] == 0
    assert task["lease_duration"] == "5s"
    assert task["idempotency_key"] == "camel-1"
    assert task["priority"] == "PRIORITY_LOW"
    assert set(task) >= {"max_retries", "created_at", "updated_at"}
    assert not {"maxRetries", "createdAt"} & set(task)  # replies keep proto names


def test_submit_with_a_future_time_is_scheduled(rest: Rest) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    task = rest.submit(scheduled_at=rfc3339(later))
    assert task["state"] == "STATE_SCHEDULED"
    assert task["scheduled_at"].startswith(later.strftime("%Y-%m-%dT%H:%M:%S"))


def test_idempotency_key_deduplicates_then_conflicts(rest: Rest) -> None:
    first = rest.submit(payload={"n": 1}, idempotency_key="k")
    again = rest.ok(
        "POST", "/api/v1/tasks", {"type": "email", "payload": {"n": 1}, "idempotencyKey": "k"}
    )
    assert again["deduplicated"] is True
    assert again["task"]["id"] == first["id"]
    other = rest.post(
        "/api/v1/tasks", {"type": "email", "payload": {"n": 2}, "idempotency_key": "k"}
    )
    assert_error(other, 409, ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")


def test_batch_submit_returns_results_in_order(rest: Rest) -> None:
    requests = [{"type": f"t{i}", "payload": {"i": i}} for i in range(3)]
    results = rest.ok("POST", "/api/v1/tasks:batchSubmit", {"requests": requests})["results"]
    assert [r["task"]["type"] for r in results] == ["t0", "t1", "t2"]
    assert [r["task"]["payload"] for r in results] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert all(r["deduplicated"] is False for r in results)


def test_batch_submit_with_one_bad_request_stores_nothing(rest: Rest) -> None:
    requests = [{"type": "ok"}, {"type": ""}, {"type": "ok"}]
    reply = rest.post("/api/v1/tasks:batchSubmit", {"requests": requests})
    assert_error(reply, 400, INVALID_ARGUMENT, "INVALID_FIELD", ("requests[1].type",))
    assert rest.ok("GET", "/api/v1/tasks")["tasks"] == []


def test_batch_of_many_megabytes_passes_both_ways(rest: Rest) -> None:
    # ~9 MB of JSON each way: far over Envoy's default 1 MiB buffers.
    requests = [{"type": "big", "payload": {"blob": str(i) * 900_000}} for i in range(10)]
    body = json.dumps({"requests": requests}).encode()
    assert len(body) > 8 * MIB
    reply = rest.post("/api/v1/tasks:batchSubmit", raw=body)
    assert reply.status == 200, reply.body[:500]
    results = reply.json()["results"]
    assert [len(r["task"]["payload"]["blob"]) for r in results] == [900_000] * 10


def test_get_task_full_and_basic_view(rest: Rest) -> None:
    task = rest.submit(payload={"k": "v"})
    got = rest.ok("GET", f"/api/v1/tasks/{task['id']}")["task"]
    times = ("created_at", "updated_at")
    assert {k: v for k, v in got.items() if k not in times} == {
        k: v for k, v in task.items() if k not in times
    }
    for name in times:  # the stored time has microseconds; the reply to submit had more
        assert abs(nanos(got[name]) - nanos(task[name])) < 1000
    basic = rest.ok("GET", f"/api/v1/tasks/{task['id']}", view="TASK_VIEW_BASIC")["task"]
    assert "payload" not in basic
    assert basic["id"] == task["id"]


def test_list_pending_tasks_page_by_page(rest: Rest) -> None:
    pending = [rest.submit(payload={"i": i})["id"] for i in range(5)]
    rest.ok("POST", f"/api/v1/tasks/{rest.submit()['id']}:cancel")
    rest.submit(scheduled_at=rfc3339(datetime.now(UTC) + timedelta(hours=1)))

    seen: list[str] = []
    sizes: list[int] = []
    token = ""
    for _ in range(10):
        query = {
            "state": "STATE_PENDING",
            "page_size": 2,
            **({"page_token": token} if token else {}),
        }
        page = rest.ok("GET", "/api/v1/tasks", **query)
        sizes.append(len(page["tasks"]))
        seen += [t["id"] for t in page["tasks"]]
        assert all(t["state"] == "STATE_PENDING" for t in page["tasks"])
        assert all("payload" not in t for t in page["tasks"])  # BASIC view by default
        token = page["next_page_token"]
        if not token:
            break
    assert sizes == [2, 2, 1]
    assert seen == list(reversed(pending))  # newest first, each once

    scheduled = rest.ok("GET", "/api/v1/tasks", state="STATE_SCHEDULED")["tasks"]
    assert [t["state"] for t in scheduled] == ["STATE_SCHEDULED"]
    everything = rest.ok("GET", "/api/v1/tasks", page_size=100, view="TASK_VIEW_FULL")["tasks"]
    assert len(everything) == 7
    assert all("payload" in t for t in everything)


def test_cancel_then_cancel_again_is_refused(rest: Rest) -> None:
    task = rest.submit()
    cancelled = rest.ok("POST", f"/api/v1/tasks/{task['id']}:cancel")["task"]
    assert cancelled["state"] == "STATE_CANCELLED"
    assert "finished_at" in cancelled
    # A POST without any body is accepted too (body: "*" with nothing in it).
    again = rest.call("POST", f"/api/v1/tasks/{task['id']}:cancel")
    assert_error(again, 400, FAILED_PRECONDITION, "INVALID_TRANSITION")


def test_cancel_a_scheduled_task(rest: Rest) -> None:
    task = rest.submit(scheduled_at=rfc3339(datetime.now(UTC) + timedelta(hours=1)))
    cancelled = rest.ok("POST", f"/api/v1/tasks/{task['id']}:cancel", {})["task"]
    assert cancelled["state"] == "STATE_CANCELLED"


def test_retry_of_a_pending_task_is_refused(rest: Rest) -> None:
    task = rest.submit()
    reply = rest.post(f"/api/v1/tasks/{task['id']}:retry")
    status = assert_error(reply, 400, FAILED_PRECONDITION, "INVALID_TRANSITION")
    assert status["message"]
    assert rest.ok("GET", f"/api/v1/tasks/{task['id']}")["task"]["state"] == "STATE_PENDING"


def _watch_lines(rest: Rest, task_id: str, timeout: float = 15.0) -> Iterator[dict[str, Any]]:
    conn = rest.connect(timeout)
    try:
        conn.request("GET", f"/api/v1/tasks/{task_id}:watch")
        response = conn.getresponse()
        assert response.status == 200
        while line := response.readline():
            if line.strip():
                yield json.loads(line)
    finally:
        conn.close()


def test_watch_of_a_cancelled_task_returns_it_and_ends(rest: Rest) -> None:
    task = rest.submit()
    rest.ok("POST", f"/api/v1/tasks/{task['id']}:cancel")
    messages = list(_watch_lines(rest, task["id"]))
    assert [m["task"]["state"] for m in messages] == ["STATE_CANCELLED"]
    assert messages[0]["task"]["id"] == task["id"]


def test_watch_streams_each_change_as_a_json_line(rest: Rest) -> None:
    task = rest.submit()
    lines = _watch_lines(rest, task["id"])
    first = next(lines)  # arrives before the stream ends: NDJSON, not one buffered array
    assert first["task"]["state"] == "STATE_PENDING"
    replies: list[Any] = []

    def cancel_it() -> None:
        replies.append(rest.ok("POST", f"/api/v1/tasks/{task['id']}:cancel"))

    cancel = threading.Thread(target=cancel_it)
    cancel.start()
    rest_of_stream = list(lines)
    cancel.join(10)
    assert len(replies) == 1
    assert [m["task"]["state"] for m in rest_of_stream] == ["STATE_CANCELLED"]


def test_watch_of_an_unknown_task_is_404(rest: Rest) -> None:
    reply = rest.get(f"/api/v1/tasks/{MISSING_ID}:watch")
    assert reply.status == 404
    # A stream's error arrives as a JSON status, once no message was sent.
    assert reply.json()["code"] == NOT_FOUND


# -- AdminService and WorkerService -----------------------------------------------------


def test_queue_stats_pause_and_resume(rest: Rest) -> None:
    rest.submit(queue="mail", priority="PRIORITY_HIGH")
    rest.submit(queue="mail")
    queues = {q["queue"]: q for q in rest.ok("GET", "/api/v1/queues")["queues"]}
    mail = queues["mail"]
    assert mail["pending"] == "2"  # int64 is a JSON string
    assert mail["pending_by_priority"] == {"high": "1", "medium": "1", "low": "0"}
    assert mail["paused"] is False

    paused = rest.ok("POST", "/api/v1/queues/mail:pause")["stats"]
    assert paused["queue"] == "mail"
    assert paused["paused"] is True
    only = rest.ok("GET", "/api/v1/queues", queue="mail")["queues"]
    assert [(q["queue"], q["paused"]) for q in only] == [("mail", True)]

    resumed = rest.ok("POST", "/api/v1/queues/mail:resume", {})["stats"]
    assert resumed["paused"] is False


def test_register_and_list_workers(rest: Rest) -> None:
    registered = rest.ok(
        "POST",
        "/api/v1/workers",
        {
            "worker_id": "rest-worker-1",
            "hostname": "box",
            "pid": 42,
            "queues": ["mail"],
            "taskTypes": ["email"],
            "concurrency": 3,
            "labels": {"zone": "a"},
        },
    )
    assert registered["worker_id"] == "rest-worker-1"
    assert registered["heartbeat_interval"].endswith("s")
    assert registered["lease_duration"].endswith("s")
    rest.ok("POST", "/api/v1/workers", {"worker_id": "rest-worker-2", "task_types": ["email"]})

    workers = {w["id"]: w for w in rest.ok("GET", "/api/v1/workers")["workers"]}
    assert set(workers) >= {"rest-worker-1", "rest-worker-2"}
    one = workers["rest-worker-1"]
    assert (one["hostname"], one["pid"], one["concurrency"]) == ("box", 42, 3)
    assert one["queues"] == ["mail"]
    assert one["task_types"] == ["email"]
    assert one["labels"] == {"zone": "a"}
    assert one["status"].startswith("STATUS_")
    page = rest.ok("GET", "/api/v1/workers", page_size=1)
    assert len(page["workers"]) == 1


def test_register_without_task_types_is_400(rest: Rest) -> None:
    reply = rest.post("/api/v1/workers", {"worker_id": "w"})
    assert reply.status == 400
    assert reply.json()["code"] == INVALID_ARGUMENT


def test_health(rest: Rest) -> None:
    health = rest.ok("GET", "/api/v1/health")
    components = {c["name"]: c for c in health["components"]}
    assert set(components) == {"postgres", "redis", "workers"}
    assert components["postgres"]["status"] == "HEALTH_STATUS_HEALTHY"
    assert components["redis"]["status"] == "HEALTH_STATUS_HEALTHY"
    assert health["status"].startswith("HEALTH_STATUS_")
    assert health["version"]
    assert health["checked_at"].endswith("Z")


# -- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "reason", "field"),
    [
        ({"type": ""}, "INVALID_FIELD", "type"),
        ({}, "INVALID_FIELD", "type"),
        ({"type": "t" * 129}, "INVALID_FIELD", "type"),
        ({"type": "9starts-with-a-digit"}, "INVALID_FIELD", "type"),
        ({"type": "x", "queue": "bad queue"}, "INVALID_FIELD", "queue"),
        ({"type": "x", "max_retries": 101}, "INVALID_FIELD", "max_retries"),
        ({"type": "x", "timeout": "0.5s"}, "INVALID_FIELD", "timeout"),
        ({"type": "x", "payload": {"blob": "x" * (MIB + 1)}}, "PAYLOAD_TOO_LARGE", "payload"),
    ],
)
def test_invalid_submission_is_400_with_field_violation(
    rest: Rest, body: dict[str, Any], reason: str, field: str
) -> None:
    reply = rest.post("/api/v1/tasks", body)
    status = assert_error(reply, 400, INVALID_ARGUMENT, reason, (field,))
    assert status["message"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/tasks/not-a-uuid"),
        ("POST", "/api/v1/tasks/not-a-uuid:cancel"),
        ("POST", "/api/v1/tasks/not-a-uuid:retry"),
        ("GET", "/api/v1/tasks/not-a-uuid:watch"),
    ],
)
def test_invalid_id_is_400(rest: Rest, method: str, path: str) -> None:
    reply = rest.call(method, path, {} if method == "POST" else None)
    assert_error(reply, 400, INVALID_ARGUMENT, "INVALID_FIELD", ("id",))


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"/api/v1/tasks/{MISSING_ID}"),
        ("POST", f"/api/v1/tasks/{MISSING_ID}:cancel"),
        ("POST", f"/api/v1/tasks/{MISSING_ID}:retry"),
    ],
)
def test_unknown_id_is_404(rest: Rest, method: str, path: str) -> None:
    reply = rest.call(method, path, {} if method == "POST" else None)
    assert_error(reply, 404, NOT_FOUND, "TASK_NOT_FOUND")


def test_negative_page_size_is_400(rest: Rest) -> None:
    reply = rest.get("/api/v1/tasks", page_size=-1)
    assert_error(reply, 400, INVALID_ARGUMENT, "INVALID_FIELD", ("page_size",))


def test_forged_page_token_is_400(rest: Rest) -> None:
    reply = rest.get("/api/v1/tasks", page_token="not-a-token")
    assert reply.status == 400
    assert reply.json()["code"] == INVALID_ARGUMENT


# Requests the transcoder refuses, unknown routes, bodies over Envoy's limit: test_rest_errors.py


def test_body_over_the_message_limit_is_refused(rest: Rest) -> None:
    # Envoy buffers REST bodies up to the server's message limit (16 MiB with
    # the default 1 MiB payload limit; the unknown-field check reads them
    # whole): a larger one is a 413.
    requests = [{"type": "big", "payload": {"blob": "x" * 1_000_000}} for _ in range(17)]
    reply = rest.post("/api/v1/tasks:batchSubmit", raw=json.dumps({"requests": requests}).encode())
    assert_error(reply, 413, RESOURCE_EXHAUSTED, "BODY_TOO_LARGE")
    assert rest.ok("GET", "/api/v1/tasks")["tasks"] == []


def test_unreachable_postgres_is_503_with_retry_info(redis_url: str) -> None:
    dead = start_server("postgresql://postgres@127.0.0.1:1/nowhere", redis_url)
    try:
        with running_envoy(dead.address) as envoy:
            reply = Rest(envoy.port).post("/api/v1/tasks", {"type": "x"})
            status = assert_error(reply, 503, UNAVAILABLE, "POSTGRES_UNAVAILABLE")
            retry = [d for d in status["details"] if d["@type"].endswith("RetryInfo")]
            assert retry[0]["retry_delay"].endswith("s")
    finally:
        dead.proc.stop()


UNKNOWN_FIELDS = [  # (path, JSON body, the unknown field)
    ("/api/v1/tasks", '{"type": "x", "schedule_at": "2030-01-01T00:00:00Z"}', "schedule_at"),
    ("/api/v1/tasks", '{"type": "x", "max_retires": 9}', "max_retires"),
    ("/api/v1/tasks", r'{"type": "x", "sch\u0065dule_at": "2030-01-01T00:00:00Z"}', "schedule_at"),
    (
        "/api/v1/tasks:batchSubmit",
        '{"requests": [{"type": "x"}, {"type": "x", "maxRetires": 9}]}',
        "maxRetires",
    ),
    (f"/api/v1/tasks/{MISSING_ID}:fail", '{"error": {"message": "m", "kind": "x"}}', "kind"),
    ("/api/v1/workers", '{"task_types": ["x"], "capacity": 4}', "capacity"),
]


@pytest.mark.parametrize(("path", "body", "field"), UNKNOWN_FIELDS)
def test_unknown_body_fields_are_refused(rest: Rest, path: str, body: str, field: str) -> None:
    # Envoy's transcoder drops them (envoyproxy/envoy#46623): a misspelled
    # `scheduled_at` ran at once. The Lua filter of dtq.envoy_fields refuses them.
    status = assert_error(
        rest.post(path, raw=body.encode()), 400, INVALID_ARGUMENT, "INVALID_REQUEST"
    )
    assert f'"{field}"' in status["message"]
    assert rest.ok("GET", "/api/v1/tasks")["tasks"] == []


def test_known_fields_in_either_spelling_and_free_form_contents_pass(rest: Rest) -> None:
    task = rest.submit(
        payload={"schedule_at": 1, "deep": {"anything": [{"goes": None}]}},
        trace_context={"any_key": "v"},
        maxRetries=2,
        idempotency_key="k",
    )
    assert (task["max_retries"], task["idempotency_key"]) == (2, "k")
    assert task["payload"]["deep"] == {"anything": [{"goes": None}]}


# -- native gRPC and reflection ----------------------------------------------------------


def test_native_grpc_through_the_envoy_port(envoy: Envoy, clean: None) -> None:
    with grpc.insecure_channel(envoy.address) as channel:
        stub = task_service_pb2_grpc.TaskServiceStub(channel)
        task = stub.SubmitTask(pb.SubmitTaskRequest(type="native"), timeout=10).task
        got = stub.GetTask(pb.GetTaskRequest(id=task.id), timeout=10).task
        assert got.id == task.id
        assert got.type == "native"

        watch = stub.WatchTask(pb.WatchTaskRequest(id=task.id), timeout=15)
        assert next(watch).task.state == got.State.STATE_PENDING
        stub.CancelTask(pb.CancelTaskRequest(id=task.id), timeout=10)
        assert [m.task.state for m in watch] == [got.State.STATE_CANCELLED]

        with pytest.raises(grpc.RpcError) as caught:
            stub.GetTask(pb.GetTaskRequest(id=MISSING_ID), timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        status = rpc_status.from_call(caught.value)  # rich details survive the proxy
        assert status is not None
        assert len(status.details) == 1


def test_rest_and_grpc_see_the_same_task(rest: Rest, envoy: Envoy) -> None:
    task = rest.submit(payload={"from": "rest"})
    with grpc.insecure_channel(envoy.address) as channel:
        stub = task_service_pb2_grpc.TaskServiceStub(channel)
        got = stub.GetTask(pb.GetTaskRequest(id=task["id"]), timeout=10).task
    assert got.type == "email"
    assert dict(got.payload) == {"from": "rest"}


def _grpcurl_list(address: str) -> set[str]:
    out = subprocess.run(
        ["grpcurl", "-plaintext", "-max-time", "10", address, "list"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return set(out.stdout.split())


def test_grpcurl_lists_the_services_by_reflection(server: Server, envoy: Envoy) -> None:
    expected = {*SERVICES, "grpc.health.v1.Health"}
    assert _grpcurl_list(server.address) >= expected
    assert _grpcurl_list(envoy.address) >= expected  # reflection passes through Envoy too


# -- the config ------------------------------------------------------------------------------


def test_checked_in_envoy_yaml_is_the_rendered_config() -> None:
    text = (ROOT / "envoy" / "envoy.yaml").read_text()
    assert text == repo_config(), "regenerate: python -m dtq.envoy > envoy/envoy.yaml"
    header, _, body = text.partition("\nadmin:")
    assert all(line.startswith("#") for line in header.splitlines())
    assert "generated" in header.lower()
    assert "admin:" + body == render(["127.0.0.1:50051"], descriptor="gen/dtq/v1/descriptor.binpb")


def test_checked_in_envoy_yaml_validates() -> None:
    result = subprocess.run(
        ["envoy", "--mode", "validate", "-c", "envoy/envoy.yaml", "--disable-hot-restart"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_render_spreads_calls_over_every_backend() -> None:
    config = yaml.safe_load(render(["api:50051", "api-2:50052", "[::1]:50053"], 18080, 19901))
    (cluster,) = config["static_resources"]["clusters"]
    assert (cluster["name"], cluster["type"], cluster["lb_policy"]) == (
        "dtq_api",
        "STRICT_DNS",
        "ROUND_ROBIN",
    )
    endpoints = [
        e["endpoint"]["address"]["socket_address"]
        for e in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]
    assert [(e["address"], e["port_value"]) for e in endpoints] == [
        ("api", 50051),
        ("api-2", 50052),
        ("::1", 50053),
    ]
    (listener,) = config["static_resources"]["listeners"]
    assert listener["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 18080}
    assert config["admin"]["address"]["socket_address"]["port_value"] == 19901
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    by_name = {f["name"]: f["typed_config"] for f in manager["http_filters"]}
    transcoder = by_name["envoy.filters.http.grpc_json_transcoder"]
    lua = by_name["envoy.filters.http.lua"]["default_source_code"]["inline_string"]
    assert "unknown field" in lua
    # The JSON body is checked before it is transcoded.
    assert list(by_name)[:2] == [
        "envoy.filters.http.lua",
        "envoy.filters.http.grpc_json_transcoder",
    ]
    assert transcoder["services"] == list(SERVICES)
    assert transcoder["proto_descriptor"].endswith("descriptor.binpb")
    assert transcoder["max_request_body_size"] == 16 * MIB


@pytest.mark.parametrize("backend", ["", "api", "api:", "api:http", ":50051"])
def test_render_rejects_a_backend_without_host_and_port(backend: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        render([backend])


# -- with a worker -----------------------------------------------------------------------------


def test_watch_follows_a_task_to_completion_and_retry_revives_a_dead_letter(
    rest: Rest, start_worker: WorkerFactory
) -> None:
    start_worker("--concurrency", "2")
    task = rest.submit(type="test_task", payload={"message": "hi", "sleep_duration": 0.2})
    states = [m["task"]["state"] for m in _watch_lines(rest, task["id"], timeout=30)]
    assert states[0] in {"STATE_PENDING", "STATE_RUNNING"}
    assert states[-1] == "STATE_COMPLETED"
    done = rest.ok("GET", f"/api/v1/tasks/{task['id']}")["task"]
    assert done["result"] == {"message": "hi", "attempt": 1}

    doomed = rest.submit(type="test_task", payload={"fail": True, "permanent": True})
    states = [m["task"]["state"] for m in _watch_lines(rest, doomed["id"], timeout=30)]
    assert states[-1] == "STATE_DEAD_LETTERED"
    retried = rest.ok("POST", f"/api/v1/tasks/{quote(doomed['id'])}:retry")["task"]
    assert retried["state"] in {"STATE_PENDING", "STATE_RUNNING", "STATE_COMPLETED"}


def test_submit_group_and_a_chain_step_over_rest(rest: Rest) -> None:
    tasks = [{"type": "noop", "payload": {"i": i}} for i in range(3)]
    body = {"tasks": tasks, "callback": {"type": "noop"}}
    reply = rest.ok("POST", "/api/v1/tasks:submitGroup", body)
    assert len(reply["tasks"]) == 3
    assert {t["group_id"] for t in reply["tasks"]} == {reply["group_id"]}
    assert reply["callback"]["state"] == "STATE_WAITING"
    assert reply["callback"]["callback_of"] == reply["group_id"]
    step = rest.submit(after=reply["tasks"][0]["id"])
    assert step["state"] == "STATE_WAITING"
    assert step["parent_id"] == reply["tasks"][0]["id"]

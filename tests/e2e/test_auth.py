"""Authentication and roles against a real `dtq server` with DTQ_AUTH=on:
every RPC x every role through gRPC and through Envoy, API keys made by the
`dtq apikey` commands, revocation, expiry, and a worker that authenticates."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message

from dtq.client import bearer
from dtq.domain.auth import RULES, Role, allowed
from dtq.v1 import (
    admin_service_pb2 as admin_pb,
)
from dtq.v1 import (
    schedule_pb2 as schedule_pb,
)
from dtq.v1 import (
    task_service_pb2 as task_pb,
)
from dtq.v1 import (
    tenant_pb2 as tenant_pb,
)
from dtq.v1 import (
    worker_service_pb2 as worker_pb,
)
from tests.conftest import Server, WorkerFactory, process_env, start_server
from tests.support import apikeys
from tests.support.envoy import Envoy, running_envoy
from tests.support.procs import dtq_args, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean")]

CACHE = 1.0  # DTQ_AUTH_CACHE_SECONDS of the module's server
NOBODY = str(uuid.uuid4())
QUEUE = "matrix"


@pytest.fixture(scope="module")
def server_env() -> dict[str, str]:
    return {"DTQ_AUTH": "on", "DTQ_AUTH_CACHE_SECONDS": str(CACHE)}


def apikey(pg_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return apikeys.apikey(process_env(pg_url, "redis://127.0.0.1:6379/15"), *args)


def new_key(pg_url: str, role: str, *args: str) -> dict[str, Any]:
    return apikeys.new_key(process_env(pg_url, "redis://127.0.0.1:6379/15"), role, *args)


@pytest.fixture(scope="module")
def keys(server: Server, pg_url: str) -> dict[str, str]:
    """A key of every role (the admin's of the operator scope, which may call
    everything), and credentials that are not keys."""
    made = {role.value: new_key(pg_url, role.value)["key"] for role in Role if role != Role.ADMIN}
    made["admin"] = new_key(pg_url, "admin", "--tenant", "*")["key"]
    return {**made, "forged": f"dtq_{'0' * 12}_{'x' * 43}", "garbage": "not-a-key"}


# -- the calls ------------------------------------------------------------------------

Call = Callable[[grpc.Channel, list[tuple[str, str]]], None]


def unary(path: str, request: Message, reply: type[Message]) -> Call:
    def call(channel: grpc.Channel, metadata: list[tuple[str, str]]) -> None:
        method = channel.unary_unary(
            path,
            request_serializer=type(request).SerializeToString,
            response_deserializer=reply.FromString,
        )
        method(request, metadata=metadata, timeout=10)

    return call


def watch(channel: grpc.Channel, metadata: list[tuple[str, str]]) -> None:
    method = channel.unary_stream(
        "/dtq.v1.TaskService/WatchTask",
        request_serializer=task_pb.WatchTaskRequest.SerializeToString,
        response_deserializer=task_pb.WatchTaskResponse.FromString,
    )
    for _ in method(task_pb.WatchTaskRequest(id=NOBODY), metadata=metadata, timeout=10):
        pass


def lease(channel: grpc.Channel, metadata: list[tuple[str, str]]) -> None:
    method = channel.stream_stream(
        "/dtq.v1.WorkerService/LeaseTasks",
        request_serializer=worker_pb.LeaseTasksRequest.SerializeToString,
        response_deserializer=worker_pb.LeaseTasksResponse.FromString,
    )
    opening = worker_pb.LeaseTasksRequest(
        open=worker_pb.StreamOpen(worker_id="matrix-worker", queues=[QUEUE], task_types=["noop"]),
        capacity=0,
    )
    for _ in method(iter([opening]), metadata=metadata, timeout=10):
        pass


T, W, A = "/dtq.v1.TaskService/", "/dtq.v1.WorkerService/", "/dtq.v1.AdminService/"


def _outcome(name: str) -> tuple[str, Call]:
    """CompleteTask, FailTask, ExtendLease: a forged lease on no task."""
    request = getattr(worker_pb, f"{name}Request")(task_id=NOBODY, lease_token="t")
    return f"WorkerService/{name}", unary(W + name, request, getattr(worker_pb, f"{name}Response"))


CALLS: dict[str, Call] = {
    **dict(_outcome(n) for n in ("CompleteTask", "FailTask", "ExtendLease")),
    "TaskService/SubmitTask": unary(
        T + "SubmitTask",
        task_pb.SubmitTaskRequest(type="noop", queue=QUEUE),
        task_pb.SubmitTaskResponse,
    ),
    "TaskService/BatchSubmitTasks": unary(
        T + "BatchSubmitTasks",
        task_pb.BatchSubmitTasksRequest(
            requests=[task_pb.SubmitTaskRequest(type="noop", queue=QUEUE)]
        ),
        task_pb.BatchSubmitTasksResponse,
    ),
    "TaskService/SubmitGroup": unary(
        T + "SubmitGroup",
        task_pb.SubmitGroupRequest(
            tasks=[task_pb.SubmitTaskRequest(type="noop", queue=QUEUE)],
            callback=task_pb.SubmitTaskRequest(type="noop", queue=QUEUE),
        ),
        task_pb.SubmitGroupResponse,
    ),
    "WorkerService/SubmitChildTasks": unary(
        W + "SubmitChildTasks",
        worker_pb.SubmitChildTasksRequest(
            parent_id=NOBODY,
            lease_token="t",
            children=[task_pb.SubmitTaskRequest(type="noop", queue=QUEUE, idempotency_key="#0")],
        ),
        worker_pb.SubmitChildTasksResponse,
    ),
    "TaskService/GetTask": unary(
        T + "GetTask", task_pb.GetTaskRequest(id=NOBODY), task_pb.GetTaskResponse
    ),
    "TaskService/ListTasks": unary(
        T + "ListTasks", task_pb.ListTasksRequest(queue=QUEUE), task_pb.ListTasksResponse
    ),
    "TaskService/WatchTask": watch,
    "TaskService/CancelTask": unary(
        T + "CancelTask", task_pb.CancelTaskRequest(id=NOBODY), task_pb.CancelTaskResponse
    ),
    "TaskService/RetryTask": unary(
        T + "RetryTask", task_pb.RetryTaskRequest(id=NOBODY), task_pb.RetryTaskResponse
    ),
    "WorkerService/RegisterWorker": unary(
        W + "RegisterWorker",
        worker_pb.RegisterWorkerRequest(
            worker_id="matrix-worker", queues=[QUEUE], task_types=["noop"], concurrency=1
        ),
        worker_pb.RegisterWorkerResponse,
    ),
    "WorkerService/LeaseTasks": lease,
    "AdminService/GetQueueStats": unary(
        A + "GetQueueStats", admin_pb.GetQueueStatsRequest(), admin_pb.GetQueueStatsResponse
    ),
    "AdminService/ListWorkers": unary(
        A + "ListWorkers", admin_pb.ListWorkersRequest(), admin_pb.ListWorkersResponse
    ),
    "AdminService/GetSystemHealth": unary(
        A + "GetSystemHealth", admin_pb.GetSystemHealthRequest(), admin_pb.GetSystemHealthResponse
    ),
    "AdminService/PauseQueue": unary(
        A + "PauseQueue", admin_pb.PauseQueueRequest(queue=QUEUE), admin_pb.PauseQueueResponse
    ),
    "AdminService/ResumeQueue": unary(
        A + "ResumeQueue", admin_pb.ResumeQueueRequest(queue=QUEUE), admin_pb.ResumeQueueResponse
    ),
    "AdminService/DeleteQueue": unary(
        A + "DeleteQueue",
        admin_pb.DeleteQueueRequest(queue="never-used"),
        admin_pb.DeleteQueueResponse,
    ),
    "AdminService/RequeueDeadLetters": unary(
        A + "RequeueDeadLetters",
        admin_pb.RequeueDeadLettersRequest(queue=QUEUE),
        admin_pb.RequeueDeadLettersResponse,
    ),
    "AdminService/PurgeDeadLetters": unary(
        A + "PurgeDeadLetters",
        admin_pb.PurgeDeadLettersRequest(queue=QUEUE),
        admin_pb.PurgeDeadLettersResponse,
    ),
    "AdminService/ListAuditEvents": unary(
        A + "ListAuditEvents", admin_pb.ListAuditEventsRequest(), admin_pb.ListAuditEventsResponse
    ),
    "AdminService/GetTenantLimits": unary(
        A + "GetTenantLimits",
        admin_pb.GetTenantLimitsRequest(tenant="default"),
        admin_pb.GetTenantLimitsResponse,
    ),
    "AdminService/ListTenantLimits": unary(
        A + "ListTenantLimits",
        admin_pb.ListTenantLimitsRequest(),
        admin_pb.ListTenantLimitsResponse,
    ),
    "AdminService/SetTenantLimits": unary(
        A + "SetTenantLimits",
        admin_pb.SetTenantLimitsRequest(limits=admin_pb.TenantLimits(tenant="nobody")),
        admin_pb.SetTenantLimitsResponse,
    ),
    "AdminService/SetDispatchRate": unary(
        A + "SetDispatchRate",
        admin_pb.SetDispatchRateRequest(
            rate=admin_pb.DispatchRate(queue="never-used", task_type="t", rate=1000)
        ),
        admin_pb.SetDispatchRateResponse,
    ),
    "AdminService/ListDispatchRates": unary(
        A + "ListDispatchRates",
        admin_pb.ListDispatchRatesRequest(),
        admin_pb.ListDispatchRatesResponse,
    ),
    "AdminService/DeleteDispatchRate": unary(
        A + "DeleteDispatchRate",
        admin_pb.DeleteDispatchRateRequest(queue="never-used", task_type="missing"),
        admin_pb.DeleteDispatchRateResponse,
    ),
    "AdminService/CreateTenant": unary(  # a bad name: INVALID_ARGUMENT once allowed
        A + "CreateTenant",
        admin_pb.CreateTenantRequest(tenant=tenant_pb.Tenant(name="Not A Name")),
        admin_pb.CreateTenantResponse,
    ),
    "AdminService/ListTenants": unary(
        A + "ListTenants", admin_pb.ListTenantsRequest(), admin_pb.ListTenantsResponse
    ),
    # Schedules: a bad one to create and unknown ones to change (the same answer
    # each time, whoever calls first).
    "AdminService/CreateSchedule": unary(
        A + "CreateSchedule",
        admin_pb.CreateScheduleRequest(schedule=schedule_pb.Schedule(name="matrix")),
        admin_pb.CreateScheduleResponse,
    ),
    "AdminService/GetSchedule": unary(
        A + "GetSchedule", admin_pb.GetScheduleRequest(name="nobody"), admin_pb.GetScheduleResponse
    ),
    "AdminService/ListSchedules": unary(
        A + "ListSchedules", admin_pb.ListSchedulesRequest(), admin_pb.ListSchedulesResponse
    ),
    "AdminService/UpdateSchedule": unary(
        A + "UpdateSchedule",
        admin_pb.UpdateScheduleRequest(schedule=schedule_pb.Schedule(name="nobody")),
        admin_pb.UpdateScheduleResponse,
    ),
    "AdminService/DeleteSchedule": unary(
        A + "DeleteSchedule",
        admin_pb.DeleteScheduleRequest(name="nobody"),
        admin_pb.DeleteScheduleResponse,
    ),
    "AdminService/PauseSchedule": unary(
        A + "PauseSchedule",
        admin_pb.PauseScheduleRequest(name="nobody"),
        admin_pb.PauseScheduleResponse,
    ),
    "AdminService/ResumeSchedule": unary(
        A + "ResumeSchedule",
        admin_pb.ResumeScheduleRequest(name="nobody"),
        admin_pb.ResumeScheduleResponse,
    ),
    "AdminService/TriggerSchedule": unary(
        A + "TriggerSchedule",
        admin_pb.TriggerScheduleRequest(name="nobody"),
        admin_pb.TriggerScheduleResponse,
    ),
}


def code_of(call: Call, channel: grpc.Channel, credential: str | None) -> grpc.StatusCode:
    metadata = [("authorization", f"Bearer {credential}")] if credential else []
    try:
        call(channel, metadata)
    except grpc.RpcError as error:
        return error.code()  # type: ignore[attr-defined, no-any-return]
    return grpc.StatusCode.OK


def code_and_reason(error: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    """The code of a refused call and its ErrorInfo reason; never a traceback."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None and "Traceback" not in status.message
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    return error.code(), info.reason  # type: ignore[attr-defined]


def test_every_rpc_has_a_rule_and_a_call_here() -> None:
    methods = {
        f"{s.name}/{m.name}"
        for module in (task_pb, worker_pb, admin_pb)
        for s in module.DESCRIPTOR.services_by_name.values()
        for m in s.methods
    }
    assert methods == set(RULES) == set(CALLS)


@pytest.fixture(scope="module")
def baseline(server: Server, keys: dict[str, str]) -> dict[str, grpc.StatusCode]:
    """What each call answers an admin: the code every allowed role must get."""
    with server.channel() as channel:
        codes = {m: code_of(call, channel, keys["admin"]) for m, call in CALLS.items()}
    refused = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}
    assert not refused & set(codes.values()), codes
    return codes


@pytest.mark.parametrize("role", [r.value for r in Role])
def test_each_role_gets_exactly_what_its_rules_say_over_grpc(
    server: Server, keys: dict[str, str], baseline: dict[str, grpc.StatusCode], role: str
) -> None:
    with server.channel() as channel:
        got = {m: code_of(call, channel, keys[role]) for m, call in CALLS.items()}
    want = {
        m: baseline[m] if allowed(Role(role), m) else grpc.StatusCode.PERMISSION_DENIED
        for m in CALLS
    }
    assert got == want


@pytest.mark.parametrize("credential", [None, "forged", "garbage"])
def test_no_valid_credential_is_unauthenticated_on_every_rpc(
    server: Server, keys: dict[str, str], credential: str | None
) -> None:
    with server.channel() as channel:
        got = {
            m: code_of(call, channel, keys[credential] if credential else None)
            for m, call in CALLS.items()
        }
    assert set(got.values()) == {grpc.StatusCode.UNAUTHENTICATED}, got


def test_health_and_reflection_stay_open(server: Server) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with server.channel() as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    listing = subprocess.run(
        ["grpcurl", "-plaintext", server.address, "list"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "dtq.v1.TaskService" in listing.stdout, listing.stderr


def test_errors_say_why_with_a_reason(server: Server, keys: dict[str, str]) -> None:

    from dtq.v1 import task_service_pb2_grpc

    def reason(credential: str | None, call: str = "ListTasks") -> tuple[grpc.StatusCode, str]:
        with server.channel() as channel:
            stub = task_service_pb2_grpc.TaskServiceStub(bearer.sync_channel(channel, credential))
            try:
                if call == "ListTasks":
                    stub.ListTasks(task_pb.ListTasksRequest(), timeout=10)
                else:
                    stub.RetryTask(task_pb.RetryTaskRequest(id=NOBODY), timeout=10)
            except grpc.RpcError as error:
                return code_and_reason(error)
        return grpc.StatusCode.OK, ""

    assert reason(None) == (grpc.StatusCode.UNAUTHENTICATED, "CREDENTIALS_MISSING")
    assert reason(keys["forged"]) == (grpc.StatusCode.UNAUTHENTICATED, "CREDENTIALS_INVALID")
    assert reason(keys["producer"], "RetryTask") == (
        grpc.StatusCode.PERMISSION_DENIED,
        "ROLE_NOT_ALLOWED",
    )
    assert reason(keys["viewer"]) == (grpc.StatusCode.OK, "")


def test_a_revoked_key_is_refused_within_the_cache_time(server: Server, pg_url: str) -> None:
    key = new_key(pg_url, "viewer")
    with server.channel() as channel:
        stats = CALLS["AdminService/GetQueueStats"]
        assert code_of(stats, channel, key["key"]) == grpc.StatusCode.OK
        done = apikey(pg_url, "revoke", key["id"])
        assert done.returncode == 0, done.stderr
        revoked = time.monotonic()
        wait_until(
            lambda: code_of(stats, channel, key["key"]) == grpc.StatusCode.UNAUTHENTICATED,
            CACHE + 5,
            "the revoked key to be refused",
        )
        assert time.monotonic() - revoked <= CACHE + 1
    listed = json.loads(apikey(pg_url, "list", "--json").stdout)
    (row,) = [k for k in listed if k["id"] == key["id"]]
    assert row["revoked_at"]


def test_an_expired_key_is_refused(server: Server, pg_url: str) -> None:
    key = new_key(pg_url, "viewer", "--expires", "2s")
    with server.channel() as channel:
        stats = CALLS["AdminService/GetQueueStats"]
        assert code_of(stats, channel, key["key"]) == grpc.StatusCode.OK
        wait_until(
            lambda: code_of(stats, channel, key["key"]) == grpc.StatusCode.UNAUTHENTICATED,
            10,
            "the expired key to be refused",
        )


def test_the_key_is_printed_once_and_only_its_digest_is_stored(pg_url: str) -> None:
    import psycopg2

    key = new_key(pg_url, "producer", "--queue", "emails")
    assert key["key"].startswith(f"dtq_{key['id']}_")
    with psycopg2.connect(pg_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT * FROM api_keys WHERE id = %s", (key["id"],))
        row = cur.fetchone()
    assert row is not None and key["key"].split("_", 2)[2] not in repr(row)
    listing = apikey(pg_url, "list")
    assert key["id"] in listing.stdout and key["key"] not in listing.stdout
    assert "emails" in listing.stdout


def test_a_worker_with_a_worker_key_runs_tasks_and_one_without_is_refused(
    server: Server, keys: dict[str, str], start_worker: WorkerFactory
) -> None:
    from dtq.v1 import task_service_pb2_grpc

    start_worker("--queue", "authed", DTQ_API_KEY=keys["worker"])
    with server.channel() as channel:
        tasks = task_service_pb2_grpc.TaskServiceStub(
            bearer.sync_channel(channel, keys["producer"])
        )
        task = tasks.SubmitTask(task_pb.SubmitTaskRequest(type="noop", queue="authed")).task
        wait_until(
            lambda: (
                tasks.GetTask(task_pb.GetTaskRequest(id=task.id)).task.state
                == task.State.Value("STATE_COMPLETED")
            ),
            30,
            "the task to complete",
        )
    refused = start_worker("--queue", "authed", wait=False, DTQ_API_KEY=keys["producer"])
    assert refused.popen.wait(30) != 0
    assert "registration refused" in refused.output()
    assert keys["producer"] not in refused.output()


def test_auth_off_is_refused_off_loopback(pg_url: str, redis_url: str) -> None:
    env = process_env(pg_url, redis_url, DTQ_SERVER_HOST="0.0.0.0", DTQ_AUTH="off")
    done = subprocess.run(
        [*dtq_args("server"), "--port", "0", "--metrics-port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "DTQ_AUTH=on" in done.stderr and "Traceback" not in done.stderr


# -- through Envoy --------------------------------------------------------------------

REST: dict[str, tuple[str, str, dict[str, Any] | None]] = {
    "TaskService/SubmitTask": ("POST", "/api/v1/tasks", {"type": "noop", "queue": QUEUE}),
    "TaskService/BatchSubmitTasks": (
        "POST",
        "/api/v1/tasks:batchSubmit",
        {"requests": [{"type": "noop", "queue": QUEUE}]},
    ),
    "TaskService/SubmitGroup": (
        "POST",
        "/api/v1/tasks:submitGroup",
        {"tasks": [{"type": "noop", "queue": QUEUE}], "callback": {"type": "noop", "queue": QUEUE}},
    ),
    "TaskService/GetTask": ("GET", f"/api/v1/tasks/{NOBODY}", None),
    "TaskService/ListTasks": ("GET", f"/api/v1/tasks?queue={QUEUE}", None),
    "TaskService/CancelTask": ("POST", f"/api/v1/tasks/{NOBODY}:cancel", {}),
    "TaskService/RetryTask": ("POST", f"/api/v1/tasks/{NOBODY}:retry", {}),
    "WorkerService/RegisterWorker": (
        "POST",
        "/api/v1/workers",
        {"worker_id": "rest-worker", "queues": [QUEUE], "task_types": ["noop"], "concurrency": 1},
    ),
    "WorkerService/CompleteTask": (
        "POST",
        f"/api/v1/tasks/{NOBODY}:complete",
        {"lease_token": "t"},
    ),
    "WorkerService/FailTask": (
        "POST",
        f"/api/v1/tasks/{NOBODY}:fail",
        {"lease_token": "t"},
    ),
    "WorkerService/ExtendLease": (
        "POST",
        f"/api/v1/tasks/{NOBODY}:extendLease",
        {"lease_token": "t"},
    ),
    "WorkerService/SubmitChildTasks": (
        "POST",
        f"/api/v1/tasks/{NOBODY}:submitChildren",
        {
            "lease_token": "t",
            "children": [{"type": "noop", "queue": QUEUE, "idempotency_key": "k"}],
        },
    ),
    "AdminService/GetQueueStats": ("GET", "/api/v1/queues", None),
    "AdminService/ListWorkers": ("GET", "/api/v1/workers", None),
    "AdminService/GetSystemHealth": ("GET", "/api/v1/health", None),
    "AdminService/PauseQueue": ("POST", f"/api/v1/queues/{QUEUE}:pause", {}),
    "AdminService/ResumeQueue": ("POST", f"/api/v1/queues/{QUEUE}:resume", {}),
    "AdminService/RequeueDeadLetters": ("POST", f"/api/v1/queues/{QUEUE}/deadLetters:requeue", {}),
    "AdminService/PurgeDeadLetters": ("POST", f"/api/v1/queues/{QUEUE}/deadLetters:purge", {}),
    "AdminService/ListAuditEvents": ("GET", "/api/v1/auditEvents", None),
    "AdminService/DeleteQueue": ("DELETE", "/api/v1/queues/never-used", None),
    "AdminService/CreateTenant": ("POST", "/api/v1/tenants", {"name": "Not A Name"}),
    "AdminService/ListTenants": ("GET", "/api/v1/tenants", None),
    "AdminService/CreateSchedule": ("POST", "/api/v1/schedules", {"name": "matrix"}),
    "AdminService/GetSchedule": ("GET", "/api/v1/schedules/nobody", None),
    "AdminService/ListSchedules": ("GET", "/api/v1/schedules", None),
    "AdminService/UpdateSchedule": ("PATCH", "/api/v1/schedules/nobody", {"cron": "* * * * *"}),
    "AdminService/DeleteSchedule": ("DELETE", "/api/v1/schedules/nobody", None),
    "AdminService/PauseSchedule": ("POST", "/api/v1/schedules/nobody:pause", {}),
    "AdminService/ResumeSchedule": ("POST", "/api/v1/schedules/nobody:resume", {}),
    "AdminService/TriggerSchedule": ("POST", "/api/v1/schedules/nobody:trigger", {}),
}


@pytest.fixture(scope="module")
def envoy(server: Server) -> Iterator[Envoy]:
    with running_envoy(server.address, backend_up=False) as found:
        yield found


def rest(envoy: Envoy, method: str, credential: str | None) -> tuple[int, dict[str, Any]]:
    import http.client

    verb, path, body = REST[method]
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if credential:
        headers["Authorization"] = f"Bearer {credential}"
    conn = http.client.HTTPConnection("127.0.0.1", envoy.port, timeout=30)
    try:
        conn.request(verb, path, json.dumps(body) if body is not None else None, headers)
        reply = conn.getresponse()
        data = reply.read()
    finally:
        conn.close()
    return reply.status, json.loads(data) if data else {}


def reason_of(body: dict[str, Any]) -> str:
    infos = [d for d in body.get("details", []) if d["@type"].endswith("ErrorInfo")]
    return str(infos[0]["reason"]) if infos else ""


def test_every_role_and_route_through_envoy(envoy: Envoy, keys: dict[str, str]) -> None:
    wait_until(
        lambda: rest(envoy, "AdminService/GetSystemHealth", keys["admin"])[0] == 200,
        30,
        "Envoy to reach the server",
    )
    base = {m: rest(envoy, m, keys["admin"])[0] for m in REST}
    assert not {401, 403} & set(base.values()), base
    for role in Role:
        for method in REST:
            status, body = rest(envoy, method, keys[role.value])
            if allowed(role, method):
                assert status == base[method], (role, method, body)
            else:
                assert (status, reason_of(body)) == (403, "ROLE_NOT_ALLOWED"), (role, method)
    for method in REST:
        assert rest(envoy, method, None)[0] == 401, method
        status, body = rest(envoy, method, keys["forged"])
        assert (status, reason_of(body)) == (401, "CREDENTIALS_INVALID"), method


def test_a_second_server_honours_the_same_keys(
    pg_url: str, redis_url: str, keys: dict[str, str]
) -> None:
    other = start_server(pg_url, redis_url, DTQ_AUTH="on")
    try:
        with other.channel() as channel:
            stats = CALLS["AdminService/GetQueueStats"]
            assert code_of(stats, channel, keys["viewer"]) == grpc.StatusCode.OK
            assert code_of(stats, channel, None) == grpc.StatusCode.UNAUTHENTICATED
    finally:
        other.proc.stop()


def test_a_key_limited_to_a_queue_sees_and_uses_only_that_queue(
    server: Server, pg_url: str, keys: dict[str, str]
) -> None:

    from dtq.v1 import task_service_pb2_grpc

    limited = new_key(pg_url, "producer", "--queue", "emails")["key"]
    with server.channel() as channel:
        mine = task_service_pb2_grpc.TaskServiceStub(bearer.sync_channel(channel, limited))
        admin = task_service_pb2_grpc.TaskServiceStub(bearer.sync_channel(channel, keys["admin"]))
        ok = mine.SubmitTask(task_pb.SubmitTaskRequest(type="noop", queue="emails")).task
        other = admin.SubmitTask(task_pb.SubmitTaskRequest(type="noop", queue="default")).task

        def refused(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
            with pytest.raises(grpc.RpcError) as caught:
                call()
            return code_and_reason(caught.value)

        denied = (grpc.StatusCode.PERMISSION_DENIED, "QUEUE_NOT_ALLOWED")
        hidden = (grpc.StatusCode.NOT_FOUND, "TASK_NOT_FOUND")
        assert refused(lambda: mine.SubmitTask(task_pb.SubmitTaskRequest(type="noop"))) == denied
        batch = task_pb.BatchSubmitTasksRequest(
            requests=[
                task_pb.SubmitTaskRequest(type="noop", queue="emails"),
                task_pb.SubmitTaskRequest(type="noop", queue="billing"),
            ]
        )
        assert refused(lambda: mine.BatchSubmitTasks(batch)) == denied
        assert mine.GetTask(task_pb.GetTaskRequest(id=ok.id)).task.id == ok.id
        assert refused(lambda: mine.GetTask(task_pb.GetTaskRequest(id=other.id))) == hidden
        assert refused(lambda: mine.CancelTask(task_pb.CancelTaskRequest(id=other.id))) == hidden
        assert refused(lambda: mine.ListTasks(task_pb.ListTasksRequest())) == denied
        listed = mine.ListTasks(task_pb.ListTasksRequest(queue="emails")).tasks
        assert [t.id for t in listed] == [ok.id]
        assert admin.GetTask(task_pb.GetTaskRequest(id=other.id)).task.state == other.state


def test_a_worker_key_limited_to_a_queue_cannot_take_another(
    server: Server, pg_url: str, start_worker: WorkerFactory
) -> None:
    limited = new_key(pg_url, "worker", "--queue", "emails")["key"]
    refused = start_worker("--queue", "default", wait=False, DTQ_API_KEY=limited)
    assert refused.popen.wait(30) != 0
    assert "registration refused" in refused.output()
    start_worker("--queue", "emails", DTQ_API_KEY=limited)


def test_a_server_with_a_jwks_accepts_its_tokens(
    pg_url: str, redis_url: str, tmp_path: Any
) -> None:
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec
    from jwt.algorithms import ECAlgorithm

    key = ec.generate_private_key(ec.SECP256R1())
    jwk = {**json.loads(ECAlgorithm.to_jwk(key.public_key())), "kid": "k1", "alg": "ES256"}
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    other = start_server(
        pg_url,
        redis_url,
        DTQ_AUTH="on",
        DTQ_AUTH_JWKS=str(tmp_path / "jwks.json"),
        DTQ_AUTH_AUDIENCE="dtq",
    )

    def signed(role: str, exp: float) -> str:
        body = {"sub": "ci", "role": role, "aud": "dtq", "exp": int(exp)}
        return jwt.encode(body, key, "ES256", headers={"kid": "k1"})

    try:
        with other.channel() as channel:
            stats, purge = (
                CALLS["AdminService/GetQueueStats"],
                CALLS["AdminService/PurgeDeadLetters"],
            )
            viewer = signed("viewer", time.time() + 300)
            assert code_of(stats, channel, viewer) == grpc.StatusCode.OK
            assert code_of(purge, channel, viewer) == grpc.StatusCode.PERMISSION_DENIED
            expired = signed("admin", time.time() - 300)
            assert code_of(stats, channel, expired) == grpc.StatusCode.UNAUTHENTICATED
        assert viewer not in other.proc.output()
    finally:
        other.proc.stop()

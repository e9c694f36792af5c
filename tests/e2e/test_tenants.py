"""Tenants against a real `dtq server` with DTQ_AUTH=on and Envoy in front:
two tenants, acme and globex, each with its own admin, producer and worker
keys, and the operator scope (`*`). A matrix over every RPC, through gRPC and
through Envoy REST: globex's callers do not see, change or take acme's things
(NOT_FOUND for acme's task ids, nothing of acme's in lists and stats), while
the operator sees both. One server, one Envoy and one scene per module."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from dtq.v1 import admin_service_pb2 as admin_pb
from dtq.v1 import schedule_pb2, task_pb2, tenant_pb2
from dtq.v1 import task_service_pb2 as task_pb
from dtq.v1 import worker_service_pb2 as worker_pb
from tests.conftest import Server, process_env
from tests.support import apikeys
from tests.support.env import reset
from tests.support.envoy import Envoy, running_envoy
from tests.support.procs import dtq_args, wait_until

pytestmark = [pytest.mark.e2e]

A, B = "acme", "globex"
QUEUE = "jobs"  # both tenants have a queue of this name
ONLY_A = "acme-only"  # a queue only acme has
KEY = "order-1"  # both tenants use this idempotency key
C = grpc.StatusCode


@pytest.fixture(scope="module")
def server_env() -> dict[str, str]:
    return {"DTQ_AUTH": "on", "DTQ_AUTH_CACHE_SECONDS": "1"}


def dtq_env(server: Server) -> dict[str, str]:
    return process_env(server.env["DTQ_DATABASE_URL"], server.env["DTQ_REDIS_URL"])


def cli(server: Server, key: str, *args: str) -> str:
    import subprocess

    done = subprocess.run(
        [*dtq_args(*args), "--server", server.address, "--api-key", key],
        env=dtq_env(server),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


# -- one transport for gRPC and REST ------------------------------------------------


@dataclass(frozen=True)
class Reply:
    code: grpc.StatusCode
    reason: str = ""
    message: Any = None  # the reply message when OK


def _json(msg: Message) -> dict[str, Any]:
    return json_format.MessageToDict(msg)


# method -> (verb, path from the request, body from the request or None)
Route = tuple[str, Callable[[Any], str], Callable[[Any], dict[str, Any]] | None]
ROUTES: dict[str, Route] = {
    "SubmitTask": ("POST", lambda r: "/api/v1/tasks", _json),
    "BatchSubmitTasks": ("POST", lambda r: "/api/v1/tasks:batchSubmit", _json),
    "GetTask": ("GET", lambda r: f"/api/v1/tasks/{r.id}", None),
    "ListTasks": ("GET", lambda r: "/api/v1/tasks?page_size=1000", None),
    "CancelTask": ("POST", lambda r: f"/api/v1/tasks/{r.id}:cancel", lambda r: {}),
    "RetryTask": ("POST", lambda r: f"/api/v1/tasks/{r.id}:retry", lambda r: {}),
    "RegisterWorker": ("POST", lambda r: "/api/v1/workers", _json),
    "CompleteTask": (
        "POST",
        lambda r: f"/api/v1/tasks/{r.task_id}:complete",
        lambda r: {"lease_token": r.lease_token},
    ),
    "FailTask": (
        "POST",
        lambda r: f"/api/v1/tasks/{r.task_id}:fail",
        lambda r: {"lease_token": r.lease_token, "error": {"message": "no"}},
    ),
    "ExtendLease": (
        "POST",
        lambda r: f"/api/v1/tasks/{r.task_id}:extendLease",
        lambda r: {"lease_token": r.lease_token},
    ),
    "SubmitChildTasks": (
        "POST",
        lambda r: f"/api/v1/tasks/{r.parent_id}:submitChildren",
        lambda r: {"lease_token": r.lease_token, "children": [_json(c) for c in r.children]},
    ),
    "GetQueueStats": ("GET", lambda r: f"/api/v1/queues?queue={r.queue}", None),
    "PauseQueue": ("POST", lambda r: f"/api/v1/queues/{r.queue}:pause", lambda r: {}),
    "ResumeQueue": ("POST", lambda r: f"/api/v1/queues/{r.queue}:resume", lambda r: {}),
    "DeleteQueue": ("DELETE", lambda r: f"/api/v1/queues/{r.queue}", None),
    "ListWorkers": ("GET", lambda r: "/api/v1/workers?page_size=1000", None),
    "GetSystemHealth": ("GET", lambda r: "/api/v1/health", None),
    "RequeueDeadLetters": (
        "POST",
        lambda r: f"/api/v1/queues/{r.queue}/deadLetters:requeue",
        lambda r: {},
    ),
    "PurgeDeadLetters": (
        "POST",
        lambda r: f"/api/v1/queues/{r.queue}/deadLetters:purge",
        lambda r: {"confirm": r.confirm, "validate_only": r.validate_only},
    ),
    "ListAuditEvents": ("GET", lambda r: "/api/v1/auditEvents?page_size=1000", None),
    "CreateTenant": ("POST", lambda r: "/api/v1/tenants", lambda r: _json(r.tenant)),
    "ListTenants": ("GET", lambda r: "/api/v1/tenants", None),
    "CreateSchedule": ("POST", lambda r: "/api/v1/schedules", lambda r: _json(r.schedule)),
    "GetSchedule": ("GET", lambda r: f"/api/v1/schedules/{r.name}", None),
    "ListSchedules": ("GET", lambda r: "/api/v1/schedules", None),
    "TriggerSchedule": ("POST", lambda r: f"/api/v1/schedules/{r.name}:trigger", lambda r: {}),
    "SetDispatchRate": (
        "POST",
        lambda r: f"/api/v1/queues/{r.rate.queue}/dispatchRates/{r.rate.task_type}",
        lambda r: _json(r.rate),
    ),
    "ListDispatchRates": ("GET", lambda r: "/api/v1/dispatchRates", None),
    "SetTenantLimits": (
        "POST",
        lambda r: f"/api/v1/tenants/{r.limits.tenant}/limits",
        lambda r: _json(r.limits),
    ),
}
HTTP_CODES = {200: C.OK, 400: C.INVALID_ARGUMENT, 403: C.PERMISSION_DENIED, 404: C.NOT_FOUND}
HTTP_CODES |= {409: C.ALREADY_EXISTS, 401: C.UNAUTHENTICATED}


MODULES = {"TaskService": task_pb, "WorkerService": worker_pb, "AdminService": admin_pb}


def _service(request: Message) -> str:
    (name,) = [s for s, m in MODULES.items() if getattr(m, type(request).__name__, None)]
    return name


def _reply_type(method: str, request: Message) -> type[Message]:
    return getattr(MODULES[_service(request)], f"{method}Response")  # type: ignore[no-any-return]


class Grpc:
    name = "grpc"

    def __init__(self, channel: grpc.Channel) -> None:
        self.channel = channel

    def __call__(self, method: str, request: Message, key: str, tenant: str = "") -> Reply:
        reply_type = _reply_type(method, request)
        call = self.channel.unary_unary(
            f"/dtq.v1.{_service(request)}/{method}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=reply_type.FromString,
        )
        try:
            return Reply(C.OK, message=call(request, metadata=_metadata(key, tenant), timeout=10))
        except grpc.RpcError as error:
            return Reply(error.code(), _reason(error))  # type: ignore[attr-defined]


class Rest:
    name = "rest"

    def __init__(self, envoy: Envoy) -> None:
        self.envoy = envoy

    def __call__(self, method: str, request: Message, key: str, tenant: str = "") -> Reply:
        verb, path, body = ROUTES[method]
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        if tenant:
            headers["x-dtq-tenant"] = tenant
        payload = json.dumps(body(request)) if body else None
        status, data = http_call(self.envoy, verb, path(request), payload, headers)
        code = HTTP_CODES.get(status, C.UNKNOWN)
        if code != C.OK:
            infos = [d for d in data.get("details", []) if d["@type"].endswith("ErrorInfo")]
            return Reply(code, str(infos[0]["reason"]) if infos else "")
        message = _reply_type(method, request)()
        json_format.ParseDict(data, message, ignore_unknown_fields=True)
        return Reply(C.OK, message=message)


Via = Grpc | Rest


def http_call(
    envoy: Envoy, verb: str, path: str, body: str | None, headers: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", envoy.port, timeout=30)
    try:
        conn.request(verb, path, body, headers)
        reply = conn.getresponse()
        data = reply.read()
    finally:
        conn.close()
    return reply.status, json.loads(data) if data else {}


def _metadata(key: str, tenant: str) -> list[tuple[str, str]]:
    extra = [("x-dtq-tenant", tenant)] if tenant else []
    return [("authorization", f"Bearer {key}"), *extra]


def _reason(error: grpc.RpcError) -> str:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is None or not status.details:
        return ""
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    return str(info.reason)


# -- the scene ---------------------------------------------------------------------


@dataclass
class Scene:
    keys: dict[str, dict[str, str]]  # tenant ("*" too) -> role -> key
    pending: dict[str, str]  # tenant -> id of a PENDING task (idempotency key KEY)
    running: dict[str, worker_pb.Lease]  # tenant -> a lease held on a RUNNING task
    dead: dict[str, str]  # tenant -> id of a DEAD_LETTERED task in QUEUE
    workers: dict[str, str]  # tenant -> its registered worker's id


def _submit(grpc_: Grpc, key: str, queue: str, **fields: Any) -> task_pb2.Task:
    request = task_pb.SubmitTaskRequest(type="job", queue=queue, **fields)
    reply = grpc_("SubmitTask", request, key)
    assert reply.code == C.OK, reply
    return reply.message.task  # type: ignore[no-any-return]


def _lease(
    channel: grpc.Channel, key: str, tenant: str, queue: str, want: int = 1
) -> list[worker_pb.Lease]:
    """Open a stream of the tenant's worker (`key`) on `queue`, take `want`
    leases, name them in a heartbeat (a lease never named is handed back when
    the stream closes), hang up. The leases stay held."""
    stub = channel.stream_stream(
        "/dtq.v1.WorkerService/LeaseTasks",
        request_serializer=worker_pb.LeaseTasksRequest.SerializeToString,
        response_deserializer=worker_pb.LeaseTasksResponse.FromString,
    )
    stop, have, named = threading.Event(), threading.Event(), threading.Event()
    opening = worker_pb.StreamOpen(
        worker_id=f"w-{tenant}", queues=[queue], task_types=["job"], capacity=want
    )
    got: list[worker_pb.Lease] = []

    def requests() -> Iterator[worker_pb.LeaseTasksRequest]:
        yield worker_pb.LeaseTasksRequest(open=opening)
        if have.wait(20):
            refs = [worker_pb.LeaseRef(task_id=x.task.id, lease_token=x.lease_token) for x in got]
            yield worker_pb.LeaseTasksRequest(heartbeats=refs)
            named.set()
        stop.wait(20)

    stream = stub(requests(), metadata=_metadata(key, ""), timeout=20)
    try:
        for reply in stream:
            got += reply.leases
            if len(got) >= want:
                have.set()
                named.wait(10)
                time.sleep(0.3)  # for the server to read the heartbeat
                return got
    finally:
        stop.set()
        stream.cancel()
    raise AssertionError(f"the stream ended with {len(got)} of {want} leases")


def made_keys(pg_url: str, tenant: str, *roles: str) -> dict[str, str]:
    """Keys of `tenant` made as `dtq apikey create --tenant` makes them, in this process."""
    import asyncio

    from dtq.adapters.pg_api_keys import PgApiKeys
    from dtq.adapters.pg_conn import Pg
    from dtq.adapters.pg_tenants import PgTenants
    from dtq.app.identity import KeyAdmin
    from dtq.domain.auth import Role
    from dtq.ports import SystemClock

    pg = Pg(pg_url, size=1)
    admin = KeyAdmin(PgApiKeys(pg), SystemClock(), tenants=PgTenants(pg))

    async def make() -> dict[str, str]:
        return {r: (await admin.create(r, Role(r), tenant=tenant))[1] for r in roles}

    try:
        return asyncio.run(make())
    finally:
        pg.close()


@pytest.fixture(scope="module")
def scene(server: Server, pg_url: str, redis_url: str) -> Scene:
    reset(pg_url, redis_url)  # what other modules left (tasks of any tenant)
    env = dtq_env(server)
    operator = apikeys.new_key(env, "admin", "--tenant", "*")["key"]
    refused = apikeys.apikey(env, "create", "--role", "producer", "--tenant", "nowhere")
    assert refused.returncode == 1 and "nowhere" in refused.stderr
    assert f"created tenant {A}" in cli(server, operator, "tenant", "create", A)
    with server.channel() as channel:
        g = Grpc(channel)
        create = admin_pb.CreateTenantRequest(tenant=tenant_pb2.Tenant(name=B))
        assert g("CreateTenant", create, operator).code == C.OK
    listed = json.loads(cli(server, operator, "tenant", "list", "--json"))
    assert {A, "default", B} <= {t["name"] for t in listed["tenants"]}
    keys: dict[str, dict[str, str]] = {"*": {"admin": operator}}
    keys[A] = {"admin": apikeys.new_key(env, "admin", "--tenant", A)["key"]}  # as operators do
    keys[A] |= made_keys(pg_url, A, "producer", "worker")  # the same, faster
    keys[B] = made_keys(pg_url, B, "admin", "producer", "worker")
    scene = Scene(keys, {}, {}, {}, {})
    with server.channel() as channel:
        g = Grpc(channel)
        for tenant in (A, B):
            k = keys[tenant]
            register = worker_pb.RegisterWorkerRequest(
                worker_id=f"w-{tenant}", queues=[QUEUE], task_types=["job"], concurrency=1
            )
            assert g("RegisterWorker", register, k["worker"]).code == C.OK
            scene.workers[tenant] = f"w-{tenant}"
            _submit(g, k["producer"], QUEUE)
            (scene.running[tenant],) = _lease(channel, k["worker"], tenant, QUEUE)
            _submit(g, k["producer"], QUEUE)
            (dying,) = _lease(channel, k["worker"], tenant, QUEUE)
            fail = worker_pb.FailTaskRequest(
                task_id=dying.task.id,
                lease_token=dying.lease_token,
                error=task_pb2.TaskError(message="boom", permanent=True),
            )
            assert g("FailTask", fail, k["worker"]).code == C.OK
            scene.dead[tenant] = dying.task.id
            scene.pending[tenant] = _submit(g, k["producer"], QUEUE, idempotency_key=KEY).id
        _submit(g, keys[A]["producer"], ONLY_A)
        cancel = task_pb.CancelTaskRequest(id=_submit(g, keys[A]["producer"], ONLY_A).id)
        assert g("CancelTask", cancel, keys[A]["admin"]).code == C.OK  # an audited call
    return scene


@pytest.fixture(scope="module")
def envoy(server: Server) -> Iterator[Envoy]:
    with running_envoy(server.address, backend_up=False) as found:
        yield found


@pytest.fixture(scope="module")
def channel(server: Server) -> Iterator[grpc.Channel]:
    with server.channel() as ch:
        yield ch


@pytest.fixture(params=["grpc", "rest"])
def via(request: pytest.FixtureRequest, channel: grpc.Channel, scene: Scene) -> Via:
    if request.param == "grpc":
        return Grpc(channel)
    envoy: Envoy = request.getfixturevalue("envoy")
    rest = Rest(envoy)
    health = admin_pb.GetSystemHealthRequest()
    wait_until(
        lambda: rest("GetSystemHealth", health, scene.keys["*"]["admin"]).code == C.OK,
        30,
        "Envoy to reach the server",
    )
    return rest


# -- the matrix: globex's callers on acme's things ----------------------------------


def _ids(reply: Reply) -> set[str]:
    assert reply.code == C.OK, reply
    return {t.id for t in reply.message.tasks}


def test_another_tenants_task_is_not_found_by_every_call_on_a_task(via: Via, scene: Scene) -> None:
    b = scene.keys[B]
    lease = scene.running[A]  # even with acme's lease token
    ref = {"task_id": lease.task.id, "lease_token": lease.lease_token}
    calls: dict[str, tuple[Message, str]] = {
        "GetTask": (task_pb.GetTaskRequest(id=scene.pending[A]), b["producer"]),
        "CancelTask": (task_pb.CancelTaskRequest(id=scene.pending[A]), b["admin"]),
        "RetryTask": (task_pb.RetryTaskRequest(id=scene.dead[A]), b["admin"]),
        "CompleteTask": (worker_pb.CompleteTaskRequest(**ref), b["worker"]),
        "FailTask": (worker_pb.FailTaskRequest(**ref), b["worker"]),
        "ExtendLease": (worker_pb.ExtendLeaseRequest(**ref), b["worker"]),
        "SubmitChildTasks": (_children(lease, QUEUE), b["worker"]),
    }
    got = {m: via(m, request, key) for m, (request, key) in calls.items()}
    assert {m: (r.code, r.reason) for m, r in got.items()} == {
        m: (C.NOT_FOUND, "TASK_NOT_FOUND") for m in calls
    }
    # Nothing changed: acme's tasks are where they were.
    g = via("GetTask", task_pb.GetTaskRequest(id=scene.pending[A]), scene.keys[A]["producer"])
    assert g.message.task.state == task_pb2.Task.STATE_PENDING
    assert g.message.task.tenant == A
    running = via("GetTask", task_pb.GetTaskRequest(id=lease.task.id), scene.keys[A]["admin"])
    assert running.message.task.state == task_pb2.Task.STATE_RUNNING


def test_watching_another_tenants_task_is_not_found(channel: grpc.Channel, scene: Scene) -> None:
    watch = channel.unary_stream(
        "/dtq.v1.TaskService/WatchTask",
        request_serializer=task_pb.WatchTaskRequest.SerializeToString,
        response_deserializer=task_pb.WatchTaskResponse.FromString,
    )
    request = task_pb.WatchTaskRequest(id=scene.pending[A])
    with pytest.raises(grpc.RpcError) as refused:
        next(iter(watch(request, metadata=_metadata(scene.keys[B]["producer"], ""), timeout=10)))
    assert refused.value.code() == C.NOT_FOUND  # type: ignore[attr-defined]
    stream = watch(request, metadata=_metadata(scene.keys[A]["producer"], ""), timeout=10)
    assert next(stream).task.id == scene.pending[A]
    stream.cancel()


def test_watching_another_tenants_task_is_404_through_envoy(envoy: Envoy, scene: Scene) -> None:
    headers = {"Authorization": f"Bearer {scene.keys[B]['producer']}"}
    status, _ = http_call(envoy, "GET", f"/api/v1/tasks/{scene.pending[A]}:watch", None, headers)
    assert status == 404


def test_lists_and_stats_never_mix_tenants(via: Via, scene: Scene) -> None:
    b = scene.keys[B]["admin"]
    listed = _ids(via("ListTasks", task_pb.ListTasksRequest(page_size=1000), b))
    assert scene.pending[B] in listed and scene.dead[B] in listed
    assert not listed & {scene.pending[A], scene.dead[A], scene.running[A].task.id}
    stats = via("GetQueueStats", admin_pb.GetQueueStatsRequest(queue=QUEUE), b).message.queues
    (jobs,) = stats
    assert (jobs.tenant, jobs.pending, jobs.running, jobs.dead_lettered) == (B, 1, 1, 1)
    every = via("GetQueueStats", admin_pb.GetQueueStatsRequest(), b).message.queues
    assert {(q.tenant, q.queue) for q in every} == {(B, QUEUE)}
    workers = via("ListWorkers", admin_pb.ListWorkersRequest(page_size=1000), b).message.workers
    assert {(w.tenant, w.id) for w in workers} == {(B, scene.workers[B])}
    health = admin_pb.GetSystemHealthRequest()
    assert via("GetSystemHealth", health, b).message.active_workers == 1
    assert via("GetSystemHealth", health, scene.keys["*"]["admin"]).message.active_workers == 2
    audit = via("ListAuditEvents", admin_pb.ListAuditEventsRequest(page_size=1000), b)
    assert audit.code == C.OK and all(e.tenant == B for e in audit.message.events)
    acme_audit = via("ListAuditEvents", admin_pb.ListAuditEventsRequest(), scene.keys[A]["admin"])
    assert "TaskService/CancelTask" in {e.action for e in acme_audit.message.events}


def test_queue_and_dead_letter_actions_touch_only_the_callers_tenant(
    via: Via, scene: Scene
) -> None:
    b, a = scene.keys[B]["admin"], scene.keys[A]["admin"]
    pause = via("PauseQueue", admin_pb.PauseQueueRequest(queue=QUEUE), b)
    assert (pause.message.stats.tenant, pause.message.stats.paused) == (B, True)
    acme = via("GetQueueStats", admin_pb.GetQueueStatsRequest(queue=QUEUE), a).message.queues
    assert [(q.tenant, q.paused) for q in acme] == [(A, False)]
    assert via("ResumeQueue", admin_pb.ResumeQueueRequest(queue=QUEUE), b).code == C.OK
    # globex has no queue ONLY_A: deleting its (empty) one leaves acme's.
    assert via("DeleteQueue", admin_pb.DeleteQueueRequest(queue=ONLY_A), b).code == C.OK
    acme_all = via("GetQueueStats", admin_pb.GetQueueStatsRequest(), a).message.queues
    assert {q.queue for q in acme_all} == {QUEUE, ONLY_A}
    count = admin_pb.PurgeDeadLettersRequest(queue=ONLY_A, validate_only=True)
    assert via("PurgeDeadLetters", count, b).message.purged_count == 0
    requeue = admin_pb.RequeueDeadLettersRequest(queue=ONLY_A)
    assert via("RequeueDeadLetters", requeue, b).message.requeued_count == 0
    dead = via("GetTask", task_pb.GetTaskRequest(id=scene.dead[A]), a).message.task
    assert dead.state == task_pb2.Task.STATE_DEAD_LETTERED


def test_idempotency_keys_are_per_tenant(via: Via, scene: Scene) -> None:
    assert scene.pending[A] != scene.pending[B]
    for tenant in (A, B):
        again = task_pb.SubmitTaskRequest(type="job", queue=QUEUE, idempotency_key=KEY)
        reply = via("SubmitTask", again, scene.keys[tenant]["producer"])
        assert (reply.message.task.id, reply.message.deduplicated) == (scene.pending[tenant], True)
        assert reply.message.task.tenant == tenant


def test_a_caller_may_not_pick_another_tenant_nor_create_tenants(via: Via, scene: Scene) -> None:
    submit = task_pb.SubmitTaskRequest(type="job", queue=QUEUE)
    got = via("SubmitTask", submit, scene.keys[B]["producer"], tenant=A)
    assert (got.code, got.reason) == (C.PERMISSION_DENIED, "TENANT_NOT_ALLOWED")
    create = admin_pb.CreateTenantRequest(tenant=tenant_pb2.Tenant(name="rogue"))
    got = via("CreateTenant", create, scene.keys[B]["admin"])
    assert (got.code, got.reason) == (C.PERMISSION_DENIED, "OPERATOR_ONLY")
    got = via("ListTenants", admin_pb.ListTenantsRequest(), scene.keys[B]["admin"])
    assert (got.code, got.reason) == (C.PERMISSION_DENIED, "OPERATOR_ONLY")


def test_a_tenant_that_does_not_exist_is_refused(via: Via, scene: Scene) -> None:
    submit = task_pb.SubmitTaskRequest(type="job", queue=QUEUE)
    got = via("SubmitTask", submit, scene.keys["*"]["admin"], tenant="nowhere")
    assert (got.code, got.reason) == (C.NOT_FOUND, "TENANT_NOT_FOUND")


def test_the_operator_sees_both_and_picks_one_with_x_dtq_tenant(via: Via, scene: Scene) -> None:
    op = scene.keys["*"]["admin"]
    for tenant in (A, B):
        got = via("GetTask", task_pb.GetTaskRequest(id=scene.pending[tenant]), op)
        assert got.message.task.tenant == tenant
    both = _ids(via("ListTasks", task_pb.ListTasksRequest(page_size=1000), op))
    assert {scene.pending[A], scene.pending[B]} <= both
    only_a = _ids(via("ListTasks", task_pb.ListTasksRequest(page_size=1000), op, tenant=A))
    assert scene.pending[A] in only_a and scene.pending[B] not in only_a
    stats = via("GetQueueStats", admin_pb.GetQueueStatsRequest(), op).message.queues
    assert {(A, QUEUE), (B, QUEUE), (A, ONLY_A)} <= {(q.tenant, q.queue) for q in stats}
    workers = via("ListWorkers", admin_pb.ListWorkersRequest(page_size=1000), op).message.workers
    assert {(A, scene.workers[A]), (B, scene.workers[B])} <= {(w.tenant, w.id) for w in workers}
    tenants = via("ListTenants", admin_pb.ListTenantsRequest(), op).message.tenants
    assert {A, B, "default"} <= {t.name for t in tenants}
    # Acting in acme, the operator's submission is acme's.
    made = via("SubmitTask", task_pb.SubmitTaskRequest(type="x", queue="ops"), op, tenant=A)
    assert made.message.task.tenant == A


def test_creating_a_tenant_twice_is_already_exists(via: Via, scene: Scene) -> None:
    name = f"t-{via.name}"
    create = admin_pb.CreateTenantRequest(tenant=tenant_pb2.Tenant(name=name, weight=3))
    made = via("CreateTenant", create, scene.keys["*"]["admin"])
    assert (made.message.tenant.name, made.message.tenant.weight) == (name, 3)
    again = via("CreateTenant", create, scene.keys["*"]["admin"])
    assert (again.code, again.reason) == (C.ALREADY_EXISTS, "TENANT_EXISTS")


def test_a_worker_of_one_tenant_never_gets_anothers_task(
    channel: grpc.Channel, scene: Scene
) -> None:
    g = Grpc(channel)
    a, b = scene.keys[A], scene.keys[B]
    theirs = {_submit(g, a["producer"], "shared").id for _ in range(3)}
    mine = _submit(g, b["producer"], "shared").id
    (lease,) = _lease(channel, b["worker"], B, "shared", want=1)
    assert lease.task.id == mine and lease.task.tenant == B
    time.sleep(0.5)  # time for a wrong lease to be pushed, had there been one
    for task_id in theirs:
        got = g("GetTask", task_pb.GetTaskRequest(id=task_id), a["producer"])
        assert got.message.task.state == task_pb2.Task.STATE_PENDING
    leased = _lease(channel, a["worker"], A, "shared", want=3)
    assert {x.task.id for x in leased} == theirs


def test_the_operators_cli_and_client_pick_a_tenant(
    server: Server, channel: grpc.Channel, scene: Scene
) -> None:
    from dtq.client import AsyncClient, Client

    op = scene.keys["*"]["admin"]
    every = json.loads(cli(server, op, "queue", "stats", "--json"))["queues"]
    assert {(A, QUEUE), (B, QUEUE)} <= {(q.get("tenant"), q["queue"]) for q in every}
    acme = json.loads(cli(server, op, "queue", "stats", "--json", "--tenant", A))["queues"]
    assert {q["tenant"] for q in acme} == {A}
    with Client(server.address, api_key=op, tenant=B) as client:
        task_id = client.submit("x", {}, queue="ops").id
    got = Grpc(channel)("GetTask", task_pb.GetTaskRequest(id=task_id), scene.keys[B]["producer"])
    assert got.message.task.tenant == B

    async def in_acme() -> str:
        async with AsyncClient(server.address, api_key=op, tenant=A) as client:
            return (await client.submit("x", {}, queue="ops")).id

    import asyncio

    task_id = asyncio.run(in_acme())
    got = Grpc(channel)("GetTask", task_pb.GetTaskRequest(id=task_id), scene.keys[A]["producer"])
    assert got.message.task.tenant == A


def test_schedules_belong_to_the_default_tenant_for_now(via: Via, scene: Scene) -> None:
    """Schedules carry no tenant yet: the default tenant's (and the operator's)
    callers use them; another tenant sees none and may not create one."""
    name = f"every-minute-{via.name}"
    template = schedule_pb2.TaskTemplate(type="job", queue=QUEUE)
    create = admin_pb.CreateScheduleRequest(
        schedule=schedule_pb2.Schedule(name=name, cron="0 0 1 1 *", task=template)
    )
    got = via("CreateSchedule", create, scene.keys[B]["admin"])
    assert (got.code, got.reason) == (C.PERMISSION_DENIED, "TENANT_NOT_ALLOWED")
    assert via("CreateSchedule", create, scene.keys["*"]["admin"]).code == C.OK
    got = via("GetSchedule", admin_pb.GetScheduleRequest(name=name), scene.keys[B]["admin"])
    assert got.code == C.NOT_FOUND
    listed = via("ListSchedules", admin_pb.ListSchedulesRequest(), scene.keys[B]["admin"])
    assert (listed.code, list(listed.message.schedules)) == (C.OK, [])
    trigger = admin_pb.TriggerScheduleRequest(name=name)
    assert via("TriggerSchedule", trigger, scene.keys[B]["admin"]).code == C.NOT_FOUND


def test_quotas_are_the_operators_and_dispatch_rates_are_per_tenant(via: Via, scene: Scene) -> None:
    limits = admin_pb.SetTenantLimitsRequest(limits=admin_pb.TenantLimits(tenant=B))
    got = via("SetTenantLimits", limits, scene.keys[B]["admin"])
    assert (got.code, got.reason) == (C.PERMISSION_DENIED, "OPERATOR_ONLY")
    rate = admin_pb.DispatchRate(queue=f"rated-{via.name}", task_type="job", rate=1000)
    assert (
        via(
            "SetDispatchRate", admin_pb.SetDispatchRateRequest(rate=rate), scene.keys[A]["admin"]
        ).code
        == C.OK
    )
    mine = via("ListDispatchRates", admin_pb.ListDispatchRatesRequest(), scene.keys[A]["admin"])
    theirs = via("ListDispatchRates", admin_pb.ListDispatchRatesRequest(), scene.keys[B]["admin"])
    assert rate.queue in {r.queue for r in mine.message.rates}
    assert rate.queue not in {r.queue for r in theirs.message.rates}


def _children(lease: worker_pb.Lease, queue: str) -> worker_pb.SubmitChildTasksRequest:
    child = task_pb.SubmitTaskRequest(type="noop", queue=queue, idempotency_key="#0")
    return worker_pb.SubmitChildTasksRequest(
        parent_id=lease.task.id, lease_token=lease.lease_token, children=[child]
    )


def test_a_child_is_in_its_parents_tenant(via: Via, scene: Scene) -> None:
    """Last in the module: it adds a task to acme (in a queue of its own)."""
    lease = scene.running[A]
    got = via("SubmitChildTasks", _children(lease, "kids"), scene.keys[A]["worker"])
    assert got.code == C.OK, got
    (result,) = got.message.results
    assert (result.task.tenant, result.task.parent_id) == (A, lease.task.id)
    seen = via("GetTask", task_pb.GetTaskRequest(id=result.task.id), scene.keys[B]["admin"])
    assert (seen.code, seen.reason) == (C.NOT_FOUND, "TASK_NOT_FOUND")

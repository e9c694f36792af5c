"""The audit log against a real `dtq server` with authentication on: who
cancelled, paused, purged or made a key, refused calls included, read back
through AdminService.ListAuditEvents with its filters and pages."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from dtq.client import bearer
from dtq.v1 import admin_service_pb2 as admin_pb
from dtq.v1 import admin_service_pb2_grpc, task_service_pb2_grpc
from dtq.v1 import task_service_pb2 as task_pb
from tests.conftest import Server
from tests.e2e.test_auth import apikey, new_key
from tests.support.procs import wait_until
from tests.support.tasks import submit

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean")]


@pytest.fixture(scope="module")
def server_env() -> dict[str, str]:
    return {"DTQ_AUTH": "on", "DTQ_AUTH_CACHE_SECONDS": "1"}


@pytest.fixture
def keys(server: Server, pg_url: str) -> dict[str, dict[str, Any]]:
    return {role: new_key(pg_url, role) for role in ("admin", "producer", "viewer")}


@pytest.fixture
def stubs(server: Server, keys: dict[str, dict[str, Any]]) -> Iterator[dict[str, tuple[Any, Any]]]:
    """(TaskService, AdminService) stubs of each role, and of nobody."""
    with server.channel() as channel:
        made = {}
        for role, key in [*keys.items(), ("nobody", {"key": None})]:
            authed = bearer.sync_channel(channel, key["key"])
            made[role] = (
                task_service_pb2_grpc.TaskServiceStub(authed),
                admin_service_pb2_grpc.AdminServiceStub(authed),
            )
        yield made


def events(admin: Any, **filters: Any) -> list[admin_pb.AuditEvent]:
    request = admin_pb.ListAuditEventsRequest(**filters)
    return list(admin.ListAuditEvents(request, timeout=10).events)


def code_of(call: Any, request: Any, **kw: Any) -> grpc.StatusCode:
    try:
        call(request, timeout=10, **kw)
    except grpc.RpcError as error:
        return error.code()  # type: ignore[attr-defined, no-any-return]
    return grpc.StatusCode.OK


def test_state_changes_are_recorded_with_who_what_and_outcome(
    stubs: dict[str, tuple[Any, Any]], keys: dict[str, dict[str, Any]]
) -> None:
    tasks, admin = stubs["admin"]
    producer_tasks, _ = stubs["producer"]
    _, viewer_admin = stubs["viewer"]
    _, nobody_admin = stubs["nobody"]
    task = submit(
        producer_tasks, "noop", queue="audited", scheduled_at={"seconds": int(time.time()) + 3600}
    )
    started = time.time()
    producer_tasks.CancelTask(task_pb.CancelTaskRequest(id=task.id), timeout=10)
    admin.PauseQueue(admin_pb.PauseQueueRequest(queue="audited"), timeout=10)
    purge = admin_pb.PurgeDeadLettersRequest(queue="audited", validate_only=True)
    admin.PurgeDeadLetters(purge, timeout=10)
    denied = admin_pb.PauseQueueRequest(queue="audited")
    assert code_of(viewer_admin.PauseQueue, denied) == grpc.StatusCode.PERMISSION_DENIED
    assert code_of(nobody_admin.PauseQueue, denied) == grpc.StatusCode.UNAUTHENTICATED
    gone = task_pb.CancelTaskRequest(id="01a24fc3-93ec-77f0-b4fb-07342d4668c0")
    assert code_of(tasks.CancelTask, gone) == grpc.StatusCode.NOT_FOUND
    # Reads are not recorded.
    admin.GetQueueStats(admin_pb.GetQueueStatsRequest(), timeout=10)

    def recorded() -> list[tuple[str, ...]]:
        return [
            (e.actor, e.role, e.action, e.target, e.outcome)
            for e in events(admin)
            if not e.action.startswith("apikey/")
        ]

    # A call refused inside its handler is recorded as its error goes out: wait.
    wait_until(lambda: len(recorded()) >= 5, 10, "five audit events")
    got = recorded()
    key = {role: f"key:{k['id']}" for role, k in keys.items()}
    assert got == [  # newest first; the unauthenticated knock is not kept
        (key["admin"], "admin", "TaskService/CancelTask", gone.id, "NOT_FOUND"),
        (key["viewer"], "viewer", "AdminService/PauseQueue", "audited", "PERMISSION_DENIED"),
        (key["admin"], "admin", "AdminService/PurgeDeadLetters", "audited", "OK"),
        (key["admin"], "admin", "AdminService/PauseQueue", "audited", "OK"),
        (key["producer"], "producer", "TaskService/CancelTask", task.id, "OK"),
    ]
    purged = next(e for e in events(admin) if e.action.endswith("PurgeDeadLetters"))
    assert json.loads(purged.detail) == {
        "request": {"queue": "audited", "validateOnly": True},
        "reply": {"purged_count": 0},
    }
    assert all(e.time.seconds >= int(started) - 1 for e in events(admin)[:5])


def test_filters_and_pages(
    stubs: dict[str, tuple[Any, Any]], keys: dict[str, dict[str, Any]]
) -> None:
    _, admin = stubs["admin"]
    for queue in ("a", "b", "c", "d", "e"):
        admin.PauseQueue(admin_pb.PauseQueueRequest(queue=queue), timeout=10)
    mine = f"key:{keys['admin']['id']}"
    everything = events(admin, actor=mine)
    assert [e.target for e in everything] == ["e", "d", "c", "b", "a"]

    paged: list[str] = []
    request = admin_pb.ListAuditEventsRequest(actor=mine, page_size=2)
    while True:
        reply = admin.ListAuditEvents(request, timeout=10)
        paged += [e.target for e in reply.events]
        if not reply.next_page_token:
            break
        request.page_token = reply.next_page_token
    assert paged == ["e", "d", "c", "b", "a"]

    assert events(admin, actor="key:nobody") == []
    future = admin_pb.ListAuditEventsRequest(actor=mine)
    future.since.FromSeconds(int(time.time()) + 3600)
    assert list(admin.ListAuditEvents(future, timeout=10).events) == []

    reused = admin_pb.ListAuditEventsRequest(page_size=2, page_token=reply.next_page_token or "x")
    assert code_of(admin.ListAuditEvents, reused) == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("seconds", [253402300800, -62135596801, 2**62])
def test_since_out_of_range_is_invalid_argument(
    stubs: dict[str, tuple[Any, Any]], seconds: int
) -> None:
    """Found by the fuzz suite: a `since` past year 9999 (or before year 1) was INTERNAL."""
    _, admin = stubs["admin"]
    request = admin_pb.ListAuditEventsRequest()
    request.since.seconds = seconds
    assert code_of(admin.ListAuditEvents, request) == grpc.StatusCode.INVALID_ARGUMENT


def test_key_commands_are_recorded_as_the_operator(
    stubs: dict[str, tuple[Any, Any]], pg_url: str
) -> None:
    _, admin = stubs["admin"]
    made = new_key(pg_url, "viewer", "--queue", "emails")
    assert apikey(pg_url, "revoke", made["id"]).returncode == 0
    assert apikey(pg_url, "revoke", "000000000000").returncode != 0
    got = [(e.action, e.target, e.outcome) for e in events(admin) if e.action.startswith("apikey")]
    assert got[:3] == [
        ("apikey/revoke", "000000000000", "NOT_FOUND"),
        ("apikey/revoke", made["id"], "OK"),
        ("apikey/create", made["id"], "OK"),
    ]
    created = next(e for e in events(admin) if e.target == made["id"] and "create" in e.action)
    assert created.actor.startswith("cli:") and created.role == "admin"
    assert json.loads(created.detail)["queues"] == ["emails"]
    assert made["key"] not in created.detail  # never the secret


def test_dtq_audit_list_reads_it_with_an_admin_key(
    server: Server, stubs: dict[str, tuple[Any, Any]], keys: dict[str, dict[str, Any]]
) -> None:
    import subprocess

    from tests.support.procs import dtq_args

    _, admin = stubs["admin"]
    admin.PauseQueue(admin_pb.PauseQueueRequest(queue="cli-seen"), timeout=10)
    mine = f"key:{keys['admin']['id']}"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [*dtq_args("audit", "list"), "--server", server.address, *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    done = cli("--json", "--actor", mine, "--since", "1h", "--api-key", keys["admin"]["key"])
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)["events"]
    assert [(e["action"], e["target"]) for e in listed] == [("AdminService/PauseQueue", "cli-seen")]
    table = cli("--api-key", keys["admin"]["key"])
    assert "cli-seen" in table.stdout and "PauseQueue" in table.stdout
    refused = cli("--api-key", keys["viewer"]["key"])
    assert refused.returncode == 1 and "PERMISSION_DENIED" in refused.stderr


def test_nul_bytes_are_refused_or_stored_replaced(stubs: dict[str, tuple[Any, Any]]) -> None:
    """Found by the fuzz suite: a NUL in `actor` was INTERNAL, and an audited call
    with a NUL in its request (a refused purge) failed to write its audit event."""
    _, admin = stubs["admin"]
    nul_actor = admin_pb.ListAuditEventsRequest(actor="key:\x00")
    assert code_of(admin.ListAuditEvents, nul_actor) == grpc.StatusCode.INVALID_ARGUMENT
    purge = admin_pb.PurgeDeadLettersRequest(queue="a\x00b")
    assert code_of(admin.PurgeDeadLetters, purge) == grpc.StatusCode.INVALID_ARGUMENT
    # A refused call's event is written as the error goes out: wait for it.
    wait_until(lambda: any(e.target == "a\ufffdb" for e in events(admin)), 10, "audit event")

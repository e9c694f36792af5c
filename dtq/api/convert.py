"""The only module that knows both the protos and the domain."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2

from dtq.api.errors import status_of
from dtq.app.admin import SystemHealth, WorkerStatus
from dtq.app.dispatch import Push
from dtq.domain import attempts, validation
from dtq.domain.audit import AuditEvent
from dtq.domain.errors import DtqError
from dtq.domain.ids import lease_ref, parse_task_id
from dtq.domain.limits import DispatchRate, TenantLimits
from dtq.domain.model import (
    Attempt,
    Lease,
    LeaseRef,
    Outcome,
    Priority,
    QueueStats,
    Subscription,
    Task,
    TaskError,
    TaskFilter,
    TaskState,
    WorkerInfo,
)
from dtq.domain.tenants import Tenant
from dtq.domain.validation import MAX_DEPTH, SubmitSpec, queue_name, task_type
from dtq.v1 import (
    admin_service_pb2,
    queue_pb2,
    task_pb2,
    task_service_pb2,
    tenant_pb2,
    worker_pb2,
    worker_service_pb2,
)

STATE_TO_PB = {
    TaskState.PENDING: task_pb2.Task.STATE_PENDING,
    TaskState.SCHEDULED: task_pb2.Task.STATE_SCHEDULED,
    TaskState.RUNNING: task_pb2.Task.STATE_RUNNING,
    TaskState.COMPLETED: task_pb2.Task.STATE_COMPLETED,
    TaskState.FAILED: task_pb2.Task.STATE_FAILED,
    TaskState.CANCELLED: task_pb2.Task.STATE_CANCELLED,
    TaskState.DEAD_LETTERED: task_pb2.Task.STATE_DEAD_LETTERED,
    TaskState.WAITING: task_pb2.Task.STATE_WAITING,
}
STATE_FROM_PB = {v: k for k, v in STATE_TO_PB.items()}
REVOKE_REASON = {
    "cancelled": worker_service_pb2.Revocation.REASON_CANCELLED,
    "lease_lost": worker_service_pb2.Revocation.REASON_LEASE_LOST,
}


# -- scalars ------------------------------------------------------------------


def _at(field: timestamp_pb2.Timestamp, seconds: float) -> None:
    """Set a Timestamp field in place (cheaper than building one and copying it)."""
    field.seconds, micros = divmod(round(seconds * 1e6), 1_000_000)
    field.nanos = micros * 1000


def timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    """PostgreSQL keeps microseconds: so do the timestamps we send."""
    ts = timestamp_pb2.Timestamp()
    _at(ts, seconds)
    return ts


def duration(seconds: float) -> duration_pb2.Duration:
    nanos = round(seconds * 1e9)
    if nanos < 0:  # both fields carry the sign: protobuf's own arithmetic
        d = duration_pb2.Duration()
        d.FromNanoseconds(nanos)
        return d
    whole, rest = divmod(nanos, 1_000_000_000)
    return duration_pb2.Duration(seconds=whole, nanos=rest)


def seconds_of(msg: timestamp_pb2.Timestamp | duration_pb2.Duration) -> float:
    return msg.seconds + msg.nanos / 1e9


def depth(value: struct_pb2.Struct | struct_pb2.Value, cap: int = MAX_DEPTH + 1) -> int:
    """JSON nesting depth of a payload or result: each object and array is one
    level, a scalar none. Counting stops at `cap` (deep enough to refuse)."""
    level: list[struct_pb2.Value]
    if isinstance(value, struct_pb2.Struct):
        found, level = 1, list(value.fields.values())
    else:
        found, level = 0, [value]
    while level and found < cap:
        inner: list[struct_pb2.Value] = []
        nested = False
        for v in level:
            kind = v.WhichOneof("kind")
            if kind == "struct_value":
                inner += v.struct_value.fields.values()
                nested = True
            elif kind == "list_value":
                inner += v.list_value.values
                nested = True
        found += nested
        level = inner
    return found


# -- tasks --------------------------------------------------------------------


def submit_spec(
    req: task_service_pb2.SubmitTaskRequest, trace_context: dict[str, str] | None = None
) -> SubmitSpec:
    """`trace_context`: the server's own, used when the request carries none."""
    return SubmitSpec(
        type=req.type,
        payload=req.payload.SerializeToString(deterministic=True),
        priority=req.priority,
        queue=req.queue,
        max_retries=req.max_retries if req.HasField("max_retries") else None,
        timeout=seconds_of(req.timeout) if req.HasField("timeout") else None,
        scheduled_at=seconds_of(req.scheduled_at) if req.HasField("scheduled_at") else None,
        idempotency_key=req.idempotency_key,
        lease_duration=seconds_of(req.lease_duration) if req.HasField("lease_duration") else None,
        trace_context=dict(req.trace_context) or trace_context,
        payload_depth=depth(req.payload),
        unique_for=seconds_of(req.unique_for) if req.HasField("unique_for") else None,
        unique_key=req.unique_key,
        unique_states=tuple(_state(s, "unique_states") for s in req.unique_states),
        fairness_key=req.fairness_key,
        after=req.after,
    )


def _state(value: task_pb2.Task.State.ValueType, field_path: str) -> TaskState:
    if value not in STATE_FROM_PB:
        raise DtqError.invalid(field_path, f"unknown state {value}")
    return STATE_FROM_PB[value]


def task_error(error: TaskError) -> task_pb2.TaskError:
    return task_pb2.TaskError(
        message=error.message, type=error.type, traceback=error.traceback, permanent=error.permanent
    )


def task(t: Task, full: bool = True) -> task_pb2.Task:
    msg = task_pb2.Task(
        id=str(t.id),
        type=t.type,
        queue=t.queue,
        priority=task_pb2.Priority.ValueType(t.priority),
        state=STATE_TO_PB[t.state],
        attempts=t.attempts,
        max_retries=t.max_retries,
        timeout=duration(t.timeout),
        lease_duration=duration(t.lease_duration),
        worker_id=t.worker_id or "",
        idempotency_key=t.idempotency_key or "",
        tenant=t.tenant,
        fairness_key=t.fairness_key,
        parent_id=_id(t.parent_id),
        group_id=_id(t.group_id),
        callback_of=_id(t.callback_of),
        root_id=_id(t.root_id),
    )
    _at(msg.created_at, t.created_at)
    _at(msg.updated_at, t.updated_at)
    if t.scheduled_at is not None:
        _at(msg.scheduled_at, t.scheduled_at)
    if t.started_at is not None:
        _at(msg.started_at, t.started_at)
    if t.finished_at is not None:
        _at(msg.finished_at, t.finished_at)
    if t.error:
        msg.last_error.CopyFrom(task_error(t.error))
    if t.trace_context:
        msg.trace_context.update(t.trace_context)
    if full and t.payload is not None:
        msg.payload.MergeFromString(t.payload)
    if full and t.result is not None:
        msg.result.MergeFromString(t.result)
    if full and t.parent_result is not None:
        msg.parent_result.MergeFromString(t.parent_result)
    if full and t.attempt_log is not None:
        msg.attempt_history.extend(task_attempt(a) for a in attempts.history(t))
    return msg


def task_attempt(a: Attempt) -> task_pb2.TaskAttempt:
    msg = task_pb2.TaskAttempt(attempt=a.attempt, worker_id=a.worker_id)
    if a.started_at is not None:
        _at(msg.started_at, a.started_at)
    if a.ended_at is not None:
        _at(msg.ended_at, a.ended_at)
    if a.error is not None:
        msg.error.CopyFrom(task_error(a.error))
    return msg


def _id(value: uuid.UUID | None) -> str:
    return "" if value is None else str(value)


def full_view(view: int, default: bool) -> bool:
    if view == task_pb2.TASK_VIEW_UNSPECIFIED:
        return default
    if view not in (task_pb2.TASK_VIEW_BASIC, task_pb2.TASK_VIEW_FULL):
        raise DtqError.invalid("view", f"unknown view {view}")
    return view == task_pb2.TASK_VIEW_FULL


def task_filter(req: task_service_pb2.ListTasksRequest) -> TaskFilter:
    state = None
    if req.state:
        if req.state not in STATE_FROM_PB:
            raise DtqError.invalid("state", f"unknown state {req.state}")
        state = STATE_FROM_PB[req.state]
    return TaskFilter(
        state=state,
        type=task_type(req.type) if req.type else None,
        queue=queue_name(req.queue) if req.queue else None,
        parent_id=task_id(req.parent_id, "parent_id") if req.parent_id else None,
        root_id=task_id(req.root_id, "root_id") if req.root_id else None,
        created_after=seconds_of(req.created_after) if req.HasField("created_after") else None,
        created_before=seconds_of(req.created_before) if req.HasField("created_before") else None,
        idempotency_key=validation.idempotency_key(req.idempotency_key) or None,
    )


def task_id(text: str, field_path: str = "id") -> uuid.UUID:
    return parse_task_id(text, field_path)


# -- workers and leases ----------------------------------------------------------


def worker_info(req: worker_service_pb2.RegisterWorkerRequest) -> WorkerInfo:
    sub = validation.subscription(req.queues, req.task_types)
    return WorkerInfo(
        id=req.worker_id,
        hostname=req.hostname,
        pid=req.pid,
        queues=sub.queues,
        task_types=sub.task_types,
        concurrency=validation.capacity(req.concurrency or 1, "concurrency"),
        version=req.version,
        labels=dict(req.labels),
        registered_at=0.0,
        last_seen_at=0.0,
        metrics_address=req.metrics_address,
    )


def worker(w: WorkerInfo, status: WorkerStatus) -> worker_pb2.Worker:
    return worker_pb2.Worker(
        id=w.id,
        hostname=w.hostname,
        pid=w.pid,
        queues=list(w.queues),
        task_types=list(w.task_types),
        concurrency=w.concurrency,
        active_tasks=w.active_tasks,
        status=worker_pb2.Worker.Status.ValueType(status),
        registered_at=timestamp(w.registered_at),
        last_seen_at=timestamp(w.last_seen_at),
        version=w.version,
        labels=w.labels,
        metrics_address=w.metrics_address,
        tenant=w.tenant,
    )


def stream_open(
    msg: worker_service_pb2.StreamOpen,
) -> tuple[str, Subscription, int, list[LeaseRef]]:
    sub = validation.subscription(msg.queues, msg.task_types, "open.")
    held = [lease_ref(r.task_id, r.lease_token, "open.held") for r in msg.held]
    return msg.worker_id, sub, validation.capacity(msg.capacity, "open.capacity"), held


def reported_error(e: task_pb2.TaskError) -> TaskError:
    """A failure as a worker reports it (FailTask or the stream: one rule)."""
    return validation.task_error(e.message, e.type, e.traceback, e.permanent)


def outcome(msg: worker_service_pb2.TaskOutcome, path: str = "outcomes") -> Outcome:
    ref = lease_ref(msg.task_id, msg.lease_token, path)
    if msg.HasField("error"):
        return Outcome(ref.task_id, ref.token, error=reported_error(msg.error))
    if not msg.HasField("result"):
        return Outcome(ref.task_id, ref.token)
    result = msg.result.SerializeToString()
    return validation.outcome(ref.task_id, ref.token, result, depth(msg.result))


def refs(items: Sequence[worker_service_pb2.LeaseRef], path: str) -> list[LeaseRef]:
    return [lease_ref(r.task_id, r.lease_token, path) for r in items]


def lease(lease_: Lease) -> worker_service_pb2.Lease:
    return worker_service_pb2.Lease(
        task=task(lease_.task), lease_token=lease_.token, expire_at=timestamp(lease_.expire_at)
    )


def push(p: Push) -> worker_service_pb2.LeaseTasksResponse:
    return worker_service_pb2.LeaseTasksResponse(
        leases=[lease(x) for x in p.leases],
        acks=[
            worker_service_pb2.OutcomeAck(
                task_id=str(tid),
                status=status_of(result) if isinstance(result, DtqError) else None,
            )
            for tid, result in p.acks
        ],
        revocations=[
            worker_service_pb2.Revocation(task_id=str(tid), reason=REVOKE_REASON[reason])
            for tid, reason in p.revoked
        ],
        draining=p.draining,
    )


# -- admin --------------------------------------------------------------------


def queue_stats(s: QueueStats) -> queue_pb2.QueueStats:
    p = s.pending_by_priority
    return queue_pb2.QueueStats(
        queue=s.queue,
        pending=s.pending,
        pending_by_priority=queue_pb2.PriorityCounts(
            high=p.get(Priority.HIGH, 0),
            medium=p.get(Priority.MEDIUM, 0),
            low=p.get(Priority.LOW, 0),
        ),
        running=s.running,
        scheduled=s.scheduled,
        retrying=s.retrying,
        dead_lettered=s.dead_lettered,
        completed_last_minute=s.completed_last_minute,
        failed_last_minute=s.failed_last_minute,
        throughput_per_second=s.completed_last_minute / 60.0,
        oldest_pending_age=duration(s.oldest_pending_age),
        paused=s.paused,
        tenant=s.tenant,
    )


def health(h: SystemHealth, version: str) -> admin_service_pb2.GetSystemHealthResponse:
    return admin_service_pb2.GetSystemHealthResponse(
        status=admin_service_pb2.HealthStatus.ValueType(h.status),
        components=[
            admin_service_pb2.ComponentHealth(
                name=c.name,
                status=admin_service_pb2.HealthStatus.ValueType(c.status),
                latency=duration(c.latency),
                message=c.message,
            )
            for c in h.components
        ],
        active_workers=h.active_workers,
        version=version,
        checked_at=timestamp(h.checked_at),
    )


def audit_event(e: AuditEvent) -> admin_service_pb2.AuditEvent:
    return admin_service_pb2.AuditEvent(
        id=e.id,
        time=timestamp(e.at),
        actor=e.actor,
        role=e.role,
        action=e.action,
        target=e.target,
        outcome=e.outcome,
        detail=e.detail,
        tenant=e.tenant,
    )


def tenant_limits(t: TenantLimits) -> admin_service_pb2.TenantLimits:
    msg = admin_service_pb2.TenantLimits(tenant=t.tenant)
    if t.submit_rate is not None:
        msg.submit_rate = t.submit_rate
    if t.submit_burst is not None:
        msg.submit_burst = t.submit_burst
    if t.max_queued is not None:
        msg.max_queued = t.max_queued
    if t.max_running is not None:
        msg.max_running = t.max_running
    if t.key_max_running is not None:
        msg.key_max_running = t.key_max_running
    msg.key_weights.update(t.key_weights)
    if t.updated_at:
        _at(msg.update_time, t.updated_at)
    return msg


def tenant_limits_of(msg: admin_service_pb2.TenantLimits) -> TenantLimits:
    return TenantLimits(
        msg.tenant,
        msg.submit_rate if msg.HasField("submit_rate") else None,
        msg.submit_burst if msg.HasField("submit_burst") else None,
        msg.max_queued if msg.HasField("max_queued") else None,
        max_running=msg.max_running if msg.HasField("max_running") else None,
        key_max_running=msg.key_max_running if msg.HasField("key_max_running") else None,
        key_weights=dict(msg.key_weights),
    )


def dispatch_rate(r: DispatchRate) -> admin_service_pb2.DispatchRate:
    msg = admin_service_pb2.DispatchRate(
        queue=r.queue, task_type=r.task_type, rate=r.rate, burst=r.burst
    )
    if r.updated_at:
        _at(msg.update_time, r.updated_at)
    return msg


def tenant(t: Tenant) -> tenant_pb2.Tenant:
    return tenant_pb2.Tenant(name=t.name, weight=t.weight, created_at=timestamp(t.created_at))

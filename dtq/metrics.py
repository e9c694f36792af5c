"""Every Prometheus metric dtq exports, defined once.

Names follow Prometheus conventions (`dtq_` prefix, `_total` counters,
`_seconds` durations); labels stay low-cardinality: queue, task type, priority,
method, code; never task or worker ids. Queue, type and tenant names come from
callers, so they pass through `queue_label` / `type_label` / `tenant_label`: the
first DTQ_METRICS_MAX_QUEUES (and _TYPES, _TENANTS) names keep their own series, later ones
share the `_other` series, and /metrics stays bounded whatever callers send.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info

from dtq.version import __version__

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
TASK_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)

OTHER = "_other"


class LabelCap:
    """The first `limit` distinct values are labels of their own; the rest are OTHER."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self.seen:
            return value
        if len(self.seen) < self.limit:
            self.seen.add(value)
            return value
        return OTHER


queue_label = LabelCap(200)
type_label = LabelCap(200)
tenant_label = LabelCap(100)


def cap_labels(queues: int, types: int, tenants: int = 100) -> None:
    """Set the caps from the settings (at process start)."""
    queue_label.limit, type_label.limit, tenant_label.limit = queues, types, tenants


build = Info("dtq_build", "dtq version of this process")
build.info({"version": __version__})

# -- API server ---------------------------------------------------------------
grpc_requests = Counter(
    "dtq_grpc_requests_total", "gRPC calls handled, by method and status code", ["method", "code"]
)
grpc_latency = Histogram(
    "dtq_grpc_request_duration_seconds",
    "Time to answer a unary gRPC call (streams: time to the end of the stream), by status code",
    ["method", "code"],
    buckets=LATENCY_BUCKETS,
)
tasks_submitted = Counter(
    "dtq_tasks_submitted_total",
    "Tasks accepted (deduplicated submissions excluded)",
    ["queue", "type", "priority"],
)
tasks_deduplicated = Counter(
    "dtq_tasks_deduplicated_total", "Submissions answered with an earlier task", ["queue"]
)
tasks_finished = Counter(
    "dtq_tasks_finished_total",
    "Attempts whose outcome was recorded, by outcome: completed, failed (a retry is "
    "scheduled) or dead_lettered (permanent error or attempts spent)",
    ["queue", "type", "priority", "outcome"],
)
tasks_retried = Counter(
    "dtq_tasks_retried_total",
    "Tasks given another attempt, by reason: failure (backoff scheduled), lease_expired "
    "(the worker went silent) or operator (RetryTask, dead letter requeue)",
    ["queue", "type", "priority", "reason"],
)
task_queue_wait = Histogram(
    "dtq_task_queue_wait_seconds",
    "From ready (submitted, or due when scheduled) to leased to a worker",
    ["queue", "priority"],
    buckets=LATENCY_BUCKETS,
)
task_duration = Histogram(
    "dtq_task_duration_seconds",
    "From leased to outcome recorded (server clock), by outcome",
    ["queue", "type", "outcome"],
    buckets=TASK_BUCKETS,
)
leases_granted = Counter("dtq_leases_granted_total", "Leases handed to workers", ["queue"])
stale_outcomes = Counter(
    "dtq_stale_outcomes_total",
    "Outcomes refused because their lease was not current (expired, revoked or forged): "
    "each is a duplicate execution, caught by fencing",
)
worker_streams = Gauge("dtq_worker_streams", "Open worker lease streams on this server")
stream_slots = Gauge(
    "dtq_worker_stream_slots", "Capacity and held leases of the open streams", ["kind"]
)

rate_limited = Counter(
    "dtq_rate_limited_total",
    "Submissions refused by a tenant limit, by reason: rate_limited (submit rate) or "
    "queued_cap (too many queued tasks); tenants past DTQ_METRICS_MAX_TENANTS are _other",
    ["tenant", "reason"],
)
dispatch_throttled = Counter(
    "dtq_dispatch_throttled_total",
    "Dispatch rounds that left ready tasks of a rate-limited task type waiting for a token",
    ["queue"],
)

dependency_errors = Counter(
    "dtq_dependency_errors_total",
    "Calls to PostgreSQL or Redis that failed because it was unreachable",
    ["dependency"],
)
breaker_state = Gauge(
    "dtq_circuit_breaker_state",
    "Circuit breaker of a dependency: 0 closed, 1 half-open, 2 open (failing fast)",
    ["dependency"],
)
index_deferred = Gauge(
    "dtq_index_deferred_tasks",
    "Accepted tasks waiting for Redis to come back before they can be dispatched",
)

# -- queue manager ------------------------------------------------------------
leases_expired = Counter(
    "dtq_leases_expired_total",
    "Leases that ran out without an outcome (their task may run twice)",
    ["queue"],
)
tasks_promoted = Counter(
    "dtq_tasks_promoted_total", "Scheduled or retrying tasks made ready", ["queue"]
)
queue_depth = Gauge(
    "dtq_queue_depth", "Ready (PENDING) tasks by queue and priority", ["queue", "priority"]
)
queue_tasks = Gauge(
    "dtq_queue_tasks",
    "Tasks by queue and state (running, scheduled, retrying, dead_lettered)",
    ["queue", "state"],
)
queue_oldest_age = Gauge(
    "dtq_queue_oldest_pending_age_seconds",
    "Wait of the oldest ready task, by queue and priority",
    ["queue", "priority"],
)
scheduler_notified = Counter(
    "dtq_scheduler_notified_total",
    "Scheduler wake-ups by a transactional enqueue (NOTIFY dtq_due at commit)",
)
queue_paused = Gauge("dtq_queue_paused", "1 while the queue is paused", ["queue"])
tasks_purged = Counter(
    "dtq_tasks_purged_total",
    "Tasks deleted, by reason: retention (completed or cancelled, past their age) or "
    "dead_letter_purge (an operator purged dead letters)",
    ["reason"],
)
reconciled = Counter(
    "dtq_reconciled_total",
    "Redis entries restored from PostgreSQL by the reconciler (ready tasks, leases, pauses)",
    ["kind"],
)
# Recurring schedules (queue manager). Labelled by the task's queue, never by
# schedule name (names are the callers').
LATENESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 300, 3600)
schedule_fires = Counter(
    "dtq_schedule_fires_total", "Tasks submitted for a schedule's fire times", ["queue"]
)
schedule_skips = Counter(
    "dtq_schedule_skips_total",
    "Fire times that submitted nothing because the previous run was unfinished (overlap skip)",
    ["queue"],
)
schedule_missed = Counter(
    "dtq_schedule_missed_total",
    "Schedules whose missed fire times (no manager ran) were left out by their catch-up policy",
    ["queue"],
)
schedule_lateness = Histogram(
    "dtq_schedule_fire_lateness_seconds",
    "From a fire time to the commit of its task",
    ["queue"],
    buckets=LATENESS_BUCKETS,
)

# -- worker ---------------------------------------------------------------------
worker_tasks = Counter(
    "dtq_worker_tasks_total", "Tasks this worker executed, by outcome", ["type", "outcome"]
)
worker_task_duration = Histogram(
    "dtq_worker_task_duration_seconds", "Handler run time", ["type"], buckets=TASK_BUCKETS
)
worker_running = Gauge("dtq_worker_tasks_running", "Handlers running now")
worker_leases = Gauge(
    "dtq_worker_leases_held", "Leases this worker holds: running or waiting for a slot"
)
worker_slots = Gauge("dtq_worker_slots", "Tasks this worker runs at once (its concurrency)")
worker_connected = Gauge("dtq_worker_connected", "1 while the lease stream is open")

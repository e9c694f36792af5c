"""Generate the Grafana dashboards in deploy/grafana/dashboards/ from one place,
so the four of them share datasource, variables, units and layout.

    python scripts/gen_dashboards.py          # rewrite deploy/grafana/dashboards/*.json
    python scripts/gen_dashboards.py --check  # exit 1 when a committed dashboard is stale

tests/unit/test_deploy.py checks the committed JSON equals this script's output
and that every query names a metric (and labels) that dtq/metrics.py exports.

Conventions in the queries:
- Queue gauges (dtq_queue_*) come from every queue manager, and each reports the
  same numbers: they are combined with `max by (queue, ...)`, never summed.
- Counters are read with rate()/increase() over $__rate_interval.
- Histograms are read with histogram_quantile() over `sum by (le, ...)`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dtq.v1 import admin_service_pb2, task_service_pb2, worker_service_pb2

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
DATASOURCES = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"

Json = dict[str, Any]

RATE = "$__rate_interval"
# Status codes that are the service's fault, not the caller's.
SERVER_ERROR_CODES = "INTERNAL|UNAVAILABLE|UNKNOWN|DATA_LOSS|DEADLINE_EXCEEDED"


def _stream_methods() -> str:
    """gRPC methods whose duration is a stream's life, not a call's latency."""
    names = sorted(
        method.name
        for module in (task_service_pb2, worker_service_pb2, admin_service_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
        if method.server_streaming or method.client_streaming
    )
    return "|".join(names)


STREAMS = _stream_methods()


def datasource() -> Json:
    """The provisioned Prometheus datasource (deploy/grafana/provisioning)."""
    data = yaml.safe_load(DATASOURCES.read_text())
    (source,) = (s for s in data["datasources"] if s["type"] == "prometheus")
    return {"type": "prometheus", "uid": source["uid"]}


DS = datasource()


# -- panels -------------------------------------------------------------------


@dataclass(frozen=True)
class Q:
    """One query of a panel."""

    expr: str
    legend: str = ""
    instant: bool = False


def _targets(queries: list[Q]) -> list[Json]:
    targets = []
    for i, q in enumerate(queries):
        target: Json = {"refId": chr(ord("A") + i), "datasource": DS, "expr": q.expr}
        target["legendFormat"] = q.legend or "__auto"
        if q.instant:
            target["instant"] = True
            target["range"] = False
        targets.append(target)
    return targets


Steps = list[tuple[float | None, str]]  # (from value, colour)
GREEN: Steps = [(None, "green")]


def _thresholds(steps: Steps) -> Json:
    return {
        "mode": "absolute",
        "steps": [{"color": color, "value": value} for value, color in steps],
    }


def timeseries(
    title: str,
    queries: list[Q],
    unit: str = "short",
    description: str = "",
    stack: bool = False,
    w: int = 12,
    h: int = 8,
    thresholds: Steps | None = None,
    min_zero: bool = True,
) -> Json:
    custom: Json = {
        "drawStyle": "line",
        "lineWidth": 1,
        "fillOpacity": 20 if stack else 10,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
    }
    if thresholds:
        custom["thresholdsStyle"] = {"mode": "line"}
    defaults: Json = {
        "unit": unit,
        "custom": custom,
        "thresholds": _thresholds(thresholds or GREEN),
    }
    if min_zero:
        defaults["min"] = 0
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": _targets(queries),
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "_size": (w, h),
    }


def stat(
    title: str,
    queries: list[Q],
    unit: str = "short",
    description: str = "",
    thresholds: Steps | None = None,
    w: int = 4,
    h: int = 4,
    decimals: int | None = None,
) -> Json:
    defaults: Json = {"unit": unit, "thresholds": _thresholds(thresholds or GREEN)}
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": _targets(queries),
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "colorMode": "value",
            "graphMode": "area",
            "justifyMode": "auto",
            "textMode": "auto",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        },
        "_size": (w, h),
    }


def state_timeline(
    title: str,
    queries: list[Q],
    mappings: list[tuple[int, str, str]],
    description: str = "",
    w: int = 12,
    h: int = 8,
) -> Json:
    """Discrete states over time: (value, text, colour) per state."""
    return {
        "type": "state-timeline",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": _targets(queries),
        "fieldConfig": {
            "defaults": {
                "mappings": [
                    {
                        "type": "value",
                        "options": {
                            str(value): {"text": text, "color": color, "index": i}
                            for i, (value, text, color) in enumerate(mappings)
                        },
                    }
                ],
                "thresholds": _thresholds(GREEN),
                "color": {"mode": "thresholds"},
            },
            "overrides": [],
        },
        "options": {
            "showValue": "auto",
            "mergeValues": True,
            "rowHeight": 0.9,
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": False},
        },
        "_size": (w, h),
    }


def row(title: str) -> Json:
    return {"type": "row", "title": title, "collapsed": False, "panels": [], "_size": (24, 1)}


def layout(panels: list[Json]) -> list[Json]:
    """Place panels left to right, wrapping at 24 columns; ids in order."""
    placed = []
    x = y = line_height = 0
    for panel_id, panel in enumerate(panels, start=1):
        w, h = panel.pop("_size")
        if panel["type"] == "row" or x + w > 24:
            x, y, line_height = 0, y + line_height, 0
        placed.append({"id": panel_id, "gridPos": {"x": x, "y": y, "w": w, "h": h}, **panel})
        x += w
        line_height = max(line_height, h)
        if panel["type"] == "row":
            x, y, line_height = 0, y + h, 0
    return placed


# -- dashboards ------------------------------------------------------------------


def variable(name: str, label: str, metric: str, multi: bool = True) -> Json:
    query = f"label_values({metric}, {name})"
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "query": {"query": query, "refId": f"{name}-values"},
        "definition": query,
        "refresh": 2,  # on time range change: new queues show up
        "sort": 1,
        "multi": multi,
        "includeAll": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "hide": 0,
    }


def dashboard(
    uid: str, title: str, description: str, panels: list[Json], variables: tuple[Json, ...] = ()
) -> Json:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["dtq"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "templating": {"list": list(variables)},
        "annotations": {"list": []},
        "links": [
            {
                "type": "dashboards",
                "title": "dtq",
                "tags": ["dtq"],
                "asDropdown": True,
                "includeVars": False,
                "keepTime": True,
            }
        ],
        "panels": layout(panels),
    }


def quantiles(
    metric: str, by: str, selector: str = "", qs: tuple[float, ...] = (0.5, 0.99)
) -> list[Q]:
    """histogram_quantile of a dtq histogram, one query per quantile."""
    legend_labels = " ".join(f"{{{{{label.strip()}}}}}" for label in by.split(","))
    return [
        Q(
            f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket{selector}[{RATE}])))",
            f"p{round(q * 100)} {legend_labels}",
        )
        for q in qs
    ]


def overview() -> Json:
    depth = "max by (queue, priority) (dtq_queue_depth)"
    panels = [
        row("Now"),
        stat(
            "Workers connected",
            [Q("sum(dtq_worker_connected)")],
            description="Workers whose lease stream to an API server is open (reported by "
            "the workers).",
            thresholds=[(None, "red"), (1, "green")],
        ),
        stat(
            "Slots in use",
            [
                Q(
                    'sum(dtq_worker_stream_slots{kind="held"}) '
                    '/ sum(dtq_worker_stream_slots{kind="capacity"})'
                )
            ],
            unit="percentunit",
            description="Leases held over the capacity of every open worker stream.",
            thresholds=[(None, "green"), (0.8, "orange"), (0.95, "red")],
        ),
        stat(
            "Ready tasks",
            [Q(f"sum({depth})")],
            description="PENDING tasks waiting for a worker, every queue.",
        ),
        stat(
            "Oldest ready task",
            [Q("max(dtq_queue_oldest_pending_age_seconds)")],
            unit="s",
            description="How long the oldest ready task of any queue has waited.",
            thresholds=[(None, "green"), (60, "orange"), (300, "red")],
        ),
        stat(
            "Dead letters",
            [Q('sum(max by (queue) (dtq_queue_tasks{state="dead_lettered"}))')],
            thresholds=[(None, "green"), (1, "orange")],
        ),
        stat(
            "dtq targets up",
            [Q('sum(up{job=~"dtq-.*"})', "up"), Q('count(up{job=~"dtq-.*"})', "scraped")],
            description="Scrape targets (API servers, managers, workers) that answered.",
        ),
        row("Throughput"),
        timeseries(
            "Submitted and finished /s",
            [
                Q(f"sum(rate(dtq_tasks_submitted_total[{RATE}]))", "submitted"),
                Q(
                    f"sum by (outcome) (rate(dtq_tasks_finished_total[{RATE}]))",
                    "{{outcome}}",
                ),
                Q(f"sum(rate(dtq_tasks_retried_total[{RATE}]))", "retried"),
            ],
            unit="ops",
            description="Accepted tasks against recorded outcomes (completed, failed = retry "
            "scheduled, dead_lettered) and retries.",
        ),
        timeseries(
            "Tasks by state",
            [
                Q(f"sum({depth})", "ready"),
                Q("sum by (state) (max by (queue, state) (dtq_queue_tasks))", "{{state}}"),
            ],
            description="Every queue added up (queue manager's view).",
        ),
        timeseries(
            "Queue wait p99 by queue",
            quantiles("dtq_task_queue_wait_seconds", "queue", qs=(0.99,)),
            unit="s",
            description="Ready (submitted, or due) to leased to a worker.",
        ),
        timeseries(
            "Task duration p95 by type",
            quantiles("dtq_task_duration_seconds", "type", qs=(0.95,)),
            unit="s",
            description="Leased to outcome recorded, server clock.",
        ),
        row("Leases and API"),
        timeseries(
            "Leases /s",
            [
                Q(f"sum(rate(dtq_leases_granted_total[{RATE}]))", "granted"),
                Q(f"sum(rate(dtq_leases_expired_total[{RATE}]))", "expired"),
                Q(f"sum(rate(dtq_tasks_promoted_total[{RATE}]))", "promoted (scheduled/retry)"),
                Q(f"sum(rate(dtq_stale_outcomes_total[{RATE}]))", "stale outcomes (duplicates)"),
            ],
            unit="ops",
        ),
        timeseries(
            "gRPC calls by code",
            [Q(f"sum by (code) (rate(dtq_grpc_requests_total[{RATE}]))", "{{code}}")],
            unit="reqps",
        ),
        timeseries(
            "gRPC p99 by method (unary)",
            quantiles(
                "dtq_grpc_request_duration_seconds",
                "method",
                f'{{method!~"{STREAMS}"}}',
                qs=(0.99,),
            ),
            unit="s",
        ),
        state_timeline(
            "Circuit breakers",
            [Q("max by (dependency) (dtq_circuit_breaker_state)", "{{dependency}}")],
            BREAKER_STATES,
            description="Worst state over the API servers and managers.",
        ),
        row("Schedules"),
        timeseries(
            "Schedule fires /s by queue",
            [
                Q(f"sum by (queue) (rate(dtq_schedule_fires_total[{RATE}]))", "fired {{queue}}"),
                Q(
                    f"sum by (queue) (rate(dtq_schedule_skips_total[{RATE}]))",
                    "skipped (overlap) {{queue}}",
                ),
                Q(
                    f"sum by (queue) (rate(dtq_schedule_missed_total[{RATE}]))",
                    "missed (catch-up) {{queue}}",
                ),
            ],
            unit="ops",
            description="Tasks submitted for fire times; fire times skipped because the "
            "previous run was unfinished (overlap policy skip); schedules whose missed fire "
            "times the catch-up policy left out.",
        ),
        timeseries(
            "Schedule fire lateness",
            quantiles("dtq_schedule_fire_lateness_seconds", "queue"),
            unit="s",
            description="From a fire time to the commit of its task (catch-up fires after "
            "downtime are as late as the downtime).",
            thresholds=[(None, "green"), (1, "red")],
        ),
    ]
    return dashboard(
        "dtq-overview",
        "dtq overview",
        "Throughput, backlog, leases, API calls and workers of dtq at a glance.",
        panels,
    )


BREAKER_STATES = [(0, "closed", "green"), (1, "half-open", "yellow"), (2, "open", "red")]


def queues() -> Json:
    qp = '{queue=~"$queue", priority=~"$priority"}'
    qsel = '{queue=~"$queue"}'

    def state(name: str) -> Json:
        return timeseries(
            name.replace("_", "-").capitalize(),
            [
                Q(
                    f'max by (queue) (dtq_queue_tasks{{queue=~"$queue", state="{name}"}})',
                    "{{queue}}",
                )
            ],
            w=6,
            h=7,
        )

    panels = [
        row("Backlog"),
        timeseries(
            "Ready tasks by queue and priority",
            [Q(f"max by (queue, priority) (dtq_queue_depth{qp})", "{{queue}} {{priority}}")],
            stack=True,
            description="PENDING tasks waiting for a worker.",
        ),
        timeseries(
            "Oldest ready task by queue and priority",
            [
                Q(
                    f"max by (queue, priority) (dtq_queue_oldest_pending_age_seconds{qp})",
                    "{{queue}} {{priority}}",
                )
            ],
            unit="s",
            thresholds=[(None, "green"), (300, "red")],
            description="Wait of the oldest ready task. DtqQueueStuck fires above 5 minutes.",
        ),
        row("Tasks by state"),
        state("running"),
        state("scheduled"),
        state("retrying"),
        state("dead_lettered"),
        state_timeline(
            "Paused",
            [Q(f"max by (queue) (dtq_queue_paused{qsel})", "{{queue}}")],
            [(0, "serving", "green"), (1, "paused", "blue")],
            w=24,
            h=5,
        ),
        row("Flow"),
        timeseries(
            "Submitted /s by queue",
            [Q(f"sum by (queue) (rate(dtq_tasks_submitted_total{qsel}[{RATE}]))", "{{queue}}")],
            unit="ops",
            w=8,
        ),
        timeseries(
            "Finished /s by queue and outcome",
            [
                Q(
                    f"sum by (queue, outcome) (rate(dtq_tasks_finished_total{qsel}[{RATE}]))",
                    "{{queue}} {{outcome}}",
                )
            ],
            unit="ops",
            w=8,
        ),
        timeseries(
            "Retried /s by queue and reason",
            [
                Q(
                    f"sum by (queue, reason) (rate(dtq_tasks_retried_total{qsel}[{RATE}]))",
                    "{{queue}} {{reason}}",
                )
            ],
            unit="ops",
            w=8,
            description="failure: backoff scheduled; lease_expired: the worker went silent; "
            "operator: RetryTask or a dead letter requeue.",
        ),
        timeseries(
            "Submitted /s by queue and priority",
            [
                Q(
                    f"sum by (queue, priority) (rate(dtq_tasks_submitted_total{qp}[{RATE}]))",
                    "{{queue}} {{priority}}",
                )
            ],
            unit="ops",
            w=8,
        ),
        timeseries(
            "Leases /s by queue",
            [
                Q(
                    f"sum by (queue) (rate(dtq_leases_granted_total{qsel}[{RATE}]))",
                    "granted {{queue}}",
                ),
                Q(
                    f"sum by (queue) (rate(dtq_leases_expired_total{qsel}[{RATE}]))",
                    "expired {{queue}}",
                ),
            ],
            unit="ops",
            w=8,
        ),
        timeseries(
            "Promoted and deduplicated /s by queue",
            [
                Q(
                    f"sum by (queue) (rate(dtq_tasks_promoted_total{qsel}[{RATE}]))",
                    "promoted {{queue}}",
                ),
                Q(
                    f"sum by (queue) (rate(dtq_tasks_deduplicated_total{qsel}[{RATE}]))",
                    "deduplicated {{queue}}",
                ),
            ],
            unit="ops",
            w=8,
            description="Promoted: scheduled or retrying tasks made ready. Deduplicated: "
            "submissions answered with an earlier task.",
        ),
    ]
    return dashboard(
        "dtq-queues",
        "dtq queues",
        "Depth, age, states and flow of each queue, by priority.",
        panels,
        (
            variable("queue", "Queue", "dtq_queue_paused"),
            variable("priority", "Priority", "dtq_queue_depth"),
        ),
    )


def workers() -> Json:
    tsel = '{type=~"$type"}'
    panels = [
        row("Fleet"),
        stat(
            "Workers connected",
            [Q("sum(dtq_worker_connected)")],
            thresholds=[(None, "red"), (1, "green")],
            description="Reported by the workers: 1 while the lease stream is open.",
        ),
        stat(
            "Streams open",
            [Q("sum(dtq_worker_streams)")],
            description="Worker lease streams the API servers hold.",
        ),
        stat(
            "Slots capacity",
            [Q('sum(dtq_worker_stream_slots{kind="capacity"})')],
            description="Tasks the connected workers can run at once.",
        ),
        stat("Slots held", [Q('sum(dtq_worker_stream_slots{kind="held"})')]),
        stat("Handlers running", [Q("sum(dtq_worker_tasks_running)")]),
        stat(
            "Duplicates caught (1h)",
            [Q("sum(increase(dtq_stale_outcomes_total[1h]))")],
            thresholds=[(None, "green"), (1, "orange")],
            decimals=0,
            description="Outcomes refused because their lease was no longer current: each is "
            "a task that ran twice, caught by fencing.",
        ),
        row("Capacity"),
        timeseries(
            "Slots: capacity vs held",
            [
                Q('sum(dtq_worker_stream_slots{kind="capacity"})', "capacity (servers)"),
                Q('sum(dtq_worker_stream_slots{kind="held"})', "held (servers)"),
                Q("sum(dtq_worker_slots)", "slots (workers)"),
                Q("sum(dtq_worker_tasks_running)", "running (workers)"),
            ],
            description="Servers' view of the open streams against what workers report.",
        ),
        timeseries(
            "Handlers running by worker",
            [Q("sum by (instance) (dtq_worker_tasks_running)", "{{instance}}")],
            stack=True,
        ),
        state_timeline(
            "Connected, by worker",
            [Q("max by (instance) (dtq_worker_connected)", "{{instance}}")],
            [(0, "disconnected", "red"), (1, "connected", "green")],
        ),
        timeseries(
            "Streams by API server",
            [Q("sum by (instance) (dtq_worker_streams)", "{{instance}}")],
            stack=True,
        ),
        row("Execution"),
        timeseries(
            "Worker outcomes /s by type",
            [
                Q(
                    f"sum by (type, outcome) (rate(dtq_worker_tasks_total{tsel}[{RATE}]))",
                    "{{type}} {{outcome}}",
                )
            ],
            unit="ops",
        ),
        timeseries(
            "Handler run time by type",
            quantiles("dtq_worker_task_duration_seconds", "type", tsel, qs=(0.5, 0.95, 0.99)),
            unit="s",
            description="Measured on the worker, around the handler only.",
        ),
        timeseries(
            "Expired leases /s by queue",
            [Q(f"sum by (queue) (rate(dtq_leases_expired_total[{RATE}]))", "{{queue}}")],
            unit="ops",
            description="Leases that ran out without an outcome: a worker died or stalled.",
        ),
        timeseries(
            "Stale outcomes (duplicate executions caught)",
            [Q(f"sum(increase(dtq_stale_outcomes_total[{RATE}]))", "stale outcomes")],
            description="Outcomes refused by fencing, per interval.",
        ),
    ]
    return dashboard(
        "dtq-workers",
        "dtq workers",
        "Connected workers, their slots, handlers, outcomes and duplicate executions.",
        panels,
        (variable("type", "Task type", "dtq_worker_tasks_total"),),
    )


def latency() -> Json:
    unary = f'{{method=~"$method", method!~"{STREAMS}"}}'
    qp = '{queue=~"$queue", priority=~"$priority"}'

    def grpc(q: float) -> Json:
        return timeseries(
            f"gRPC p{round(q * 100)} by method and code",
            quantiles("dtq_grpc_request_duration_seconds", "method, code", unary, qs=(q,)),
            unit="s",
            w=8,
            description=f"Unary calls; the streams ({STREAMS.replace('|', ', ')}) last as long "
            "as their client, so they are left out.",
        )

    panels = [
        row("API"),
        grpc(0.5),
        grpc(0.95),
        grpc(0.99),
        timeseries(
            "gRPC calls /s by method and code",
            [
                Q(
                    f'sum by (method, code) (rate(dtq_grpc_requests_total{{method=~"$method"}}'
                    f"[{RATE}]))",
                    "{{method}} {{code}}",
                )
            ],
            unit="reqps",
        ),
        timeseries(
            "Server-side error ratio by method",
            [
                Q(
                    f"sum by (method) (rate(dtq_grpc_requests_total"
                    f'{{method=~"$method", code=~"{SERVER_ERROR_CODES}"}}[{RATE}]))'
                    f" / sum by (method) (rate(dtq_grpc_requests_total"
                    f'{{method=~"$method"}}[{RATE}]))',
                    "{{method}}",
                )
            ],
            unit="percentunit",
            thresholds=[(None, "green"), (0.05, "red")],
            description=f"Calls that ended {SERVER_ERROR_CODES.replace('|', ', ')}.",
        ),
        row("Tasks"),
        timeseries(
            "Queue wait p50 by queue and priority",
            quantiles("dtq_task_queue_wait_seconds", "queue, priority", qp, qs=(0.5,)),
            unit="s",
            w=8,
            description="Ready (submitted, or due when scheduled) to leased to a worker.",
        ),
        timeseries(
            "Queue wait p99 by queue and priority",
            quantiles("dtq_task_queue_wait_seconds", "queue, priority", qp, qs=(0.99,)),
            unit="s",
            w=8,
        ),
        timeseries(
            "Task duration by type",
            quantiles(
                "dtq_task_duration_seconds",
                "type",
                '{queue=~"$queue"}',
                qs=(0.5, 0.95, 0.99),
            ),
            unit="s",
            w=8,
            description="Leased to outcome recorded (server clock): handler time plus the "
            "round trips.",
        ),
        row("Dependencies"),
        timeseries(
            "Dependency errors /s",
            [
                Q(
                    f"sum by (dependency, job) (rate(dtq_dependency_errors_total[{RATE}]))",
                    "{{dependency}} ({{job}})",
                )
            ],
            unit="ops",
            w=8,
            description="Calls to PostgreSQL or Redis that failed because it was unreachable.",
        ),
        state_timeline(
            "Circuit breaker state",
            [
                Q(
                    "max by (dependency, instance) (dtq_circuit_breaker_state)",
                    "{{dependency}} {{instance}}",
                )
            ],
            BREAKER_STATES,
            w=8,
        ),
        timeseries(
            "Tasks waiting for Redis",
            [Q("sum by (instance) (dtq_index_deferred_tasks)", "{{instance}}")],
            w=8,
            description="Accepted tasks not yet dispatchable because Redis was unreachable.",
        ),
    ]
    return dashboard(
        "dtq-latency",
        "dtq latency",
        "gRPC latency by method and code, queue wait and task duration, and the health of "
        "PostgreSQL and Redis as dtq sees them.",
        panels,
        (
            variable("method", "Method", "dtq_grpc_requests_total"),
            variable("queue", "Queue", "dtq_queue_paused"),
            variable("priority", "Priority", "dtq_queue_depth"),
        ),
    )


def generate() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    boards = [overview(), queues(), workers(), latency()]
    return {f"{b['uid']}.json": json.dumps(b, indent=2) + "\n" for b in boards}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a dashboard is stale")
    args = parser.parse_args()
    wanted = generate()
    stale = sorted(
        name
        for name, text in wanted.items()
        if not (DASHBOARDS / name).is_file() or (DASHBOARDS / name).read_text() != text
    )
    extra = sorted(p.name for p in DASHBOARDS.glob("*.json") if p.name not in wanted)
    if args.check:
        for name in stale + extra:
            print(f"stale: deploy/grafana/dashboards/{name}", file=sys.stderr)
        return 1 if stale or extra else 0
    for name in stale:
        (DASHBOARDS / name).write_text(wanted[name])
        print(f"wrote deploy/grafana/dashboards/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`dtq tenant set-limits|limits` (a tenant's quotas) and `dtq rate set|list|clear`
(dispatch rates of task types). Admins only."""

from __future__ import annotations

from typing import Annotated

import typer

from dtq.cli import output
from dtq.cli.client import Target, bad_input, connect, remote
from dtq.cli.output import JsonOpt
from dtq.cli.tenant import tenant_app
from dtq.domain.limits import parse_rate
from dtq.v1 import admin_service_pb2 as pb

rate_app = typer.Typer(
    help="Dispatch rates: leases of a task type granted per second, over every worker.",
    no_args_is_help=True,
)

TenantArg = Annotated[str, typer.Argument(metavar="TENANT", help="Tenant name.")]
QueueArg = Annotated[str, typer.Argument(metavar="QUEUE", help="Queue name.")]
TypeArg = Annotated[str, typer.Argument(metavar="TYPE", help="Task type.")]
BurstOpt = Annotated[
    int | None,
    typer.Option(
        metavar="N", min=1, help="Most at once after a quiet spell [default: one second's worth]."
    ),
]


def rate_of(text: str) -> float:
    """`10/s`, `600/m`, `5/h` or a number per second; a bad one ends the command (exit 2)."""
    try:
        return parse_rate(text)
    except ValueError as error:
        bad_input(str(error))


def _weights(items: list[str]) -> dict[str, int]:
    """`KEY=W` options as a map; a bad one ends the command (exit 2)."""
    out: dict[str, int] = {}
    for item in items:
        key, sep, weight = item.rpartition("=")
        if not sep or not weight.isdigit():
            bad_input(f"--key-weight {item!r}: write KEY=W, e.g. cust-42=5")
        out[key] = int(weight)
    return out


def per_second(rate: float) -> str:
    return f"{rate:g}/s" if rate >= 1 else f"{rate * 60:g}/m"


def _limits_rows(items: list[pb.TenantLimits]) -> list[list[str]]:
    def or_none(msg: pb.TenantLimits, name: str, text: str) -> str:
        return text if msg.HasField(name) else "-"  # type: ignore[arg-type]

    return [
        [
            t.tenant,
            or_none(t, "submit_rate", per_second(t.submit_rate)),
            or_none(t, "submit_burst", str(t.submit_burst)) if t.HasField("submit_rate") else "-",
            or_none(t, "max_queued", str(t.max_queued)),
            or_none(t, "max_running", str(t.max_running)),
            or_none(t, "key_max_running", str(t.key_max_running)),
            ",".join(f"{k}={w}" for k, w in sorted(t.key_weights.items())) or "-",
        ]
        for t in items
    ]


def show_limits(items: list[pb.TenantLimits]) -> None:
    headers = [
        "TENANT", "SUBMIT RATE", "BURST", "MAX QUEUED", "MAX RUNNING", "KEY MAX RUNNING",
        "KEY WEIGHTS",
    ]  # fmt: skip
    output.rows_table(headers, _limits_rows(items), "tenants with limits")


@tenant_app.command("set-limits")
@remote
def set_limits(
    name: TenantArg,
    submit_rate: Annotated[
        str | None,
        typer.Option(metavar="RATE", help="Tasks the tenant may submit: 100/s, 600/m, 5/h."),
    ] = None,
    burst: BurstOpt = None,
    max_queued: Annotated[
        int | None,
        typer.Option(metavar="N", min=0, help="Most queued tasks (pending, scheduled, retrying)."),
    ] = None,
    max_running: Annotated[
        int | None,
        typer.Option(metavar="N", min=1, help="Most running tasks of the tenant in one queue."),
    ] = None,
    key_max_running: Annotated[
        int | None,
        typer.Option(metavar="N", min=1, help="Most running tasks per fairness key in a queue."),
    ] = None,
    key_weight: Annotated[
        list[str] | None,
        typer.Option(
            metavar="KEY=W", help="Weight of a fairness key in fair dispatch (repeatable)."
        ),
    ] = None,
    json_out: JsonOpt = False,
    *,
    target: Target,
) -> None:
    """Set TENANT's quotas; a limit not given is removed (none given: no limits).

    Over a limit, submissions answer RESOURCE_EXHAUSTED (HTTP 429) with when
    to retry; dtq.Client and the CLI wait and retry by themselves."""
    if burst is not None and submit_rate is None:
        bad_input("--burst needs --submit-rate")
    limits = pb.TenantLimits(tenant=name)
    if submit_rate is not None:
        limits.submit_rate = rate_of(submit_rate)
    if burst is not None:
        limits.submit_burst = burst
    if max_queued is not None:
        limits.max_queued = max_queued
    if max_running is not None:
        limits.max_running = max_running
    if key_max_running is not None:
        limits.key_max_running = key_max_running
    limits.key_weights.update(_weights(key_weight or []))
    with connect(target) as client:
        reply = client.call(
            lambda s: s.admin.SetTenantLimits, pb.SetTenantLimitsRequest(limits=limits)
        )
    if json_out:
        output.emit_json(reply)
    else:
        show_limits([reply.limits])


@tenant_app.command("limits")
@remote
def limits(
    name: Annotated[
        str | None, typer.Argument(metavar="[TENANT]", help="Only this tenant [default: all].")
    ] = None,
    json_out: JsonOpt = False,
    *,
    target: Target,
) -> None:
    """The quotas of TENANT, or of every tenant that has any."""
    with connect(target) as client:
        if name:
            request = pb.GetTenantLimitsRequest(tenant=name)
            one = client.call(lambda s: s.admin.GetTenantLimits, request)
            items = [one.limits]
        else:
            every = client.call(lambda s: s.admin.ListTenantLimits, pb.ListTenantLimitsRequest())
            items = list(every.limits)
    if json_out:
        output.emit_json(one if name else every)
    else:
        show_limits(items)


@rate_app.command("set")
@remote
def set_rate(
    queue: QueueArg,
    task_type: TypeArg,
    rate: Annotated[str, typer.Argument(metavar="RATE", help="10/s, 600/m, 5/h.")],
    burst: BurstOpt = None,
    json_out: JsonOpt = False,
    *,
    target: Target,
) -> None:
    """Grant at most RATE leases of TYPE in QUEUE, over every worker and server.
    Other types of the queue are not slowed."""
    wanted = pb.DispatchRate(queue=queue, task_type=task_type, rate=rate_of(rate), burst=burst or 0)
    with connect(target) as client:
        reply = client.call(
            lambda s: s.admin.SetDispatchRate, pb.SetDispatchRateRequest(rate=wanted)
        )
    if json_out:
        output.emit_json(reply)
    else:
        show_rates([reply.rate])


def show_rates(items: list[pb.DispatchRate]) -> None:
    rows = [[r.queue, r.task_type, per_second(r.rate), str(r.burst)] for r in items]
    output.rows_table(["QUEUE", "TYPE", "RATE", "BURST"], rows, "dispatch rates")


@rate_app.command("list")
@remote
def list_rates(
    queue: Annotated[
        str | None, typer.Option(metavar="NAME", help="Only this queue [default: all].")
    ] = None,
    json_out: JsonOpt = False,
    *,
    target: Target,
) -> None:
    """Every dispatch rate set."""
    with connect(target) as client:
        reply = client.call(
            lambda s: s.admin.ListDispatchRates, pb.ListDispatchRatesRequest(queue=queue or "")
        )
    if json_out:
        output.emit_json(reply)
    else:
        show_rates(list(reply.rates))


@rate_app.command("clear")
@remote
def clear_rate(queue: QueueArg, task_type: TypeArg, *, target: Target) -> None:
    """Remove the dispatch rate of TYPE in QUEUE: its tasks go out as fast as
    workers take them."""
    request = pb.DeleteDispatchRateRequest(queue=queue, task_type=task_type)
    with connect(target) as client:
        client.call(lambda s: s.admin.DeleteDispatchRate, request)
    typer.echo(f"dispatch rate of {task_type} in {queue} cleared")


def register(app: typer.Typer) -> None:
    """`dtq rate`; the quota commands join `dtq tenant` (dtq/cli/tenant.py)."""
    app.add_typer(rate_app, name="rate")

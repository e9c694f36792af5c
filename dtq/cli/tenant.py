"""`dtq tenant create|list`: tenants (AdminService.CreateTenant, ListTenants).

Both need an admin key of the operator scope (`dtq apikey create --role admin
--tenant '*'`), or a server with authentication off.
"""

from __future__ import annotations

from typing import Annotated

import typer

from dtq.cli import output
from dtq.cli.client import Target, connect, remote
from dtq.cli.output import JsonOpt
from dtq.v1 import admin_service_pb2 as pb

tenant_app = typer.Typer(help="Tenants: create, list, quotas.", no_args_is_help=True)
PAGE = 1000


@tenant_app.command()
@remote
def create(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The tenant's name.")],
    weight: Annotated[
        int, typer.Option(metavar="N", min=1, max=1000, help="Its share of shared workers.")
    ] = 1,
    json_out: JsonOpt = False,
    *,
    target: Target,
) -> None:
    """Create a tenant; then give it keys: dtq apikey create --tenant NAME."""
    request = pb.CreateTenantRequest()
    request.tenant.name, request.tenant.weight = name, weight
    with connect(target) as client:
        reply = client.call(lambda s: s.admin.CreateTenant, request)
    if json_out:
        output.emit_json(reply.tenant)
        return
    typer.echo(f"created tenant {reply.tenant.name} (weight {reply.tenant.weight})")


@tenant_app.command("list")
@remote
def list_tenants(json_out: JsonOpt = False, *, target: Target) -> None:
    """Every tenant, by name."""
    every = pb.ListTenantsResponse()
    request = pb.ListTenantsRequest(page_size=PAGE)
    with connect(target) as client:
        while True:
            reply = client.call(lambda s: s.admin.ListTenants, request)
            every.tenants.extend(reply.tenants)
            if not reply.next_page_token:
                break
            request.page_token = reply.next_page_token
    if json_out:
        output.emit_json(every)
        return
    rows = ((t.name, str(t.weight), output.when(t.created_at)) for t in every.tenants)
    output.rows_table(("NAME", "WEIGHT", "CREATED"), rows, "tenants")


def register(app: typer.Typer) -> None:
    app.add_typer(tenant_app, name="tenant")

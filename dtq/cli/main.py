"""The `dtq` command: every process and every admin command."""

from __future__ import annotations

import typer

from dtq.cli import (
    admin,
    apikey,
    audit,
    bench,
    console,
    dev,
    dlq,
    limits,
    processes,
    schedule,
    tasks,
    tenant,
)

app = typer.Typer(
    name="dtq",
    help="dtq: a distributed task queue (gRPC API, Redis dispatch, PostgreSQL durability).",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)
processes.register(app)
tasks.register(app)
admin.register(app)
dlq.register(app)
dev.register(app)
bench.register(app)
console.register(app)
apikey.register(app)
audit.register(app)
limits.register(app)
tenant.register(app)
schedule.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

"""`dtq console`: where the web console is (Envoy serves it under /ui/)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

DEFAULT_URL = "http://127.0.0.1:8080/ui/"


def console_url(data_dir: Path) -> str:
    """The console of the `dtq dev` in `data_dir` when it runs one, else Envoy's default."""
    try:
        found = json.loads((data_dir / "endpoints.json").read_text()).get("console")
    except (OSError, ValueError, AttributeError):
        found = None
    return str(found) if found else DEFAULT_URL


def console(
    url: Annotated[
        str | None,
        typer.Option(
            help="The console's address [the running `dtq dev`'s, else " + DEFAULT_URL + "]."
        ),
    ] = None,
    open_browser: Annotated[
        bool, typer.Option("--open", help="Open it in the default web browser too.")
    ] = False,
    data_dir: Annotated[
        Path, typer.Option(help="The `dtq dev` data folder to read endpoints.json from.")
    ] = Path(".dtq"),
) -> None:
    """Print the web console's URL (Overview, Tasks, Dead letters, Workers)."""
    address = url or console_url(data_dir)
    typer.echo(address)
    if open_browser:
        import webbrowser

        if not webbrowser.open(address):
            typer.echo("dtq console: no web browser to open here", err=True)


def register(app: typer.Typer) -> None:
    app.command()(console)

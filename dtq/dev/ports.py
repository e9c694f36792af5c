"""Ports of `dtq dev`, the ports it remembers, and one supervisor per data folder.

Policy: a port given explicitly must be free, else `dtq dev` stops with a
message naming the option (0 asks for any free port). A default port (the
seed's 50051, 8080, 9090-9092, 9901) that something else holds is replaced
by a free one, with a warning; the banner prints what was chosen. PostgreSQL
and Redis get free ports on the first start that are remembered in
`dev.json`, so their URLs stay the same across restarts.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dtq import listen
from dtq.dev.child import free_port

log = logging.getLogger(__name__)


class DevError(RuntimeError):
    """`dtq dev` cannot start as asked; the message says what to do."""


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when a listener could bind `host:port` now (TIME_WAIT does not count)."""
    return listen.port_free(host, port)


def choose_port(what: str, option: str, requested: int | None, default: int) -> int:
    """The port for `what`: `requested` (must be free; 0 = any free), else
    `default` when free, else any free port."""
    if requested == 0:
        return free_port()
    if requested is not None:
        if not port_free(requested):
            raise DevError(
                f"port {requested} ({what}) is already in use: "
                f"pass another {option}, or {option} 0 for any free port"
            )
        return requested
    if default and port_free(default):
        return default
    chosen = free_port()
    if default:
        log.warning("port_taken", extra={"what": what, "port": default, "instead": chosen})
    return chosen


class State:
    """`dev.json` in the data folder: what must stay the same across restarts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.values: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            self.values = dict(json.loads(path.read_text()))

    def port(self, key: str) -> int | None:
        value = self.values.get(key)
        return int(value) if isinstance(value, int) else None

    def save(self, **values: Any) -> None:
        self.values.update(values)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.values, indent=2) + "\n")
        tmp.replace(self.path)


def remembered_port(state: State, key: str, what: str, option: str, requested: int | None) -> int:
    """A backend's port: as requested, else the remembered one while free, else a new one."""
    if requested is None and (known := state.port(key)) and port_free(known):
        return known
    return choose_port(what, option, requested, 0)


@contextlib.contextmanager
def exclusive(data_dir: Path) -> Iterator[None]:
    """Hold `dev.lock` in `data_dir`: a second `dtq dev` on the same data stops at once.

    An flock is released by the kernel when its holder dies, so a killed
    supervisor never leaves a stale lock."""
    path = data_dir / "dev.lock"
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise DevError(
                f"another `dtq dev` (pid {holder}) uses {data_dir}: stop it, "
                "or pass --data-dir for a second one"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield

"""The ports dtq processes listen on: one rule for every process.

- A port given explicitly (a flag or a `DTQ_` variable) must be free. If it is
  taken the process stops with `PortInUse`, which the CLI prints as one line
  naming the port and who asked for it (exit code 2).
- A default port (9090-9092 for /metrics, 8080 and 9901 for `dtq envoy`) that
  something else holds is replaced by the next free port above it, else by
  any free port, and the process logs which (`port_taken`). So any number of
  `dtq worker` processes start on one host with no flags.
- The gRPC port has no fallback (workers and clients look for it where it is
  configured): taken is `PortInUse`, default or not.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)
SCAN = 16  # ports tried above a taken default before any free one
T = TypeVar("T")


class ListenError(Exception):
    """The process cannot listen where it must; the CLI prints the message
    as one line and exits with 2."""


class PortInUse(ListenError):
    """A port the process must listen on is taken. `setting` is the Settings
    field it came from, so that the CLI can say who asked for it."""

    def __init__(self, what: str, port: int, setting: str) -> None:
        super().__init__(f"{what} {port} is in use")
        self.what = what
        self.port = port
        self.setting = setting


def loopback(host: str) -> bool:
    """Whether `host` names this machine's loopback interface only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def port_free(host: str, port: int) -> bool:
    """Whether no other listener holds host:port now (TIME_WAIT does not
    count; a host that is not this machine's is another error, not "taken")."""
    try:
        probe(host)(port)
    except OSError as error:
        return error.errno != errno.EADDRINUSE
    return True


def probe(host: str) -> Callable[[int], tuple[None, int]]:
    """An opener for `bind` that only checks: binds, notes the port, lets go
    (for a listener another program opens, like Envoy)."""

    def open_(port: int) -> tuple[None, int]:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
            return None, int(s.getsockname()[1])

    return open_


def bind(
    open_: Callable[[int], tuple[T, int]], port: int, explicit: bool, what: str, setting: str
) -> tuple[T, int]:
    """`open_(port)`, which returns what it opened and the port it got. When
    the port is taken: `PortInUse` if it was given explicitly, else the next
    free port above it, else any free port."""
    tries = [port] if explicit else [*range(port, min(port + SCAN, 65536)), 0]
    for candidate in tries:
        try:
            opened, got = open_(candidate)
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise
            continue
        if got != port:
            log.warning("port_taken", extra={"what": what, "port": port, "instead": got})
        return opened, got
    raise PortInUse(what, port, setting)

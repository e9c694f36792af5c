"""One long-running process of `dtq dev` (API server, manager, worker, Envoy).

Started through `dying_with_parent` (the kernel ends it when the supervisor's
main thread ends, even on SIGKILL), in its own session (Ctrl-C reaches only
the supervisor, which stops processes in order), with its output appended to
a log file. Readiness is an HTTP URL answering 200: the process's `/ready`
(or, for Envoy, a REST call that crosses to the API server and back).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from dtq.dev.child import dying_with_parent, kill_family

log = logging.getLogger(__name__)


class Service:
    """A supervised child process with a readiness URL."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], log_path: Path, ready_url: str
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.ready_url = ready_url
        self.popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def start(self) -> None:
        self._close_log()
        self._log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            dying_with_parent(self.argv, signal.SIGTERM),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def exit_code(self) -> int | None:
        return self.popen.poll() if self.popen else None

    def ready(self) -> bool:
        """True when the readiness URL answers 200 right now."""
        try:
            with urllib.request.urlopen(self.ready_url, timeout=1) as reply:
                return int(reply.status) == 200
        except (OSError, urllib.error.URLError):
            return False

    def terminate(self) -> None:
        if self.popen is not None and self.alive():
            self.popen.send_signal(signal.SIGTERM)

    def wait(self, deadline: float) -> None:
        """Wait until `deadline` (monotonic) for the exit; then SIGKILL it and its children."""
        if self.popen is None:
            return
        try:
            self.popen.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("child_killed", extra={"child": self.name, "pid": self.pid})
        self.kill()

    def kill(self) -> None:
        if self.popen is not None and self.alive():
            kill_family(self.popen)
        self._close_log()

    def tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

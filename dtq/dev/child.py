"""A server as a child process: started, watched, stopped, killed, and dying
with its parent.

- `PR_SET_PDEATHSIG` (Linux): the kernel signals the server when the *thread*
  that started it ends, so a supervisor killed with SIGKILL leaves no orphan.
  Start servers from a long-lived thread (the main thread). Set by a tiny
  launcher, not a preexec_fn (see dtq/dev/launch.py).
- Its own session: Ctrl-C in a terminal reaches the supervisor, which stops
  the servers in order, not the servers directly.
- `kill()` also ends the processes the server started (PostgreSQL backends,
  Redis's save fork), found through /proc.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from dtq.process_tree import descendants

LOG_TAIL = 4000  # characters of a server's log quoted in errors


class ServerError(RuntimeError):
    """A server could not be found, initialised or started."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kill_family(popen: subprocess.Popen[bytes]) -> None:
    """SIGKILL a child and every process below it (found before it dies)."""
    family = descendants(popen.pid)
    popen.kill()
    for pid in family:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    popen.wait(10)


Identity = pwd.struct_passwd
LAUNCHER = str(Path(__file__).with_name("launch.py"))


def dying_with_parent(
    command: list[str], sig: signal.Signals, run_as: Identity | None = None
) -> list[str]:
    """`command`, wrapped so that it gets `sig` when the calling thread ends
    (and runs as `run_as`): see dtq/dev/launch.py for why not a preexec_fn."""
    user = [run_as.pw_name] if run_as is not None else []
    head = [sys.executable, "-I", "-S", LAUNCHER, str(os.getpid()), str(int(sig)), *user]
    return [*head, "--", *command]


def _tail(path: Path) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-LOG_TAIL:]
    return ""


class ChildServer:
    """One server process: start, readiness, graceful stop, kill."""

    name = "server"
    stop_signal = signal.SIGTERM  # graceful
    death_signal = signal.SIGTERM  # sent by the kernel when we die

    def __init__(self, data_dir: str | Path, port: int) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.port = port or free_port()
        self.log_path = self.data_dir.with_name(self.data_dir.name + ".log")
        self.popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def _spawn(self, args: list[str], env: dict[str, str], run_as: Identity | None) -> None:
        if self.alive():
            raise ServerError(f"{self.name} is already running (pid {self.pid})")
        self._close_log()
        self._log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            dying_with_parent(args, self.death_signal, run_as),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C reaches the supervisor, not the server
            cwd=self.data_dir,  # a folder the server's user can enter
        )

    def _check_alive(self) -> None:
        if self.popen is not None and self.popen.poll() is not None:
            code = self.popen.returncode
            raise ServerError(f"{self.name} exited with {code}; its log:\n{_tail(self.log_path)}")

    def _ping(self) -> bool:
        """Whether the server answers; each kind of server says how."""
        raise NotImplementedError  # abstract: PostgresServer and RedisServer override it

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until the server answers; ServerError if it died or timed out."""
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            if self.popen is None:
                raise ServerError(f"{self.name} was not started")
            if self._ping():
                return
            if time.monotonic() > deadline:
                raise ServerError(
                    f"{self.name} not ready after {timeout}s; its log:\n{_tail(self.log_path)}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful shutdown; SIGKILL (with its children) after `timeout`."""
        if self.popen is not None and self.alive():
            self.popen.send_signal(self.stop_signal)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_log()

    def kill(self) -> None:
        """SIGKILL the server and every process it started, at once."""
        if self.popen is not None and self.alive():
            kill_family(self.popen)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def start(self) -> None:
        """Start the server (and prepare its data folder); each kind says how."""
        raise NotImplementedError  # abstract: PostgresServer and RedisServer override it

    def restart(self, timeout: float = 30.0) -> None:
        """Stop gracefully, start again on the same port and data, wait until ready."""
        self.stop()
        self.start()
        self.wait_ready(timeout)

    def __enter__(self) -> Self:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.kill()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

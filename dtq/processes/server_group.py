"""`dtq server --processes N`: N server processes sharing one port.

One Python process serves one core at most (the GIL), so on a machine with
several cores `dtq server` can start N copies of itself that listen on the
same port with SO_REUSEPORT: the kernel spreads incoming connections over
them. Servers are stateless, so any of them serves any call; a task submitted
through one is dispatched by whichever holds a free worker stream (the Redis
notification reaches all of them). A client connection stays with one
process: spread load by opening several connections (Envoy does, so does
`dtq bench --connections`).

This process only supervises: it restarts a server that exits unexpectedly
(with a backoff when it keeps failing), forwards SIGTERM/SIGINT to every
server (each drains for DTQ_SERVER_GRACE seconds) and exits when they have.
Server i (from 0) serves /metrics and /health on the metrics port + i when
one is given, else on the first free port from 9090 up.
In Kubernetes, prefer one process per pod and more replicas.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from dtq.dev.child import dying_with_parent
from dtq.listen import PortInUse, port_free
from dtq.settings import Settings

log = logging.getLogger(__name__)
MAX_BACKOFF = 30.0
STABLE = 10.0  # seconds up after which a server's failures are forgotten


@dataclass
class Member:
    index: int
    command: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    failures: int = 0
    due: float = 0.0  # when to start it again

    def start(self) -> None:
        command = dying_with_parent(self.command, signal.SIGKILL)
        self.proc = subprocess.Popen(command, env=self.env)
        self.started = time.monotonic()
        log.info("server_process_started", extra={"index": self.index, "pid": self.proc.pid})


@dataclass
class Group:
    settings: Settings
    processes: int
    members: list[Member] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        s = self.settings
        base = s.metrics_port_for("server")
        env = {**os.environ, "DTQ_SERVER_REUSEPORT": "true"}
        for i in range(self.processes):
            command = [
                sys.executable, "-m", "dtq.cli.main", "server", "--processes", "1",
                "--host", s.server_host, "--port", str(s.server_port),
            ]  # fmt: skip
            if s.metrics_port_explicit:  # else each takes the default or the next free port
                command += ["--metrics-port", str(base + i if base else 0)]
            self.members.append(Member(i, command, env))

    def run(self) -> int:
        s = self.settings
        if not port_free(s.server_host, s.server_port):
            # Started on a port another group holds, it would share its connections.
            raise PortInUse("gRPC port", s.server_port, "server_port")
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop.set())
        for member in self.members:
            member.start()
        log.info("server_group_started", extra={"processes": self.processes})
        while not self.stop.wait(0.2):
            for member in self.members:
                self._watch(member)
        return self._shutdown()

    def _watch(self, member: Member) -> None:
        now = time.monotonic()
        if member.proc is None:
            if now >= member.due:
                member.start()
            return
        code = member.proc.poll()
        if code is None:
            if member.failures and now - member.started > STABLE:
                member.failures = 0
            return
        member.failures += 1
        delay = min(MAX_BACKOFF, 0.5 * 2 ** (member.failures - 1))
        log.error(
            "server_process_exited",
            extra={"index": member.index, "code": code, "restart_in_s": delay},
        )
        member.proc, member.due = None, now + delay

    def _shutdown(self) -> int:
        log.info("server_group_stopping")
        running = [m.proc for m in self.members if m.proc and m.proc.poll() is None]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.server_grace + 10
        for proc in running:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        log.info("server_group_stopped")
        return 0

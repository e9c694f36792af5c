"""The operations endpoint every long-running process serves.

- `/metrics`: Prometheus text format.
- `/health`: liveness. 200 while the process runs its main loop, with the
  state of each dependency in a JSON body.
- `/ready`: readiness. 200 only when every dependency check passes, else 503.

Checks are not run by the HTTP thread: the process's own loop records them on a
`HealthBoard`, so a probe never blocks on (or piles onto) a sick dependency.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Literal, cast

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from dtq.listen import bind

if TYPE_CHECKING:
    from dtq.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Check:
    """Outcome of one dependency check."""

    ok: bool
    detail: str
    at: float


class HealthBoard:
    """Thread-safe record of the latest dependency checks of a process."""

    def __init__(self, process: str) -> None:
        self.process = process
        self._lock = threading.Lock()
        self._checks: dict[str, Check] = {}
        self._started = time.time()
        self.stopping = False

    def set(self, name: str, ok: bool, detail: str = "") -> None:
        with self._lock:
            self._checks[name] = Check(ok, detail, time.time())

    def snapshot(self) -> dict[str, Check]:
        with self._lock:
            return dict(self._checks)

    def ready(self) -> bool:
        checks = self.snapshot()
        return not self.stopping and all(c.ok for c in checks.values())

    def body(self) -> dict[str, Any]:
        checks = self.snapshot()
        return {
            "process": self.process,
            "status": "ok" if self.ready() else ("stopping" if self.stopping else "degraded"),
            "uptime_seconds": round(time.time() - self._started, 1),
            "checks": {
                name: {"ok": c.ok, "detail": c.detail, "age_seconds": round(time.time() - c.at, 1)}
                for name, c in checks.items()
            },
        }


def _handler(board: HealthBoard) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            elif path in ("/health", "/healthz"):
                self._json(200, board.body())
            elif path in ("/ready", "/readyz"):
                self._json(200 if board.ready() else 503, board.body())
            else:
                self._json(404, {"error": "not found", "paths": ["/metrics", "/health", "/ready"]})

        def _json(self, code: int, body: dict[str, Any]) -> None:
            self._send(code, json.dumps(body).encode(), "application/json")

        def _send(self, code: int, data: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return  # probes every few seconds would drown the logs

    return Handler


class OpsServer:
    """Serves /metrics, /health and /ready from a daemon thread."""

    def __init__(self, board: HealthBoard, host: str, port: int) -> None:
        self.board = board
        self._server = ThreadingHTTPServer((host, port), _handler(board))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def address(self) -> str:
        """host:port to reach it at; this host's name when it listens on all."""
        host = str(self._server.server_address[0])
        if host in ("", "0.0.0.0", "::"):
            host = socket.gethostname()
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def start(self) -> OpsServer:
        self._thread.start()
        log.info("ops_http_started", extra={"port": self.port})
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def start_ops_server(
    board: HealthBoard, host: str, port: int, explicit: bool = True
) -> OpsServer | None:
    """Start the endpoint unless port is 0. A taken port: `PortInUse` when
    `explicit`, else the next free one (`dtq.listen`)."""
    if port == 0:
        return None

    def open_(candidate: int) -> tuple[OpsServer, int]:
        server = OpsServer(board, host, candidate)
        return server, server.port

    server, _ = bind(open_, port, explicit, "metrics port", "metrics_port")
    return server.start()


def serve_ops(board: HealthBoard, settings: Settings) -> OpsServer | None:
    """The endpoint of the process `board` is for, on its metrics port."""
    process = cast(Literal["server", "worker", "manager"], board.process)
    port = settings.metrics_port_for(process)
    return start_ops_server(board, settings.metrics_host, port, settings.metrics_port_explicit)

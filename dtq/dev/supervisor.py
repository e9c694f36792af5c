"""`dtq dev`: the whole system on one machine, supervised by one process.

Start-up: PostgreSQL and Redis (embedded, in the data folder; or the
configured ones with `external`), the Alembic migrations, then the API
server, the queue manager, a worker with the built-in examples and, when the
`envoy` binary is installed, the REST sidecar, all at once. Ready means every
process's `/ready` answers 200 and a REST call crossed Envoy to the server.

Every child is started from the main thread through `dying_with_parent`, so
the kernel ends it when this process ends, however it ends (SIGKILL too).
Ctrl-C, SIGTERM or SIGHUP stop everything in order: worker and Envoy (the
worker hands its leases back), then manager and server, then Redis and
PostgreSQL. A second Ctrl-C exits at once (the kernel still ends the children).

A child that dies on its own is logged and restarted after 1, 2, 4... (at most
10) seconds; after `MAX_CRASHES` crashes within `CRASH_WINDOW` seconds the
supervisor gives up, stops everything and exits with 1, quoting the child's
log. Restarting keeps the system usable when, say, a handler crashed the
worker, without hiding a process that cannot start at all.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from dtq.dev.backends import Backends
from dtq.dev.banner import Endpoints, banner
from dtq.dev.child import ChildServer, ServerError
from dtq.dev.ports import DevError, State, choose_port, exclusive, remembered_port
from dtq.dev.service import Service

log = logging.getLogger(__name__)

MAX_CRASHES = 5
CRASH_WINDOW = 60.0
STOP_TIMEOUT = 15.0  # per group of processes; the worker's own grace is 5 s in dev


class Stopping(Exception):
    """A stop signal arrived while starting."""


@dataclass(frozen=True)
class DevOptions:
    """What `dtq dev` was asked for (None: the default or remembered port)."""

    data_dir: Path
    external: bool = False
    envoy: bool = True
    grpc_port: int | None = None
    rest_port: int | None = None
    envoy_admin_port: int | None = None
    server_metrics_port: int | None = None
    worker_metrics_port: int | None = None
    manager_metrics_port: int | None = None
    pg_port: int | None = None
    redis_port: int | None = None
    redis_cluster: bool = False  # a local Redis Cluster instead of one Redis
    ready_timeout: float = 60.0
    log_level: str = "INFO"


class Supervisor:
    """Starts, watches and stops the processes of `dtq dev`."""

    def __init__(self, options: DevOptions) -> None:
        self.options = options
        self.data_dir = options.data_dir.absolute()
        self.logs = self.data_dir / "logs"
        self.backends: Backends | None = None
        self.services: list[Service] = []
        self.endpoints: Endpoints | None = None
        self._signal: int | None = None
        self._starting = True
        self._crashes: dict[str, deque[float]] = {}
        self._due: dict[str, float] = {}  # name -> when to restart
        self._phases: dict[str, float] = {}  # seconds per start-up phase

    # -- the whole run ---------------------------------------------------------

    def run(self) -> int:
        """Start, serve until a signal, stop. The exit code."""
        self.logs.mkdir(parents=True, exist_ok=True)
        with exclusive(self.data_dir):
            self._install_signals()
            try:
                began = time.monotonic()
                self._start()
                self._announce(time.monotonic() - began)
                self._starting = False
                return self._watch()
            except Stopping:
                return 0
            except (DevError, ServerError) as error:
                log.error("dev_failed", extra={"error": str(error)})
                sys.stderr.write(f"dtq dev: {error}\n")
                return 1
            finally:
                self._shutdown()

    def _start(self) -> None:
        state = State(self.data_dir / "dev.json")
        began = time.monotonic()
        database_url, redis_url = self._start_backends(state)
        backends = time.monotonic()
        self._migrate(database_url)
        migrated = time.monotonic()
        self.services = self._plan(state, database_url, redis_url)
        for service in self.services:
            service.start()
        self._wait_ready()
        self._phases = {
            "backends": round(backends - began, 3),
            "migrations": round(migrated - backends, 3),
            "processes": round(time.monotonic() - migrated, 3),
        }

    # -- PostgreSQL and Redis ---------------------------------------------------

    def _start_backends(self, state: State) -> tuple[str, str]:
        if self.options.external:
            from dtq.settings import Settings

            settings = Settings()
            return settings.database_dsn.replace("+psycopg2", "", 1), settings.redis_dsn
        opts = self.options
        pg_port = remembered_port(state, "postgres_port", "PostgreSQL", "--pg-port", opts.pg_port)
        redis_port = remembered_port(state, "redis_port", "Redis", "--redis-port", opts.redis_port)
        self.backends = Backends(
            self.data_dir, pg_port, redis_port, redis_cluster=opts.redis_cluster
        )
        state.save(postgres_port=pg_port, redis_port=redis_port)
        self.backends.start(self.options.ready_timeout)
        assert self.backends.pg is not None
        return self.backends.pg.url, self.backends.redis_url

    def _migrate(self, database_url: str) -> None:
        from dtq.adapters import pg_migrate
        from dtq.settings import Settings

        dsn = Settings(database_url=database_url).database_dsn
        try:
            pg_migrate.upgrade(dsn)
        except Exception as error:  # SQLAlchemy/Alembic: report, do not trace
            raise DevError(f"migrations failed on {_safe(database_url)}: {error}") from error
        log.info("migrations_applied", extra={"revision": pg_migrate.head()})

    # -- the dtq processes ------------------------------------------------------

    def _plan(self, state: State, database_url: str, redis_url: str) -> list[Service]:
        """Choose ports and build (not start) the services."""
        o = self.options
        grpc = choose_port("gRPC API", "--port", o.grpc_port, 50051)
        metrics = {
            "server": choose_port(
                "server metrics", "--server-metrics-port", o.server_metrics_port, 9090
            ),
            "worker": choose_port(
                "worker metrics", "--worker-metrics-port", o.worker_metrics_port, 9091
            ),
            "manager": choose_port(
                "manager metrics", "--manager-metrics-port", o.manager_metrics_port, 9092
            ),
        }
        address = f"127.0.0.1:{grpc}"
        env = _child_env(database_url, redis_url, address, self.options.external)
        dtq = [sys.executable, "-m", "dtq.cli.main"]
        ports = {name: ["--metrics-port", str(port)] for name, port in metrics.items()}
        argv = {
            "server": [*dtq, "server", "--host", "127.0.0.1", "--port", str(grpc)],
            "manager": [*dtq, "manager"],
            "worker": [*dtq, "worker", "--server", address],
        }
        services = [
            Service(name, [*argv[name], *ports[name]], env, self.logs / f"{name}.log", _ready(p))
            for name, p in metrics.items()
        ]
        self.endpoints = Endpoints(
            grpc=address,
            database_url=_safe(database_url),
            redis_url=_safe(redis_url),
            metrics={name: f"http://127.0.0.1:{port}/metrics" for name, port in metrics.items()},
            data_dir=str(self.data_dir),
            logs=str(self.logs),
        )
        if envoy := self._plan_envoy(address, env):
            services.append(envoy)
        return services

    def _plan_envoy(self, backend: str, env: dict[str, str]) -> Service | None:
        o = self.options
        binary = shutil.which("envoy")
        if not o.envoy or binary is None:
            log.info("envoy_skipped", extra={"reason": "off" if not o.envoy else "not installed"})
            return None
        from dtq.envoy import render

        rest = choose_port("REST (Envoy)", "--rest-port", o.rest_port, 8080)
        admin = choose_port("Envoy admin", "--envoy-admin-port", o.envoy_admin_port, 9901)
        config = self.data_dir / "envoy.yaml"
        config.write_text(render([backend], rest, admin, listen_host="127.0.0.1"))
        argv = [binary, "-c", str(config), "--disable-hot-restart", "--log-level", "warn"]
        assert self.endpoints is not None
        self.endpoints.rest = f"http://127.0.0.1:{rest}/api/v1/"
        self.endpoints.envoy_admin = f"http://127.0.0.1:{admin}/"
        self.endpoints.console = f"http://127.0.0.1:{rest}/ui/"
        health = f"http://127.0.0.1:{rest}/api/v1/health"
        return Service("envoy", argv, env, self.logs / "envoy.log", health)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.options.ready_timeout
        waiting = list(self.services)
        while waiting:
            for service in list(waiting):
                if not service.alive():
                    raise DevError(
                        f"{service.name} exited with {service.exit_code()} while starting; "
                        f"{service.log_path}:\n{service.tail()}"
                    )
                if service.ready():
                    waiting.remove(service)
            if waiting and time.monotonic() > deadline:
                names = ", ".join(s.name for s in waiting)
                raise DevError(
                    f"not ready after {self.options.ready_timeout}s: {names} (logs in {self.logs})"
                )
            time.sleep(0.05)

    # -- running ----------------------------------------------------------------

    def _announce(self, seconds: float) -> None:
        assert self.endpoints is not None
        self.endpoints.pids = {s.name: s.pid for s in self.services if s.pid is not None}
        if self.backends is not None:
            self.endpoints.pids.update(
                {s.name: s.pid for s in self.backends.children if s.pid is not None}
            )
        ready = {"ready_seconds": round(seconds, 3), "phases": self._phases}
        data = {**self.endpoints.__dict__, **ready}
        (self.data_dir / "endpoints.json").write_text(json.dumps(data, indent=2) + "\n")
        log.info("dev_ready", extra=ready)

        sys.stdout.write(banner(self.endpoints, seconds, self._pg_note()))
        sys.stdout.flush()

    def _pg_note(self) -> str | None:
        if self.backends is None or self.backends.pg is None:
            return None
        data = self.backends.pg.data_dir
        return None if data.parent == self.data_dir else str(data)

    def _watch(self) -> int:
        """Until a signal: restart children that died. The exit code."""
        while self._signal is None:
            now = time.monotonic()
            for unit in self._units():
                if unit.name in self._due:
                    if now >= self._due[unit.name]:
                        del self._due[unit.name]
                        self._restart(unit)
                elif not unit.alive() and not self._crashed(unit, now):
                    return 1
            time.sleep(0.2)
        log.info("dev_stop_requested", extra={"signal": signal.Signals(self._signal).name})
        return 0

    def _units(self) -> list[Service | ChildServer]:
        servers: list[Service | ChildServer] = list(self.backends.children if self.backends else [])
        return [*servers, *self.services]

    def _crashed(self, unit: Service | ChildServer, now: float) -> bool:
        """Record the crash; schedule a restart, or False to give up."""
        crashes = self._crashes.setdefault(unit.name, deque())
        crashes.append(now)
        while now - crashes[0] > CRASH_WINDOW:
            crashes.popleft()
        code = unit.popen.poll() if unit.popen else None
        where = str(unit.log_path)
        if len(crashes) >= MAX_CRASHES:
            log.error("child_abandoned", extra={"child": unit.name, "code": code, "log": where})
            sys.stderr.write(
                f"dtq dev: {unit.name} crashed {len(crashes)} times within {CRASH_WINDOW:.0f}s; "
                f"stopping. Its log ({where}) ends with:\n{_tail(unit.log_path)}\n"
            )
            return False
        delay = min(2.0 ** (len(crashes) - 1), 10.0)
        log.warning(
            "child_exited",
            extra={"child": unit.name, "code": code, "restart_in": delay, "log": where},
        )
        self._due[unit.name] = now + delay
        return True

    def _restart(self, unit: Service | ChildServer) -> None:
        try:
            unit.start()
            if isinstance(unit, ChildServer):
                unit.wait_ready(self.options.ready_timeout)
        except ServerError as error:
            log.warning("child_restart_failed", extra={"child": unit.name, "error": str(error)})
            return  # seen dead on the next round: counted as another crash
        log.info("child_restarted", extra={"child": unit.name, "pid": unit.pid})

    # -- stopping ---------------------------------------------------------------

    def _install_signals(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._signal is not None:
            raise KeyboardInterrupt  # the second one: out at once, the kernel ends the children
        self._signal = signum
        if self._starting:
            raise Stopping

    def _shutdown(self) -> None:
        """Worker and Envoy first, then manager and server, then the backends."""
        self._starting = False  # a signal now must not interrupt the stopping
        by_name = {s.name: s for s in self.services}
        for group in (("worker", "envoy"), ("manager", "server")):
            members = [by_name[n] for n in group if n in by_name]
            for service in members:
                service.terminate()
            deadline = time.monotonic() + STOP_TIMEOUT
            for service in members:
                service.wait(deadline)
        if self.backends is not None:
            self.backends.stop()
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / "endpoints.json").unlink()
        log.info("dev_stopped")


def _ready(port: int) -> str:
    return f"http://127.0.0.1:{port}/ready"


def _child_env(database_url: str, redis_url: str, address: str, external: bool) -> dict[str, str]:
    env = dict(os.environ)
    if not external:
        env.update(DTQ_DATABASE_URL=database_url, DTQ_REDIS_URL=redis_url)
    env.update(
        DTQ_SERVER_ADDRESS=address,
        # Everything listens on loopback: authentication stays off, whatever the
        # environment says, so there is nothing to set up (the banner says so).
        DTQ_AUTH="off",
        DTQ_LOG_FORMAT="text",
        DTQ_SERVER_GRACE="2",
        DTQ_WORKER_SHUTDOWN_GRACE="5",
        PYTHONUNBUFFERED="1",
    )
    env.pop("DTQ_METRICS_PORT", None)  # each process gets its own port on the command line
    env.pop("DTQ_API_KEY", None)  # a real key has no business with the local system
    return env


def _safe(url: str) -> str:
    """`url` without its password."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def _tail(path: Path, chars: int = 3000) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-chars:]
    return ""

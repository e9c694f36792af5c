"""Fixtures shared by every test: a private PostgreSQL database and Redis db per
session, clean state per test, and real dtq processes on free loopback ports."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import grpc
import pytest

from dtq.dev.cluster import RedisCluster
from tests.support import env
from tests.support.procs import Proc, dtq_args, free_port, grpc_serving, wait_until


@pytest.fixture(scope="session")
def services() -> Iterator[env.Services]:
    """PostgreSQL and Redis for the session: configured, at the defaults, or embedded."""
    try:
        with env.services() as found:
            yield found
    except env.Unreachable as error:
        pytest.exit(str(error), returncode=pytest.ExitCode.USAGE_ERROR)


@pytest.fixture(scope="session")
def admin_db_url(services: env.Services) -> str:
    """A PostgreSQL URL to connect to as an administrator (to create databases)."""
    return services.admin_db_url


@pytest.fixture(scope="session")
def pg_url(admin_db_url: str) -> Iterator[str]:
    with env.private_database(admin_db_url) as url:
        yield url


@pytest.fixture(scope="session")
def redis_url(services: env.Services) -> Iterator[str]:
    with env.private_redis(services.redis_url) as url:
        yield url


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A local Redis Cluster (3 masters, 3 replicas), started once per session
    by the first test that asks (a few seconds), on free loopback ports."""
    with RedisCluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@pytest.fixture
def taken() -> Iterator[int]:
    """A port something listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


@pytest.fixture
def clean(pg_url: str, redis_url: str) -> None:
    """Empty tables and Redis before the test."""
    env.reset(pg_url, redis_url)


def process_env(pg_url: str, redis_url: str, **overrides: str) -> dict[str, str]:
    values = {
        **os.environ,
        "DTQ_DATABASE_URL": pg_url,
        "DTQ_REDIS_URL": redis_url,
        "DTQ_LOG_FORMAT": "json",
        "DTQ_LOG_LEVEL": "INFO",
        "DTQ_SERVER_GRACE": "2",
        "PYTHONUNBUFFERED": "1",
    }
    values.update(overrides)
    return values


@dataclass
class Server:
    address: str
    metrics_port: int
    proc: Proc
    env: dict[str, str] = field(repr=False)

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.address)


def start_server(pg_url: str, redis_url: str, port: int = 0, **overrides: str) -> Server:
    """A `dtq server` on `port` (default: a free one), once it serves."""
    port, metrics = port or free_port(), free_port()
    environ = process_env(pg_url, redis_url, **overrides)
    proc = Proc(
        "server",
        dtq_args("server", "--port", str(port), "--metrics-port", str(metrics)),
        environ,
    )
    address = f"127.0.0.1:{port}"
    try:
        wait_until(lambda: grpc_serving(address) or not proc.alive(), 30, "dtq server")
    except TimeoutError:
        proc.kill()
        raise
    if not proc.alive():
        raise RuntimeError(f"dtq server exited:\n{proc.output()}")
    return Server(address, metrics, proc, environ)


@pytest.fixture(scope="module")
def server_env() -> dict[str, str]:
    """Extra DTQ_ settings of the module's server; override per module."""
    return {}


@pytest.fixture(scope="module")
def server(pg_url: str, redis_url: str, server_env: dict[str, str]) -> Iterator[Server]:
    srv = start_server(pg_url, redis_url, **server_env)
    yield srv
    srv.proc.stop()


@pytest.fixture(scope="module")
def channel(server: Server) -> Iterator[grpc.Channel]:
    with server.channel() as ch:
        yield ch


WorkerFactory = Callable[..., Proc]


@pytest.fixture
def start_worker(server: Server) -> Iterator[WorkerFactory]:
    """Start `dtq worker` processes against the module's server."""
    started: list[Proc] = []

    def start(*args: str, wait: bool = True, **overrides: str) -> Proc:
        environ = {**server.env, "DTQ_SERVER_ADDRESS": server.address, **overrides}
        proc = Proc("worker", dtq_args("worker", "--metrics-port", "0", *args), environ)
        started.append(proc)
        if wait:
            wait_until(
                lambda: "worker_connected" in proc.output() or not proc.alive(),
                30,
                "worker stream",
            )
            if not proc.alive():
                raise RuntimeError(f"dtq worker exited:\n{proc.output()}")
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture(scope="module")
def manager(server: Server) -> Iterator[Proc]:
    """A `dtq manager` next to the module's server."""
    proc = Proc("manager", dtq_args("manager", "--metrics-port", "0"), server.env)
    wait_until(lambda: "manager_started" in proc.output() or not proc.alive(), 30, "dtq manager")
    if not proc.alive():
        raise RuntimeError(f"dtq manager exited:\n{proc.output()}")
    yield proc
    proc.stop()

"""Secrets never reach a log or an error reply: a full run with authentication
on (API keys and HS256 JWTs), a PostgreSQL URL with a password, DEBUG logs;
then every line the server, a server that cannot reach its database, the
worker and the CLI wrote, the error replies and the server's /metrics are
searched for every key, token, signing secret and the password."""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import grpc
import jwt
import pytest

from dtq.client import bearer
from dtq.v1 import task_service_pb2 as task_pb
from dtq.v1 import task_service_pb2_grpc
from tests.conftest import Server, process_env, start_server
from tests.support.apikeys import apikey, new_key
from tests.support.procs import Proc, dtq_args, free_port, grpc_serving, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean")]
HMAC = "hmac-" + secrets.token_hex(16)  # the JWT signing secret


def moved(url: str, host: str) -> str:
    """`url` at another host:port, with the same user and password."""
    parts = urlsplit(url)
    auth = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{auth}@{host}"))


def with_password(url: str) -> tuple[str, str]:
    """`url` with a password (trust auth ignores it), and the password."""
    parts = urlsplit(url)
    if parts.password:
        return url, parts.password
    password = "pw-" + secrets.token_hex(12)
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{parts.username or 'postgres'}:{password}@{host}"
    return urlunsplit(parts._replace(netloc=netloc)), password


@pytest.fixture(scope="module")
def db(pg_url: str) -> tuple[str, str]:
    return with_password(pg_url)


@pytest.fixture(scope="module")
def jwks(tmp_path_factory: pytest.TempPathFactory) -> str:
    k = base64.urlsafe_b64encode(HMAC.encode()).rstrip(b"=").decode()
    path = tmp_path_factory.mktemp("jwks") / "jwks.json"
    path.write_text(json.dumps({"keys": [{"kty": "oct", "k": k, "kid": "h1", "alg": "HS256"}]}))
    return str(path)


@pytest.fixture(scope="module")
def server(db: tuple[str, str], redis_url: str, jwks: str) -> Iterator[Server]:
    srv = start_server(
        db[0],
        redis_url,
        DTQ_AUTH="on",
        DTQ_AUTH_JWKS=jwks,
        DTQ_AUTH_AUDIENCE="dtq",
        DTQ_AUTH_CACHE_SECONDS="0.5",
        DTQ_LOG_LEVEL="DEBUG",
    )
    yield srv
    srv.proc.stop()


def token(role: str, exp: float, secret: str = HMAC) -> str:
    body = {"sub": "ci", "role": role, "aud": "dtq", "exp": int(exp)}
    return jwt.encode(body, secret, "HS256", headers={"kid": "h1"})


class Run:
    """Everything written: process logs and the CLI's output."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []

    def cli(self, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            dtq_args(*args), env=env, capture_output=True, text=True, timeout=60, check=False
        )
        self.texts += [(f"dtq {args[:2]} stdout", done.stdout), (f"dtq {args[:2]}", done.stderr)]
        return done

    def leaks(self, secret: str) -> list[str]:
        return [name for name, text in self.texts if secret in text]


def error_reply(address: str, credential: str) -> str:
    """What a caller with `credential` is told (details and trailers)."""
    with grpc.insecure_channel(address) as channel:
        stub = task_service_pb2_grpc.TaskServiceStub(bearer.sync_channel(channel, credential))
        try:
            stub.ListTasks(task_pb.ListTasksRequest(), timeout=10)
        except grpc.RpcError as error:
            assert isinstance(error, grpc.Call)
            return f"{error.code()} {error.details()} {error.trailing_metadata()!r}"
    return "OK"


def test_no_key_token_secret_or_password_is_written_anywhere(
    server: Server, db: tuple[str, str], redis_url: str, jwks: str
) -> None:
    url, password = db
    admin, worker_key = (new_key(server.env, role) for role in ("admin", "worker"))
    revoked = new_key(server.env, "producer")
    good, expired = token("producer", time.time() + 300), token("admin", time.time() - 300)
    wrong = token("admin", time.time() + 300, secret="not-" + HMAC)
    run = Run()
    worker = Proc(
        "worker",
        dtq_args("worker", "--metrics-port", "0", "--queue", "secrets"),
        {**server.env, "DTQ_SERVER_ADDRESS": server.address, "DTQ_API_KEY": worker_key["key"]},
    )
    lost_port = free_port()
    lost = Proc(  # a server whose database is not there: its replies and logs say so
        "server",
        dtq_args("server", "--port", str(lost_port), "--metrics-port", "0"),
        process_env(moved(url, "127.0.0.1:9"), redis_url, DTQ_LOG_LEVEL="DEBUG"),
    )
    try:
        wait_until(lambda: "worker_connected" in worker.output(), 30, "the worker")
        env = {**server.env, "DTQ_SERVER_ADDRESS": server.address, "DTQ_API_KEY": good}
        hello = ("task", "submit", "test_task", '{"message": "hi"}', "--queue", "secrets")
        ok = run.cli(env, *hello, "--wait", "-q")
        assert ok.returncode == 0, ok.stderr
        task_id = ok.stdout.split()[0]
        failing = '{"fail": true, "permanent": true}'
        args = ("task", "submit", "test_task", failing, "--queue", "secrets", "--wait")
        failed = run.cli(env, *args, "--api-key", admin["key"])
        assert failed.returncode == 1, failed.stderr
        for credential in (expired, wrong, revoked["key"], admin["key"][:-4] + "xxxx"):
            assert run.cli(env, "queue", "stats", "--api-key", credential).returncode == 1
        assert apikey(server.env, "revoke", revoked["id"]).returncode == 0
        time.sleep(1.0)  # the server's key cache
        assert run.cli(env, "task", "list", "--api-key", revoked["key"]).returncode == 1
        assert run.cli({**env, "DTQ_API_KEY": revoked["key"]}, "dlq", "list").returncode == 1
        run.texts += [
            (f"reply to {c[:8]}", error_reply(server.address, c))
            for c in (expired, wrong, revoked["key"], "garbage " + HMAC)
        ]
        metrics = f"http://127.0.0.1:{server.metrics_port}/metrics"
        with urllib.request.urlopen(metrics, timeout=10) as reply:
            run.texts.append(("server /metrics", reply.read().decode()))
        wait_until(lambda: grpc_serving(f"127.0.0.1:{lost_port}"), 30, "the lost server")
        down = run.cli(env, "task", "list", "--server", f"127.0.0.1:{lost_port}")
        assert down.returncode == 1 and "UNAVAILABLE" in down.stderr, down.stderr
    finally:
        worker.stop()
        lost.stop()
        server.proc.stop()
    logs = {
        name: p.log_path.read_text()
        for name, p in (
            ("server", server.proc),
            ("worker", worker),
            ("server without its database", lost),
        )
    }
    run.texts += list(logs.items())
    # The right logs: the server saw the worker's stream, the tasks ran.
    assert "stream_opened" in logs["server"] and "worker_connected" in logs["worker"]
    assert task_id in ok.stdout and "dead_lettered" in failed.stdout + failed.stderr
    assert "postgres" in logs["server without its database"]
    assert "dtq_grpc_requests_total" in dict(run.texts)["server /metrics"]

    keys = [k["key"] for k in (admin, worker_key, revoked)]
    secrets_ = {
        "database password": password,
        "HMAC secret": HMAC,
        **{f"key {k[:8]}": k for k in keys},
        **{f"key secret {k[:8]}": k.split("_", 2)[2] for k in keys},
        **{f"token {i}": t for i, t in enumerate((good, expired, wrong))},
        **{f"token signature {i}": t.rsplit(".", 1)[1] for i, t in enumerate((good, wrong))},
    }
    found = {name: run.leaks(value) for name, value in secrets_.items() if run.leaks(value)}
    assert not found, found
    assert Path(jwks).read_text()  # the JWKS itself holds the secret, and is no log

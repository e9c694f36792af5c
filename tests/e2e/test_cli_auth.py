"""The CLI and `dtq.Client` against servers that want credentials: an API key
(`--api-key`, DTQ_API_KEY) on a DTQ_AUTH=on server, and TLS (`--tls-ca`,
DTQ_TLS_CA, a client certificate for mTLS) with certificates made at test time.
A refused call is one line on stderr and exit code 1, never a traceback."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dtq.client import AsyncClient, Client, PermissionDenied, Unauthenticated
from dtq.settings import Settings
from tests.conftest import Server, WorkerFactory, process_env
from tests.support.apikeys import new_key
from tests.support.certs import Authority
from tests.support.procs import Proc, dtq_args, free_port, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean")]
NOBODY = str(uuid.uuid4())


@pytest.fixture(scope="module")
def server_env() -> dict[str, str]:
    return {"DTQ_AUTH": "on"}


@pytest.fixture(scope="module")
def keys(server: Server) -> dict[str, str]:
    made = {role: new_key(server.env, role)["key"] for role in ("admin", "producer", "viewer")}
    return {**made, "forged": f"dtq_{'0' * 12}_{'x' * 43}"}


def dtq(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        dtq_args(*args), env=env, capture_output=True, text=True, timeout=60, check=False
    )


def cli_env(server: Server, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in server.env.items() if k != "DTQ_API_KEY"}
    return {**env, "DTQ_SERVER_ADDRESS": server.address, **extra}


def refused(done: subprocess.CompletedProcess[str], head: str) -> str:
    """The one error line of a refused command (asserted to be just that)."""
    assert done.returncode == 1, done
    assert done.stderr.startswith(f"error: {head}"), done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    return done.stderr


# -- API keys ------------------------------------------------------------------------


def test_the_cli_with_a_key_works_from_the_option_and_from_the_environment(
    server: Server, keys: dict[str, str]
) -> None:
    env = cli_env(server)
    done = dtq(env, "task", "submit", "noop", "{}", "--json", "--api-key", keys["producer"])
    assert done.returncode == 0, done.stderr
    task_id = json.loads(done.stdout)["task"]["id"]
    shown = dtq(cli_env(server, DTQ_API_KEY=keys["viewer"]), "task", "get", task_id, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["task"]["id"] == task_id
    # The option wins over the environment.
    stats = dtq(
        cli_env(server, DTQ_API_KEY=keys["forged"]),
        *("queue", "stats", "--json", "--api-key", keys["admin"]),
    )
    assert stats.returncode == 0, stats.stderr


@pytest.mark.parametrize(
    "command",
    [
        ("queue", "stats"),
        ("task", "list"),
        ("task", "watch", NOBODY),  # a stream
        ("task", "submit-batch", "-"),
        ("worker", "list"),
        ("system", "health"),
        ("dlq", "list"),
    ],
)
def test_without_a_key_every_command_says_how_to_give_one(
    server: Server, command: tuple[str, ...]
) -> None:
    done = subprocess.run(
        dtq_args(*command),
        env=cli_env(server),
        input='{"type": "noop"}\n',
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    line = refused(done, "UNAUTHENTICATED CREDENTIALS_MISSING: ")
    assert line.endswith("give an API key with --api-key or DTQ_API_KEY (dtq apikey create)\n")


def test_a_refused_key_and_a_role_not_allowed_are_one_line_each(
    server: Server, keys: dict[str, str]
) -> None:
    env = cli_env(server)
    bad = refused(
        dtq(env, "queue", "stats", "--api-key", keys["forged"]),
        "UNAUTHENTICATED CREDENTIALS_INVALID: ",
    )
    assert "the credential sent was refused" in bad and keys["forged"] not in bad
    denied = refused(
        dtq(env, "dlq", "purge", "--queue", "default", "--yes", "--api-key", keys["producer"]),
        "PERMISSION_DENIED ROLE_NOT_ALLOWED: ",
    )
    assert keys["producer"] not in denied
    refused(
        dtq(env, "task", "submit", "noop", "--api-key", keys["viewer"]),
        "PERMISSION_DENIED ROLE_NOT_ALLOWED: ",
    )


def test_the_client_sends_its_key_and_from_settings_reads_dtq_api_key(
    server: Server, keys: dict[str, str]
) -> None:
    with Client(server.address, api_key=keys["producer"]) as client:
        handle = client.submit("noop", queue="keyed")
        assert client.get(handle.id).queue == "keyed"
        with pytest.raises(PermissionDenied) as denied:
            client.pause("keyed")
        assert denied.value.reason == "ROLE_NOT_ALLOWED"
    settings = Settings(server_address=server.address, api_key=keys["viewer"])
    with Client.from_settings(settings) as client:
        assert client.get(handle.id).id == handle.id
    with Client(server.address) as client, pytest.raises(Unauthenticated) as missing:
        client.get(handle.id)
    assert missing.value.reason == "CREDENTIALS_MISSING"

    async def from_async() -> str:
        async with AsyncClient(server.address, api_key=keys["viewer"]) as client:
            return (await client.get(handle.id)).id

    assert asyncio.run(from_async()) == handle.id


# -- TLS -------------------------------------------------------------------------------


def test_dtq_bench_sends_its_key(
    server: Server, keys: dict[str, str], start_worker: WorkerFactory
) -> None:
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    worker_key = new_key(server.env, "worker")["key"]
    start_worker("--queue", queue, DTQ_API_KEY=worker_key)
    args = ("bench", "--queue", queue, "--tasks", "20", "--workloads", "burst", "--json")
    done = dtq(cli_env(server, DTQ_API_KEY=keys["admin"]), *args)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["burst"]["single"]["completed"] == 20
    without = dtq(cli_env(server), *args)
    assert without.returncode != 0 and "UNAUTHENTICATED" in without.stderr, without.stderr


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return Authority(tmp_path_factory.mktemp("cli-pki"))


def tls_server(pg_url: str, redis_url: str, ca: Authority, **env: str) -> Iterator[Server]:
    """A TLS-only server with authentication on."""
    cert, port = ca.issue("cli-server", server=True), free_port()
    environ = process_env(
        pg_url, redis_url, DTQ_AUTH="on", DTQ_TLS_CERT=cert.cert, DTQ_TLS_KEY=cert.key, **env
    )
    proc = Proc("server", dtq_args("server", "--port", str(port), "--metrics-port", "0"), environ)
    wait_until(lambda: "server_started" in proc.output() or not proc.alive(), 30, "TLS server")
    assert proc.alive(), proc.output()
    yield Server(f"127.0.0.1:{port}", 0, proc, environ)
    proc.stop()


@pytest.fixture
def tls(pg_url: str, redis_url: str, ca: Authority) -> Iterator[Server]:
    yield from tls_server(pg_url, redis_url, ca)


def client_env(server: Server, **extra: str) -> dict[str, str]:
    """The server's environment without its own certificate (the CLI is a client)."""
    return cli_env(server, DTQ_TLS_CERT="", DTQ_TLS_KEY="", **extra)


def test_the_cli_speaks_tls_with_tls_ca(tls: Server, ca: Authority) -> None:
    key = new_key(tls.env, "admin")["key"]
    env = client_env(tls, DTQ_API_KEY=key)
    done = dtq(env, "task", "submit", "noop", "{}", "--json", "--tls-ca", ca.ca)
    assert done.returncode == 0, done.stderr
    task_id = json.loads(done.stdout)["task"]["id"]
    shown = dtq({**env, "DTQ_TLS_CA": ca.ca}, "task", "get", task_id, "--json")
    assert shown.returncode == 0, shown.stderr
    # Plaintext to a TLS server, or a CA that did not sign its certificate: one line.
    plaintext = refused(dtq(env, "queue", "stats"), "cannot reach the dtq server at ")
    assert "if it speaks TLS, check --tls-ca" in plaintext
    stranger = Authority(Path(ca.folder) / "..", name="stranger CA")
    refused(
        dtq(env, "queue", "stats", "--tls-ca", stranger.ca),
        f"TLS with the dtq server at {tls.address} failed (CERTIFICATE_VERIFY_FAILED): check",
    )
    missing = dtq(env, "queue", "stats", "--tls-ca", str(Path(ca.folder) / "none.pem"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr, missing.stderr
    with Client(tls.address, api_key=key, tls_ca=ca.ca) as client:
        assert client.get(task_id).id == task_id


def test_mtls_takes_the_client_certificate_from_dtq_tls_cert(
    pg_url: str, redis_url: str, ca: Authority
) -> None:
    for server in tls_server(pg_url, redis_url, ca, DTQ_TLS_CLIENT_CA=ca.ca):
        key = new_key(server.env, "viewer")["key"]
        env = client_env(server, DTQ_API_KEY=key, DTQ_TLS_CA=ca.ca)
        refused(dtq(env, "queue", "stats"), "cannot reach the dtq server at ")
        me = ca.issue("cli-user", server=False)
        done = dtq({**env, "DTQ_TLS_CERT": me.cert, "DTQ_TLS_KEY": me.key}, "queue", "stats")
        assert done.returncode == 0, done.stderr
        settings = Settings(
            server_address=server.address,
            api_key=key,
            tls_ca=ca.ca,
            tls_cert=me.cert,
            tls_key=me.key,
        )
        with Client.from_settings(settings) as client:
            assert client.queue_stats() is not None

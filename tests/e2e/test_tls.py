"""TLS with certificates made at test time: a server that speaks only TLS,
mTLS for workers, and Envoy terminating TLS and speaking TLS to the server."""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dtq import tls
from dtq.v1 import task_pb2, task_service_pb2_grpc
from dtq.v1 import task_service_pb2 as task_pb
from tests.conftest import process_env
from tests.support.certs import Authority, Pair
from tests.support.envoy import running_envoy
from tests.support.procs import Proc, dtq_args, free_port, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean")]
COMPLETED = task_pb2.Task.State.Value("STATE_COMPLETED")


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return Authority(tmp_path_factory.mktemp("pki"))


def tls_server(
    pg_url: str, redis_url: str, cert: Pair, **env: str
) -> tuple[Proc, str, dict[str, str]]:
    port = free_port()
    environ = process_env(pg_url, redis_url, DTQ_TLS_CERT=cert.cert, DTQ_TLS_KEY=cert.key, **env)
    proc = Proc("server", dtq_args("server", "--port", str(port), "--metrics-port", "0"), environ)
    wait_until(lambda: "server_started" in proc.output() or not proc.alive(), 30, "TLS server")
    assert proc.alive(), proc.output()
    return proc, f"127.0.0.1:{port}", environ


@pytest.fixture
def server(pg_url: str, redis_url: str, ca: Authority) -> Iterator[tuple[str, dict[str, str]]]:
    proc, address, environ = tls_server(pg_url, redis_url, ca.issue("server", server=True))
    yield address, environ
    proc.stop()


def serving(channel: grpc.Channel) -> bool:
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    except grpc.RpcError:
        return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def test_the_server_speaks_only_tls(server: tuple[str, dict[str, str]], ca: Authority) -> None:
    address, _ = server
    with grpc.secure_channel(address, tls.channel_credentials(ca.ca)) as channel:
        assert serving(channel)
    with grpc.insecure_channel(address) as channel:
        assert not serving(channel)
    stranger = Authority(Path(ca.folder) / "..", name="another CA")
    with grpc.secure_channel(address, tls.channel_credentials(stranger.ca)) as channel:
        assert not serving(channel), "a server certificate of another CA must not be trusted"


def test_a_worker_over_tls_runs_tasks(server: tuple[str, dict[str, str]], ca: Authority) -> None:
    address, environ = server
    worker = Proc(
        "worker",
        dtq_args("worker", "--metrics-port", "0", "--queue", "tls", "--tls-ca", ca.ca),
        {**environ, "DTQ_SERVER_ADDRESS": address, "DTQ_TLS_CERT": "", "DTQ_TLS_KEY": ""},
    )
    try:
        with grpc.secure_channel(address, tls.channel_credentials(ca.ca)) as channel:
            tasks = task_service_pb2_grpc.TaskServiceStub(channel)
            task = tasks.SubmitTask(task_pb.SubmitTaskRequest(type="noop", queue="tls")).task
            wait_until(
                lambda: tasks.GetTask(task_pb.GetTaskRequest(id=task.id)).task.state == COMPLETED,
                30,
                "the task to complete over TLS",
            )
    finally:
        worker.stop()


def test_mtls_refuses_a_worker_without_a_client_certificate(
    pg_url: str, redis_url: str, ca: Authority
) -> None:
    proc, address, environ = tls_server(
        pg_url, redis_url, ca.issue("mtls-server", server=True), DTQ_TLS_CLIENT_CA=ca.ca
    )
    client = ca.issue("worker-1", server=False)
    try:
        with grpc.secure_channel(address, tls.channel_credentials(ca.ca)) as channel:
            assert not serving(channel), "no client certificate: refused"
        creds = tls.channel_credentials(ca.ca, client.cert, client.key)
        with grpc.secure_channel(address, creds) as channel:
            assert serving(channel)
        base = {**environ, "DTQ_SERVER_ADDRESS": address, "DTQ_TLS_CA": ca.ca}
        worker = Proc(
            "worker",
            dtq_args("worker", "--metrics-port", "0"),
            {**base, "DTQ_TLS_CERT": client.cert, "DTQ_TLS_KEY": client.key},
        )
        try:
            wait_until(lambda: "worker_connected" in worker.output(), 30, "the mTLS worker")
        finally:
            worker.stop()
    finally:
        proc.stop()


def test_envoy_terminates_tls_and_speaks_tls_to_the_server(
    server: tuple[str, dict[str, str]], ca: Authority
) -> None:
    address, _ = server
    front = ca.issue("envoy", server=True)
    with running_envoy(
        address, backend_up=False, tls_cert=front.cert, tls_key=front.key, backend_ca=ca.ca
    ) as envoy:
        context = ssl.create_default_context(cafile=ca.ca)

        def submit() -> tuple[int, dict[str, object]]:
            conn = http.client.HTTPSConnection("127.0.0.1", envoy.port, context=context, timeout=10)
            try:
                body = json.dumps({"type": "noop", "queue": "tls-rest"})
                conn.request("POST", "/api/v1/tasks", body, {"Content-Type": "application/json"})
                reply = conn.getresponse()
                return reply.status, json.loads(reply.read() or b"{}")
            except OSError:
                return 0, {}
            finally:
                conn.close()

        wait_until(lambda: submit()[0] == 200, 30, "REST over TLS through Envoy")
        status, body = submit()
        assert status == 200 and body["task"]["queue"] == "tls-rest"  # type: ignore[index]
        plain = http.client.HTTPConnection("127.0.0.1", envoy.port, timeout=10)
        with pytest.raises((OSError, http.client.HTTPException)):
            plain.request("GET", "/api/v1/queues")
            plain.getresponse().read()
        plain.close()

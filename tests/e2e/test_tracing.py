"""One trace from the submitter through the queue to the worker and back.

The test is the submitting client: it traces with an in-memory exporter and
sends its `traceparent` as gRPC metadata. The real `dtq server` (and `dtq
worker`) processes export over OTLP to a tiny receiver in this process; a
worker runtime run in this process exports to the in-memory exporter.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable, Iterator

import grpc
import pytest
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode, format_span_id, format_trace_id

from dtq import tracing
from dtq.client import Client
from dtq.ops_http import HealthBoard
from dtq.v1 import task_pb2, task_service_pb2, task_service_pb2_grpc
from dtq.worker.app import App
from dtq.worker.execution import Executor
from dtq.worker.loader import load
from dtq.worker.runtime import Worker, WorkerConfig
from dtq.worker.thread_pool import ThreadPool
from tests.conftest import Server, WorkerFactory
from tests.support.otlp import Collector, ReceivedSpan, running_collector
from tests.support.procs import dtq_args
from tests.support.tasks import State, get, payload, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean")]

COMPLETED = State.Value("STATE_COMPLETED")
DEAD = State.Value("STATE_DEAD_LETTERED")
CLIENT, SERVER, CONSUMER = 3, 2, 5  # opentelemetry.proto Span.SpanKind
ERROR = 2  # opentelemetry.proto Status.StatusCode


@pytest.fixture(scope="module")
def collector_endpoint() -> Iterator[tuple[Collector, str]]:
    with running_collector() as found:
        yield found


@pytest.fixture(scope="module")
def collector(collector_endpoint: tuple[Collector, str]) -> Collector:
    return collector_endpoint[0]


@pytest.fixture(scope="module")
def server_env(collector_endpoint: tuple[Collector, str]) -> dict[str, str]:
    # The standard variables switch tracing on (in the server and, through
    # server.env, in the workers); export every 50 ms instead of 5 s.
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector_endpoint[1],
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }


@pytest.fixture(scope="module")
def tasks(channel: grpc.Channel) -> task_service_pb2_grpc.TaskServiceStub:
    return task_service_pb2_grpc.TaskServiceStub(channel)


@pytest.fixture
def memory() -> Iterator[InMemorySpanExporter]:
    """dtq's tracer in this process, exporting to memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    yield exporter
    tracing.use(None)
    provider.shutdown()


def submit_traced(
    tasks: task_service_pb2_grpc.TaskServiceStub, type_: str, queue: str, **body: object
) -> tuple[task_pb2.Task, trace.SpanContext]:
    """Submit as a traced client: a CLIENT span whose context goes as metadata."""
    tracer = tracing.tracer() or trace.get_tracer("test")
    with tracer.start_as_current_span("submit", kind=SpanKind.CLIENT) as span:
        metadata: dict[str, str] = {}
        propagate.inject(metadata)
        request = task_service_pb2.SubmitTaskRequest(
            type=type_, queue=queue, payload=payload(**body)
        )
        task = tasks.SubmitTask(request, metadata=tuple(metadata.items()), timeout=10).task
    return task, span.get_span_context()


def in_trace(ctx: trace.SpanContext, name: str, task_id: str) -> Callable[[ReceivedSpan], bool]:
    def match(s: ReceivedSpan) -> bool:
        return (
            s.trace_id == format_trace_id(ctx.trace_id)
            and s.name == name
            and s.attributes.get("dtq.task.id", task_id) == task_id
        )

    return match


def test_worker_process_span_has_the_submitters_trace_id(
    tasks: task_service_pb2_grpc.TaskServiceStub,
    collector: Collector,
    start_worker: WorkerFactory,
    memory: InMemorySpanExporter,
) -> None:
    task, client = submit_traced(tasks, "noop", "traced")
    assert task.trace_context["traceparent"].split("-")[1] == format_trace_id(client.trace_id)
    start_worker("--queue", "traced")
    assert wait_for(tasks, task.id).state == COMPLETED

    rpc = collector.wait_for(in_trace(client, "dtq.v1.TaskService/SubmitTask", task.id))
    run = collector.wait_for(in_trace(client, "run noop", task.id))
    wait = collector.wait_for(in_trace(client, "wait traced", task.id))
    outcome = collector.wait_for(in_trace(client, "outcome noop", task.id))
    # client -> server RPC -> (wait, run, outcome): one trace over three processes.
    assert (rpc.service, rpc.kind) == ("dtq-server", SERVER)
    assert rpc.parent_id == format_span_id(client.span_id)
    assert rpc.attributes["rpc.grpc.status_code"] == 0
    assert (run.service, run.kind) == ("dtq-worker", CONSUMER)
    assert run.parent_id == wait.parent_id == outcome.parent_id == rpc.span_id
    assert run.attributes["dtq.task.type"] == "noop"
    assert run.attributes["dtq.queue"] == "traced"
    assert run.attributes["dtq.task.attempt"] == 1
    assert outcome.service == "dtq-server"
    assert outcome.attributes["dtq.task.state"] == "completed"


def test_failed_attempts_are_error_spans(
    tasks: task_service_pb2_grpc.TaskServiceStub,
    collector: Collector,
    start_worker: WorkerFactory,
    memory: InMemorySpanExporter,
) -> None:
    task, client = submit_traced(tasks, "test_task", "traced", fail=True, permanent=True)
    start_worker("--queue", "traced")
    assert wait_for(tasks, task.id).state == DEAD
    run = collector.wait_for(in_trace(client, "run test_task", task.id))
    outcome = collector.wait_for(in_trace(client, "outcome test_task", task.id))
    assert run.status == ERROR
    assert run.attributes["dtq.task.outcome"] == "failed"
    assert (outcome.status, outcome.attributes["dtq.task.state"]) == (ERROR, "dead_lettered")


# Handlers see their execution span as the current span (their own spans nest in it).
seen_by_handlers: list[trace.SpanContext] = []
probes = App("probes")


@probes.task("probe_sync")
def probe_sync(payload: dict[str, object]) -> None:
    seen_by_handlers.append(trace.get_current_span().get_span_context())


@probes.task("probe_async")
async def probe_async(payload: dict[str, object]) -> None:
    seen_by_handlers.append(trace.get_current_span().get_span_context())


async def _run_worker(address: str, queue: str, until: Callable[[], bool]) -> None:
    """The worker runtime, in this process, until `until()` (at most 20 s)."""
    app = load(["dtq.examples"])
    app.merge(probes)
    executor = Executor(app, ThreadPool(2))
    worker = Worker(
        WorkerConfig(address, [queue], concurrency=2, shutdown_grace=1.0),
        executor,
        HealthBoard("worker"),
    )
    running = asyncio.create_task(worker.run())
    try:
        for _ in range(400):  # 20 s
            if until() or running.done():
                break
            await asyncio.sleep(0.05)
    finally:
        worker.stop()
        await asyncio.wait_for(running, 15)
        executor.close()


def run_spans(memory: InMemorySpanExporter, task_id: str) -> list[ReadableSpan]:
    return [
        s
        for s in memory.get_finished_spans()
        if s.kind == SpanKind.CONSUMER and (s.attributes or {}).get("dtq.task.id") == task_id
    ]


def test_in_process_worker_span_continues_the_submitters_trace(
    tasks: task_service_pb2_grpc.TaskServiceStub, server: Server, memory: InMemorySpanExporter
) -> None:
    ok, client = submit_traced(tasks, "noop", "inproc")
    bad, _ = submit_traced(tasks, "test_task", "inproc", fail=True, permanent=True)
    done = lambda: bool(run_spans(memory, ok.id) and run_spans(memory, bad.id))  # noqa: E731
    asyncio.run(_run_worker(server.address, "inproc", done))

    (run,) = run_spans(memory, ok.id)
    assert run.context.trace_id == client.trace_id
    assert run.parent is not None and run.parent.is_remote  # the server's SubmitTask span
    assert run.name == "run noop"
    assert run.attributes is not None
    assert (run.attributes["dtq.task.type"], run.attributes["dtq.queue"]) == ("noop", "inproc")
    assert run.attributes["dtq.task.attempt"] == 1
    (failed,) = run_spans(memory, bad.id)
    assert failed.status.status_code == StatusCode.ERROR
    assert [e.name for e in failed.events] == ["exception"]


def test_a_task_submitted_through_the_client_runs_in_the_callers_trace(
    server: Server, memory: InMemorySpanExporter
) -> None:
    app_tracer = TracerProvider().get_tracer("signup-app")  # the application's own tracing
    with Client(server.address) as client:
        with app_tracer.start_as_current_span("POST /signups") as span:
            handle = client.submit("noop", {}, queue="inproc")
        asyncio.run(
            _run_worker(server.address, "inproc", lambda: bool(run_spans(memory, handle.id)))
        )
    (run,) = run_spans(memory, handle.id)
    assert run.context.trace_id == span.get_span_context().trace_id
    assert run.parent is not None and run.parent.span_id == span.get_span_context().span_id


def test_an_explicit_trace_context_wins_and_is_kept(
    tasks: task_service_pb2_grpc.TaskServiceStub, server: Server, memory: InMemorySpanExporter
) -> None:
    # E.g. a client that cannot send metadata names the trace in the request.
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    request = task_service_pb2.SubmitTaskRequest(
        type="noop", queue="inproc", trace_context={"traceparent": parent}
    )
    task = tasks.SubmitTask(request, timeout=10).task
    assert dict(task.trace_context) == {"traceparent": parent}
    assert dict(get(tasks, task.id).trace_context) == {"traceparent": parent}
    asyncio.run(_run_worker(server.address, "inproc", lambda: bool(run_spans(memory, task.id))))
    (run,) = run_spans(memory, task.id)
    assert format_trace_id(run.context.trace_id) == "0af7651916cd43dd8448eb211c80319c"
    assert run.parent is not None and format_span_id(run.parent.span_id) == "b7ad6b7169203331"


def test_rpc_span_carries_the_grpc_code_and_client_errors_are_not_server_errors(
    tasks: task_service_pb2_grpc.TaskServiceStub,
    collector: Collector,
    memory: InMemorySpanExporter,
) -> None:
    tracer = tracing.tracer()
    assert tracer is not None
    with tracer.start_as_current_span("get", kind=SpanKind.CLIENT) as span:
        metadata: dict[str, str] = {}
        propagate.inject(metadata)
        missing = task_service_pb2.GetTaskRequest(id="0190c8a0-0000-7000-8000-000000000000")
        with pytest.raises(grpc.RpcError) as caught:
            tasks.GetTask(missing, metadata=tuple(metadata.items()), timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    ctx = span.get_span_context()
    rpc = collector.wait_for(
        lambda s: (
            s.trace_id == format_trace_id(ctx.trace_id) and s.name == "dtq.v1.TaskService/GetTask"
        )
    )
    assert rpc.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert rpc.status != ERROR  # the caller's mistake, not the server's


def test_handlers_run_inside_their_execution_span(
    tasks: task_service_pb2_grpc.TaskServiceStub, server: Server, memory: InMemorySpanExporter
) -> None:
    seen_by_handlers.clear()
    sync, _ = submit_traced(tasks, "probe_sync", "inproc")
    coro, _ = submit_traced(tasks, "probe_async", "inproc")
    done = lambda: bool(run_spans(memory, sync.id) and run_spans(memory, coro.id))  # noqa: E731
    asyncio.run(_run_worker(server.address, "inproc", done))
    runs = {s.context.span_id for s in run_spans(memory, sync.id) + run_spans(memory, coro.id)}
    assert {c.span_id for c in seen_by_handlers} == runs


def test_a_cli_command_is_one_trace_with_the_rpcs_it_makes(
    server: Server, collector: Collector, tasks: task_service_pb2_grpc.TaskServiceStub
) -> None:
    done = subprocess.run(
        dtq_args("task", "submit", "test_task", "{}", "--json", "--server", server.address),
        env=server.env,  # OTEL_EXPORTER_OTLP_ENDPOINT: the collector
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    task_id = json.loads(done.stdout)["task"]["id"]
    cli = collector.wait_for(lambda s: s.service == "dtq-cli" and s.name == "dtq task submit")
    assert cli.kind == CLIENT and cli.parent_id == ""
    rpc = collector.wait_for(
        lambda s: s.trace_id == cli.trace_id and s.name == "dtq.v1.TaskService/SubmitTask"
    )
    assert rpc.parent_id == cli.span_id
    # The task carries the command's trace on to the worker.
    stored = get(tasks, task_id).trace_context["traceparent"]
    assert stored.split("-")[1] == cli.trace_id


def test_handlers_in_the_process_pool_run_inside_their_execution_span(
    tasks: task_service_pb2_grpc.TaskServiceStub,
    collector: Collector,
    start_worker: WorkerFactory,
    memory: InMemorySpanExporter,
) -> None:
    task, client = submit_traced(tasks, "span_probe", "traced-pool")
    start_worker(
        "--queue", "traced-pool", "--pool", "process", "--module", "tests.support.traced_handlers"
    )
    assert wait_for(tasks, task.id).state == COMPLETED
    run = collector.wait_for(in_trace(client, "run span_probe", task.id))
    work = collector.wait_for(
        lambda s: s.name == "handler work" and s.trace_id == format_trace_id(client.trace_id)
    )
    assert work.parent_id == run.span_id
    assert work.service == "dtq-worker"

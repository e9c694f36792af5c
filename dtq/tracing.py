"""OpenTelemetry tracing: a span for each RPC, and one trace per task from its
submission to its outcome, across processes.

The trace context travels inside the task (`Task.trace_context`, W3C
`traceparent`/`tracestate`): the API server stores its SubmitTask span's
context (itself continuing the client's `traceparent` request header), the
worker starts its execution span (CONSUMER) under it, and the server records
the outcome under it too. The time in between is a `wait` span, so one trace
shows submit -> wait -> run -> outcome.

Off by default. `setup()` switches it on when the standard variables ask for
it: `OTEL_TRACES_EXPORTER=otlp` (or `console`), or an OTLP endpoint
(`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`).
`OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` keep it off.
Everything else is the SDK's own reading of `OTEL_*` (endpoint, headers,
sampler, resource attributes, batching); `OTEL_SERVICE_NAME` overrides the
default service name (dtq-server, dtq-worker, dtq-manager). These variables
belong to OpenTelemetry, so they are read here rather than in Settings.

When off, no RPC interceptor is installed (dtq/api/rpc_tracing.py), nothing
is added to tasks, and every helper returns at its first line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from dtq.domain.model import Task, TaskState
from dtq.version import __version__

log = logging.getLogger(__name__)
EXPORTERS = ("otlp", "console")


class _State:
    tracer: trace.Tracer | None = None  # None: tracing is off


_state = _State()


def tracer() -> trace.Tracer | None:
    """dtq's tracer; None when tracing is off."""
    return _state.tracer


# -- set-up --------------------------------------------------------------------


def exporters_wanted(environ: Mapping[str, str]) -> list[str]:
    """The span exporters the `OTEL_*` variables ask for; empty: tracing off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = [n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "").split(",")]
    names = [n for n in names if n]
    if names:
        unknown = sorted(set(names) - {*EXPORTERS, "none"})
        if unknown:
            log.warning("tracing_exporter_unknown", extra={"exporters": unknown})
        return [n for n in EXPORTERS if n in names and "none" not in names]
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    return ["otlp"] if endpoint else []


def setup(service: str, environ: Mapping[str, str] | None = None) -> bool:
    """Switch tracing on in this process if the `OTEL_*` variables ask for it.
    Called once by each process entry point; later calls change nothing."""
    if _state.tracer is not None:
        return True
    env = os.environ if environ is None else environ
    wanted = exporters_wanted(env)
    if not wanted:
        return False
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=_resource(service))  # sampler: OTEL_TRACES_SAMPLER
    for name in wanted:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name, env)))
    trace.set_tracer_provider(provider)  # also for handlers' own spans
    use(provider)
    log.info("tracing_enabled", extra={"service": service, "exporters": wanted})
    return True


def flush(timeout_millis: int = 2000) -> None:
    """Export the spans still buffered (a short-lived process, before it exits)."""
    provider: Any = trace.get_tracer_provider()
    if hasattr(provider, "force_flush"):
        provider.force_flush(timeout_millis=timeout_millis)


def use(provider: trace.TracerProvider | None) -> None:
    """Trace with `provider` (None: off). Tests pass one with an in-memory exporter."""
    _state.tracer = None if provider is None else provider.get_tracer("dtq", __version__)


def _resource(service: str) -> Any:
    from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource

    # Reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; ours fill the gaps.
    detected = Resource.create({SERVICE_VERSION: __version__})
    if str(detected.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        return detected.merge(Resource({SERVICE_NAME: service}))
    return detected


def _exporter(name: str, environ: Mapping[str, str]) -> Any:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"
    )
    if protocol != "grpc":
        raise SystemExit(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: dtq exports traces over OTLP/gRPC "
            "only (protocol grpc, port 4317)"
        )
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()  # endpoint, headers, TLS: OTEL_EXPORTER_OTLP_*


def carrier() -> dict[str, str] | None:
    """Propagation fields of the current span, to store in a task; None when
    tracing is off or there is no span."""
    if _state.tracer is None:
        return None
    fields: dict[str, str] = {}
    propagate.inject(fields)
    return fields or None


# -- tasks -----------------------------------------------------------------------


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def now_ns() -> int:
    return time.time_ns()


def _task_attributes(task_id: str, type_: str, queue: str, attempt: int) -> dict[str, Any]:
    return {
        "dtq.task.id": task_id,
        "dtq.task.type": type_,
        "dtq.queue": queue,
        "dtq.task.attempt": attempt,
        "messaging.system": "dtq",
        "messaging.destination.name": queue,
        "messaging.message.id": task_id,
    }


@contextlib.contextmanager
def task_run(
    trace_context: Mapping[str, str],
    task_id: str,
    type_: str,
    queue: str,
    attempt: int,
    waited: tuple[float, float] | None = None,
) -> Iterator[Span | None]:
    """The worker's execution span (CONSUMER), a child of the submission's
    context and current while the handler runs; after a `wait` span covering
    `waited` (ready at, started at; server clock). Yields None when off."""
    tracer = _state.tracer
    if tracer is None:
        yield None
        return
    parent = propagate.extract(trace_context) if trace_context else None
    attrs = _task_attributes(task_id, type_, queue, attempt)
    if waited and waited[1] >= waited[0] > 0:
        wait = tracer.start_span(
            f"wait {queue}", parent, attributes=attrs, start_time=_ns(waited[0])
        )
        wait.end(end_time=_ns(waited[1]))
    span = tracer.start_span(
        f"run {type_}", parent, SpanKind.CONSUMER, {**attrs, "messaging.operation.type": "process"}
    )
    with trace.use_span(span, end_on_exit=True, record_exception=False):
        try:
            yield span
        except BaseException:
            span.set_attribute("dtq.task.abandoned", True)  # cancelled, lease lost, shutdown
            raise


def run_failed(span: Span | None, error: BaseException, kind: str) -> None:
    """Mark an execution span failed (the handler raised or timed out)."""
    if span is None:
        return
    span.record_exception(error)
    span.set_attribute("dtq.task.outcome", kind)
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:256]))


def outcomes_recorded(tasks: Iterable[Task], start_ns: int) -> None:
    """On the server: one span per recorded outcome (or expired lease), in the
    task's trace, from `start_ns` to now."""
    tracer = _state.tracer
    if tracer is None:
        return
    for task in tasks:
        if not task.trace_context:
            continue
        attrs = _task_attributes(str(task.id), task.type, task.queue, task.attempts)
        attrs["dtq.task.state"] = task.state.value
        span = tracer.start_span(
            f"outcome {task.type}",
            propagate.extract(task.trace_context),
            attributes=attrs,
            start_time=start_ns,
        )
        if task.state != TaskState.COMPLETED and task.error is not None:
            span.set_attribute("dtq.error.type", task.error.type)
            if task.state == TaskState.DEAD_LETTERED:
                span.set_status(Status(StatusCode.ERROR, task.error.type or "dead-lettered"))
        span.end()

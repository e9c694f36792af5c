"""Which OTEL_* settings switch tracing on (dtq/tracing.py); off costs nothing."""

from __future__ import annotations

import pytest

from dtq import tracing
from dtq.api.rpc_tracing import server_interceptors


@pytest.mark.parametrize(
    ("environ", "wanted"),
    [
        ({}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4317"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://jaeger:4317"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "console,otlp"}, ["otlp", "console"]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://j:4317"}, []),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, []),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, []),
    ],
)
def test_exporters_wanted(environ: dict[str, str], wanted: list[str]) -> None:
    assert tracing.exporters_wanted(environ) == wanted


def test_setup_without_otel_variables_leaves_tracing_off() -> None:
    assert tracing.setup("dtq-server", {}) is False
    assert tracing.tracer() is None
    assert server_interceptors() == []
    assert tracing.carrier() is None
    with tracing.task_run({"traceparent": "x"}, "id", "t", "q", 1) as span:
        assert span is None


def test_service_name_default_and_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    assert tracing._resource("dtq-worker").attributes["service.name"] == "dtq-worker"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "billing-worker")
    assert tracing._resource("dtq-worker").attributes["service.name"] == "billing-worker"
    monkeypatch.delenv("OTEL_SERVICE_NAME")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attributes")
    assert tracing._resource("dtq-worker").attributes["service.name"] == "from-attributes"

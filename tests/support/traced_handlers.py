"""A handler that makes a span of its own (tests/e2e/test_tracing.py): run in
`--pool process`, the span must nest under the worker's run span."""

from __future__ import annotations

from opentelemetry import trace

from dtq.worker.app import App

app = App("traced")


@app.task("span_probe")
def span_probe(payload: dict[str, object]) -> dict[str, bool]:
    with trace.get_tracer("probe").start_as_current_span("handler work"):
        return {"ok": True}

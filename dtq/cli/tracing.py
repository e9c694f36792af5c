"""A CLI command as one trace: a CLIENT span for the command, whose
`traceparent` goes with every call it makes, so the server's spans (and the
task's, for a submit) join it. Off unless the `OTEL_*` variables ask for it,
as in every dtq process; spans are flushed before the command exits."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from opentelemetry import propagate
from opentelemetry.trace import SpanKind

from dtq import tracing

Next = Callable[..., Any]


def command_name(argv: list[str]) -> str:
    """`dtq task submit` from argv: the words before the first option or argument
    that is not a subcommand (at most two)."""
    words = []
    for word in argv[1:3]:
        if word.startswith("-") or "/" in word or "." in word:
            break
        words.append(word)
    return " ".join(["dtq", *words])


@contextlib.contextmanager
def command_span() -> Iterator[None]:
    """The command's span, current while the command runs (when tracing is on)."""
    if not tracing.setup("dtq-cli"):
        yield
        return
    tracer = tracing.tracer()
    assert tracer is not None
    try:
        with tracer.start_as_current_span(command_name(sys.argv), kind=SpanKind.CLIENT):
            yield
    finally:
        tracing.flush()


def interceptors() -> list[grpc.UnaryUnaryClientInterceptor]:
    """For the command's client: send the current span with each call (tracing on)."""
    return [_Propagate()] if tracing.tracer() is not None else []


class _Propagate(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds the current span's `traceparent` (and `tracestate`) to each call."""

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return continuation(_with_context(details), request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return continuation(_with_context(details), request)


def _with_context(details: Any) -> Any:
    fields: dict[str, str] = {}
    propagate.inject(fields)
    metadata = [*(details.metadata or ()), *fields.items()]
    return details._replace(metadata=metadata)

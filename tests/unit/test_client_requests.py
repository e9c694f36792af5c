"""Requests built by the client: JSON checks before any call, options, defaults."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import format_span_id, format_trace_id

from dtq.client import Client, Submission
from dtq.client.requests import batch_requests, list_request, submit_request
from dtq.v1 import task_pb2


def test_defaults_leave_the_server_to_decide_but_add_an_idempotency_key() -> None:
    r = submit_request(Submission("noop"))
    assert (r.type, r.queue, r.priority) == ("noop", "", 0)
    assert not r.HasField("max_retries") and not r.HasField("timeout")
    assert not r.HasField("scheduled_at") and not r.HasField("lease_duration")
    uuid.UUID(r.idempotency_key)
    assert submit_request(Submission("noop")).idempotency_key != r.idempotency_key


def test_options_map_to_fields() -> None:
    r = submit_request(
        Submission(
            "send_email",
            {"to": ["a", "b"], "n": 2, "nested": {"ok": True, "none": None}},
            queue="mail",
            priority="high",
            max_retries=0,
            timeout=timedelta(minutes=2),
            lease_duration=12.5,
            idempotency_key="k1",
        )
    )
    assert (r.queue, r.priority, r.max_retries) == ("mail", task_pb2.PRIORITY_HIGH, 0)
    assert r.HasField("max_retries")
    assert (r.timeout.seconds, r.lease_duration.seconds, r.lease_duration.nanos) == (120, 12, 5e8)
    assert r.payload["to"][1] == "b" and r.payload["nested"]["ok"] is True
    assert r.idempotency_key == "k1"


def test_delay_and_at_schedule_the_task() -> None:
    soon = submit_request(Submission("noop", delay=60)).scheduled_at.ToDatetime(tzinfo=UTC)
    assert abs((soon - datetime.now(UTC)).total_seconds() - 60) < 5
    at = datetime(2030, 1, 1, tzinfo=UTC)
    assert submit_request(Submission("noop", at=at)).scheduled_at.ToDatetime(tzinfo=UTC) == at
    with pytest.raises(ValueError, match="not both"):
        submit_request(Submission("noop", delay=1, at=at))
    with pytest.raises(ValueError, match="timezone"):
        submit_request(Submission("noop", at=datetime(2030, 1, 1)))
    with pytest.raises(ValueError):
        submit_request(Submission("noop", delay=-1))


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({"when": datetime.now()}, TypeError),
        ({"blob": b"x"}, TypeError),
        ({1: "int key"}, TypeError),
        ({"s": {1, 2}}, TypeError),
        ({"x": math.nan}, ValueError),
        ({"x": [math.inf]}, ValueError),
        ({"big": 2**60}, ValueError),
        (["not", "an", "object"], TypeError),
    ],
)
def test_payload_must_be_plain_json(payload: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        submit_request(Submission("noop", payload))  # type: ignore[arg-type]


def test_bad_input_fails_before_any_network_call() -> None:
    # Nothing listens on port 9: a call would retry, then raise Unavailable.
    with Client("127.0.0.1:9") as client:
        with pytest.raises(TypeError):
            client.submit("noop", {"x": object()})
        with pytest.raises(ValueError):
            client.submit("noop", {}, priority="urgent")  # type: ignore[typeddict-item]
        with pytest.raises(ValueError):
            client.submit_many([Submission("noop")] * 1001)


def test_batch_checks_every_item() -> None:
    with pytest.raises(TypeError):
        batch_requests([Submission("noop"), Submission("noop", {"x": object()})])
    keys = {r.idempotency_key for r in batch_requests([Submission("noop")] * 3)}
    assert len(keys) == 3


def test_list_request() -> None:
    r = list_request("running", "noop", "q", 7, True, "tok")
    assert (r.state, r.type, r.queue, r.page_size, r.page_token) == (
        task_pb2.Task.STATE_RUNNING,
        "noop",
        "q",
        7,
        "tok",
    )
    assert r.view == task_pb2.TASK_VIEW_FULL
    assert list_request(None, None, None, 5, False, "").state == 0
    with pytest.raises(ValueError):
        list_request("sleeping", None, None, 5, False, "")


def test_addresses_from_settings_and_balancing() -> None:
    from dtq.settings import Settings

    client = Client.from_settings(Settings(server_address="a:1, b:2"), balance="pick_first")
    assert client.config.addresses == ("a:1", "b:2")
    endpoints = client._endpoints
    assert endpoints.opened() == []  # channels open on first use
    first = endpoints.pick()
    assert endpoints.pick() is first  # pick_first sticks...
    endpoints.failed(first)
    assert endpoints.pick() is not first  # ...until that server fails
    client.close()
    spread = Client(["a:1", "b:2", "c:3"])
    assert len({id(spread._endpoints.pick()) for _ in range(3)}) == 3  # round robin
    spread.close()
    with pytest.raises(ValueError):
        Client(" , ")


def test_the_callers_span_goes_with_each_submission() -> None:
    assert not submit_request(Submission("t", {})).trace_context, "no span: nothing sent"
    provider = TracerProvider()
    with provider.get_tracer("app").start_as_current_span("signup") as span:
        inside = submit_request(Submission("t", {}))
        batch = batch_requests([Submission("t", {}), Submission("u", {})])
    trace_id = format_trace_id(span.get_span_context().trace_id)
    span_id = format_span_id(span.get_span_context().span_id)
    for request in [inside, *batch]:
        assert request.trace_context["traceparent"].startswith(f"00-{trace_id}-{span_id}-")
    provider.shutdown()

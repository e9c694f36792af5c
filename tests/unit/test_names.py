"""Names are matched whole: `default\n` is not the queue `default` (issue 10).

Every name rule (task type, queue, worker id, trace-context key, lease token,
label key) refuses a trailing newline, padding and control characters, naming
the field; free text a worker reports (hostname, version, label values) refuses
control characters and padding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from dtq.domain import validation
from dtq.domain.errors import Code, DtqError
from dtq.domain.ids import lease_ref
from dtq.domain.model import WorkerInfo

TOKEN = "0123456789abcdef0123456789abcdef"
TASK_ID = "0190a8e2-1c3b-7a4e-8f00-0123456789ab"
BAD = ["{}\n", "{}\r\n", " {}", "{} ", "{}\t", "\n{}", "{}\x00", "{}\x1b[2J", "{}\x85"]

RULES: dict[str, tuple[str, str, Callable[[str], object]]] = {
    # name: (a good value, the field named, check)
    "type": ("email.send", "type", validation.task_type),
    "queue": ("default", "queue", validation.queue_name),
    "worker_id": ("host-1:1234", "worker_id", validation.worker_id),
    "trace_key": ("traceparent", "trace_context", lambda k: validation.trace_context({k: "v"})),
    "lease_token": (TOKEN, "lease_token", lambda t: lease_ref(TASK_ID, t)),
    "label_key": ("zone", "labels", lambda k: validation.labels({k: "v"})),
}


def refused(check: Callable[[str], object], value: str) -> DtqError:
    with pytest.raises(DtqError) as caught:
        check(value)
    assert caught.value.code == Code.INVALID_ARGUMENT
    return caught.value


@pytest.mark.parametrize("rule", sorted(RULES))
def test_a_good_name_is_accepted(rule: str) -> None:
    good, _, check = RULES[rule]
    check(good)


@pytest.mark.parametrize("template", BAD, ids=repr)
@pytest.mark.parametrize("rule", sorted(RULES))
def test_a_padded_or_controlled_name_is_refused_naming_the_field(rule: str, template: str) -> None:
    good, field, check = RULES[rule]
    error = refused(check, template.format(good))
    assert [v.field for v in error.violations] == [field]


def test_default_with_a_newline_is_not_a_queue() -> None:
    assert validation.queue_name("default") == "default"
    refused(validation.queue_name, "default\n")


WORKER = WorkerInfo(
    id="w1",
    hostname="host-1",
    pid=1,
    queues=("default",),
    task_types=("t",),
    concurrency=1,
    version="1.2.3",
    labels={"zone": "eu-west-1a", "k8s.io/pod": "api-7f"},
    registered_at=0.0,
    last_seen_at=0.0,
)


def test_worker_details_accepted() -> None:
    validation.worker_details(WORKER)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"hostname": "host\n"}, "hostname"),
        ({"hostname": "host\x1b[31m"}, "hostname"),
        ({"hostname": "h" * 257}, "hostname"),
        ({"version": " 1.2"}, "version"),
        ({"labels": {"zone": "eu\n"}}, "labels[zone]"),
        ({"labels": {"zone\n": "eu"}}, "labels"),
        ({"labels": {f"k{i}": "v" for i in range(33)}}, "labels"),
    ],
)
def test_worker_details_refused(change: dict[str, object], field: str) -> None:
    error = refused(lambda _: validation.worker_details(replace(WORKER, **change)), "")  # type: ignore[arg-type]
    assert [v.field for v in error.violations] == [field]

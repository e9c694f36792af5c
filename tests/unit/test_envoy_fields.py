"""The field lists of the Lua filter that refuses unknown REST body fields."""

from __future__ import annotations

from dtq.envoy import SERVICES, default_descriptor
from dtq.envoy_fields import lua_filter, schemas


def descriptor() -> bytes:
    with open(default_descriptor(), "rb") as file:
        return file.read()


def test_every_post_with_a_body_is_listed_with_its_request() -> None:
    routes, _ = schemas(descriptor(), SERVICES)
    assert ("POST", "^/api/v1/tasks$", ".dtq.v1.SubmitTaskRequest") in routes
    assert ("POST", "^/api/v1/tasks/[^/]+%:fail$", ".dtq.v1.FailTaskRequest") in routes
    assert ("POST", "^/api/v1/schedules$", ".dtq.v1.Schedule") in routes  # body: "schedule"
    assert ("PATCH", "^/api/v1/schedules/[^/]+$", ".dtq.v1.Schedule") in routes
    children = ("POST", "^/api/v1/tasks/[^/]+%:submitChildren$", ".dtq.v1.SubmitChildTasksRequest")
    assert children in routes
    assert len(routes) == 22


def test_fields_in_both_spellings_nested_messages_and_free_form_ones() -> None:
    _, found = schemas(descriptor(), SERVICES)
    submit = found[".dtq.v1.SubmitTaskRequest"]
    assert submit["scheduled_at"] is True and submit["scheduledAt"] is True
    assert submit["payload"] is True  # a Struct: any keys
    assert submit["trace_context"] is True  # a map: any keys
    assert "schedule_at" not in submit
    assert found[".dtq.v1.BatchSubmitTasksRequest"]["requests"] == ".dtq.v1.SubmitTaskRequest"
    assert found[".dtq.v1.FailTaskRequest"]["error"] == ".dtq.v1.TaskError"
    assert set(found[".dtq.v1.TaskError"]) == {"message", "type", "traceback", "permanent"}


def test_the_filter_source_names_every_route() -> None:
    source = lua_filter(descriptor(), SERVICES)
    assert source.count('", "^/api/v1/') == 22
    assert "function envoy_on_request" in source

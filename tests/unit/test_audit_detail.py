"""What the audit log keeps of a request: its target and its fields, even
fields JSON cannot hold (found by tests/security on CreateTenant)."""

from __future__ import annotations

from dtq.api import audit
from dtq.v1 import admin_service_pb2 as pb


def test_a_tenant_is_the_target_of_its_creation() -> None:
    request = pb.CreateTenantRequest()
    request.tenant.name = "acme"
    assert audit.target(request) == "acme"
    assert audit.target(pb.PauseQueueRequest(queue="emails")) == "emails"


def test_a_timestamp_json_cannot_hold_is_kept_as_text() -> None:
    request = pb.CreateTenantRequest()
    request.tenant.name = "acme"
    request.tenant.created_at.seconds = -62135596801  # before year 1
    kept = audit.detail(request, None)["request"]
    assert "acme" in kept["text"] and "-62135596801" in kept["text"]

"""Tenants in the domain: the names below the API, the operator scope, and who
may pick which tenant for a call."""

from __future__ import annotations

import pytest

from dtq.adapters import redis_keys as keys
from dtq.domain import tenants
from dtq.domain.auth import ANONYMOUS, Principal, Role, denied, permits
from dtq.domain.errors import Code, DtqError
from dtq.domain.model import Priority


@pytest.mark.parametrize(("tenant", "queue"), [("default", "emails"), ("acme", "emails")])
def test_a_tenants_queue_name_round_trips(tenant: str, queue: str) -> None:
    assert tenants.split_tenant_queue(tenants.tenant_queue(tenant, queue)) == (tenant, queue)


def test_the_default_tenant_keeps_its_keys_and_others_share_one_hash_tag() -> None:
    assert keys.ready(keys.queue_tag("default", "emails"), "t", Priority.HIGH) == (
        "dtq:{emails}:ready:t:h"
    )
    tag = keys.queue_tag("acme", "emails")
    built = [keys.ready(tag, "t", Priority.LOW), keys.leases(tag), keys.paused(tag)]
    assert {k[k.index("{") : k.index("}") + 1] for k in built} == {"{acme/emails}"}
    assert keys.worker("acme", "w1") != keys.worker("globex", "w1")


@pytest.mark.parametrize("name", ["", "Acme", "a/b", "a b", "*", "-x", "x" * 64])
def test_bad_tenant_names_are_refused(name: str) -> None:
    with pytest.raises(DtqError) as caught:
        tenants.tenant_name(name)
    assert caught.value.code == Code.INVALID_ARGUMENT


def test_star_is_a_name_only_where_a_scope_is_allowed() -> None:
    assert tenants.tenant_name("*", scope=True) == "*"
    assert tenants.tenant_name("acme-2_b") == "acme-2_b"


def test_anonymous_is_the_operator_scope_acting_in_default() -> None:
    assert ANONYMOUS.every_tenant and ANONYMOUS.home == "default" and ANONYMOUS.view is None
    assert ANONYMOUS.sees("acme") and ANONYMOUS.sees("default")


def test_the_operator_scope_picks_one_tenant_for_a_call() -> None:
    picked = ANONYMOUS.acting_in("acme")
    assert (picked.tenant, picked.home, picked.view) == ("acme", "acme", "acme")
    assert not picked.sees("globex")
    assert ANONYMOUS.acting_in(None) is ANONYMOUS


def test_another_caller_may_name_only_its_own_tenant() -> None:
    acme = Principal("key:1", Role.PRODUCER, tenant="acme")
    assert acme.acting_in("acme") is acme and acme.view == "acme"
    with pytest.raises(DtqError) as caught:
        acme.acting_in("globex")
    refusal = (caught.value.code, caught.value.reason)
    assert refusal == (Code.PERMISSION_DENIED, "TENANT_NOT_ALLOWED")


def test_tenants_are_created_and_listed_by_the_operator_scope_only() -> None:
    admin_of_acme = Principal("key:2", Role.ADMIN, tenant="acme")
    operator = Principal("key:3", Role.ADMIN, tenant="*")
    for method in ("AdminService/CreateTenant", "AdminService/ListTenants"):
        assert permits(operator, method) and not permits(admin_of_acme, method)
        assert denied(admin_of_acme, method).reason == "OPERATOR_ONLY"
        producer = Principal("key:4", Role.PRODUCER, tenant="*")
        assert not permits(producer, method)
        assert denied(producer, method).reason == "ROLE_NOT_ALLOWED"

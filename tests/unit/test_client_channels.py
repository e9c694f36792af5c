"""How the client's credential and TLS arguments become a channel config."""

from __future__ import annotations

import grpc
import pytest

from dtq.client import Client
from dtq.client.channels import from_settings, transport
from dtq.settings import Settings


def test_from_settings_reads_the_key_and_tls_files_and_arguments_win() -> None:
    settings = Settings(api_key="dtq_k", tls_ca="ca.pem", tls_cert="me.pem", tls_key="me.key")
    assert from_settings(settings, {}) == {
        "api_key": "dtq_k",
        "tls_ca": "ca.pem",
        "tls_cert": "me.pem",
        "tls_key": "me.key",
    }
    assert from_settings(settings, {"api_key": "other"})["api_key"] == "other"
    assert from_settings(Settings(), {}) == {
        "api_key": None,
        "tls_ca": None,
        "tls_cert": None,
        "tls_key": None,
    }


def test_from_settings_reads_the_tenant_an_operator_acts_in() -> None:
    assert from_settings(Settings(tenant="acme"), {})["tenant"] == "acme"
    assert from_settings(Settings(tenant="acme"), {"tenant": "globex"})["tenant"] == "globex"


def test_explicit_credentials_replace_the_tls_settings() -> None:
    credentials = grpc.ssl_channel_credentials()
    found = from_settings(Settings(tls_ca="ca.pem"), {"credentials": credentials})
    assert found == {"api_key": None, "credentials": credentials}


def test_tls_arguments_that_do_not_go_together_are_refused_before_any_call() -> None:
    with pytest.raises(ValueError, match="go together"):
        transport(None, "ca.pem", "me.pem", None)
    with pytest.raises(ValueError, match="need tls_ca"):
        transport(None, None, "me.pem", "me.key")
    with pytest.raises(ValueError, match="not both"):
        transport(grpc.ssl_channel_credentials(), "ca.pem")
    with pytest.raises(ValueError, match="cannot read"):
        Client("127.0.0.1:1", tls_ca="/nonexistent/ca.pem")
    assert transport(None, None) is None


def test_the_key_stays_out_of_the_config_repr() -> None:
    config = Client("127.0.0.1:1", api_key="dtq_secret").config
    assert config.api_key == "dtq_secret" and "dtq_secret" not in repr(config)

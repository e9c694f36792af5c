"""The console against a server with DTQ_AUTH=on: a login form asks for an API
key, a wrong key is refused with the API's message, a good one is kept for the
browser tab and sent as `Authorization: Bearer`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import Server
from tests.support.apikeys import new_key
from tests.support.envoy import Envoy, running_envoy

pytestmark = [pytest.mark.e2e, pytest.mark.console]


@pytest.fixture(scope="module")
def server_env() -> dict[str, str]:
    return {"DTQ_AUTH": "on"}


@pytest.fixture(scope="module")
def envoy(server: Server) -> Iterator[Envoy]:
    """Without a key even /api/v1/health is refused: wait for Envoy alone."""
    with running_envoy(server.address, backend_up=False) as running:
        yield running


def test_login_with_an_api_key(page: Page, server: Server, envoy: Envoy) -> None:
    key = new_key(server.env, "admin")["key"]
    ui = f"http://127.0.0.1:{envoy.port}/ui/#/workers"
    page.goto(ui)
    expect(page.locator("main h1")).to_have_text("Log in")
    page.fill("#api-key", "dtq_not_a_key")
    page.keyboard.press("Enter")
    expect(page.locator("main h1")).to_have_text("Log in")
    expect(page.locator("#error")).not_to_be_empty()
    page.fill("#api-key", key)
    page.keyboard.press("Enter")
    expect(page.locator("main h1")).to_have_text("Workers")
    assert page.evaluate("sessionStorage.getItem('dtq.apiKey')") == key
    page.locator("#logout").click()
    expect(page.locator("main h1")).to_have_text("Log in")

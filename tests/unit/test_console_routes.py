"""The web console's Envoy routes (dtq.envoy_console) and `dtq console`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dtq.cli.main import app
from dtq.envoy import render
from dtq.envoy_console import MAX_BODY_BYTES, largest_body, routes, static_files


def test_every_static_file_has_a_route_with_its_type_and_the_policy() -> None:
    found = {r["match"]["path"]: r for r in routes("")}
    assert set(static_files()) >= {"index.html", "app.js", "api.js", "console.css"}
    for name in static_files():
        assert f"/ui/{name}" in found
    assert found["/ui"]["redirect"] == {"path_redirect": "/ui/"}
    index = found["/ui/"]
    assert index["direct_response"]["body"]["inline_string"] == static_files()["index.html"]
    headers = {h["header"]["key"]: h["header"]["value"] for h in index["response_headers_to_add"]}
    assert headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in headers["content-security-policy"]
    js = found["/ui/app.js"]["response_headers_to_add"][0]["header"]
    assert js == {"key": "content-type", "value": "text/javascript; charset=utf-8"}
    assert largest_body("") < MAX_BODY_BYTES


def test_config_json_carries_the_trace_url_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DTQ_CONSOLE_TRACE_URL", "http://jaeger:16686/trace/{trace_id}")
    config = yaml.safe_load(render(["127.0.0.1:50051"]))
    route_config = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"
    ]["route_config"]
    assert route_config["max_direct_response_body_size_bytes"] == MAX_BODY_BYTES
    by_path = {r["match"].get("path"): r for r in route_config["virtual_hosts"][0]["routes"]}
    body = by_path["/ui/config.json"]["direct_response"]["body"]["inline_string"]
    assert json.loads(body) == {"trace_url": "http://jaeger:16686/trace/{trace_id}"}


def test_dtq_console_prints_the_dev_url_or_the_default(tmp_path: Path) -> None:
    runner = CliRunner()
    plain = runner.invoke(app, ["console", "--data-dir", str(tmp_path)])
    assert plain.exit_code == 0 and plain.output == "http://127.0.0.1:8080/ui/\n"
    (tmp_path / "endpoints.json").write_text(json.dumps({"console": "http://127.0.0.1:1/ui/"}))
    dev = runner.invoke(app, ["console", "--data-dir", str(tmp_path)])
    assert dev.output == "http://127.0.0.1:1/ui/\n"

"""The web console's routes: Envoy answers `/ui/...` itself (`direct_response`).

Every file under `dtq/console/static/` becomes one exact-path route whose body
is the file's text, with its content type and a Content-Security-Policy that
allows only this origin (no inline script or style, no other hosts). `/ui/`
is `index.html`; `/ui/config.json` carries the console's settings (the trace
link from `DTQ_CONSOLE_TRACE_URL`). No build step: plain HTML, ES modules, CSS.
"""

from __future__ import annotations

import importlib.resources
import json
import os
from importlib.resources.abc import Traversable
from typing import Any

PREFIX = "/ui/"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# Envoy refuses a direct_response body over this (its default is 4 KiB).
MAX_BODY_BYTES = 1024 * 1024


def static_files() -> dict[str, str]:
    """File name -> text of every console file, in name order."""
    folder: Traversable = importlib.resources.files("dtq") / "console" / "static"
    found = {
        entry.name: entry.read_text(encoding="utf-8")
        for entry in folder.iterdir()
        if entry.is_file() and os.path.splitext(entry.name)[1] in CONTENT_TYPES
    }
    return dict(sorted(found.items()))


def config_json(trace_url: str) -> str:
    """The body of `/ui/config.json`."""
    return json.dumps({"trace_url": trace_url}, sort_keys=True)


def _headers(content_type: str) -> list[dict[str, Any]]:
    values = {
        "content-type": content_type,
        "content-security-policy": CSP,
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
        "cache-control": "no-cache",
    }
    return [
        {"header": {"key": key, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
        for key, value in values.items()
    ]


# The REST filters leave these routes alone (the transcoder would refuse any
# path that names no RPC).
FILTERS = ("envoy.filters.http.lua", "envoy.filters.http.grpc_json_transcoder")


def _skip_filters() -> dict[str, Any]:
    off = {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": True}
    return {"typed_per_filter_config": {name: off for name in FILTERS}}


def _route(path: str, name: str, body: str) -> dict[str, Any]:
    content_type = CONTENT_TYPES[os.path.splitext(name)[1]]
    return {
        "match": {"path": path},
        "direct_response": {"status": 200, "body": {"inline_string": body}},
        "response_headers_to_add": _headers(content_type),
        **_skip_filters(),
    }


def routes(trace_url: str) -> list[dict[str, Any]]:
    """`/ui` (a redirect), `/ui/` (index.html), one route per file, config.json."""
    files = static_files()
    found = [_route(PREFIX + name, name, body) for name, body in files.items()]
    return [
        {
            "match": {"path": PREFIX.rstrip("/")},
            "redirect": {"path_redirect": PREFIX},
            **_skip_filters(),
        },
        _route(PREFIX, "index.html", files["index.html"]),
        *found,
        _route(PREFIX + "config.json", "config.json", config_json(trace_url)),
    ]


def largest_body(trace_url: str) -> int:
    """Bytes of the largest body, for Envoy's `max_direct_response_body_size_bytes`."""
    bodies = [*static_files().values(), config_json(trace_url)]
    return max(len(body.encode()) for body in bodies)

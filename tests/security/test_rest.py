"""The same generated requests through Envoy's REST routes (taken from each
RPC's google.api.http option), plus bodies no JSON parser should accept:
invalid UTF-8, NUL bytes, truncated and deeply nested JSON."""

from __future__ import annotations

import http.client
import json
import re
from urllib.parse import quote, urlencode

import pytest
from google.api import annotations_pb2
from google.protobuf import json_format
from hypothesis import given
from hypothesis import strategies as st

from tests.security import checks, strategies, tally
from tests.security.checks import FUZZ, Rpc
from tests.support.envoy import Envoy

pytestmark = [pytest.mark.e2e, pytest.mark.security]

ROUTES = []
for _rpc in checks.rpcs():
    _rule = _rpc.method.GetOptions().Extensions[annotations_pb2.http]
    _kind = _rule.WhichOneof("pattern")
    if _kind:
        ROUTES.append((_rpc, _kind.upper(), getattr(_rule, _kind), _rule.body))

TIMES = [
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999999Z",
    "10000-01-01T00:00:00Z",
    "-1",
    "1970-01-01T00:00:00+25:00",
]
DURATIONS = ["315576000000s", "-315576000000s", "99999999999999s", "-1s", "1e400s", "abc"]
BAD_BODIES = [
    b"\xff\xfe\xfd",
    b'{"type": "\xc3\x28", "queue": "\xed\xa0\x80"}',
    b'{"type": "a\\u0000b"}',
    b'{"type": "noop", "payload": ' + b'{"a": ' * 200 + b"1" + b"}" * 201,
    b'{"type": "noop", "payload": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    b'{"type": ',
    b"null",
    b"[]",
    b'{"scheduled_at": "0001-01-01T00:00:00Z", "type": "noop"}',
    b'{"scheduled_at": "9999-12-31T23:59:59Z", "type": "noop"}',
    b'{"timeout": "-5s", "type": "noop"}',
    b'{"lease_duration": "315576000000s", "result": {"x": 1}}',
    b'{"priority": 99999999999999999999}',
]


def call(envoy: Envoy, rpc: str, method: str, path: str, body: bytes | None) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", envoy.port, timeout=30)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        status, data = response.status, response.read()
    finally:
        conn.close()
    tally.seen(f"REST {rpc}", f"HTTP {status}")
    assert status < 500 or status == 503, f"{method} {path}: {status} {data[:300]!r}"
    checks.no_leak(rpc, data)


def fill(template: str, value: str) -> str:
    return re.sub(r"\{[^}]+\}", quote(value, safe=""), template)


@st.composite
def bodies(draw: st.DrawFn, rpc: Rpc) -> bytes:
    message = draw(strategies.messages(rpc.request))
    try:
        fields = json_format.MessageToDict(message, preserving_proto_field_name=True)
    except (ValueError, TypeError, json_format.Error):
        fields = {}  # out-of-range times have no JSON form: spell them ourselves
    for key in draw(
        st.lists(
            st.sampled_from(["scheduled_at", "since", "timeout", "lease_duration", "retry_delay"]),
            max_size=2,
        )
    ):
        kind = TIMES if key in ("scheduled_at", "since") else DURATIONS
        fields[key] = draw(st.sampled_from(kind))
    return json.dumps(fields).encode()


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r[0].name)
@FUZZ
@given(data=st.data())
def test_route(envoy: Envoy, route: tuple[Rpc, str, str, str], data: st.DataObject) -> None:
    rpc, method, template, body = route
    path = fill(template, data.draw(strategies.texts))
    if body:
        payload = data.draw(st.one_of(bodies(rpc), st.sampled_from(BAD_BODIES)))
    else:
        query = data.draw(
            st.dictionaries(
                st.sampled_from(
                    ["page_size", "page_token", "queue", "state", "since", "actor", "type", "bogus"]
                ),
                st.one_of(strategies.texts, st.sampled_from(TIMES)),
                max_size=3,
            )
        )
        path += "?" + urlencode(query) if query else ""
        payload = None
    if method == "GET" and rpc.method.server_streaming:
        path += ("&" if "?" in path else "?") + "timeout=1"  # unknown parameter: refused at once
    call(envoy, rpc.name, method, path, payload)

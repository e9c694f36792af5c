"""Opaque page tokens (dtq/domain/paging.py)."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dtq.domain import paging
from dtq.domain.errors import Code, DtqError
from dtq.domain.model import TaskState

FP = paging.fingerprint(TaskState.PENDING, "email.send", "default")
KEY = "0190a8e2-1c3b-7a4e-8f00-0123456789ab"


def refused(token: str, fp: str = FP) -> DtqError:
    with pytest.raises(DtqError) as caught:
        paging.decode(token, fp)
    assert caught.value.code == Code.INVALID_ARGUMENT
    assert [v.field for v in caught.value.violations] == ["page_token"]
    return caught.value


def raw_token(body: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")


def test_roundtrip() -> None:
    assert paging.decode(paging.encode(KEY, FP), FP) == KEY


def test_empty_token_is_the_first_page() -> None:
    assert paging.decode("", FP) is None


@given(key=st.text(max_size=200))
def test_roundtrip_of_any_key(key: str) -> None:
    token = paging.encode(key, FP)
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert paging.decode(token, FP) == key


def test_fingerprint_depends_on_every_filter() -> None:
    assert paging.fingerprint(None, None, None) == paging.fingerprint(None, None, None)
    variants = {
        paging.fingerprint(None, None, None),
        paging.fingerprint(TaskState.PENDING, None, None),
        paging.fingerprint(None, "t", None),
        paging.fingerprint(None, None, "t"),
    }
    assert len(variants) == 4


def test_token_reused_with_other_filters_is_refused() -> None:
    token = paging.encode(KEY, FP)
    refused(token, paging.fingerprint(TaskState.RUNNING, "email.send", "default"))
    refused(token, paging.fingerprint(None, None, None))


@pytest.mark.parametrize(
    "token",
    [
        "!!!!",
        "not a token",
        "é",
        paging.encode(KEY, FP)[1:],
        paging.encode(KEY, FP)[:-3],
        raw_token([KEY, FP]),
        raw_token("just a string"),
        raw_token({"k": KEY}),
        raw_token({"f": FP}),
        raw_token({"k": 42, "f": FP}),
        base64.urlsafe_b64encode(b"\xff\xfe\x00garbage").decode(),
    ],
)
def test_tampered_token_is_refused(token: str) -> None:
    refused(token)


@given(token=st.text(min_size=1, max_size=100))
def test_any_text_is_a_key_or_invalid_argument(token: str) -> None:
    try:
        key = paging.decode(token, FP)
    except DtqError as error:
        assert error.code == Code.INVALID_ARGUMENT
    else:
        assert isinstance(key, str)


@pytest.mark.parametrize(
    "token",
    [
        base64.urlsafe_b64encode(b"[" * 5000 + b"]" * 5000).decode(),  # RecursionError in json
        base64.urlsafe_b64encode(b'{"k":' * 3000).decode(),
        "a" * (paging.MAX_TOKEN + 1),
    ],
)
def test_deeply_nested_or_huge_token_is_refused(token: str) -> None:
    refused(token)


WORKERS = paging.fingerprint("workers")


@pytest.mark.parametrize("key", ["abc", "-5", "1e9", "1.5", " 7", "٣", str(paging.MAX_OFFSET + 1)])
def test_offset_token_with_a_forged_key_is_refused(key: str) -> None:
    with pytest.raises(DtqError) as caught:
        paging.decode_offset(paging.encode(key, WORKERS), WORKERS)
    assert caught.value.code == Code.INVALID_ARGUMENT
    assert [v.field for v in caught.value.violations] == ["page_token"]


def test_offset_token_roundtrip() -> None:
    assert paging.decode_offset("", WORKERS) == 0
    assert paging.decode_offset(paging.encode("200", WORKERS), WORKERS) == 200

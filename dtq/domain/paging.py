"""Opaque page tokens for keyset pagination.

A token holds the sort key of the last item returned and a fingerprint of the
filters it was made for; a token reused with other filters is rejected rather
than silently returning a wrong page.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json

from dtq.domain.errors import DtqError

MAX_TOKEN = 4096  # characters; the tokens issued here are far shorter
MAX_OFFSET = 10**9


def fingerprint(*filters: object) -> str:
    return hashlib.sha256(repr(filters).encode()).hexdigest()[:12]


def encode(last_key: str, fp: str) -> str:
    raw = json.dumps({"k": last_key, "f": fp}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str, fp: str) -> str | None:
    """The last key in `token`, None for an empty token; INVALID_ARGUMENT if bad."""
    if not token:
        return None
    if len(token) > MAX_TOKEN:
        raise _forged()
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        body = json.loads(raw)
        key, token_fp = body["k"], body["f"]
    # RecursionError: a forged token of deeply nested JSON.
    except (binascii.Error, ValueError, KeyError, TypeError, RecursionError):
        raise _forged() from None
    if not isinstance(key, str):
        raise _forged()
    if token_fp != fp:
        raise DtqError.invalid("page_token", "was issued for other filters")
    return key


def decode_offset(token: str, fp: str) -> int:
    """The offset in a token made by `encode(str(offset), fp)`; 0 for an empty token."""
    key = decode(token, fp)
    if key is None:
        return 0
    if not (key.isascii() and key.isdigit()) or int(key) > MAX_OFFSET:
        raise _forged()
    return int(key)


def _forged() -> DtqError:
    return DtqError.invalid("page_token", "is not a token this API issued")

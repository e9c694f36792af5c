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


def fingerprint(*filters: object) -> str:
    return hashlib.sha256(repr(filters).encode()).hexdigest()[:12]


def encode(last_key: str, fp: str) -> str:
    raw = json.dumps({"k": last_key, "f": fp}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str, fp: str) -> str | None:
    """The last key in `token`, None for an empty token; INVALID_ARGUMENT if bad."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        body = json.loads(raw)
        key, token_fp = body["k"], body["f"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise DtqError.invalid("page_token", "is not a token this API issued") from None
    if not isinstance(key, str) or token_fp != fp:
        raise DtqError.invalid("page_token", "was issued for other filters")
    return key

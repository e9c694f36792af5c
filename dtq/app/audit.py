"""Recording and reading the audit log (see `dtq.domain.audit`)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dtq.app import caller
from dtq.domain import paging, validation
from dtq.domain.audit import MAX_DETAIL, AuditEvent
from dtq.domain.auth import Principal
from dtq.domain.errors import DtqError
from dtq.domain.tenants import DEFAULT
from dtq.ports import AuditLog, Clock

log = logging.getLogger(__name__)
MAX_PAGE = 1000
DEFAULT_PAGE = 100


NUL_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def detail_json(detail: Mapping[str, Any]) -> str:
    """`detail` as JSON, cut to MAX_DETAIL characters (still valid JSON)."""
    text = json.dumps(detail, separators=(",", ":"), sort_keys=True, default=str)
    # PostgreSQL holds no NUL in text or JSONB: an escaped one becomes U+FFFD.
    text = NUL_ESCAPE.sub(r"\1\\ufffd", text)
    if len(text) <= MAX_DETAIL:
        return text
    return json.dumps({"truncated": text[: MAX_DETAIL - 32]})[:MAX_DETAIL]


@dataclass
class Audit:
    log: AuditLog
    clock: Clock

    async def record(
        self,
        principal: Principal | None,
        action: str,
        target: str,
        outcome: str,
        detail: Mapping[str, Any],
    ) -> None:
        """Best effort: the call has happened, so a log that cannot be written
        is reported (a log line and the error's metric), not raised."""
        event = AuditEvent(
            self.clock.now(),
            principal.subject if principal else "anonymous",
            principal.role.value if principal else "",
            action,
            validation.storable_text(target),
            outcome,
            detail_json(detail),
            tenant=principal.home if principal else DEFAULT,
        )
        try:
            await self.log.add(event)
        except DtqError as error:
            log.error(
                "audit_write_failed",
                extra={"action": action, "actor": event.actor, "reason": error.reason},
            )

    async def page(
        self, since: float | None, actor: str | None, page_size: int, page_token: str
    ) -> tuple[list[AuditEvent], str]:
        if not 0 <= page_size <= MAX_PAGE:
            raise DtqError.invalid("page_size", f"must be 0 to {MAX_PAGE}")
        validation.point_in_time(since, "since")
        validation.plain_text(actor or "", "actor")
        size = page_size or DEFAULT_PAGE
        fp = paging.fingerprint(since, actor)
        last = paging.decode(page_token, fp)
        if last is not None and not last.isdigit():
            raise DtqError.invalid("page_token", "is not a token this API issued")
        before = int(last) if last else None
        events = await self.log.page(since, actor, before, size + 1, caller.current().view)
        more = len(events) > size
        events = events[:size]
        token = paging.encode(str(events[-1].id), fp) if more else ""
        return events, token

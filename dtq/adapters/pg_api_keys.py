"""API keys in PostgreSQL (the `api_keys` table)."""

from __future__ import annotations

from collections.abc import Sequence

from dtq.adapters import pg_sql as sql
from dtq.adapters.pg_conn import Pg
from dtq.adapters.pg_rows import as_datetime
from dtq.domain.auth import ApiKey


class PgApiKeys:
    """`dtq.ports.ApiKeys`: only a digest of each secret is stored."""

    def __init__(self, pg: Pg) -> None:
        self.pg = pg

    async def add(self, key: ApiKey, digest: str) -> None:
        row = {
            "id": key.id,
            "name": key.name,
            "role": key.role.value,
            "queues": sorted(key.queues),
            "tenant": key.tenant,
            "digest": digest,
            "created_at": as_datetime(key.created_at),
            "expires_at": as_datetime(key.expires_at),
        }
        await self.pg.fetch(sql.ADD_KEY, row)

    async def find(self, key_id: str) -> tuple[ApiKey, str] | None:
        found = await self.pg.fetch(sql.FIND_KEY, {"id": key_id})
        return found[0] if found else None

    async def list_keys(self) -> list[ApiKey]:
        return await self.pg.fetch(sql.LIST_KEYS)

    async def revoke(self, key_id: str, now: float) -> bool:
        """Whether the key exists (revoked now, or before)."""
        if await self.pg.fetch(sql.REVOKE_KEY, {"id": key_id, "now": as_datetime(now)}):
            return True
        return bool(await self.pg.fetch(sql.KEY_IDS, {"id": key_id}))

    async def used(self, key_ids: Sequence[str], now: float) -> None:
        await self.pg.fetch(sql.KEYS_USED, {"ids": list(key_ids), "now": as_datetime(now)})

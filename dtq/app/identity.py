"""Who is calling: our API keys, or tokens someone else issued (JWT).

An API key reads `dtq_<id>_<secret>`: the id finds the stored key, the secret
is checked against its SHA-256 digest (the secret is 256 random bits: a slow
password hash would add nothing but cost). Lookups are cached for
`cache_seconds`, so a revoked key stops working on every server within that.
A key is told revoked or expired only to a caller that proved its secret.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from dtq.app.audit import Audit
from dtq.domain import tenants
from dtq.domain.auth import ApiKey, Principal, Role, unauthenticated
from dtq.domain.errors import Code, DtqError
from dtq.ports import ApiKeys, Clock, Tenants, TokenVerifier

KEY_PREFIX = "dtq_"
CACHE_SECONDS = 4.0
CACHE_SIZE = 10_000
TOKEN_CACHE_SECONDS = 60.0
USED_EVERY = 30.0  # last_used_at is written at most this often

Found = tuple[ApiKey, str] | None


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_key(credential: str) -> tuple[str, str] | None:
    """(id, secret) of `dtq_<id>_<secret>`, or None when it is not one."""
    prefix, _, rest = credential.partition("_")
    key_id, _, secret = rest.partition("_")
    if f"{prefix}_" != KEY_PREFIX or not key_id.isalnum() or len(secret) < 16:
        return None
    return key_id, secret


def new_secret_key() -> str:
    """A fresh plaintext key."""
    return f"{KEY_PREFIX}{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"


def _invalid() -> DtqError:
    return unauthenticated("CREDENTIALS_INVALID", "the credential is not a valid API key or token")


class Identity:
    """Authenticates the `authorization` of each call."""

    def __init__(
        self,
        keys: ApiKeys,
        clock: Clock,
        tokens: TokenVerifier | None = None,
        cache_seconds: float = CACHE_SECONDS,
    ) -> None:
        self.keys = keys
        self.clock = clock
        self.tokens = tokens
        self.cache_seconds = cache_seconds
        self._cache: OrderedDict[str, tuple[float, asyncio.Future[Found]]] = OrderedDict()
        self._tokens: OrderedDict[str, tuple[float, Principal]] = OrderedDict()
        self._used: set[str] = set()

    async def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise unauthenticated(
                "CREDENTIALS_MISSING",
                "this call needs a credential: 'authorization: Bearer <API key or token>'",
            )
        scheme, _, credential = authorization.strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise unauthenticated(
                "CREDENTIALS_MALFORMED", "the authorization must read 'Bearer <API key or token>'"
            )
        if credential.startswith(KEY_PREFIX):
            return await self._api_key(credential)
        if self.tokens is not None and credential.count(".") == 2:
            return self._token(credential)
        raise _invalid()

    def _token(self, token: str) -> Principal:
        """A verified token, from the cache until its expiry (a signature check
        costs more than the call it guards)."""
        now = self.clock.now()
        cached = self._tokens.get(token)
        if cached is not None and now < cached[0]:
            return cached[1]
        assert self.tokens is not None
        principal, expires = self.tokens.verify(token)
        self._tokens[token] = (min(expires, now + TOKEN_CACHE_SECONDS), principal)
        while len(self._tokens) > CACHE_SIZE:
            self._tokens.popitem(last=False)
        return principal

    async def _api_key(self, credential: str) -> Principal:
        parts = split_key(credential)
        found = await self._find(parts[0]) if parts else None
        if parts is None or found is None or not hmac.compare_digest(found[1], digest(parts[1])):
            raise _invalid()
        key = found[0]
        now = self.clock.now()
        if key.revoked_at is not None:
            raise unauthenticated("CREDENTIALS_REVOKED", f"API key {key.id} was revoked")
        if not key.live(now):
            raise unauthenticated("CREDENTIALS_EXPIRED", f"API key {key.id} has expired")
        self._used.add(key.id)
        return key.principal()

    async def _find(self, key_id: str) -> Found:
        """The stored key, from the cache when fresh; one lookup per key at a
        time however many calls wait for it."""
        now = self.clock.now()
        cached = self._cache.get(key_id)
        if cached is None or cached[0] <= now:
            future: asyncio.Future[Found] = asyncio.get_running_loop().create_future()
            self._cache[key_id] = (now + self.cache_seconds, future)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
            try:
                future.set_result(await self.keys.find(key_id))
            except DtqError as error:
                self._cache.pop(key_id, None)
                future.set_exception(error)
                future.exception()  # retrieved: the waiters below re-raise it
                raise
            return future.result()
        self._cache.move_to_end(key_id)
        return await asyncio.shield(cached[1])

    async def record_use(self, every: float = USED_EVERY) -> None:
        """Write which keys were used (last_used_at), every `every` seconds."""
        while True:
            await asyncio.sleep(every)
            used, self._used = self._used, set()
            if used:
                try:
                    await self.keys.used(sorted(used), self.clock.now())
                except DtqError:
                    self._used |= used  # next time


class KeyAdmin:
    """Issue, list and revoke API keys (the `dtq apikey` commands), recording
    each issue and revocation by `actor` in the audit log when given one."""

    def __init__(
        self,
        keys: ApiKeys,
        clock: Clock,
        audit: Audit | None = None,
        actor: Principal | None = None,
        tenants: Tenants | None = None,
    ) -> None:
        self.keys = keys
        self.clock = clock
        self.audit = audit
        self.actor = actor
        self.tenants = tenants  # None: a key's tenant is not checked for existence

    async def create(
        self,
        name: str,
        role: Role,
        queues: Iterable[str] = (),
        expires_in: float | None = None,
        tenant: str = "default",
        plaintext: str | None = None,
    ) -> tuple[ApiKey, str]:
        """The new key and its plaintext, which is shown once and never stored.
        `plaintext`: store this key (e.g. one kept in a deployment's secret)
        instead of a fresh one; storing the same key again changes nothing."""
        await self._check_tenant(tenant, role)
        if plaintext is None:
            plaintext = new_secret_key()
        parts = split_key(plaintext)
        if parts is None:
            raise DtqError.invalid("key", "an API key reads dtq_<letters and digits>_<secret>")
        if (found := await self.keys.find(parts[0])) is not None:
            if hmac.compare_digest(found[1], digest(parts[1])):
                return found[0], plaintext
            raise DtqError(Code.ALREADY_EXISTS, "API_KEY_EXISTS", f"API key {parts[0]} exists")
        now = self.clock.now()
        expires_at = now + expires_in if expires_in else None
        key = ApiKey(parts[0], name, role, frozenset(queues), tenant, now, expires_at)
        await self.keys.add(key, digest(parts[1]))
        detail = {"name": name, "role": role.value, "queues": sorted(key.queues), "tenant": tenant}
        await self._record("apikey/create", key.id, "OK", {**detail, "expires_at": expires_at})
        return key, plaintext

    async def _check_tenant(self, tenant: str, role: Role) -> None:
        """A key belongs to an existing tenant, or (an admin key) to every one: `*`."""
        tenants.tenant_name(tenant, "tenant", scope=True)
        if tenant == tenants.ALL:
            if role != Role.ADMIN:
                raise DtqError.invalid("tenant", "'*' (every tenant) is for admin keys only")
            return
        if self.tenants is not None and await self.tenants.get(tenant) is None:
            raise tenants.not_found(tenant)

    async def list_keys(self) -> list[ApiKey]:
        return await self.keys.list_keys()

    async def revoke(self, key_id: str) -> None:
        found = await self.keys.revoke(key_id, self.clock.now())
        await self._record("apikey/revoke", key_id, "OK" if found else "NOT_FOUND", {})
        if not found:
            raise DtqError.not_found("api key", key_id)

    async def _record(self, action: str, target: str, outcome: str, detail: dict[str, Any]) -> None:
        if self.audit is not None:
            await self.audit.record(self.actor, action, target, outcome, detail)

"""JWT bearer tokens, checked by PyJWT against keys from a JWKS file or URL.

Accepted: HS256 (a JWKS `oct` key), RS256 (`RSA`), ES256 (`EC`, P-256) and
EdDSA (`OKP`, Ed25519). The algorithm must be the one of the key the token
names (`kid`; the only key when there is one), so `alg: none` and an HS256
token "signed" with an RSA public key are refused. `exp` is required, `nbf`
honoured, `iss` and `aud` checked when configured, all with `leeway` seconds.
The role, subject, queues and tenant come from configurable claims.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jwt
from jwt import PyJWK, PyJWKClient, PyJWKSet

from dtq.domain.auth import Principal, Role, unauthenticated
from dtq.domain.errors import Code, DtqError
from dtq.domain.tenants import DEFAULT, tenant_name

FAMILY = {"HS256": "oct", "RS256": "RSA", "ES256": "EC", "EdDSA": "OKP"}


def _invalid(why: str) -> DtqError:
    return unauthenticated("CREDENTIALS_INVALID", f"the token is not valid: {why}")


class JwtVerifier:
    def __init__(
        self,
        jwks: str,
        issuer: str = "",
        audience: str = "",
        role_claim: str = "role",
        subject_claim: str = "sub",
        queues_claim: str = "dtq_queues",
        leeway: float = 30.0,
        tenant_claim: str = "tenant",
    ) -> None:
        self.tenant_claim = tenant_claim
        self.issuer = issuer
        self.audience = audience
        self.role_claim = role_claim
        self.subject_claim = subject_claim
        self.queues_claim = queues_claim
        self.leeway = leeway
        if jwks.startswith(("https://", "http://")):
            self._client: PyJWKClient | None = PyJWKClient(jwks, lifespan=300, timeout=5)
            self._set: PyJWKSet | None = None
        else:
            self._client = None
            self._set = PyJWKSet.from_json(Path(jwks).read_text())

    def _key(self, kid: str | None) -> PyJWK:
        try:
            keys = self._client.get_jwk_set().keys if self._client else self._set.keys  # type: ignore[union-attr]
        except jwt.PyJWKClientError as error:
            raise DtqError.unavailable("jwks", f"the JWKS cannot be read: {error}") from None
        if kid is None and len(keys) == 1:
            return keys[0]
        for key in keys:
            if key.key_id == kid:
                return key
        raise _invalid("no key with its kid")

    def verify(self, token: str) -> tuple[Principal, float]:
        """The caller, and until when the answer holds (the token's exp)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise _invalid("not a JWT") from None
        alg = header.get("alg")
        if alg not in FAMILY:
            raise _invalid(f"algorithm {str(alg)[:16]!r} is not accepted")
        key = self._key(header.get("kid"))
        if key.key_type != FAMILY[alg] or (key.algorithm_name not in (alg, None, "")):
            raise _invalid(f"its key does not sign {alg}")
        claims = self._decode(token, key, alg)
        return self._principal(claims), float(claims["exp"])

    def _decode(self, token: str, key: PyJWK, alg: str) -> dict[str, Any]:
        required = ["exp"] + ["iss"] * bool(self.issuer) + ["aud"] * bool(self.audience)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self.audience or None,
                issuer=self.issuer or None,
                leeway=self.leeway,
                options={"require": required, "verify_aud": bool(self.audience)},
            )
        except jwt.ExpiredSignatureError:
            raise DtqError(
                Code.UNAUTHENTICATED, "CREDENTIALS_EXPIRED", "the token has expired"
            ) from None
        except jwt.InvalidAudienceError:
            raise _invalid("wrong audience") from None
        except jwt.InvalidIssuerError:
            raise _invalid("wrong issuer") from None
        except jwt.ImmatureSignatureError:
            raise _invalid("not valid yet (nbf)") from None
        except jwt.MissingRequiredClaimError as error:
            raise _invalid(f"no {error.claim} claim") from None
        except jwt.InvalidTokenError:
            raise _invalid("bad signature or claims") from None
        return claims

    def _principal(self, claims: dict[str, Any]) -> Principal:
        try:
            role = Role(str(claims.get(self.role_claim)))
        except ValueError:
            raise DtqError(
                Code.PERMISSION_DENIED,
                "ROLE_MISSING",
                f"the token's {self.role_claim!r} claim names no role "
                f"({', '.join(r.value for r in Role)})",
            ) from None
        queues = claims.get(self.queues_claim) or []
        if isinstance(queues, str):
            queues = [q for q in queues.split(",") if q]
        if not isinstance(queues, list) or not all(isinstance(q, str) for q in queues):
            raise _invalid(f"{self.queues_claim} must be a list of queue names")
        subject = str(claims.get(self.subject_claim, ""))[:256]
        return Principal(f"jwt:{subject}", role, frozenset(queues), self._tenant(claims, role))

    def _tenant(self, claims: dict[str, Any], role: Role) -> str:
        """The tenant claim; `default` when there is none. `*` (every tenant)
        only for an admin."""
        tenant = claims.get(self.tenant_claim) or DEFAULT
        try:
            name = tenant_name(str(tenant), self.tenant_claim, scope=role == Role.ADMIN)
        except DtqError:
            raise _invalid(f"{self.tenant_claim} must name a tenant") from None
        return name

"""JWT verification with real keys (cryptography) and PyJWT: what is accepted,
and each classic forgery refused."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from dtq.adapters.jwt_tokens import JwtVerifier
from dtq.domain.auth import Role
from dtq.domain.errors import Code, DtqError

SECRET = b"an HMAC secret of thirty-two bytes!!"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()
SIGNING: dict[str, Any] = {"HS256": SECRET, "RS256": RSA_KEY, "ES256": EC_KEY, "EdDSA": ED_KEY}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwk(alg: str) -> dict[str, Any]:
    if alg == "HS256":
        return {"kty": "oct", "k": _b64(SECRET), "kid": alg, "alg": alg}
    public = SIGNING[alg].public_key()
    kind = {"RS256": RSAAlgorithm, "ES256": ECAlgorithm, "EdDSA": OKPAlgorithm}[alg]
    return {**json.loads(kind.to_jwk(public)), "kid": alg, "alg": alg}


@pytest.fixture(scope="module")
def jwks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("jwks") / "jwks.json"
    path.write_text(json.dumps({"keys": [_jwk(alg) for alg in SIGNING]}))
    return path


@pytest.fixture
def verifier(jwks: Path) -> JwtVerifier:
    return JwtVerifier(str(jwks), issuer="https://idp.example", audience="dtq", leeway=5)


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": "https://idp.example",
        "aud": "dtq",
        "sub": "billing-service",
        "role": "producer",
        "iat": now,
        "exp": now + 300,
    }
    return {k: v for k, v in {**base, **changes}.items() if v is not None}


def token(alg: str = "RS256", kid: str | None = None, **changes: Any) -> str:
    return jwt.encode(claims(**changes), SIGNING[alg], alg, headers={"kid": kid or alg})


def refused(verifier: JwtVerifier, raw: str) -> tuple[Code, str]:
    with pytest.raises(DtqError) as caught:
        verifier.verify(raw)
    return caught.value.code, caught.value.reason


INVALID = (Code.UNAUTHENTICATED, "CREDENTIALS_INVALID")


@pytest.mark.parametrize("alg", list(SIGNING))
def test_each_accepted_algorithm_gives_the_caller(verifier: JwtVerifier, alg: str) -> None:
    principal, expires = verifier.verify(token(alg, dtq_queues=["emails"]))
    assert principal.subject == "jwt:billing-service"
    assert principal.role == Role.PRODUCER
    assert principal.queues == frozenset({"emails"})
    assert expires == claims()["exp"]


def test_alg_none_is_refused(verifier: JwtVerifier) -> None:
    header = _b64(json.dumps({"alg": "none", "kid": "RS256"}).encode())
    body = _b64(json.dumps(claims(role="admin")).encode())
    assert refused(verifier, f"{header}.{body}.") == INVALID


def test_an_hs256_token_signed_with_the_rsa_public_key_is_refused(verifier: JwtVerifier) -> None:
    public_pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = _b64(json.dumps({"alg": "HS256", "kid": "RS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims(role="admin")).encode())
    import hashlib
    import hmac

    signature = hmac.new(public_pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
    assert refused(verifier, f"{header}.{body}.{_b64(signature)}") == INVALID


def test_a_token_signed_by_another_key_is_refused(verifier: JwtVerifier) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(claims(role="admin"), other, "RS256", headers={"kid": "RS256"})
    assert refused(verifier, forged) == INVALID


def test_expired_wrong_audience_wrong_issuer_and_early_tokens_are_refused(
    verifier: JwtVerifier,
) -> None:
    now = int(time.time())
    expired = (Code.UNAUTHENTICATED, "CREDENTIALS_EXPIRED")
    assert refused(verifier, token(exp=now - 60)) == expired
    assert refused(verifier, token(aud="someone-else")) == INVALID
    assert refused(verifier, token(iss="https://evil.example")) == INVALID
    assert refused(verifier, token(nbf=now + 120)) == INVALID
    assert refused(verifier, token(exp=None)) == INVALID
    assert refused(verifier, token(aud=None)) == INVALID


def test_the_leeway_forgives_small_clock_skew(verifier: JwtVerifier) -> None:
    now = int(time.time())
    verifier.verify(token(exp=now - 2, nbf=now + 2))


def test_a_token_without_a_known_role_is_denied_and_claims_are_configurable(jwks: Path) -> None:
    plain = JwtVerifier(str(jwks))
    assert refused(plain, token(role="root")) == (Code.PERMISSION_DENIED, "ROLE_MISSING")
    custom = JwtVerifier(str(jwks), role_claim="dtq/role", subject_claim="email")
    principal, _ = custom.verify(token(**{"dtq/role": "viewer", "email": "ada@example.com"}))
    assert (principal.role, principal.subject) == (Role.VIEWER, "jwt:ada@example.com")


def test_unknown_kids_and_garbage_are_refused(verifier: JwtVerifier) -> None:
    assert refused(verifier, token("RS256", kid="rotated-away")) == INVALID
    assert refused(verifier, "a.b.c") == INVALID
    assert refused(verifier, token("ES256", kid="RS256")) == INVALID  # ES token, RSA key


def test_the_tenant_comes_from_its_claim_and_defaults_to_default(verifier: JwtVerifier) -> None:
    assert verifier.verify(token(tenant="acme"))[0].tenant == "acme"
    assert verifier.verify(token())[0].tenant == "default"
    assert verifier.verify(token(role="admin", tenant="*"))[0].tenant == "*"
    assert refused(verifier, token(tenant="*")) == INVALID  # every tenant: admins only
    assert refused(verifier, token(tenant="Not/A Tenant")) == INVALID


def test_the_tenant_claim_is_configurable(jwks: Path) -> None:
    custom = JwtVerifier(
        str(jwks), issuer="https://idp.example", audience="dtq", tenant_claim="org"
    )
    assert custom.verify(token(org="globex", tenant="acme"))[0].tenant == "globex"

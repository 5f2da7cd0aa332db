"""Token verification refuses every forged, stale or confused token."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from server.identity.tokens import AuthError, TokenService

SECRET = "s" * 40
OTHER_SECRET = "t" * 40


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def _claims(**overrides: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": "user-1",
        "sid": "s1",
        "iat": now,
        "exp": now + 60,
        "iss": "collab",
        "aud": "collab",
    }
    claims.update(overrides)
    return claims


def test_issued_token_verifies() -> None:
    tokens = TokenService(secret=SECRET)
    identity = tokens.verify(tokens.issue("user-1", ttl=60, documents=frozenset({"d1"})))
    assert identity.user_id == "user-1"
    assert identity.may_open("d1")
    assert not identity.may_open("d2")


def test_unscoped_token_may_open_any_document() -> None:
    tokens = TokenService(secret=SECRET)
    assert tokens.verify(tokens.issue("u", ttl=60)).may_open("anything")


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _unsigned(claims: dict[str, object]) -> str:
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."


ATTACKS: dict[str, Callable[[], str]] = {
    "empty": lambda: "",
    "garbage": lambda: "not.a.token",
    "forged signature": lambda: jwt.encode(_claims(), OTHER_SECRET, algorithm="HS256"),
    "alg none": lambda: _unsigned(_claims()),
    "expired": lambda: jwt.encode(_claims(exp=int(time.time()) - 3600), SECRET, "HS256"),
    "wrong audience": lambda: jwt.encode(_claims(aud="other"), SECRET, algorithm="HS256"),
    "wrong issuer": lambda: jwt.encode(_claims(iss="evil"), SECRET, algorithm="HS256"),
    "no subject": lambda: jwt.encode(
        {k: v for k, v in _claims().items() if k != "sub"}, SECRET, algorithm="HS256"
    ),
    "no expiry": lambda: jwt.encode(
        {k: v for k, v in _claims().items() if k != "exp"}, SECRET, algorithm="HS256"
    ),
    "HS512 not accepted": lambda: jwt.encode(_claims(), SECRET * 2, algorithm="HS512"),
    "bad scope": lambda: jwt.encode(_claims(docs="d1"), SECRET, algorithm="HS256"),
    "oversized": lambda: "a" * 10_000,
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_attack_is_refused(attack: str) -> None:
    with pytest.raises(AuthError):
        TokenService(secret=SECRET).verify(ATTACKS[attack]())


def test_rs256_with_public_key(rsa_keys: tuple[str, str]) -> None:
    private, public = rsa_keys
    tokens = TokenService(public_key=public)
    assert tokens.verify(jwt.encode(_claims(), private, algorithm="RS256")).user_id == "user-1"


def test_algorithm_confusion_is_refused(rsa_keys: tuple[str, str]) -> None:
    """An HS256 token 'signed' with the RSA public key must not pass as RS256 material."""
    _, public = rsa_keys
    tokens = TokenService(public_key=public)
    signing_input = f"{_b64({'alg': 'HS256', 'typ': 'JWT'})}.{_b64(_claims())}"
    mac = hmac.new(public.encode(), signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    with pytest.raises(AuthError):
        tokens.verify(forged)


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        TokenService(secret="short")
    with pytest.raises(ValueError, match="needs"):
        TokenService()

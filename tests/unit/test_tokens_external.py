"""Tokens of an external identity provider: JWKS keys (cached, rotated), configurable issuer
and audience, clock-skew leeway."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from server.identity.tokens import AuthError, TokenService

SECRET = "s" * 40
ISSUER = "https://idp.example.test/realms/acme"
AUDIENCE = "collab-api"


class Jwks:
    """A JWKS endpoint on loopback whose key set a test replaces (rotation)."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                jwks.fetches += 1
                body = json.dumps({"keys": jwks.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def jwks() -> Iterator[Jwks]:
    server = Jwks()
    yield server
    server.close()


def _rsa(kid: str) -> tuple[rsa.RSAPrivateKey, dict[str, Any]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return key, {**public, "kid": kid, "use": "sig", "alg": "RS256"}


def _ec(kid: str) -> tuple[ec.EllipticCurvePrivateKey, dict[str, Any]]:
    key = ec.generate_private_key(ec.SECP256R1())
    public = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return key, {**public, "kid": kid, "use": "sig", "alg": "ES256"}


def _token(key: Any, kid: str, alg: str = "RS256", **overrides: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": "0b8a5f7e-8d4e-4d0e-9f57-3f6a1c2b9d10",
        "iat": now,
        "exp": now + 300,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "email": "ann@example.com",
    }
    claims.update(overrides)
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


def _service(jwks: Jwks, **kwargs: Any) -> TokenService:
    values: dict[str, Any] = {
        "secret": SECRET,
        "jwks_url": jwks.url,
        "issuer": ISSUER,
        "audience": AUDIENCE,
    }
    values.update(kwargs)
    return TokenService(**values)


def test_jwks_tokens_are_accepted_and_the_key_set_is_cached(jwks: Jwks) -> None:
    rsa_key, rsa_public = _rsa("r1")
    ec_key, ec_public = _ec("e1")
    jwks.keys = [rsa_public, ec_public]
    tokens = _service(jwks)
    identity = tokens.verify(_token(rsa_key, "r1"))
    assert identity.user_id == "0b8a5f7e-8d4e-4d0e-9f57-3f6a1c2b9d10"
    assert identity.email == "ann@example.com"
    assert identity.issued_at > 0
    assert tokens.verify(_token(ec_key, "e1", "ES256")).email == "ann@example.com"
    for _ in range(5):
        tokens.verify(_token(rsa_key, "r1"))
    assert jwks.fetches == 1  # cached


def test_a_rotated_key_is_fetched_and_a_retired_one_refused(jwks: Jwks) -> None:
    old_key, old_public = _rsa("2026-01")
    new_key, new_public = _rsa("2026-02")
    jwks.keys = [old_public]
    tokens = _service(jwks, jwks_cooldown=0.0)
    tokens.verify(_token(old_key, "2026-01"))
    jwks.keys = [new_public]  # the provider rotated its key
    assert tokens.verify(_token(new_key, "2026-02")).email == "ann@example.com"
    assert jwks.fetches == 2
    # A token signed by the new key's id but with another key is still refused.
    with pytest.raises(AuthError, match="invalid token"):
        tokens.verify(_token(old_key, "2026-02"))


def test_unknown_key_ids_do_not_refetch_within_the_cooldown(jwks: Jwks) -> None:
    key, public = _rsa("k1")
    jwks.keys = [public]
    tokens = _service(jwks, jwks_cooldown=60.0)
    tokens.verify(_token(key, "k1"))
    for n in range(5):
        with pytest.raises(AuthError, match="no key of the identity provider"):
            tokens.verify(_token(key, f"forged-{n}"))
    assert jwks.fetches == 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"iss": "https://evil.example"}, "invalid token"),
        ({"aud": "someone-else"}, "invalid token"),
        ({"exp": int(time.time()) - 3600}, "token expired"),
    ],
)
def test_issuer_audience_and_expiry_are_checked(
    jwks: Jwks, overrides: dict[str, Any], message: str
) -> None:
    key, public = _rsa("k1")
    jwks.keys = [public]
    with pytest.raises(AuthError, match=message):
        _service(jwks).verify(_token(key, "k1", **overrides))


def test_the_leeway_is_configurable(jwks: Jwks) -> None:
    key, public = _rsa("k1")
    jwks.keys = [public]
    expired_a_minute_ago = _token(key, "k1", exp=int(time.time()) - 60)
    with pytest.raises(AuthError, match="token expired"):
        _service(jwks, leeway=30.0).verify(expired_a_minute_ago)
    assert _service(jwks, leeway=120.0).verify(expired_a_minute_ago).email


def test_an_unreachable_jwks_is_a_clear_refusal() -> None:
    key, _ = _rsa("k1")
    tokens = TokenService(jwks_url="http://127.0.0.1:9/jwks.json", issuer=ISSUER, audience=AUDIENCE)
    with pytest.raises(AuthError, match="cannot be fetched"):
        tokens.verify(_token(key, "k1"))


def test_issuer_and_audience_go_into_issued_tokens() -> None:
    tokens = TokenService(secret=SECRET, issuer="acme", audience="editor")
    claims = jwt.decode(tokens.issue("u", ttl=60), SECRET, algorithms=["HS256"], audience="editor")
    assert claims["iss"] == "acme"
    default = TokenService(secret=SECRET)
    with pytest.raises(AuthError, match="invalid token"):
        default.verify(tokens.issue("u", ttl=60))


def test_unverified_emails_are_not_used(jwks: Jwks) -> None:
    key, public = _rsa("k1")
    jwks.keys = [public]
    identity = _service(jwks).verify(_token(key, "k1", email_verified=False))
    assert identity.email is None


def test_the_key_set_can_be_fetched_ahead(jwks: Jwks) -> None:
    key, public = _rsa("k1")
    jwks.keys = [public]
    tokens = _service(jwks)
    assert tokens.prefetch_keys() == 1
    tokens.verify(_token(key, "k1"))
    assert jwks.fetches == 1
    assert TokenService(secret=SECRET).prefetch_keys() == 0
    with pytest.raises(AuthError, match="cannot be fetched"):
        TokenService(jwks_url="http://127.0.0.1:9/jwks.json").prefetch_keys()

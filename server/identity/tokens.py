"""Signed access tokens: who a request or a socket belongs to.

Tokens are JWTs signed with HS256 (a shared secret, ``COLLAB_JWT_SECRET``) or, as an option,
verified with RS256 against a public key (``COLLAB_JWT_PUBLIC_KEY``) or with RS256 / ES256
against the keys an external identity provider publishes (``COLLAB_JWT_JWKS_URL``: fetched
with PyJWT's ``PyJWKClient``, cached, fetched again when a token names a key id not seen yet,
at most once per cooldown: that is how key rotation is followed). Verification pins the
algorithm (so ``alg: none`` and algorithm confusion are refused), requires ``sub`` (the user
id), ``exp`` and ``iat``, checks ``iss`` and ``aud`` (``COLLAB_JWT_ISSUER``,
``COLLAB_JWT_AUDIENCE``: ``collab`` by default), and allows a clock skew
(``COLLAB_JWT_LEEWAY_SECONDS``, 30 s). A token may be scoped to documents (claim ``docs``: a list of
document ids); an unscoped token covers every document its user may reach.

Users, sessions and permissions live in their stores (PostgreSQL / Redis, or embedded); this
module only says whether a token is genuine and what it claims.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Final

import jwt

from server.errors import AuthError as AuthError  # re-exported: raised here

ISSUER: Final = "collab"
AUDIENCE: Final = "collab"
LEEWAY_SECONDS: Final = 30.0
MIN_SECRET_BYTES: Final = 32
JWKS_ALGORITHMS: Final = ("RS256", "ES256")
JWKS_CACHE_SECONDS: Final = 300.0  # the key set is fetched again after this long
JWKS_COOLDOWN_SECONDS: Final = 10.0  # an unknown key id refetches at most this often
JWKS_TIMEOUT_SECONDS: Final = 2.0


@dataclass(frozen=True, slots=True)
class Identity:
    """What a verified token says."""

    user_id: str
    session_id: str
    expires_at: float
    documents: frozenset[str] | None = None  # None: not scoped to particular documents
    issued_at: float = 0.0
    # From an external identity provider's token whose ``sub`` is not one of our user ids:
    # its verified ``email`` names the user instead.
    email: str | None = None

    def may_open(self, document_id: str) -> bool:
        """Whether the token's scope covers ``document_id`` (rights are checked elsewhere)."""
        return self.documents is None or document_id in self.documents


class TokenService:
    """Issues (HS256 only) and verifies tokens. No I/O."""

    def __init__(
        self,
        *,
        secret: str | None = None,
        public_key: str | None = None,
        jwks_url: str | None = None,
        issuer: str = ISSUER,
        audience: str = AUDIENCE,
        leeway: float = LEEWAY_SECONDS,
        jwks_cooldown: float = JWKS_COOLDOWN_SECONDS,
    ) -> None:
        """Give ``secret`` (HS256; at least 32 bytes), ``public_key`` (RS256, PEM) and/or
        ``jwks_url`` (RS256 / ES256 keys of an identity provider, by key id).

        Raises ValueError when none is given or the secret is too short to be safe.
        """
        if secret is None and public_key is None and jwks_url is None:
            raise ValueError(
                "token verification needs COLLAB_JWT_SECRET, COLLAB_JWT_PUBLIC_KEY or "
                "COLLAB_JWT_JWKS_URL"
            )
        if secret is not None and len(secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"COLLAB_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes")
        if leeway < 0:
            raise ValueError("the clock-skew leeway must not be negative")
        self._secret = secret
        self._public_key = public_key
        self.issuer = issuer
        self.audience = audience
        self._leeway = leeway
        self._jwks = (
            None
            if jwks_url is None
            else jwt.PyJWKClient(
                jwks_url,
                cache_jwk_set=True,
                lifespan=JWKS_CACHE_SECONDS,
                timeout=JWKS_TIMEOUT_SECONDS,
                cooldown_duration=jwks_cooldown,
            )
        )

    def issue(
        self,
        user_id: str,
        *,
        ttl: float,
        documents: frozenset[str] | None = None,
        session_id: str | None = None,
        now: float | None = None,
    ) -> str:
        """A new HS256 token for ``user_id`` valid for ``ttl`` seconds."""
        if self._secret is None:
            raise ValueError("issuing tokens needs COLLAB_JWT_SECRET")
        if ttl <= 0:
            raise ValueError("a token's ttl must be positive")
        issued = time.time() if now is None else now
        claims: dict[str, Any] = {
            "sub": user_id,
            "sid": session_id or uuid.uuid4().hex,
            "iat": int(issued),
            "exp": int(issued + ttl),
            "iss": self.issuer,
            "aud": self.audience,
        }
        if documents is not None:
            claims["docs"] = sorted(documents)
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def verify(self, token: str) -> Identity:
        """The identity a genuine, unexpired token carries; AuthError otherwise."""
        if not token or len(token) > 8192:
            raise AuthError("missing or oversized token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"malformed token: {exc}") from exc
        algorithm = header.get("alg")
        key = self._key(token, header)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[str(algorithm)],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self._leeway,
                options={"require": ["sub", "exp", "iat", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("token expired") from exc
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid token: {exc}") from exc
        return _identity(claims)

    def prefetch_keys(self) -> int:
        """Fetch the identity provider's key set now (blocking: run it in a thread), so
        that the first tokens do not wait for it; how many keys it holds (0 without a JWKS
        URL). Raises AuthError when it cannot be fetched."""
        if self._jwks is None:
            return 0
        try:
            return len(self._jwks.get_signing_keys())
        except jwt.PyJWKClientError as exc:
            raise AuthError(f"the identity provider's keys cannot be fetched: {exc}") from exc

    def _key(self, token: str, header: dict[str, Any]) -> Any:
        """The key that must have signed ``token``, by its algorithm (and key id)."""
        algorithm = header.get("alg")
        if algorithm == "HS256":
            key: Any = self._secret
        elif algorithm in JWKS_ALGORITHMS and self._jwks is not None and header.get("kid"):
            try:
                key = self._jwks.get_signing_key_from_jwt(token).key
            except jwt.PyJWKClientConnectionError as exc:
                raise AuthError("the identity provider's keys cannot be fetched now") from exc
            except (jwt.PyJWKClientError, jwt.InvalidTokenError) as exc:
                raise AuthError(f"no key of the identity provider matches: {exc}") from exc
        elif algorithm == "RS256":
            key = self._public_key
        else:
            raise AuthError(f"token algorithm {algorithm!r} is not accepted")
        if key is None:
            raise AuthError(f"token algorithm {algorithm!r} is not configured")
        return key


def _identity(claims: dict[str, Any]) -> Identity:
    user_id = claims.get("sub")
    if not isinstance(user_id, str) or not user_id:
        raise AuthError("token has no user")
    email = claims.get("email")
    if not isinstance(email, str) or claims.get("email_verified") is False:
        email = None
    docs = claims.get("docs")
    documents: frozenset[str] | None = None
    if docs is not None:
        if not isinstance(docs, list) or not all(isinstance(d, str) for d in docs):
            raise AuthError("token scope 'docs' must be a list of document ids")
        documents = frozenset(docs)
    session = claims.get("sid")
    return Identity(
        user_id,
        session if isinstance(session, str) else "",
        float(claims["exp"]),
        documents,
        float(claims["iat"]),
        email,
    )

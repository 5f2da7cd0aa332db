"""Signed access tokens: who a request or a socket belongs to.

Tokens are JWTs signed with HS256 (a shared secret, ``COLLAB_JWT_SECRET``) or, as an option,
verified with RS256 against a public key (``COLLAB_JWT_PUBLIC_KEY``) when another service
issues them. Verification pins the algorithm (so ``alg: none`` and algorithm confusion are
refused), requires ``sub`` (the user id), ``exp`` and ``iat``, checks ``iss`` and ``aud``, and
allows a small clock skew. A token may be scoped to documents (claim ``docs``: a list of
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


@dataclass(frozen=True, slots=True)
class Identity:
    """What a verified token says."""

    user_id: str
    session_id: str
    expires_at: float
    documents: frozenset[str] | None = None  # None: not scoped to particular documents

    def may_open(self, document_id: str) -> bool:
        """Whether the token's scope covers ``document_id`` (rights are checked elsewhere)."""
        return self.documents is None or document_id in self.documents


class TokenService:
    """Issues (HS256 only) and verifies tokens. No I/O."""

    def __init__(self, *, secret: str | None = None, public_key: str | None = None) -> None:
        """Give ``secret`` (HS256; at least 32 bytes) and/or ``public_key`` (RS256, PEM).

        Raises ValueError when neither is given or the secret is too short to be safe.
        """
        if secret is None and public_key is None:
            raise ValueError("token verification needs COLLAB_JWT_SECRET or COLLAB_JWT_PUBLIC_KEY")
        if secret is not None and len(secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"COLLAB_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes")
        self._secret = secret
        self._public_key = public_key

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
            "iss": ISSUER,
            "aud": AUDIENCE,
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
        key: str | None
        if algorithm == "HS256":
            key = self._secret
        elif algorithm == "RS256":
            key = self._public_key
        else:
            raise AuthError(f"token algorithm {algorithm!r} is not accepted")
        if key is None:
            raise AuthError(f"token algorithm {algorithm!r} is not configured")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=AUDIENCE,
                issuer=ISSUER,
                leeway=LEEWAY_SECONDS,
                options={"require": ["sub", "exp", "iat", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("token expired") from exc
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid token: {exc}") from exc
        return _identity(claims)


def _identity(claims: dict[str, Any]) -> Identity:
    user_id = claims.get("sub")
    if not isinstance(user_id, str) or not user_id:
        raise AuthError("token has no user")
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
    )

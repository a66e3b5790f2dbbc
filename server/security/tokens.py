"""Access JWTs (HS256 pinned) and opaque refresh tokens (stored hashed)."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import jwt

from server.errors import Unauthorized

ALGORITHM = "HS256"
ISSUER = "modeltrain"
AUDIENCE = "modeltrain-api"
ACCESS_TYPE = "access"
LEEWAY_SECONDS = 5


@dataclass(frozen=True)
class AccessClaims:
    user_id: uuid.UUID
    token_version: int
    session_id: str
    jti: str
    expires_at: datetime


class TokenCodec:
    """Signs and verifies access tokens with one secret. Every failure is the same ``Unauthorized``."""

    def __init__(self, secret: str, access_minutes: int) -> None:
        self._secret = secret
        self.access_ttl = timedelta(minutes=access_minutes)

    def issue_access(self, user_id: uuid.UUID, token_version: int, session_id: str) -> tuple[str, int]:
        now = datetime.now(timezone.utc)
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": str(user_id),
            "typ": ACCESS_TYPE,
            "sid": session_id,
            "ver": token_version,
            "iat": now,
            "nbf": now,
            "exp": now + self.access_ttl,
            "jti": secrets.token_urlsafe(16),
        }
        token = jwt.encode(claims, self._secret, algorithm=ALGORITHM, headers={"typ": "JWT"})
        return token, int(self.access_ttl.total_seconds())

    def verify_access(self, token: str) -> AccessClaims:
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != ALGORITHM or set(header) - {"alg", "typ"}:
                raise jwt.InvalidTokenError("unexpected header")
            data = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "nbf", "sub", "jti", "iss", "aud"]},
            )
            if data.get("typ") != ACCESS_TYPE or not isinstance(data.get("ver"), int):
                raise jwt.InvalidTokenError("wrong token type")
            return AccessClaims(
                user_id=uuid.UUID(data["sub"]),
                token_version=data["ver"],
                session_id=str(data.get("sid", "")),
                jti=str(data["jti"]),
                expires_at=datetime.fromtimestamp(data["exp"], timezone.utc),
            )
        except (jwt.PyJWTError, ValueError, KeyError, TypeError):
            raise invalid_token() from None


def invalid_token() -> Unauthorized:
    return Unauthorized("the access token is missing, invalid or expired", code="invalid_token")


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()

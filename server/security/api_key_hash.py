"""API key material: generation, the shown prefix, and the keyed hash stored instead of the key.

A key is ``mt-`` + base64url of 32 random bytes (256 bits). With that much entropy a slow password hash
buys nothing, so the database keeps HMAC-SHA256(k, key) where ``k`` is derived from the server secret
(SECRET_KEY): a stolen database alone neither yields keys nor lets anyone test guesses offline, and a
lookup costs one HMAC and one indexed query (docs/security.md, API keys).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

KEY_PREFIX = "mt-"
KEY_BYTES = 32
#: How many characters of the key are stored and shown for recognition (``mt-`` + 8).
SHOWN_PREFIX_CHARS = len(KEY_PREFIX) + 8
#: Longest raw key looked up at all (a generated key is 46 characters).
MAX_KEY_CHARS = 200
_DERIVATION_LABEL = b"modeltrain api-key hmac v1"


def is_api_key(token: str) -> bool:
    return token.startswith(KEY_PREFIX)


def generate_key() -> str:
    raw = base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).rstrip(b"=").decode("ascii")
    return KEY_PREFIX + raw


def shown_prefix(key: str) -> str:
    return key[:SHOWN_PREFIX_CHARS]


class KeyHasher:
    """HMAC-SHA256 of a key with a sub-key derived from the server secret (never the secret itself)."""

    def __init__(self, server_secret: str) -> None:
        self._key = hmac.new(server_secret.encode("utf-8"), _DERIVATION_LABEL, hashlib.sha256).digest()

    def hash(self, key: str) -> str:
        return hmac.new(self._key, key.encode("utf-8"), hashlib.sha256).hexdigest()

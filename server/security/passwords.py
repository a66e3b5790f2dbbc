"""Argon2id password hashing (pwdlib) with a bound on concurrent hashes, plus the password policy."""

from __future__ import annotations

import threading

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from server.errors import InvalidInput

#: OWASP's minimum for Argon2id: m=19 MiB, t=2, p=1.
_HASHER = PasswordHash((Argon2Hasher(memory_cost=19456, time_cost=2, parallelism=1),))
#: Argon2 is memory-hard; at most this many hashes run at once so parallel logins keep memory flat.
_SLOTS = threading.BoundedSemaphore(4)
MAX_PASSWORD_LENGTH = 1024

#: A short list of the most common passwords (and the spec's example default), refused outright.
COMMON_PASSWORDS = frozenset(
    [
        "123456",
        "123456789",
        "12345678",
        "password",
        "qwerty123",
        "qwerty",
        "1234567890",
        "1234567",
        "111111",
        "123123",
        "abc123",
        "password1",
        "iloveyou",
        "000000",
        "admin123",
        "admin1234",
        "administrator",
        "qwertyuiop",
        "1q2w3e4r",
        "1qaz2wsx",
        "letmein",
        "welcome",
        "welcome1",
        "monkey",
        "dragon",
        "sunshine",
        "princess",
        "football",
        "baseball",
        "master",
        "superman",
        "trustno1",
        "passw0rd",
        "p@ssw0rd",
        "p@ssword",
        "changeme",
        "changeit",
        "secret123",
        "default",
        "guest12345",
        "modeltrain",
        "modeltrain123",
        "ollama123",
        "11111111",
        "88888888",
        "66666666",
        "12341234",
        "a1234567",
        "aa123456",
        "woaini1314",
    ]
)


def hash_password(password: str) -> str:
    with _SLOTS:
        return _HASHER.hash(password)


def verify_password(password: str, password_hash: str) -> tuple[bool, str | None]:
    """Check a password. Returns (ok, new_hash): ``new_hash`` is set when the stored hash is outdated."""
    with _SLOTS:
        try:
            return _HASHER.verify_and_update(password, password_hash)
        except Exception:  # malformed or unknown hash format: never a match, never a 500
            return False, None


_DUMMY_HASH: str | None = None


def burn_verify_time(password: str) -> None:
    """Spend the time of one verification, so an unknown e-mail answers like a wrong password."""
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = hash_password("modeltrain-dummy-password-for-timing")
    verify_password(password, _DUMMY_HASH)


def check_password_policy(password: str, *, min_length: int, email: str | None = None) -> None:
    if len(password) < min_length:
        raise InvalidInput(
            f"the password must have at least {min_length} characters", code="password_too_short"
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(
            f"the password must have at most {MAX_PASSWORD_LENGTH} characters", code="password_too_long"
        )
    lowered = password.lower()
    if lowered in COMMON_PASSWORDS or len(set(password)) < 3:
        raise InvalidInput("this password is too common; choose another", code="password_too_common")
    if email and lowered == email.lower():
        raise InvalidInput("the password must not be your e-mail address", code="password_too_common")

"""Secrets kept outside the database, in 0600 files of the data directory or the OS keyring.

* The JWT signing secret: from SECRET_KEY, else generated once and kept in a 0600 file in the data dir.
* Provider API keys: a :class:`SecretStore` (OS keyring or an AES-GCM encrypted file), chosen by
  MODELTRAIN_SECRET_STORE; the app's instance is ``Runtime.secret_store``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from server.errors import Unavailable
from server.settings import Settings, generate_secret

if TYPE_CHECKING:
    from server.runtime import Runtime

log = logging.getLogger(__name__)
SECRET_FILE = "secret_key"


def ensure_private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if os.name == "posix":
        path.chmod(0o700)


def write_private_file(path: Path, content: str) -> None:
    """Create or replace ``path`` with mode 0600 from the first byte (never briefly world-readable)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, content.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def load_or_create_secret(settings: Settings) -> str:
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value()
    ensure_private_dir(settings.data_dir)
    path = settings.data_dir / SECRET_FILE
    if path.exists():
        if os.name == "posix" and path.stat().st_mode & 0o077:
            path.chmod(0o600)
            log.warning("tightened permissions of %s to 0600", path)
        secret = path.read_text(encoding="utf-8").strip()
        if len(secret) >= 32:
            return secret
        log.warning("the stored secret in %s is unusable; generating a new one", path)
    secret = generate_secret()
    write_private_file(path, secret)
    log.info("generated a new signing secret in %s", path)
    return secret


# --- provider secrets (API keys): the SecretStore seam ---------------------------------------------------
#
# Secrets live outside the database (so never in a DB backup): in the OS keyring, or in an encrypted file
# in the data directory for hosts without a keyring (systemd service users, containers). Which one is
# MODELTRAIN_SECRET_STORE: auto (the keyring when a usable backend exists, else the file), keyring, file.

KEYRING_SERVICE = "modeltrain"
SECRETS_FILE = "secrets.enc.json"
SECRETS_KEY_FILE = "secrets.key"
_FILE_VERSION = 1
_CIPHER = "AES-256-GCM"
_NONCE_BYTES = 12


class SecretStore(Protocol):
    """Where named secrets (e.g. ``provider:<id>``) are kept. Every failure is a :class:`Unavailable`
    with a precise code; values are never logged."""

    @property
    def label(self) -> str:
        """Where the secrets are, in words, for messages ("the OS keyring", "the encrypted file ...")."""
        ...

    def check(self) -> None:
        """Raise ``Unavailable`` when a secret could not be stored now (called before writing anything)."""
        ...

    def get(self, name: str) -> str | None: ...

    def set(self, name: str, value: str) -> None: ...

    def delete(self, name: str) -> None:
        """Forget ``name`` (nothing happens when it is not there)."""
        ...


def _keyring_unavailable(reason: str) -> Unavailable:
    return Unavailable(
        "no secure keyring is available to store the API key "
        f"({reason}); install or unlock a system keyring (Secret Service, macOS Keychain or "
        "Windows Credential Manager), or set MODELTRAIN_SECRET_STORE=file (or auto) to keep keys in an "
        "encrypted file in the data directory. Keys are never stored in plain text.",
        code="keyring_unavailable",
    )


def _keyring_module():
    """The ``keyring`` package, imported on first use: importing it (with ``importlib_metadata`` for its
    backend entry points) costs ~15 ms and ~2 MiB at start-up otherwise."""
    import keyring
    import keyring.errors

    return keyring


class KeyringSecretStore:
    """The OS keyring (Secret Service, macOS Keychain, Windows Credential Manager). Plaintext, null and
    fail backends are refused."""

    label = "the OS keyring"

    def __init__(self, service: str = KEYRING_SERVICE) -> None:
        self.service = service

    def backend(self):
        """The active keyring backend, or ``Unavailable(keyring_unavailable)`` when it cannot keep a
        secret safely (no backend, the fail backend, a plaintext or null backend)."""
        keyring = _keyring_module()
        try:
            backend = keyring.get_keyring()
        except keyring.errors.KeyringError as exc:  # pragma: no cover - defensive
            raise _keyring_unavailable(type(exc).__name__) from None
        module = type(backend).__module__
        name = type(backend).__name__
        if module in ("keyring.backends.fail", "keyring.backends.null"):
            raise _keyring_unavailable("no keyring backend is configured")
        if module.startswith("keyrings.alt.file") or "plaintext" in name.lower():
            raise _keyring_unavailable(f"the {name} backend stores secrets unencrypted")
        if module == "keyring.backends.chainer" and not getattr(backend, "backends", None):
            raise _keyring_unavailable("no keyring backend is configured")
        return backend

    def usable(self) -> bool:
        try:
            self.backend()
        except Unavailable:
            return False
        return True

    def check(self) -> None:
        self.backend()

    def get(self, name: str) -> str | None:
        backend = self.backend()
        keyring = _keyring_module()
        try:
            return backend.get_password(self.service, name)
        except keyring.errors.KeyringError as exc:
            raise _keyring_unavailable(type(exc).__name__) from None

    def set(self, name: str, value: str) -> None:
        backend = self.backend()
        keyring = _keyring_module()
        try:
            backend.set_password(self.service, name, value)
        except keyring.errors.KeyringError as exc:
            log.warning("keyring refused to store a secret: %s", type(exc).__name__)
            raise _keyring_unavailable(type(exc).__name__) from None

    def delete(self, name: str) -> None:
        keyring = _keyring_module()
        try:
            self.backend().delete_password(self.service, name)
        except keyring.errors.PasswordDeleteError:
            pass
        except (keyring.errors.KeyringError, Unavailable) as exc:
            log.warning("could not delete a secret from the keyring: %s", type(exc).__name__)


def _aesgcm():
    """``cryptography``'s AES-GCM and its InvalidTag, imported on first use (only hosts that keep secrets
    in the file need them)."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM, InvalidTag


class EncryptedFileSecretStore:
    """Secrets encrypted one by one with AES-256-GCM (the secret's name is the associated data, so an
    entry cannot be moved to another name) in a 0600 JSON file; the 256-bit key is in a separate 0600
    key file, created on first use. Both default to the (0700) data directory."""

    def __init__(self, path: Path, key_path: Path) -> None:
        self.path = path
        self.key_path = key_path
        self.label = f"the encrypted secret file {path}"
        self._lock = threading.Lock()

    # -- files --

    def _error(self, code: str, message: str) -> Unavailable:
        return Unavailable(message, code=code)

    def _read_key(self, *, create: bool) -> bytes | None:
        try:
            raw = self.key_path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            if not create:
                return None
            key = os.urandom(32)
            ensure_private_dir(self.key_path.parent)
            write_private_file(self.key_path, base64.b64encode(key).decode("ascii") + "\n")
            log.info("created the key of the encrypted secret store in %s", self.key_path)
            return key
        except (OSError, UnicodeDecodeError) as exc:
            raise self._error(
                "secret_store_key_unreadable",
                f"the secret store's key file {self.key_path} cannot be read ({type(exc).__name__})",
            ) from None
        try:
            key = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != 32:
            raise self._error(
                "secret_store_key_invalid",
                f"the secret store's key file {self.key_path} is not a valid key (expected 32 bytes in "
                "base64); restore it from where you keep a copy",
            )
        if os.name == "posix":
            with contextlib.suppress(OSError):
                if self.key_path.stat().st_mode & 0o077:
                    self.key_path.chmod(0o600)
                    log.warning("tightened permissions of %s to 0600", self.key_path)
        return key

    def _read_entries(self) -> dict[str, str]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            raise self._error(
                "secret_store_unreadable",
                f"the secret file {self.path} cannot be read ({type(exc).__name__})",
            ) from None
        try:
            data = json.loads(text)
            entries = data["secrets"]
            ok = data.get("version") == _FILE_VERSION and isinstance(entries, dict)
            ok = ok and all(isinstance(k, str) and isinstance(v, str) for k, v in entries.items())
        except (ValueError, KeyError, TypeError, AttributeError):
            ok = False
        if not ok:
            raise self._error(
                "secret_store_corrupt",
                f"the secret file {self.path} is damaged; restore it, or delete it and enter the API keys "
                "again",
            )
        return dict(entries)

    def _write_entries(self, entries: dict[str, str]) -> None:
        ensure_private_dir(self.path.parent)
        body = {"version": _FILE_VERSION, "cipher": _CIPHER, "secrets": dict(sorted(entries.items()))}
        write_private_file(self.path, json.dumps(body, indent=1) + "\n")

    def _missing_key(self) -> Unavailable:
        return self._error(
            "secret_store_key_missing",
            f"the secret store's key file {self.key_path} is missing, so the secrets in {self.path} cannot "
            "be decrypted; restore the key file (or delete the secret file and enter the API keys again)",
        )

    # -- SecretStore --

    def names(self) -> list[str]:
        return sorted(self._read_entries())

    def check(self) -> None:
        entries = self._read_entries()
        if entries and self._read_key(create=False) is None:
            raise self._missing_key()

    def get(self, name: str) -> str | None:
        token = self._read_entries().get(name)
        if token is None:
            return None
        key = self._read_key(create=False)
        if key is None:
            raise self._missing_key()
        AESGCM, InvalidTag = _aesgcm()
        try:
            blob = base64.b64decode(token, validate=True)
            plain = AESGCM(key).decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], name.encode("utf-8"))
            return plain.decode("utf-8")
        except (InvalidTag, binascii.Error, ValueError):
            raise self._error(
                "secret_store_key_mismatch",
                f"the secrets in {self.path} cannot be decrypted with the key in {self.key_path} (a "
                "different key, or the file was altered); restore the matching key file",
            ) from None

    def set(self, name: str, value: str) -> None:
        with self._lock:
            entries = self._read_entries()
            key = self._read_key(create=not entries)
            if key is None:
                raise self._missing_key()
            AESGCM, _ = _aesgcm()
            nonce = os.urandom(_NONCE_BYTES)
            sealed = AESGCM(key).encrypt(nonce, value.encode("utf-8"), name.encode("utf-8"))
            entries[name] = base64.b64encode(nonce + sealed).decode("ascii")
            self._write_entries(entries)

    def delete(self, name: str) -> None:
        with self._lock:
            entries = self._read_entries()
            if entries.pop(name, None) is not None:
                self._write_entries(entries)


class AutoSecretStore:
    """MODELTRAIN_SECRET_STORE=auto: new secrets go to the keyring when a usable backend exists, else to
    the encrypted file; reads fall back to the file, so keys saved before a keyring appeared still work."""

    def __init__(self, keyring: KeyringSecretStore, file: EncryptedFileSecretStore) -> None:
        self.keyring = keyring
        self.file = file

    def primary(self) -> KeyringSecretStore | EncryptedFileSecretStore:
        return self.keyring if self.keyring.usable() else self.file

    @property
    def label(self) -> str:
        return self.primary().label

    def check(self) -> None:
        self.primary().check()

    def get(self, name: str) -> str | None:
        primary = self.primary()
        value = primary.get(name)
        if value is None and primary is self.keyring and self.file.path.exists():
            value = self.file.get(name)
        return value

    def set(self, name: str, value: str) -> None:
        primary = self.primary()
        primary.set(name, value)
        if primary is self.keyring and self.file.path.exists():
            self.file.delete(name)  # no stale copy left behind

    def delete(self, name: str) -> None:
        if self.keyring.usable():
            self.keyring.delete(name)
        if self.file.path.exists():
            self.file.delete(name)


def file_store_for(settings: Settings) -> EncryptedFileSecretStore:
    key_path = settings.secret_store_key_file or settings.data_dir / SECRETS_KEY_FILE
    return EncryptedFileSecretStore(settings.data_dir / SECRETS_FILE, key_path.expanduser())


def make_secret_store(settings: Settings, kind: str | None = None) -> SecretStore:
    """The store MODELTRAIN_SECRET_STORE (or ``kind``) names: ``auto``, ``keyring`` or ``file``."""
    kind = kind or settings.secret_store
    if kind == "keyring":
        return KeyringSecretStore()
    if kind == "file":
        return file_store_for(settings)
    return AutoSecretStore(KeyringSecretStore(), file_store_for(settings))


_create_lock = threading.Lock()


def get_secret_store(runtime: Runtime) -> SecretStore:
    """The app's secret store (``runtime.secret_store``; created on first use for a bare runtime)."""
    store = runtime.secret_store
    if store is None:
        with _create_lock:
            store = runtime.secret_store
            if store is None:
                store = runtime.secret_store = make_secret_store(runtime.settings)
    return store

"""The secret store seam (server/security/secret_store.py): the OS keyring, the AES-GCM encrypted file,
``auto`` choosing between them, clear errors for a wrong/missing/corrupt key, and
``modeltrain secrets migrate``."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import keyring
import keyring.backend
import keyring.backends.fail
import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.cli import main
from server.errors import Unavailable
from server.security.secret_store import (
    SECRETS_FILE,
    SECRETS_KEY_FILE,
    AutoSecretStore,
    EncryptedFileSecretStore,
    KeyringSecretStore,
    make_secret_store,
)
from server.settings import Settings
from tests.fakes.fake_openai import FakeOpenAI
from tests.server.conftest import ADMIN_PASSWORD, BASE_URL, INITIAL_PASSWORD, bearer, login
from tests.server.memory_keyring import MemoryKeyring

SECRET = "sk-live-" + "Qx9" * 12 + "zzzz"
NAME = "provider:7b7c1f3e-0000-4000-8000-000000000001"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def file_store(tmp_path: Path) -> EncryptedFileSecretStore:
    data = tmp_path / "data"
    return EncryptedFileSecretStore(data / SECRETS_FILE, data / SECRETS_KEY_FILE)


# --- the encrypted file ----------------------------------------------------------------------------


def test_file_store_keeps_secrets_encrypted_in_0600_files_of_a_0700_dir(
    file_store: EncryptedFileSecretStore,
) -> None:
    assert file_store.get(NAME) is None
    assert not file_store.key_path.exists()  # the key is created on first use, not before
    file_store.set(NAME, SECRET)
    file_store.set("provider:other", "another-secret-value")
    assert file_store.get(NAME) == SECRET
    assert file_store.names() == sorted([NAME, "provider:other"])
    for path in (file_store.path, file_store.key_path):
        assert mode(path) == 0o600, path
    assert mode(file_store.path.parent) == 0o700
    raw = file_store.path.read_bytes()
    assert SECRET.encode() not in raw and base64.b64encode(SECRET.encode()) not in raw
    assert json.loads(raw)["cipher"] == "AES-256-GCM"
    # Each write uses a fresh nonce: the same secret never gives the same bytes twice.
    first = json.loads(raw)["secrets"][NAME]
    file_store.set(NAME, SECRET)
    assert json.loads(file_store.path.read_bytes())["secrets"][NAME] != first
    file_store.delete(NAME)
    file_store.delete(NAME)  # deleting twice is fine
    assert file_store.get(NAME) is None and file_store.get("provider:other") == "another-secret-value"


def test_a_wrong_key_gives_a_clear_error(file_store: EncryptedFileSecretStore) -> None:
    file_store.set(NAME, SECRET)
    file_store.key_path.write_text(base64.b64encode(os.urandom(32)).decode())
    with pytest.raises(Unavailable) as info:
        file_store.get(NAME)
    assert info.value.code == "secret_store_key_mismatch"
    assert str(file_store.key_path) in info.value.message and SECRET not in info.value.message


def test_a_corrupt_or_missing_key_file_gives_a_clear_error(file_store: EncryptedFileSecretStore) -> None:
    file_store.set(NAME, SECRET)
    file_store.key_path.write_text("not a key")
    for call in (lambda: file_store.get(NAME), lambda: file_store.set(NAME, "x")):
        with pytest.raises(Unavailable) as info:
            call()
        assert info.value.code == "secret_store_key_invalid"
    file_store.key_path.unlink()
    for call in (lambda: file_store.get(NAME), lambda: file_store.set("provider:new", "x"), file_store.check):
        with pytest.raises(Unavailable) as info:
            call()
        assert info.value.code == "secret_store_key_missing"
    assert not file_store.key_path.exists()  # no new key that would orphan the stored secrets


def test_an_altered_secrets_file_is_refused(file_store: EncryptedFileSecretStore) -> None:
    file_store.set(NAME, SECRET)
    body = json.loads(file_store.path.read_text())
    # An entry copied to another name does not decrypt there (the name is authenticated).
    body["secrets"]["provider:thief"] = body["secrets"][NAME]
    file_store.path.write_text(json.dumps(body))
    with pytest.raises(Unavailable) as info:
        file_store.get("provider:thief")
    assert info.value.code == "secret_store_key_mismatch"
    file_store.path.write_text("{not json")
    with pytest.raises(Unavailable) as info:
        file_store.get(NAME)
    assert info.value.code == "secret_store_corrupt"


# --- the keyring and auto --------------------------------------------------------------------------


def test_keyring_store_round_trip(memory_keyring: MemoryKeyring) -> None:
    store = KeyringSecretStore()
    store.set(NAME, SECRET)
    assert memory_keyring.store == {("modeltrain", NAME): SECRET}
    assert store.get(NAME) == SECRET
    store.delete(NAME)
    store.delete(NAME)
    assert store.get(NAME) is None and memory_keyring.store == {}


def test_keyring_store_refuses_the_fail_and_plaintext_backends(failing_keyring: None) -> None:
    store = KeyringSecretStore()
    assert not store.usable()
    with pytest.raises(Unavailable) as info:
        store.set(NAME, SECRET)
    assert info.value.code == "keyring_unavailable" and "MODELTRAIN_SECRET_STORE=file" in info.value.message

    class PlaintextKeyring(keyring.backend.KeyringBackend):
        priority = 1  # type: ignore[assignment]

        def get_password(self, service: str, username: str) -> str | None:
            return None

        def set_password(self, service: str, username: str, password: str) -> None:
            raise AssertionError("must not be called")

        def delete_password(self, service: str, username: str) -> None:
            return None

    keyring.set_keyring(PlaintextKeyring())  # the failing_keyring fixture restores the previous one
    with pytest.raises(Unavailable) as info:
        store.check()
    assert info.value.code == "keyring_unavailable"


def test_auto_uses_the_file_without_a_keyring_and_finds_it_after_one_appears(
    make_settings: Callable[..., Settings], failing_keyring: None
) -> None:
    settings = make_settings()
    store = make_secret_store(settings)
    assert isinstance(store, AutoSecretStore)
    store.set(NAME, SECRET)
    assert store.primary() is store.file and "encrypted secret file" in store.label
    assert (settings.data_dir / SECRETS_FILE).exists()
    memory = MemoryKeyring()
    keyring.set_keyring(memory)  # e.g. a desktop session unlocked a keyring later
    assert store.primary() is store.keyring
    assert store.get(NAME) == SECRET  # still found in the file
    store.set(NAME, "rotated-" + SECRET)
    assert memory.store == {("modeltrain", NAME): "rotated-" + SECRET}
    assert store.file.get(NAME) is None  # no stale copy left in the file
    store.delete(NAME)
    assert memory.store == {}


def test_the_setting_picks_the_store_and_the_key_file(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    assert isinstance(make_secret_store(make_settings(secret_store="keyring")), KeyringSecretStore)
    key_file = tmp_path / "elsewhere" / "modeltrain.key"
    store = make_secret_store(make_settings(secret_store="file", secret_store_key_file=key_file))
    assert isinstance(store, EncryptedFileSecretStore)
    store.set(NAME, SECRET)
    assert key_file.exists() and mode(key_file) == 0o600
    assert not (tmp_path / "data" / SECRETS_KEY_FILE).exists()
    app = create_app(make_settings(secret_store="file"))
    assert isinstance(app.state.runtime.secret_store, EncryptedFileSecretStore)


# --- modeltrain secrets migrate --------------------------------------------------------------------


def _admin_token(client: TestClient) -> str:
    token = login(client, "admin@example.com", INITIAL_PASSWORD)
    r = client.post(
        "/api/auth/password",
        json={"current_password": INITIAL_PASSWORD, "new_password": ADMIN_PASSWORD},
        headers=bearer(token),
    )
    return r.json()["access_token"]


def test_secrets_migrate_moves_keys_both_ways(
    make_settings: Callable[..., Settings],
    memory_keyring: MemoryKeyring,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = make_settings()
    with TestClient(create_app(settings), base_url=BASE_URL) as client:
        r = client.post(
            "/api/providers",
            json={"name": "Remote", "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": SECRET},
            headers=bearer(_admin_token(client)),
        )
        assert r.status_code == 201, r.text
    name = f"provider:{r.json()['id']}"
    assert memory_keyring.store == {("modeltrain", name): SECRET}
    url = settings.resolved_database_url  # the app's database (SQLite, or PostgreSQL on that run)
    monkeypatch.chdir(tmp_path)
    for var in [k for k in os.environ if k.startswith("MODELTRAIN_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("SECRET_KEY", settings.secret_key.get_secret_value())  # type: ignore[union-attr]
    data_dir = str(settings.data_dir)

    assert main(["secrets", "migrate", "--to", "file", "--data-dir", data_dir]) == 0
    assert "moved 1 provider key(s)" in capsys.readouterr().out
    assert memory_keyring.store == {}
    file = make_secret_store(settings, "file")
    assert file.get(name) == SECRET

    assert main(["secrets", "migrate", "--to", "keyring", "--data-dir", data_dir]) == 0
    assert memory_keyring.store == {("modeltrain", name): SECRET}
    assert file.get(name) is None

    # Moving again finds nothing in the file: exit 1, one line naming the provider.
    capsys.readouterr()
    assert main(["secrets", "migrate", "--to", "keyring", "--data-dir", data_dir]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Remote" in err[0] and err[0].startswith("modeltrain: error:")
    assert memory_keyring.store == {("modeltrain", name): SECRET}  # nothing lost

    # Without a usable keyring, moving into it is refused before anything changes.
    keyring.set_keyring(keyring.backends.fail.Keyring())  # memory_keyring restores the previous one
    assert main(["secrets", "migrate", "--to", "keyring", "--data-dir", data_dir]) == 1
    assert "keyring" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["secrets", "migrate", "--to", "vault"])
    assert exit_info.value.code == 2


# --- the real server without a keyring (what a systemd service user or a container has) -----------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(tmp_path: Path, port: int) -> subprocess.Popen:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    home.chmod(0o500)  # HOME not writable, as with ProtectHome= / a service user without a home
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MODELTRAIN_", "XDG_", "DBUS_"))
        and k not in ("DATABASE_URL", "SECRET_KEY", "INITIAL_ADMIN_PASSWORD", "LOG_LEVEL", "CORS_ORIGINS")
    }
    env.update(
        HOME=str(home),
        PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
        MODELTRAIN_DATA_DIR=str(tmp_path / "data"),
        INITIAL_ADMIN_PASSWORD=INITIAL_PASSWORD,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "serve", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "server did not become healthy"
        time.sleep(0.05)  # polling interval while waiting for the port to open, not synchronisation


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=20)


def test_a_headless_server_without_a_keyring_keeps_and_uses_the_key(tmp_path: Path) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with FakeOpenAI(api_key=SECRET) as fake:
        proc = _serve(tmp_path, port)
        try:
            r = httpx.post(
                f"{base}/api/auth/login", json={"email": "admin@example.com", "password": INITIAL_PASSWORD}
            )
            token = r.json()["access_token"]
            r = httpx.post(
                f"{base}/api/auth/password",
                json={"current_password": INITIAL_PASSWORD, "new_password": ADMIN_PASSWORD},
                headers=bearer(token),
            )
            token = r.json()["access_token"]
            r = httpx.post(
                f"{base}/api/providers",
                json={"name": "Remote", "kind": "openai", "base_url": fake.url, "api_key": SECRET},
                headers=bearer(token),
            )
            assert r.status_code == 201, r.text
            pid = r.json()["id"]
        finally:
            _stop(proc)
        proc = _serve(tmp_path, port)
        try:
            r = httpx.post(
                f"{base}/api/auth/login", json={"email": "admin@example.com", "password": ADMIN_PASSWORD}
            )
            token = r.json()["access_token"]
            r = httpx.post(f"{base}/api/providers/{pid}/test", headers=bearer(token), timeout=30)
            assert r.json()["ok"] is True, r.text
        finally:
            _stop(proc)
    data = tmp_path / "data"
    assert mode(data) == 0o700
    assert mode(data / SECRETS_FILE) == 0o600 and mode(data / SECRETS_KEY_FILE) == 0o600
    assert not any((tmp_path / "home").iterdir())
    for path in data.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path

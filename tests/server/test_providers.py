"""Providers API: admin-only CRUD, keys in the keyring only (D6), base-URL policy (D3), test connection."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.services import providers as providers_service
from server.settings import Settings
from tests.fakes import FakeOllama, FakeOpenAI
from tests.server.conftest import BASE_URL, bearer
from tests.server.memory_keyring import MemoryKeyring

KEY = "sk-test"
LONG_KEY = "sk-live-" + "Zq7" * 12 + "wxyz"


@pytest.fixture(autouse=True)
def example_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """``*.example.test`` names resolve to a public documentation address; others as usual (no network)."""
    import ipaddress

    from server.providers import netpolicy

    real = netpolicy.resolve

    def resolve(host: str, port: int) -> list[netpolicy.IPAddress]:
        if host.endswith(".example.test"):
            return [ipaddress.ip_address("93.184.216.34")]
        return real(host, port)

    monkeypatch.setattr(netpolicy, "resolve", resolve)


def providers(client: TestClient, token: str) -> list[dict]:
    r = client.get("/api/providers", headers=bearer(token))
    assert r.status_code == 200, r.text
    return r.json()["items"]


def create(client: TestClient, token: str, **body) -> dict:
    body.setdefault("kind", "openai")
    body.setdefault("name", f"p-{uuid.uuid4().hex[:8]}")
    r = client.post("/api/providers", json=body, headers=bearer(token))
    assert r.status_code == 201, r.text
    return r.json()


# --- default provider ------------------------------------------------------------------------------


def test_fresh_install_has_one_default_ollama_provider(
    client: TestClient, admin_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = providers(client, admin_token)
    assert len(items) == 1
    default = items[0]
    assert default["name"] == "Ollama (local)"
    assert (default["kind"], default["is_default"], default["enabled"]) == ("ollama", True, True)
    assert default["base_url"] == "http://127.0.0.1:11434"
    assert default["has_api_key"] is False and default["api_key_masked"] == ""
    assert default["model_allowlist"] == []
    assert (default["group"], default["priority"], default["weight"]) == (None, 0, 1.0)
    assert set(default) == {
        "group",
        "priority",
        "weight",
        "id",
        "name",
        "kind",
        "base_url",
        "has_api_key",
        "api_key_masked",
        "is_default",
        "enabled",
        "model_allowlist",
        "created_at",
        "updated_at",
    }


@pytest.mark.parametrize(
    ("ollama_url", "ollama_host", "expected"),
    [
        ("http://127.0.0.1:12345/", None, "http://127.0.0.1:12345"),
        (None, "127.0.0.1:23456", "http://127.0.0.1:23456"),
        (None, "0.0.0.0", "http://127.0.0.1:11434"),
        ("http://10.0.0.5:11434", "127.0.0.1:1", "http://10.0.0.5:11434"),
    ],
)
def test_default_provider_honours_the_environment(
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    ollama_url: str | None,
    ollama_host: str | None,
    expected: str,
) -> None:
    monkeypatch.delenv("MODELTRAIN_OLLAMA_URL", raising=False)
    if ollama_host is None:
        monkeypatch.delenv("OLLAMA_HOST", raising=False)
    else:
        monkeypatch.setenv("OLLAMA_HOST", ollama_host)
    app = create_app(make_settings(ollama_url=ollama_url))
    with TestClient(app, base_url=BASE_URL):
        with app.state.runtime.session_factory() as session:
            rows, total = providers_service.list_providers(session)
    assert total == 1
    assert rows[0].base_url == expected and rows[0].is_default


def test_restart_does_not_add_a_second_default(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    for _ in range(2):
        app = create_app(settings)
        with TestClient(app, base_url=BASE_URL):
            with app.state.runtime.session_factory() as session:
                assert providers_service.list_providers(session)[1] == 1


def test_default_provider_follows_a_changed_configured_url(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    monkeypatch.delenv("MODELTRAIN_OLLAMA_URL", raising=False)
    for url in ("http://127.0.0.1:11500", "http://127.0.0.1:11600"):
        app = create_app(make_settings(ollama_url=url))
        with TestClient(app, base_url=BASE_URL):
            with app.state.runtime.session_factory() as session:
                rows, total = providers_service.list_providers(session)
        assert total == 1 and rows[0].base_url == url and rows[0].is_default
    # Without an explicit setting, an administrator's own URL for it is left alone.
    app = create_app(make_settings())
    with TestClient(app, base_url=BASE_URL):
        with app.state.runtime.session_factory() as session:
            assert providers_service.list_providers(session)[0][0].base_url == "http://127.0.0.1:11600"


# --- authorisation ---------------------------------------------------------------------------------


def test_non_admins_get_403_on_every_provider_route(client: TestClient, user_token: str) -> None:
    some = str(uuid.uuid4())
    calls = [
        ("GET", "/api/providers", None),
        ("POST", "/api/providers", {"name": "x", "kind": "ollama", "base_url": "http://127.0.0.1:1"}),
        ("GET", f"/api/providers/{some}", None),
        ("PATCH", f"/api/providers/{some}", {"name": "y"}),
        ("DELETE", f"/api/providers/{some}", None),
        ("POST", f"/api/providers/{some}/test", None),
    ]
    for method, path, body in calls:
        r = client.request(method, path, json=body, headers=bearer(user_token))
        assert r.status_code == 403, (method, path, r.text)
        assert r.json()["code"] == "admin_required"


# --- keys ------------------------------------------------------------------------------------------


def test_key_goes_to_the_keyring_and_is_only_shown_masked(
    client: TestClient, admin_token: str, memory_keyring: MemoryKeyring
) -> None:
    p = create(client, admin_token, base_url="https://api.example.test/v1", api_key=LONG_KEY)
    assert p["has_api_key"] is True
    assert p["api_key_masked"] == "…wxyz"
    assert "api_key" not in p
    assert memory_keyring.store == {("modeltrain", f"provider:{p['id']}"): LONG_KEY}
    again = client.get(f"/api/providers/{p['id']}", headers=bearer(admin_token)).json()
    assert again["api_key_masked"] == "…wxyz" and LONG_KEY not in str(again)


def test_short_keys_get_no_hint(client: TestClient, admin_token: str, memory_keyring: MemoryKeyring) -> None:
    p = create(client, admin_token, base_url="https://api.example.test/v1", api_key="sk-short")
    assert p["api_key_masked"] == "…"


def test_with_the_keyring_store_and_no_usable_keyring_saving_a_key_fails_clearly_and_stores_nothing(
    make_settings: Callable[..., Settings], failing_keyring: None
) -> None:
    with TestClient(create_app(make_settings(secret_store="keyring")), base_url=BASE_URL) as client:
        admin_token = _sign_in_admin(client)
        before = providers(client, admin_token)
        r = client.post(
            "/api/providers",
            json={
                "name": "OpenAI",
                "kind": "openai",
                "base_url": "https://api.example.test/v1",
                "api_key": LONG_KEY,
            },
            headers=bearer(admin_token),
        )
        assert r.status_code == 503
        body = r.json()
        assert body["code"] == "keyring_unavailable"
        assert "keyring" in body["message"] and "plain text" in body["message"]
        assert "MODELTRAIN_SECRET_STORE=file" in body["message"]
        assert LONG_KEY not in r.text
        assert providers(client, admin_token) == before
        # Without a key, a provider can still be added; adding a key later fails the same way.
        p = create(client, admin_token, base_url="https://api.example.test/v1")
        r = client.patch(f"/api/providers/{p['id']}", json={"api_key": LONG_KEY}, headers=bearer(admin_token))
        assert (r.status_code, r.json()["code"]) == (503, "keyring_unavailable")
        assert (
            client.get(f"/api/providers/{p['id']}", headers=bearer(admin_token)).json()["has_api_key"]
            is False
        )


def _sign_in_admin(client: TestClient) -> str:
    """The admin's token on a fresh app (replacing the initial password) or on a restarted one."""
    from tests.server.conftest import ADMIN_PASSWORD, INITIAL_PASSWORD, login

    r = client.post("/api/auth/login", json={"email": "admin@example.com", "password": ADMIN_PASSWORD})
    if r.status_code == 200:
        return r.json()["access_token"]
    token = login(client, "admin@example.com", INITIAL_PASSWORD)
    r = client.post(
        "/api/auth/password",
        json={"current_password": INITIAL_PASSWORD, "new_password": ADMIN_PASSWORD},
        headers=bearer(token),
    )
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def test_without_a_keyring_a_key_is_kept_encrypted_and_used_for_chat_after_a_restart(
    make_settings: Callable[..., Settings], failing_keyring: None, caplog: pytest.LogCaptureFixture
) -> None:
    """A systemd service user or a container: no keyring backend, so ``auto`` keeps the key in the
    encrypted file of the data directory; a restarted app on the same data sends it upstream."""
    caplog.set_level(logging.DEBUG)
    settings = make_settings(chat_title_generation=False)
    with FakeOpenAI(api_key=LONG_KEY) as fake:
        with TestClient(create_app(settings), base_url=BASE_URL) as client:
            token = _sign_in_admin(client)
            p = create(client, token, name="Remote", base_url=fake.url, api_key=LONG_KEY)
            assert (p["has_api_key"], p["api_key_masked"]) == (True, "…wxyz")
            r = client.post(
                "/api/model-configs",
                json={"provider_id": p["id"], "name": "GPT", "model": "gpt-4o"},
                headers=bearer(token),
            )
            assert r.status_code == 201, r.text
            config_id = r.json()["id"]
        with TestClient(create_app(settings), base_url=BASE_URL) as client:
            token = _sign_in_admin(client)
            r = client.post(
                "/api/chat", json={"model": f"cfg:{config_id}", "content": "hello"}, headers=bearer(token)
            )
            assert r.status_code == 200, r.text
            assert "event: done" in r.text and "event: error" not in r.text
            tested = client.post(f"/api/providers/{p['id']}/test", headers=bearer(token)).json()
            assert tested["ok"] is True
    data_dir = Path(settings.data_dir)
    secrets_file, key_file = data_dir / "secrets.enc.json", data_dir / "secrets.key"
    assert secrets_file.exists() and key_file.exists()
    for path in (secrets_file, key_file):
        assert path.stat().st_mode & 0o777 == 0o600
    assert data_dir.stat().st_mode & 0o777 == 0o700
    for path in data_dir.rglob("*"):  # the secrets file, the database, the logs
        if path.is_file():
            assert LONG_KEY.encode() not in path.read_bytes(), path
    for record in caplog.records:
        assert LONG_KEY not in record.getMessage() and LONG_KEY not in str(record.args)


def test_a_broken_secret_key_file_is_a_clear_error_never_a_500(
    make_settings: Callable[..., Settings], failing_keyring: None
) -> None:
    settings = make_settings()
    with FakeOpenAI(api_key=LONG_KEY) as fake:
        with TestClient(create_app(settings), base_url=BASE_URL) as client:
            token = _sign_in_admin(client)
            p = create(client, token, base_url=fake.url, api_key=LONG_KEY)
            key_file = Path(settings.data_dir) / "secrets.key"
            key_file.write_text("garbage")
            tested = client.post(f"/api/providers/{p['id']}/test", headers=bearer(token)).json()
            assert tested["ok"] is False and tested["error"]["code"] == "secret_store_key_invalid"
            r = client.patch(f"/api/providers/{p['id']}", json={"api_key": LONG_KEY}, headers=bearer(token))
            assert (r.status_code, r.json()["code"]) == (503, "secret_store_key_invalid")
            key_file.unlink()
            r = client.post(
                "/api/providers",
                json={"name": "Other", "kind": "openai", "base_url": fake.url, "api_key": LONG_KEY},
                headers=bearer(token),
            )
            assert (r.status_code, r.json()["code"]) == (503, "secret_store_key_missing")
            assert "secrets.key" in r.json()["message"] and LONG_KEY not in r.text
            assert client.get("/api/models", headers=bearer(token)).status_code == 200


def test_plaintext_backends_are_refused(memory_keyring: MemoryKeyring) -> None:
    import keyring
    import keyring.backend

    from server.errors import Unavailable
    from server.security.secret_store import KeyringSecretStore

    class PlaintextKeyring(keyring.backend.KeyringBackend):
        priority = 1  # type: ignore[assignment]

        def get_password(self, service: str, username: str) -> str | None:
            return None

        def set_password(self, service: str, username: str, password: str) -> None:
            raise AssertionError("must not be called")

        def delete_password(self, service: str, username: str) -> None:
            return None

    keyring.set_keyring(PlaintextKeyring())  # memory_keyring restores the previous backend
    with pytest.raises(Unavailable) as info:
        providers_service.store_api_key(KeyringSecretStore(), uuid.uuid4(), LONG_KEY)
    assert info.value.code == "keyring_unavailable"


def test_changing_base_url_drops_the_key_unless_a_new_one_is_given(
    client: TestClient, admin_token: str, memory_keyring: MemoryKeyring
) -> None:
    p = create(client, admin_token, base_url="https://api.example.test/v1", api_key=LONG_KEY)
    slot = ("modeltrain", f"provider:{p['id']}")
    r = client.patch(f"/api/providers/{p['id']}", json={"name": "renamed"}, headers=bearer(admin_token))
    assert r.json()["has_api_key"] is True and memory_keyring.store[slot] == LONG_KEY
    r = client.patch(
        f"/api/providers/{p['id']}",
        json={"base_url": "https://other.example.test/v1"},
        headers=bearer(admin_token),
    )
    assert r.status_code == 200
    assert (r.json()["has_api_key"], r.json()["api_key_masked"]) == (False, "")
    assert slot not in memory_keyring.store
    new_key = "sk-new-" + "k" * 30 + "abcd"
    r = client.patch(
        f"/api/providers/{p['id']}",
        json={"base_url": "https://third.example.test/v1", "api_key": new_key},
        headers=bearer(admin_token),
    )
    assert (r.json()["has_api_key"], r.json()["api_key_masked"]) == (True, "…abcd")
    assert memory_keyring.store[slot] == new_key
    r = client.patch(f"/api/providers/{p['id']}", json={"api_key": None}, headers=bearer(admin_token))
    assert r.json()["has_api_key"] is False and slot not in memory_keyring.store


def test_deleting_a_provider_removes_its_key(
    client: TestClient, admin_token: str, memory_keyring: MemoryKeyring
) -> None:
    p = create(client, admin_token, base_url="https://api.example.test/v1", api_key=LONG_KEY)
    assert client.delete(f"/api/providers/{p['id']}", headers=bearer(admin_token)).status_code == 204
    assert memory_keyring.store == {}
    assert client.get(f"/api/providers/{p['id']}", headers=bearer(admin_token)).status_code == 404


def test_the_key_never_reaches_db_responses_or_logs(
    client: TestClient,
    admin_token: str,
    settings: Settings,
    memory_keyring: MemoryKeyring,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    with FakeOpenAI(api_key=LONG_KEY) as fake:
        r = client.post(
            "/api/providers",
            json={"name": "Remote", "kind": "openai", "base_url": fake.url, "api_key": LONG_KEY},
            headers=bearer(admin_token),
        )
        texts.append(r.text)
        pid = r.json()["id"]
        tested = client.post(f"/api/providers/{pid}/test", headers=bearer(admin_token))
        assert tested.json() == {"ok": True, "models": ["gpt-4o", "gpt-4o-mini"], "error": None}
        for r in (
            tested,
            client.get("/api/providers", headers=bearer(admin_token)),
            client.get(f"/api/providers/{pid}", headers=bearer(admin_token)),
            client.patch(f"/api/providers/{pid}", json={"api_key": LONG_KEY}, headers=bearer(admin_token)),
            client.get("/api/models", headers=bearer(admin_token)),
        ):
            texts.append(r.text + str(dict(r.headers)))
        fake.api_key = "sk-something-else"  # now the upstream rejects the key and names a masked form
        texts.append(client.post(f"/api/providers/{pid}/test", headers=bearer(admin_token)).text)
    for text in texts:
        assert LONG_KEY not in text
    data_files = [p for p in Path(settings.data_dir).rglob("*") if p.is_file()]
    if settings.is_sqlite:
        assert any(p.name.startswith("modeltrain.db") for p in data_files)
    else:  # the PostgreSQL run: every row of every table
        from sqlalchemy import MetaData

        from server.db.session import create_db_engine

        engine = create_db_engine(settings.resolved_database_url)
        try:
            meta = MetaData()
            meta.reflect(engine)
            with engine.connect() as conn:
                for table in meta.sorted_tables:
                    assert LONG_KEY not in repr(conn.execute(table.select()).all()), table.name
        finally:
            engine.dispose()
    for path in data_files:
        assert LONG_KEY.encode() not in path.read_bytes(), path
    log_dir = Path(settings.resolved_log_dir)
    for path in log_dir.rglob("*") if log_dir.exists() else []:
        if path.is_file():
            assert LONG_KEY.encode() not in path.read_bytes(), path
    for record in caplog.records:
        assert LONG_KEY not in record.getMessage()
        assert LONG_KEY not in str(record.args)


# --- base URL policy (D3) --------------------------------------------------------------------------

REFUSED = [
    ("ollama", "http://169.254.169.254"),
    ("ollama", "http://169.254.169.254/latest/meta-data"),
    ("openai", "http://0.0.0.0:8080/v1"),
    ("ollama", "http://0.0.0.0:11434"),
    ("ollama", "http://[::]:11434"),
    ("ollama", "http://2130706433:11434"),
    ("ollama", "http://0x7f.1:11434"),
    ("ollama", "http://0177.0.0.1:11434"),
    ("ollama", "http://127.1:11434"),
    ("ollama", "http://[::ffff:127.0.0.1]:11434"),
    ("ollama", "http://[::ffff:a9fe:a9fe]"),
    ("ollama", "http://[fe80::1]:11434"),
    ("ollama", "http://evil#@127.0.0.1"),
    ("ollama", "http://127.0.0.1@evil"),
    ("ollama", "http://user:pass@127.0.0.1:11434"),
    ("ollama", "http://127.0.0.1:11434/?x=1"),
    ("ollama", "ftp://127.0.0.1/"),
    ("ollama", "file:///etc/passwd"),
    ("ollama", "127.0.0.1:11434"),
    ("ollama", "http://127.0.0.1:11434\\@evil"),
    ("ollama", "http:// 127.0.0.1"),
    ("openai", "http://8.8.8.8/v1"),  # plain http to a public address
    ("ollama", "http://8.8.8.8:11434"),
    ("openai", "http://[2606:4700::1111]/v1"),
    ("ollama", "http://224.0.0.1"),
    ("ollama", "http://100.100.100.200"),
]


def test_ssrf_base_urls_are_refused(client: TestClient, admin_token: str) -> None:
    accepted = []
    for kind, url in REFUSED:
        r = client.post(
            "/api/providers", json={"name": "x", "kind": kind, "base_url": url}, headers=bearer(admin_token)
        )
        if r.status_code != 422 or r.json()["code"] != "invalid_base_url":
            accepted.append((url, r.status_code, r.text))
    assert not accepted
    assert len(providers(client, admin_token)) == 1


ACCEPTED = [
    ("ollama", "http://127.0.0.1:11434/", "http://127.0.0.1:11434"),
    ("ollama", "http://localhost:11434", "http://localhost:11434"),
    ("ollama", "http://[::1]:11434", "http://[::1]:11434"),
    ("ollama", "http://192.168.1.20:11434", "http://192.168.1.20:11434"),
    ("openai", "http://10.1.2.3:1234/v1", "http://10.1.2.3:1234/v1"),  # LM Studio on the LAN
    ("openai", "http://127.0.0.1:8080/v1", "http://127.0.0.1:8080/v1"),  # llama.cpp server
    ("openai", "https://8.8.8.8/v1", "https://8.8.8.8/v1"),
    ("openai", "https://api.example.test/v1/", "https://api.example.test/v1"),
]


def test_local_and_https_urls_are_accepted(client: TestClient, admin_token: str) -> None:
    for kind, url, stored in ACCEPTED:
        assert create(client, admin_token, kind=kind, base_url=url)["base_url"] == stored


def test_host_names_are_judged_by_what_they_resolve_to() -> None:
    import ipaddress

    from server.errors import InvalidInput

    def resolver(answer: str):
        return lambda host, port: [ipaddress.ip_address(answer)]

    with pytest.raises(InvalidInput, match="link-local"):
        providers_service.validate_base_url(
            "openai", "https://metadata.example.test/v1", resolve=resolver("169.254.169.254")
        )
    with pytest.raises(InvalidInput, match="https"):
        providers_service.validate_base_url(
            "openai", "http://api.example.test/v1", resolve=resolver("93.184.216.34")
        )
    assert (
        providers_service.validate_base_url(
            "openai", "http://lmstudio.lan:1234/v1", resolve=resolver("192.168.1.9")
        )
        == "http://lmstudio.lan:1234/v1"
    )

    def unresolvable(host: str, port: int):
        raise OSError("no such host")

    with pytest.raises(InvalidInput, match="cannot be resolved"):
        providers_service.validate_base_url("openai", "https://nowhere.invalid/v1", resolve=unresolvable)


def test_patch_base_url_is_validated_too(client: TestClient, admin_token: str) -> None:
    default = providers(client, admin_token)[0]
    r = client.patch(
        f"/api/providers/{default['id']}",
        json={"base_url": "http://169.254.169.254"},
        headers=bearer(admin_token),
    )
    assert (r.status_code, r.json()["code"]) == (422, "invalid_base_url")
    assert providers(client, admin_token)[0]["base_url"] == "http://127.0.0.1:11434"


# --- CRUD rules ------------------------------------------------------------------------------------


def test_names_are_unique_case_insensitively(client: TestClient, admin_token: str) -> None:
    r = client.post(
        "/api/providers",
        json={"name": "ollama (LOCAL)", "kind": "ollama", "base_url": "http://127.0.0.1:1"},
        headers=bearer(admin_token),
    )
    assert (r.status_code, r.json()["code"]) == (409, "provider_name_taken")


def test_bad_bodies_are_422(client: TestClient, admin_token: str) -> None:
    for body in (
        {"name": "x", "kind": "anthropic", "base_url": "https://a.test"},
        {"name": "x", "kind": "ollama", "base_url": "http://127.0.0.1:1", "has_api_key": True},
        {"name": "", "kind": "ollama", "base_url": "http://127.0.0.1:1"},
        {"name": "x\u0000y", "kind": "ollama", "base_url": "http://127.0.0.1:1"},
        {"name": "x", "kind": "openai", "base_url": "https://a.test/v1", "api_key": "has space"},
        {"name": "x", "kind": "openai", "base_url": "https://a.test/v1", "api_key": "k" * 5000},
    ):
        r = client.post("/api/providers", json=body, headers=bearer(admin_token))
        assert r.status_code == 422, (body, r.text)
        assert r.json()["code"] == "invalid_input"
        assert "k" * 100 not in r.text and "has space" not in r.text  # submitted keys are never echoed
    r = client.patch(f"/api/providers/{uuid.uuid4()}", json={"kind": "openai"}, headers=bearer(admin_token))
    assert r.status_code == 422


def test_default_provider_rules(client: TestClient, admin_token: str) -> None:
    default = providers(client, admin_token)[0]
    r = client.delete(f"/api/providers/{default['id']}", headers=bearer(admin_token))
    assert (r.status_code, r.json()["code"]) == (409, "last_provider")
    r = client.patch(
        f"/api/providers/{default['id']}", json={"is_default": False}, headers=bearer(admin_token)
    )
    assert (r.status_code, r.json()["code"]) == (409, "default_provider_required")
    other = create(client, admin_token, kind="ollama", base_url="http://127.0.0.1:11435")
    assert other["is_default"] is False
    r = client.patch(f"/api/providers/{other['id']}", json={"is_default": True}, headers=bearer(admin_token))
    assert r.json()["is_default"] is True
    assert [p["is_default"] for p in providers(client, admin_token)].count(True) == 1
    assert client.delete(f"/api/providers/{other['id']}", headers=bearer(admin_token)).status_code == 204
    remaining = providers(client, admin_token)
    assert len(remaining) == 1 and remaining[0]["is_default"] is True
    assert client.delete(f"/api/providers/{uuid.uuid4()}", headers=bearer(admin_token)).status_code == 404


# --- test connection -------------------------------------------------------------------------------


def test_connection_to_ollama_lists_models(client: TestClient, admin_token: str) -> None:
    with FakeOllama() as fake:
        p = create(client, admin_token, kind="ollama", base_url=fake.url)
        r = client.post(f"/api/providers/{p['id']}/test", headers=bearer(admin_token))
    assert r.status_code == 200
    assert r.json() == {
        "ok": True,
        "models": ["llama3.2:latest", "nomic-embed-text:latest", "qwen3:0.6b"],
        "error": None,
    }


def test_connection_failures_say_why(
    client: TestClient, admin_token: str, memory_keyring: MemoryKeyring
) -> None:
    default = providers(client, admin_token)[0]
    with FakeOllama() as fake:
        port = fake.url.rsplit(":", 1)[1]
    # nothing listens there any more
    client.patch(
        f"/api/providers/{default['id']}",
        json={"base_url": f"http://127.0.0.1:{port}"},
        headers=bearer(admin_token),
    )
    r = client.post(f"/api/providers/{default['id']}/test", headers=bearer(admin_token))
    assert r.status_code == 200
    assert r.json()["ok"] is False and r.json()["models"] == []
    assert r.json()["error"]["code"] == "upstream_unreachable"
    with FakeOpenAI(api_key=KEY) as fake:
        p = create(client, admin_token, base_url=fake.url, api_key="sk-wrong-key-1234567890")
        r = client.post(f"/api/providers/{p['id']}/test", headers=bearer(admin_token))
        assert r.json()["error"]["code"] == "upstream_auth"
        client.patch(f"/api/providers/{p['id']}", json={"api_key": KEY}, headers=bearer(admin_token))
        r = client.post(f"/api/providers/{p['id']}/test", headers=bearer(admin_token))
        assert r.json()["ok"] is True
        fake.rate_limited = True
        r = client.post(f"/api/providers/{p['id']}/test", headers=bearer(admin_token))
        assert r.json()["error"]["code"] == "upstream_rate_limited"
    assert client.post(f"/api/providers/{uuid.uuid4()}/test", headers=bearer(admin_token)).status_code == 404


def test_connection_when_the_key_is_missing_from_the_keyring(
    client: TestClient, admin_token: str, memory_keyring: MemoryKeyring
) -> None:
    p = create(client, admin_token, base_url="https://api.example.test/v1", api_key=LONG_KEY)
    memory_keyring.store.clear()  # e.g. the keyring was reset
    r = client.post(f"/api/providers/{p['id']}/test", headers=bearer(admin_token))
    assert r.status_code == 200
    assert r.json()["ok"] is False and r.json()["error"]["code"] == "api_key_missing"

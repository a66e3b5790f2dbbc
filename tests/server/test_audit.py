"""The audit log (services/audit.py, GET /api/audit, /api/audit.csv): an entry for every event with the
right actor, target and outcome and no secret; none when the change rolls back; admin only; filters,
paging, CSV; retention."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from server.api.routes.auth import REFRESH_COOKIE
from server.db.models import AuditEntry, User
from server.schemas.ollama import OllamaStatusRead
from server.schemas.user import UserUpdate
from server.services import audit as audit_service
from server.services import users as users_service
from server.services.audit import AuditAction, AuditContext
from server.settings import Settings
from tests.fakes.fake_ollama import FakeOllama
from tests.server.chat_support import wait_for
from tests.server.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, USER_PASSWORD, bearer, login
from tests.server.memory_keyring import MemoryKeyring
from tests.server.ollama_support import PULL, read_until_final

SECRET_KEY_VALUE = "sk-test-" + "S3cr3tKeyValue0123456789abcdef"


@pytest.fixture
def settings(ollama_settings: Settings) -> Settings:
    return ollama_settings


def _entries(app: FastAPI, action: str | None = None) -> list[AuditEntry]:
    with app.state.runtime.session_factory() as s:
        query = select(AuditEntry).order_by(AuditEntry.created_at)
        if action is not None:
            query = query.where(AuditEntry.action == action)
        return list(s.scalars(query))


def _one(app: FastAPI, action: str, **where: Any) -> AuditEntry:
    found = [e for e in _entries(app, action) if all(getattr(e, k) == v for k, v in where.items())]
    assert len(found) == 1, (action, where, [(e.action, e.target_name, e.outcome) for e in _entries(app)])
    return found[0]


def _admin_id(app: FastAPI) -> uuid.UUID:
    with app.state.runtime.session_factory() as s:
        return s.scalars(select(User.id).where(User.email == ADMIN_EMAIL)).one()


def _no_secret(app: FastAPI, *secrets: str) -> None:
    dumped = json.dumps([e.details for e in _entries(app)])
    for secret in (*secrets, ADMIN_PASSWORD, USER_PASSWORD):
        assert secret not in dumped
    assert '"password":' not in dumped and '"api_key":' not in dumped


# --- sign-in and sessions --------------------------------------------------------------------------


def test_sign_in_success_failure_and_throttle(client: TestClient, app: FastAPI, admin_token: str) -> None:
    login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    ok = [e for e in _entries(app, AuditAction.SIGN_IN) if e.outcome == "success"]
    assert ok and ok[-1].actor_id == _admin_id(app) and ok[-1].actor_email == ADMIN_EMAIL
    assert ok[-1].client_ip == "testclient"

    for _ in range(app.state.runtime.settings.login_max_failures):
        r = client.post("/api/auth/login", json={"email": "nobody@example.com", "password": "wrong-Pass-123"})
        assert r.status_code == 401
    failed = [e for e in _entries(app, AuditAction.SIGN_IN) if e.outcome == "failure"]
    assert len(failed) == app.state.runtime.settings.login_max_failures
    assert failed[0].actor_id is None and failed[0].actor_email == "nobody@example.com"
    assert failed[0].details == {"reason": "invalid_credentials", "known_account": False}

    r = client.post("/api/auth/login", json={"email": "nobody@example.com", "password": "wrong-Pass-123"})
    assert r.status_code == 429
    throttled = _one(app, AuditAction.SIGN_IN_THROTTLED)
    assert throttled.outcome == "denied" and throttled.actor_email == "nobody@example.com"
    assert throttled.details["retry_after"] >= 1
    _no_secret(app, "wrong-Pass-123")


def test_failure_of_a_known_account_names_it(client: TestClient, app: FastAPI, admin_token: str) -> None:
    r = client.post("/api/auth/login", json={"email": ADMIN_EMAIL, "password": "wrong-Pass-123"})
    assert r.status_code == 401
    failed = [e for e in _entries(app, AuditAction.SIGN_IN) if e.outcome == "failure"]
    assert failed[-1].actor_id == _admin_id(app)
    assert failed[-1].details["known_account"] is True


def test_refresh_token_reuse(client: TestClient, app: FastAPI, admin_token: str) -> None:
    client.cookies.clear()
    login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    r1 = client.cookies.get(REFRESH_COOKIE)
    assert client.post("/api/auth/refresh", json={}).status_code == 200
    client.cookies.set(REFRESH_COOKIE, r1, domain="127.0.0.1", path="/api/auth")
    # from another browser: a replay even within the grace window of two tabs refreshing at once
    assert client.post("/api/auth/refresh", json={}, headers={"User-Agent": "curl/8.0"}).status_code == 401
    entry = _one(app, AuditAction.REFRESH_REUSE)
    assert entry.actor_id == _admin_id(app) and entry.outcome == "denied"
    assert entry.target_kind == "session" and entry.details == {"family_revoked": True}


def test_password_change_and_reset(
    client: TestClient, app: FastAPI, admin_token: str, create_user: Callable[..., str]
) -> None:
    # admin_token replaced the initial password
    changed = _one(app, AuditAction.PASSWORD_CHANGED)
    assert changed.actor_email == ADMIN_EMAIL and changed.target_name == ADMIN_EMAIL
    assert changed.details["initial"] is True

    create_user("bob@example.com")
    bob = client.get("/api/users", headers=bearer(admin_token)).json()["items"][-1]
    new_password = "Brand-new-pass-42"
    r = client.post(
        f"/api/users/{bob['id']}/password", json={"new_password": new_password}, headers=bearer(admin_token)
    )
    assert r.status_code == 200, r.text
    reset = _one(app, AuditAction.PASSWORD_RESET)
    assert reset.actor_email == ADMIN_EMAIL and reset.target_id == bob["id"]
    assert reset.target_name == "bob@example.com" and reset.outcome == "success"
    _no_secret(app, new_password)


# --- users -----------------------------------------------------------------------------------------


def test_user_created_changed_disabled_role_deleted(
    client: TestClient, app: FastAPI, admin_token: str
) -> None:
    h = bearer(admin_token)
    r = client.post(
        "/api/users",
        json={"email": "carol@example.com", "password": USER_PASSWORD, "role": "user"},
        headers=h,
    )
    assert r.status_code == 201
    uid = r.json()["id"]
    created = _one(app, AuditAction.USER_CREATED, target_id=uid)
    assert created.actor_id == _admin_id(app) and created.target_name == "carol@example.com"
    assert created.details["role"] == "user"

    assert client.patch(f"/api/users/{uid}", json={"display_name": "Carol"}, headers=h).status_code == 200
    assert _one(app, AuditAction.USER_CHANGED).details == {"display_name": {"from": "", "to": "Carol"}}
    assert client.patch(f"/api/users/{uid}", json={"role": "admin"}, headers=h).status_code == 200
    assert _one(app, AuditAction.ROLE_CHANGED).details == {"from": "user", "to": "admin"}
    assert client.patch(f"/api/users/{uid}", json={"is_active": False}, headers=h).status_code == 200
    assert _one(app, AuditAction.USER_DISABLED).target_id == uid
    assert client.delete(f"/api/users/{uid}", headers=h).status_code == 204
    deleted = _one(app, AuditAction.USER_DELETED)
    assert deleted.target_name == "carol@example.com"
    _no_secret(app)


def test_no_entry_when_the_change_rolls_back(
    client: TestClient, app: FastAPI, admin_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The entry is written in the change's transaction: a failure after ``record`` leaves neither."""
    with app.state.runtime.session_factory() as s:
        user = s.scalars(select(User).where(User.email == ADMIN_EMAIL)).one()
        users_service.update_user(
            s, user.id, UserUpdate(display_name="Renamed"), ctx=AuditContext.of(user, "198.51.100.7")
        )
        assert (
            len(s.scalars(select(AuditEntry).where(AuditEntry.action == AuditAction.USER_CHANGED)).all()) == 1
        )
        s.rollback()  # e.g. a later step of the request failed
    assert _entries(app, AuditAction.USER_CHANGED) == []
    with app.state.runtime.session_factory() as s:
        assert s.scalars(select(User.display_name).where(User.email == ADMIN_EMAIL)).one() != "Renamed"

    # Through the API: the request fails after the entry was added (the log line that follows it).
    class Boom:
        def info(self, *args: object) -> None:
            raise RuntimeError("disk on fire")

    monkeypatch.setattr(users_service, "log", Boom())
    body = {"email": "dave@example.com", "password": USER_PASSWORD, "role": "user"}
    with pytest.raises(RuntimeError):
        client.post("/api/users", json=body, headers=bearer(admin_token))
    monkeypatch.undo()
    assert _entries(app, AuditAction.USER_CREATED) == []
    with app.state.runtime.session_factory() as s:
        assert s.scalar(select(User).where(User.email == "dave@example.com")) is None

    # A refused change (the last admin cannot be disabled) writes no entry either.
    admin_id = _admin_id(app)
    r = client.patch(f"/api/users/{admin_id}", json={"is_active": False}, headers=bearer(admin_token))
    assert r.status_code == 409
    assert _entries(app, AuditAction.USER_DISABLED) == []


# --- keys, providers, settings --------------------------------------------------------------------


def test_api_key_created_and_revoked_without_the_key(
    client: TestClient, app: FastAPI, admin_token: str
) -> None:
    h = bearer(admin_token)
    r = client.post("/api/keys", json={"name": "ci"}, headers=h)
    assert r.status_code == 201, r.text
    raw, key_id = r.json()["key"], r.json()["id"]
    created = _one(app, AuditAction.API_KEY_CREATED)
    assert created.target_id == key_id and created.target_name == "ci" and created.actor_email == ADMIN_EMAIL
    assert client.delete(f"/api/keys/{key_id}", headers=h).status_code == 204
    assert _one(app, AuditAction.API_KEY_REVOKED).target_id == key_id
    _no_secret(app, raw)


def test_settings_switch(client: TestClient, app: FastAPI, admin_token: str) -> None:
    h = bearer(admin_token)
    assert client.put("/api/keys/settings", json={"user_creation": False}, headers=h).status_code == 200
    entry = _one(app, AuditAction.SETTINGS_CHANGED)
    assert entry.details == {"from": True, "to": False} and entry.target_kind == "setting"
    # Setting the same value again changes nothing and records nothing.
    assert client.put("/api/keys/settings", json={"user_creation": False}, headers=h).status_code == 200
    assert len(_entries(app, AuditAction.SETTINGS_CHANGED)) == 1


def test_provider_created_changed_deleted_never_the_key(
    client: TestClient, app: FastAPI, admin_token: str, memory_keyring: MemoryKeyring, fake: FakeOllama
) -> None:
    h = bearer(admin_token)
    body = {"name": "Cloud", "kind": "openai", "base_url": fake.url + "/v1", "api_key": SECRET_KEY_VALUE}
    r = client.post("/api/providers", json=body, headers=h)
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    created = _one(app, AuditAction.PROVIDER_CREATED)
    assert created.target_id == pid and created.target_name == "Cloud"
    assert created.details["key_set"] is True and created.details["kind"] == "openai"

    r = client.patch(
        f"/api/providers/{pid}", json={"enabled": False, "api_key": SECRET_KEY_VALUE + "2"}, headers=h
    )
    assert r.status_code == 200, r.text
    changed = _one(app, AuditAction.PROVIDER_CHANGED)
    assert changed.details["changes"]["enabled"] == {"from": True, "to": False}
    assert "key_replaced" in changed.details["changes"]
    assert client.delete(f"/api/providers/{pid}", headers=h).status_code == 204
    assert _one(app, AuditAction.PROVIDER_DELETED).target_name == "Cloud"
    _no_secret(app, SECRET_KEY_VALUE, SECRET_KEY_VALUE[-12:])


# --- LAN, backups, Ollama -------------------------------------------------------------------------


class FakeLan:
    def __init__(self) -> None:
        self.enabled = False

    def status(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "host": "0.0.0.0", "port": 8765, "urls": []}

    def enable(self, host: str | None, port: int | None) -> dict[str, Any]:
        self.enabled = True
        return self.status()

    def disable(self) -> dict[str, Any]:
        self.enabled = False
        return self.status()

    def ca_certificate(self) -> bytes | None:
        return None


def test_lan_on_off_and_refused(client: TestClient, app: FastAPI, admin_token: str) -> None:
    app.state.runtime.lan = FakeLan()
    h = bearer(admin_token)
    r = client.put("/api/lan", json={"enabled": True, "password": "not-my-password"}, headers=h)
    assert r.status_code == 403
    refused = _one(app, AuditAction.LAN_ENABLED, outcome="denied")
    assert refused.details == {"reason": "invalid_password"}
    assert (
        client.put("/api/lan", json={"enabled": True, "password": ADMIN_PASSWORD}, headers=h).status_code
        == 200
    )
    on = _one(app, AuditAction.LAN_ENABLED, outcome="success")
    assert on.actor_email == ADMIN_EMAIL and on.details["port"] == 8765
    assert client.put("/api/lan", json={"enabled": False}, headers=h).status_code == 200
    assert _one(app, AuditAction.LAN_DISABLED).outcome == "success"
    _no_secret(app, "not-my-password")


def test_backup_made_deleted_restored(client: TestClient, app: FastAPI, admin_token: str) -> None:
    h = bearer(admin_token)
    made = client.post("/api/backups", headers=h).json()
    entry = _one(app, AuditAction.BACKUP_CREATED)
    assert entry.details["id"] == made["id"] and entry.actor_email == ADMIN_EMAIL
    second = client.post("/api/backups", headers=h).json()
    assert client.delete(f"/api/backups/{second['id']}", headers=h).status_code == 204
    assert _one(app, AuditAction.BACKUP_DELETED).target_id == second["id"]
    assert client.delete("/api/backups/20990101T000000Z-nope", headers=h).status_code in (404, 422)

    r = client.post(f"/api/backups/{made['id']}/restore", headers=h)
    assert r.status_code == 200, r.text
    # The entry lives in the restored database (the one kept); earlier entries made after the backup
    # went with the replaced database, which is itself kept as a backup.
    restored = _one(app, AuditAction.BACKUP_RESTORED)
    assert restored.target_id == made["id"] and restored.actor_email == ADMIN_EMAIL
    assert restored.details["sessions_revoked"] is True


class StubDaemon:
    state = "running"

    def stop(self) -> OllamaStatusRead:
        self.state = "stopped"
        return OllamaStatusRead.model_validate(
            {"state": "stopped", "managed": True, "url": "http://127.0.0.1:11434", "version": None}
        )


def test_ollama_started_and_stopped(client: TestClient, app: FastAPI, admin_token: str) -> None:
    h = bearer(admin_token)
    assert client.post("/api/ollama/start?wait=false", headers=h).status_code == 200
    started = _one(app, AuditAction.OLLAMA_STARTED)
    assert started.actor_email == ADMIN_EMAIL and started.target_kind == "ollama"
    real, app.state.runtime.ollama_daemon = app.state.runtime.ollama_daemon, StubDaemon()
    try:
        r = client.post("/api/ollama/stop", headers=h)
    finally:
        app.state.runtime.ollama_daemon = real
    assert r.status_code == 200, r.text
    assert _one(app, AuditAction.OLLAMA_STOPPED).details == {"state": "stopped"}


def test_model_created_deleted_and_pulled(client: TestClient, app: FastAPI, admin_token: str) -> None:
    h = bearer(admin_token)
    r = client.post(
        "/api/ollama/models/copy", json={"source": "llama3.2", "destination": "mine:v1"}, headers=h
    )
    assert r.status_code == 201
    copied = _one(app, AuditAction.MODEL_CREATED, target_name="mine:v1")
    assert copied.details["copied_from"] == "llama3.2"
    body = {"name": "helper:v1", "from": "qwen3:0.6b", "system": "Be terse."}
    assert client.post("/api/ollama/models/create", json=body, headers=h).status_code == 201
    assert _one(app, AuditAction.MODEL_CREATED, target_name="helper:v1").details["from"] == "qwen3:0.6b"
    assert client.delete("/api/ollama/models/mine:v1", headers=h).status_code == 204
    assert _one(app, AuditAction.MODEL_DELETED).target_name == "mine:v1"
    # A failed deletion writes nothing.
    assert client.delete("/api/ollama/models/ghost:1b", headers=h).status_code == 404
    assert len(_entries(app, AuditAction.MODEL_DELETED)) == 1

    # A pull runs in the background: its entry comes when it ends, with the admin who started it.
    with client.stream("POST", "/api/ollama/pull", json={"name": PULL}, headers=h) as r:
        assert r.status_code == 200
        assert read_until_final(r)[-1][0] == "done"
    assert wait_for(lambda: len(_entries(app, AuditAction.MODEL_PULLED)) == 1)
    pulled = _one(app, AuditAction.MODEL_PULLED)
    assert pulled.outcome == "success" and pulled.actor_email == ADMIN_EMAIL
    assert pulled.target_name == PULL and pulled.client_ip == "testclient"


# --- reading the log --------------------------------------------------------------------------------


def test_admin_only_and_no_route_edits(client: TestClient, admin_token: str, user_token: str) -> None:
    assert client.get("/api/audit").status_code == 401
    r = client.get("/api/audit", headers=bearer(user_token))
    assert r.status_code == 403 and r.json()["code"] == "admin_required"
    assert client.get("/api/audit.csv", headers=bearer(user_token)).status_code == 403
    h = bearer(admin_token)
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        assert client.request(method, "/api/audit", headers=h).status_code == 405


def test_filters_paging_and_csv(
    client: TestClient, app: FastAPI, admin_token: str, create_user: Callable[..., str]
) -> None:
    h = bearer(admin_token)
    for name in ("u1", "u2", "u3"):
        create_user(f"{name}@example.com")
    r = client.get("/api/audit", params={"action": "user.created"}, headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == 3
    assert [i["target"]["name"] for i in body["items"]] == [
        "u3@example.com",
        "u2@example.com",
        "u1@example.com",
    ]
    item = body["items"][0]
    assert item["actor"] == {"id": str(_admin_id(app)), "email": ADMIN_EMAIL}
    assert (
        item["outcome"] == "success" and item["client"] == "testclient" and item["details"]["role"] == "user"
    )
    assert set(item) >= {"created_at", "actor", "action", "target", "outcome", "client", "details"}

    page = client.get(
        "/api/audit", params={"action": "user.created", "limit": 2, "offset": 2}, headers=h
    ).json()
    assert page["total"] == 3 and [i["target"]["name"] for i in page["items"]] == ["u1@example.com"]

    several = client.get(
        "/api/audit", params=[("action", "user.created"), ("action", "auth.sign_in")], headers=h
    )
    assert {i["action"] for i in several.json()["items"]} == {"user.created", "auth.sign_in"}

    by_actor = client.get("/api/audit", params={"actor": "U1@EXAMPLE"}, headers=h).json()
    assert by_actor["total"] >= 1 and all(i["actor"]["email"] == "u1@example.com" for i in by_actor["items"])
    by_id = client.get("/api/audit", params={"actor": str(_admin_id(app))}, headers=h).json()
    assert by_id["total"] >= 4
    target = body["items"][1]["target"]
    by_target = client.get("/api/audit", params={"target_kind": "user", "target_id": target["id"]}, headers=h)
    assert [i["target"]["name"] for i in by_target.json()["items"]] == ["u2@example.com"]
    assert client.get("/api/audit", params={"outcome": "failure"}, headers=h).json()["total"] == 0

    future = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    assert client.get("/api/audit", params={"from": future}, headers=h).json()["total"] == 0
    assert (
        client.get("/api/audit", params={"to": future, "action": "user.created"}, headers=h).json()["total"]
        == 3
    )
    assert client.get("/api/audit", params={"action": "no.such"}, headers=h).status_code == 422
    assert client.get("/api/audit", params={"limit": 0}, headers=h).status_code == 422

    r = client.get("/api/audit.csv", params={"action": "user.created"}, headers=h)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["target_name"] for row in rows] == ["u3@example.com", "u2@example.com", "u1@example.com"]
    assert rows[0]["actor_email"] == ADMIN_EMAIL and json.loads(rows[0]["details"])["role"] == "user"

    actions = client.get("/api/audit/actions", headers=h).json()
    assert "limits.changed" in actions["actions"] and actions["outcomes"] == ["success", "failure", "denied"]


def test_csv_cells_never_start_a_formula(app: FastAPI, client: TestClient, admin_token: str) -> None:
    with app.state.runtime.session_factory() as s:
        audit_service.record(
            s,
            AuditContext(actor_email="=cmd@example.com"),
            AuditAction.SIGN_IN,
            outcome=audit_service.AuditOutcome.FAILURE,
        )
        s.commit()
    text = client.get("/api/audit.csv", params={"outcome": "failure"}, headers=bearer(admin_token)).text
    assert "'=cmd@example.com" in text


def test_secret_keys_never_reach_details(app: FastAPI, client: TestClient) -> None:
    with app.state.runtime.session_factory() as s:
        entry = audit_service.record(
            s,
            audit_service.SYSTEM,
            AuditAction.SETTINGS_CHANGED,
            details={"api_key": "x", "new_password": "y", "nested": {"token": "z", "ok": 1}, "name": "n"},
        )
        s.commit()
        assert entry.details == {"nested": {"ok": 1}, "name": "n"}


def test_pruning_keeps_recent_entries(app: FastAPI, client: TestClient) -> None:
    runtime = app.state.runtime
    now = datetime.now(timezone.utc)
    with runtime.session_factory() as s:
        for age_days in (400, 366, 364, 1):
            entry = audit_service.record(
                s, audit_service.SYSTEM, AuditAction.SETTINGS_CHANGED, details={"age": age_days}
            )
            entry.created_at = now - timedelta(days=age_days)
        s.commit()
    assert runtime.settings.audit_days == 365
    assert audit_service.prune(runtime, now) == 2
    assert sorted(e.details["age"] for e in _entries(app, AuditAction.SETTINGS_CHANGED)) == [1, 364]
    assert audit_service.prune(runtime, now) == 0  # idempotent


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("api_key", True),
        ("apiKey", True),
        ("refresh_token", True),
        ("new_password", True),
        ("client_secret", True),
        ("Authorization", True),
        ("tokens_per_minute", False),  # a limit, not a secret
        ("key_set", False),
        ("name", False),
    ],
)
def test_secret_detail_keys_are_recognised_by_whole_words(key: str, secret: bool) -> None:
    from server.services.audit import names_secret

    assert names_secret(key) is secret

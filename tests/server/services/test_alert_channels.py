"""Outbound alert channels (services/alert_channels.py, /api/alerts/channels): a local HTTP server receives
the webhooks (the HMAC signature verified, each preset's body), a local SMTP server (aiosmtpd) receives the
e-mail, secrets stay out of the database and the audit log, webhook URLs follow the provider URL policy,
and "send a test" reports success and failure on the channel."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import uuid
from collections.abc import Callable
from datetime import datetime, timezone

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from server.db.models import AuditEntry
from server.db.session import session_scope
from server.errors import InvalidInput
from server.services import alert_channels
from server.services.alert_channels import Notice, Target
from server.settings import Settings
from tests.server.alert_support import smtp_receiver, webhook_receiver
from tests.server.chat_support import wait_for
from tests.server.conftest import bearer

HMAC_SECRET = "hook-secret-" + "Qw8Zp3Lm5Rt7Yv9X"
SMTP_PASSWORD = "smtp-pass-" + "Kd72Jx0Pq4Nv6Bz1"
NOW = datetime(2026, 12, 4, 21, 0, tzinfo=timezone.utc)
NOTICE = Notice(
    key="metric:disk",
    state="raised",
    level="alert",
    message="disk 97% (alert at 95%)",
    value="97",
    instance="host-a:101",
    at=NOW,
    since=NOW,
)


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(secret_store="file")


def _webhook(url: str, preset: str = "generic", secret: str | None = None) -> Target:
    secrets = {"url": url} | ({"hmac_secret": secret} if secret else {})
    config = {"preset": preset, "url_hint": "http://127.0.0.1/…", "signed": bool(secret)}
    return Target(channel_id=uuid.uuid4(), name="hook", kind="webhook", config=config, secrets=secrets)


def test_a_signed_webhook_is_received_and_its_signature_verifies() -> None:
    with webhook_receiver() as hook:
        asyncio.run(alert_channels.send(_webhook(hook.url + "/hooks/ops?room=1", secret=HMAC_SECRET), NOTICE))
    (received,) = hook.requests
    assert received.path == "/hooks/ops?room=1"
    assert received.headers["Content-Type"] == "application/json"
    stamp = received.headers["X-ModelTrain-Timestamp"]
    expected = hmac.new(
        HMAC_SECRET.encode(), stamp.encode() + b"." + received.body, hashlib.sha256
    ).hexdigest()
    assert received.headers["X-ModelTrain-Signature"] == f"sha256={expected}"
    body = received.json()
    assert body["alert"] == {
        "key": "metric:disk",
        "state": "raised",
        "level": "alert",
        "message": "disk 97% (alert at 95%)",
        "value": "97",
        "instance": "host-a:101",
        "at": NOW.isoformat(),
        "since": NOW.isoformat(),
    }
    assert body["text"].startswith("[ModelTrain] ALERT: metric:disk on host-a:101")
    print("webhook received:", received.path, dict(received.headers), received.body.decode())


@pytest.mark.parametrize(
    ("preset", "shape"),
    [
        ("slack", lambda b: b["text"]),
        ("dingtalk", lambda b: b["msgtype"] == "text" and b["text"]["content"]),
        ("feishu", lambda b: b["msg_type"] == "text" and b["content"]["text"]),
    ],
)
def test_presets_send_the_incoming_webhook_body_of_each_service(preset: str, shape: Callable) -> None:
    with webhook_receiver() as hook:
        asyncio.run(alert_channels.send(_webhook(hook.url, preset), NOTICE))
    (received,) = hook.requests
    assert "ALERT: metric:disk" in shape(received.json())
    assert "X-ModelTrain-Signature" not in received.headers  # unsigned without a secret


def test_an_error_answer_is_a_delivery_error_that_never_shows_the_url() -> None:
    with webhook_receiver(statuses=[500]) as hook:
        with pytest.raises(alert_channels.DeliveryError) as caught:
            asyncio.run(alert_channels.send(_webhook(hook.url + "/T0KEN-in-path"), NOTICE))
    assert "HTTP 500" in str(caught.value)
    assert "T0KEN" not in str(caught.value)


def test_a_stored_url_is_checked_again_when_the_connection_opens() -> None:
    # Past the save-time validation (a stored URL, a name that now resolves elsewhere): the guarded
    # transport refuses a metadata address before anything is sent.
    with pytest.raises(alert_channels.DeliveryError, match="ConnectError"):
        asyncio.run(alert_channels.send(_webhook("http://169.254.169.254/latest/meta-data"), NOTICE))


def test_dingtalk_and_feishu_refusals_inside_a_200_are_failures() -> None:
    target = _webhook("http://127.0.0.1:9/unused", "dingtalk")

    transport = httpx.MockTransport(
        lambda request: httpx.Response(200, json={"errcode": 310000, "errmsg": "sign"})
    )
    with pytest.raises(alert_channels.DeliveryError, match="code 310000"):
        asyncio.run(alert_channels.send(target, NOTICE, transport))


def test_an_email_is_received_by_the_smtp_server() -> None:
    with smtp_receiver() as mail:
        target = Target(
            channel_id=uuid.uuid4(),
            name="ops mail",
            kind="email",
            config={
                "smtp_host": mail.host,
                "smtp_port": mail.port,
                "smtp_security": "none",
                "email_from": "modeltrain@example.com",
                "email_to": ["ops@example.com", "oncall@example.com"],
            },
            secrets={},
        )
        asyncio.run(alert_channels.send(target, NOTICE))
    (message,) = mail.messages
    assert mail.envelopes == [("modeltrain@example.com", ["ops@example.com", "oncall@example.com"])]
    assert message["Subject"] == "[ModelTrain] ALERT: metric:disk on host-a:101"
    assert message["To"] == "ops@example.com, oncall@example.com"
    assert "disk 97% (alert at 95%)" in message.get_payload()
    print("e-mail received:", mail.envelopes[0], message["Subject"], repr(message.get_payload()))


def test_an_unreachable_smtp_server_is_a_delivery_error() -> None:
    target = Target(
        channel_id=uuid.uuid4(),
        name="ops mail",
        kind="email",
        config={
            "smtp_host": "127.0.0.1",
            "smtp_port": 9,
            "smtp_security": "starttls",
            "email_from": "a@b.c",
            "email_to": ["c@d.e"],
        },
        secrets={"password": SMTP_PASSWORD},
    )
    with pytest.raises(alert_channels.DeliveryError, match=r"SMTP 127\.0\.0\.1:9"):
        asyncio.run(alert_channels.send(target, NOTICE))


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data",  # cloud metadata
        "http://0.0.0.0/hook",
        "ftp://127.0.0.1/hook",
        "http://user:pw@127.0.0.1/hook",  # credentials
        "http://2130706433/hook",  # an IPv4 in disguise
        "http://hooks.example.com/hook",  # plain http to a public address
        "http://127.0.0.1/hook#frag",
    ],
)
def test_webhook_urls_follow_the_provider_url_policy(url: str) -> None:
    def resolve(host: str, port: int):
        return [ipaddress.ip_address("93.184.216.34" if host == "hooks.example.com" else host)]

    with pytest.raises(InvalidInput) as caught:
        alert_channels.validate_webhook_url(url, resolve=resolve)
    assert caught.value.code == "invalid_webhook_url"


def test_a_webhook_url_keeps_its_query_and_path() -> None:
    url = "https://oapi.dingtalk.com/robot/send?access_token=abc123"
    resolved = alert_channels.validate_webhook_url(
        url, resolve=lambda h, p: [ipaddress.ip_address("203.0.113.7")]
    )
    assert resolved == url
    assert alert_channels.url_hint(resolved) == "https://oapi.dingtalk.com/…"


def _history(client: TestClient, token: str) -> list[tuple[str, str]]:
    items = client.get("/api/alerts/history", headers=bearer(token)).json()["items"]
    return [(e["state"], e["key"]) for e in items]


# --- the API ---------------------------------------------------------------------------------------------


def test_channels_api_keeps_secrets_in_the_secret_store_and_audits(
    client: TestClient, app: FastAPI, admin_token: str
) -> None:
    with webhook_receiver() as hook:
        secret_url = hook.url + "/hooks/T0KEN-" + "9f8e7d6c5b4a"
        r = client.post(
            "/api/alerts/channels",
            json={
                "name": "ops",
                "kind": "webhook",
                "url": secret_url,
                "preset": "slack",
                "hmac_secret": HMAC_SECRET,
            },
            headers=bearer(admin_token),
        )
        assert r.status_code == 201, r.text
        channel = r.json()
        assert channel["url_hint"] == f"{hook.url}/…"
        assert channel["signed"] is True
        assert "url" not in channel and "hmac_secret" not in channel

        r = client.post(f"/api/alerts/channels/{channel['id']}/test", headers=bearer(admin_token))
        assert r.json() == {"ok": True, "error": None}
        (received,) = hook.requests
        assert received.path == "/hooks/T0KEN-9f8e7d6c5b4a"
        assert "test message" in received.json()["text"]

    # the receiver is gone: the test fails and the channel says so
    r = client.post(f"/api/alerts/channels/{channel['id']}/test", headers=bearer(admin_token))
    assert r.json()["ok"] is False
    assert "T0KEN" not in r.json()["error"]
    (listed,) = client.get("/api/alerts/channels", headers=bearer(admin_token)).json()["items"]
    assert listed["last_status"] == "failing"
    assert listed["last_error"] == r.json()["error"]
    assert listed["last_success_at"] is not None
    (failing,) = client.get("/api/alerts", headers=bearer(admin_token)).json()["active"]
    assert (failing["key"], failing["level"]) == (f"alert_channel:{channel['id']}", "warning")
    assert wait_for(lambda: _history(client, admin_token) == [("raised", f"alert_channel:{channel['id']}")])

    r = client.patch(
        f"/api/alerts/channels/{channel['id']}",
        json={"min_level": "alert", "quiet_start": "22:00", "quiet_end": "07:00", "repeat_minutes": 5},
        headers=bearer(admin_token),
    )
    assert r.status_code == 200, r.text
    assert (r.json()["min_level"], r.json()["quiet_start"], r.json()["repeat_minutes"]) == (
        "alert",
        "22:00",
        5,
    )
    assert r.json()["signed"] is True  # a change that does not name the secret keeps it

    runtime = app.state.runtime
    with session_scope(runtime.session_factory) as session:
        dump = json.dumps(
            [list(row) for row in session.execute(text("SELECT * FROM alert_channels"))], default=str
        )
        audit = [(e.action, json.dumps(e.details)) for e in session.scalars(select(AuditEntry))]
    for secret in ("T0KEN", HMAC_SECRET):
        assert secret not in dump
        assert all(secret not in details for _, details in audit)
    assert [a for a, _ in audit if a.startswith("alert_channel.")] == [
        "alert_channel.created",
        "alert_channel.changed",
    ]

    assert (
        client.delete(f"/api/alerts/channels/{channel['id']}", headers=bearer(admin_token)).status_code == 204
    )
    assert client.get("/api/alerts/channels", headers=bearer(admin_token)).json()["items"] == []
    assert runtime.secret_store.get(alert_channels.secret_name(uuid.UUID(channel["id"]))) is None


def test_an_email_channel_is_tested_through_the_api(client: TestClient, admin_token: str) -> None:
    with smtp_receiver() as mail:
        r = client.post(
            "/api/alerts/channels",
            json={
                "name": "mail",
                "kind": "email",
                "smtp_host": mail.host,
                "smtp_port": mail.port,
                "smtp_security": "none",
                "email_from": "modeltrain@example.com",
                "email_to": ["ops@example.com"],
            },
            headers=bearer(admin_token),
        )
        assert r.status_code == 201, r.text
        assert r.json()["has_password"] is False
        r = client.post(f"/api/alerts/channels/{r.json()['id']}/test", headers=bearer(admin_token))
        assert r.json() == {"ok": True, "error": None}
    (message,) = mail.messages
    assert message["Subject"].startswith("[ModelTrain] test message from")


def test_channel_mistakes_are_4xx_never_500(client: TestClient, admin_token: str, user_token: str) -> None:
    h = bearer(admin_token)
    cases = [
        ({"name": "x", "kind": "webhook"}, 422, "invalid_alert_channel"),  # no URL
        ({"name": "x", "kind": "webhook", "url": "http://169.254.169.254/"}, 422, "invalid_webhook_url"),
        ({"name": "x", "kind": "email", "smtp_host": "127.0.0.1"}, 422, "invalid_alert_channel"),
        ({"name": "x", "kind": "webhook", "url": "http://127.0.0.1/", "quiet_start": "22:00"}, 422, None),
        ({"name": "x", "kind": "pager"}, 422, None),
    ]
    for body, status, code in cases:
        r = client.post("/api/alerts/channels", json=body, headers=h)
        assert r.status_code == status, (body, r.text)
        if code:
            assert r.json()["code"] == code
    assert (
        client.post(
            "/api/alerts/channels",
            json={"name": "a", "kind": "webhook", "url": "http://127.0.0.1/"},
            headers=h,
        ).status_code
        == 201
    )
    r = client.post(
        "/api/alerts/channels", json={"name": "a", "kind": "webhook", "url": "http://127.0.0.1/"}, headers=h
    )
    assert (r.status_code, r.json()["code"]) == (409, "alert_channel_name_taken")
    missing = "00000000-0000-0000-0000-000000000000"
    assert client.post(f"/api/alerts/channels/{missing}/test", headers=h).status_code == 404
    assert client.get("/api/alerts/channels", headers=bearer(user_token)).status_code == 403

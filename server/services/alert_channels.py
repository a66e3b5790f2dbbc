"""Outbound alert channels (admin): webhooks and SMTP e-mail, how alerts are put into words, and sending.

Secrets never enter the database: a channel's webhook URL (Slack, DingTalk and Feishu put their token in
it), its HMAC secret and its SMTP password are one JSON entry ``alert_channel:<id>`` in the app's secret
store (``security/secret_store.py``, as provider API keys); the row keeps only ``url_hint`` (scheme and
host) and whether a secret exists. Webhook URLs follow the provider URL policy (docs/security.md, D3):
http(s) only, no credentials, no link-local/metadata/reserved address, plain http only to loopback or
private addresses; every connection is checked again when it opens (``providers/transport.py``).

Webhook bodies (``preset``): ``generic`` ``{"text", "alert": {...}}``; ``slack`` ``{"text"}`` (also
Mattermost, Rocket.Chat, Teams workflows); ``dingtalk`` ``{"msgtype": "text", "text": {"content"}}``;
``feishu`` ``{"msg_type": "text", "content": {"text"}}`` (Feishu and Lark). With an HMAC secret the request
carries ``X-ModelTrain-Timestamp`` (epoch seconds) and ``X-ModelTrain-Signature: sha256=<hex>``, the
HMAC-SHA256 of ``"<timestamp>.<body>"``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import smtplib
import ssl
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.db.models import AlertChannel, AlertDelivery
from server.errors import Conflict, InvalidInput, NotFound
from server.providers import netpolicy
from server.providers.transport import AiohttpTransport
from server.schemas.alert_channel import AlertChannelCreate, AlertChannelRead, AlertChannelUpdate
from server.security.secret_store import SecretStore
from server.services import audit
from server.services.audit import AuditAction, AuditContext, AuditTarget

log = logging.getLogger(__name__)

LEVEL_RANK = {"warning": 1, "alert": 2}
SEND_TIMEOUT = 15.0
SIGNATURE_HEADER = "X-ModelTrain-Signature"
TIMESTAMP_HEADER = "X-ModelTrain-Timestamp"


# --- what is sent ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Notice:
    """One alert change as the channels word it."""

    key: str
    state: str  # raised | changed | resolved | test
    level: str
    message: str
    value: str | None
    instance: str
    at: datetime
    since: datetime

    @property
    def title(self) -> str:
        if self.state == "resolved":
            return f"[ModelTrain] resolved: {self.key} on {self.instance}"
        if self.state == "test":
            return f"[ModelTrain] test message from {self.instance}"
        return f"[ModelTrain] {self.level.upper()}: {self.key} on {self.instance}"

    @property
    def text(self) -> str:
        return f"{self.title}\n{self.message}\n{self.at.isoformat(timespec='seconds')}"

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "state": self.state,
            "level": self.level,
            "message": self.message,
            "value": self.value,
            "instance": self.instance,
            "at": self.at.isoformat(),
            "since": self.since.isoformat(),
        }


def webhook_body(preset: str, notice: Notice) -> dict[str, Any]:
    if preset == "slack":
        return {"text": notice.text}
    if preset == "dingtalk":
        return {"msgtype": "text", "text": {"content": notice.text}}
    if preset == "feishu":
        return {"msg_type": "text", "content": {"text": notice.text}}
    return {"text": notice.text, "alert": notice.as_json()}


def signature(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


# --- secrets ---------------------------------------------------------------------------------------------


def secret_name(channel_id: uuid.UUID) -> str:
    return f"alert_channel:{channel_id}"


def read_secrets(secrets: SecretStore, channel: AlertChannel) -> dict[str, str]:
    if not channel.has_secret:
        return {}
    raw = secrets.get(secret_name(channel.id))
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return {k: v for k, v in value.items() if isinstance(v, str)} if isinstance(value, dict) else {}


def _write_secrets(secrets: SecretStore, channel: AlertChannel, values: dict[str, str]) -> None:
    values = {k: v for k, v in values.items() if v}
    if values:
        secrets.set(secret_name(channel.id), json.dumps(values))
    elif channel.has_secret:
        secrets.delete(secret_name(channel.id))
    channel.has_secret = bool(values)


# --- validation ------------------------------------------------------------------------------------------


def _invalid(field: str, message: str, code: str = "invalid_alert_channel") -> InvalidInput:
    return InvalidInput(message, code=code, detail={"field": field})


def validate_webhook_url(url: str, *, resolve: Any = None) -> str:
    """The provider URL policy (services/providers.py ``validate_base_url``), a query allowed (DingTalk's
    ``access_token``). Blocking (DNS): call off the event loop."""
    from server.services.providers import validate_base_url

    raw = url.strip()
    base, sep, query = raw.partition("?")
    if "#" in raw:
        raise _invalid("url", "the webhook URL must not contain a fragment (#)", "invalid_webhook_url")
    try:
        checked = validate_base_url("webhook", base, resolve=resolve)
    except InvalidInput as exc:
        message = exc.message.replace("invalid base URL", "invalid webhook URL")
        raise _invalid("url", message, "invalid_webhook_url") from None
    if base.endswith("/") and not checked.endswith("/"):
        checked += "/"
    return checked + (sep + query if sep else "")


def url_hint(url: str) -> str:
    parsed = httpx.URL(url)
    return f"{parsed.scheme}://{parsed.host}" + (f":{parsed.port}" if parsed.port else "") + "/…"


def _check_smtp_host(host: str, port: int) -> None:
    try:
        addresses = netpolicy.resolve(host, port)
        netpolicy.check_addresses(addresses)
    except (OSError, UnicodeError):
        raise _invalid("smtp_host", f"the host {host} cannot be resolved") from None
    except netpolicy.BlockedAddress as exc:
        raise _invalid("smtp_host", f"invalid SMTP host: {exc}") from None


def _check_quiet(start: str | None, end: str | None) -> None:
    if (start is None) != (end is None):
        raise _invalid("quiet_start", "quiet hours need both a start and an end")


# --- CRUD ------------------------------------------------------------------------------------------------


def get_channel(session: Session, channel_id: uuid.UUID) -> AlertChannel:
    channel = session.get(AlertChannel, channel_id)
    if channel is None:
        raise NotFound("alert channel not found", code="alert_channel_not_found")
    return channel


def _name_free(session: Session, name: str, exclude: uuid.UUID | None = None) -> None:
    query = select(AlertChannel.id).where(AlertChannel.name == name)
    if exclude is not None:
        query = query.where(AlertChannel.id != exclude)
    if session.scalar(query) is not None:
        raise Conflict(f"an alert channel named {name!r} exists", code="alert_channel_name_taken")


def to_read(session: Session, channel: AlertChannel) -> AlertChannelRead:
    counts = dict(
        session.execute(
            select(AlertDelivery.status, func.count())
            .where(AlertDelivery.channel_id == channel.id, AlertDelivery.status.in_(("pending", "failed")))
            .group_by(AlertDelivery.status)
        ).all()
    )
    cfg = channel.config or {}
    return AlertChannelRead(
        id=channel.id,
        name=channel.name,
        kind=channel.kind,
        enabled=channel.enabled,
        min_level=channel.min_level,
        quiet_start=channel.quiet_start,
        quiet_end=channel.quiet_end,
        repeat_minutes=channel.repeat_minutes,
        url_hint=cfg.get("url_hint"),
        preset=cfg.get("preset"),
        signed=bool(cfg.get("signed")),
        smtp_host=cfg.get("smtp_host"),
        smtp_port=cfg.get("smtp_port"),
        smtp_security=cfg.get("smtp_security"),
        smtp_username=cfg.get("smtp_username"),
        has_password=bool(cfg.get("has_password")),
        email_from=cfg.get("email_from"),
        email_to=list(cfg.get("email_to") or []),
        last_status=channel.last_status,
        last_error=channel.last_error,
        last_attempt_at=channel.last_attempt_at,
        last_success_at=channel.last_success_at,
        pending=int(counts.get("pending", 0)),
        failed=int(counts.get("failed", 0)),
        created_at=channel.created_at,
    )


def list_channels(session: Session) -> list[AlertChannelRead]:
    rows = session.scalars(select(AlertChannel).order_by(AlertChannel.name))
    return [to_read(session, c) for c in rows]


def _apply(
    channel: AlertChannel,
    values: dict[str, Any],
    secrets_now: dict[str, str],
    *,
    resolve: Any = None,
) -> dict[str, str]:
    """Apply the given fields to ``channel`` (validated); returns the channel's secrets after the change."""
    cfg = dict(channel.config or {})
    for field in ("enabled", "min_level", "quiet_start", "quiet_end", "repeat_minutes"):
        if field in values and (values[field] is not None or field.startswith("quiet")):
            setattr(channel, field, values[field])
    _check_quiet(channel.quiet_start, channel.quiet_end)
    secrets = dict(secrets_now)
    if channel.kind == "webhook":
        if values.get("url") is not None:
            url = validate_webhook_url(values["url"], resolve=resolve)
            secrets["url"] = url
            cfg["url_hint"] = url_hint(url)
        if not secrets.get("url"):
            raise _invalid("url", "a webhook channel needs a URL")
        if values.get("preset") is not None:
            cfg["preset"] = values["preset"]
        cfg.setdefault("preset", "generic")
        if values.get("hmac_secret") is not None:
            secrets["hmac_secret"] = values["hmac_secret"]
        cfg["signed"] = bool(secrets.get("hmac_secret"))
    else:
        for field in ("smtp_host", "smtp_port", "smtp_security", "smtp_username", "email_from", "email_to"):
            if values.get(field) is not None:
                cfg[field] = values[field]
        cfg.setdefault("smtp_security", "starttls")
        cfg.setdefault("smtp_port", 465 if cfg["smtp_security"] == "tls" else 587)
        if not cfg.get("smtp_host"):
            raise _invalid("smtp_host", "an e-mail channel needs an SMTP host")
        if not cfg.get("email_from") or not cfg.get("email_to"):
            raise _invalid("email_to", "an e-mail channel needs a sender and at least one recipient")
        if "smtp_host" in values and values["smtp_host"] is not None:
            _check_smtp_host(cfg["smtp_host"], int(cfg["smtp_port"]))
        if values.get("smtp_password") is not None:
            secrets["password"] = values["smtp_password"]
        cfg["has_password"] = bool(secrets.get("password"))
    channel.config = cfg
    return secrets


def _audit_state(channel: AlertChannel) -> dict[str, Any]:
    cfg = channel.config or {}
    return {
        "kind": channel.kind,
        "enabled": channel.enabled,
        "min_level": channel.min_level,
        "quiet": f"{channel.quiet_start}-{channel.quiet_end}" if channel.quiet_start else None,
        "repeat_minutes": channel.repeat_minutes,
        "target": cfg.get("url_hint") or cfg.get("smtp_host"),
    }


def create_channel(
    session: Session,
    data: AlertChannelCreate,
    secrets: SecretStore,
    *,
    ctx: AuditContext,
    resolve: Any = None,
) -> AlertChannel:
    _name_free(session, data.name)
    channel = AlertChannel(id=uuid.uuid4(), name=data.name, kind=data.kind, config={})
    values = data.model_dump()
    new_secrets = _apply(channel, values, {}, resolve=resolve)
    session.add(channel)
    _write_secrets(secrets, channel, new_secrets)
    session.flush()
    audit.record(
        session,
        ctx,
        AuditAction.ALERT_CHANNEL_CREATED,
        target=AuditTarget("alert_channel", channel.id, channel.name),
        details=_audit_state(channel),
    )
    return channel


def update_channel(
    session: Session,
    channel_id: uuid.UUID,
    data: AlertChannelUpdate,
    secrets: SecretStore,
    *,
    ctx: AuditContext,
    resolve: Any = None,
) -> AlertChannel:
    channel = get_channel(session, channel_id)
    values = data.model_dump(exclude_unset=True)
    if values.get("name") is not None:
        _name_free(session, values["name"], exclude=channel.id)
        channel.name = values["name"]
    before = _audit_state(channel)
    new_secrets = _apply(channel, values, read_secrets(secrets, channel), resolve=resolve)
    _write_secrets(secrets, channel, new_secrets)
    after = _audit_state(channel)
    changed = {k: after[k] for k in after if after[k] != before[k]}
    if "url" in values or "hmac_secret" in values or "smtp_password" in values:
        changed["secrets_changed"] = True  # which, never what
    audit.record(
        session,
        ctx,
        AuditAction.ALERT_CHANNEL_CHANGED,
        target=AuditTarget("alert_channel", channel.id, channel.name),
        details=changed,
    )
    return channel


def delete_channel(
    session: Session, channel_id: uuid.UUID, secrets: SecretStore, *, ctx: AuditContext
) -> None:
    channel = get_channel(session, channel_id)
    if channel.has_secret:
        try:
            secrets.delete(secret_name(channel.id))
        except Exception:
            log.warning("could not delete an alert channel's secrets from the secret store")
    audit.record(
        session,
        ctx,
        AuditAction.ALERT_CHANNEL_DELETED,
        target=AuditTarget("alert_channel", channel.id, channel.name),
    )
    session.delete(channel)


# --- sending ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """What sending needs of a channel, read in a worker thread (row and secrets), used on the loop."""

    channel_id: uuid.UUID
    name: str
    kind: str
    config: dict[str, Any]
    secrets: dict[str, str]


def target_of(channel: AlertChannel, secrets: SecretStore) -> Target:
    return Target(
        channel.id, channel.name, channel.kind, dict(channel.config or {}), read_secrets(secrets, channel)
    )


class DeliveryError(Exception):
    """A channel refused or could not be reached (the message is safe to show: no secret in it)."""


async def send(target: Target, notice: Notice, transport: httpx.AsyncBaseTransport | None = None) -> None:
    if target.kind == "webhook":
        await _send_webhook(target, notice, transport)
    else:
        await asyncio.to_thread(_send_email, target, notice)


async def _send_webhook(target: Target, notice: Notice, transport: httpx.AsyncBaseTransport | None) -> None:
    url = target.secrets.get("url")
    if not url:
        raise DeliveryError("the webhook URL is missing from the secret store; enter it again")
    body = json.dumps(webhook_body(target.config.get("preset", "generic"), notice)).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "ModelTrain-alerts"}
    secret = target.secrets.get("hmac_secret")
    if secret:
        stamp = str(int(time.time()))
        headers[TIMESTAMP_HEADER] = stamp
        headers[SIGNATURE_HEADER] = signature(secret, stamp, body)
    hint = target.config.get("url_hint", "the webhook")
    # The providers' guarded transport: every address checked when the connection opens (DNS
    # rebinding), no redirects, no proxy from the environment. A fresh one per send: alerts are rare,
    # and the client closes it.
    guarded = transport or AiohttpTransport(httpx.Limits(max_connections=2, max_keepalive_connections=0))
    try:
        async with httpx.AsyncClient(
            transport=guarded, timeout=SEND_TIMEOUT, follow_redirects=False, trust_env=False
        ) as client:
            response = await client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        # The URL (and its token) is never part of the message: only the hint.
        raise DeliveryError(f"{hint}: {type(exc).__name__}") from None
    if response.status_code >= 300:
        raise DeliveryError(f"{hint} answered HTTP {response.status_code}")
    # DingTalk and Feishu answer 200 with an error code in the body.
    try:
        answer = response.json()
    except ValueError:
        return
    if isinstance(answer, dict):
        code = answer.get("errcode", answer.get("code", answer.get("StatusCode", 0)))
        if isinstance(code, int) and code != 0:
            message = str(answer.get("errmsg") or answer.get("msg") or "")[:200]
            raise DeliveryError(f"{hint} refused the message: code {code} {message}".strip())


def _send_email(target: Target, notice: Notice) -> None:
    cfg = target.config
    message = EmailMessage()
    message["Subject"] = notice.title
    message["From"] = cfg["email_from"]
    message["To"] = ", ".join(cfg.get("email_to") or [])
    message.set_content(notice.text)
    host, port, security = cfg["smtp_host"], int(cfg.get("smtp_port") or 587), cfg.get("smtp_security")
    context = ssl.create_default_context()
    try:
        _check_smtp_host(host, port)
        client: smtplib.SMTP
        if security == "tls":
            client = smtplib.SMTP_SSL(host, port, timeout=SEND_TIMEOUT, context=context)
        else:
            client = smtplib.SMTP(host, port, timeout=SEND_TIMEOUT)
        with client:
            if security == "starttls":
                client.starttls(context=context)
            username, password = cfg.get("smtp_username"), target.secrets.get("password")
            if username and password:
                client.login(username, password)
            client.send_message(message)
    except InvalidInput as exc:
        raise DeliveryError(exc.message) from None
    except (smtplib.SMTPException, OSError) as exc:
        detail = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise DeliveryError(f"SMTP {host}:{port}: {type(exc).__name__} {detail}".strip()) from None

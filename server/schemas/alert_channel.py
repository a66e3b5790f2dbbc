"""Outbound alert channels (System → Alerts → Channels): webhooks and SMTP e-mail.

Write-only fields (``url``, ``hmac_secret``, ``smtp_password``) go to the secret store and are never
returned; reads show ``url_hint`` (scheme and host), ``signed`` and ``has_password`` instead."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

ChannelKind = Literal["webhook", "email"]
Level = Literal["warning", "alert"]
WebhookPreset = Literal["generic", "slack", "dingtalk", "feishu"]
SmtpSecurity = Literal["starttls", "tls", "none"]
_HHMM = r"^([01]\d|2[0-3]):[0-5]\d$"
Address = Annotated[str, StringConstraints(pattern=r"^[^@\s<>]+@[^@\s<>]+$", max_length=320)]


class _ChannelCommon(BaseModel):
    enabled: bool = True
    min_level: Level = Field("warning", description="the lowest level sent")
    quiet_start: str | None = Field(
        None, pattern=_HHMM, description="HH:MM local time: from here to quiet_end warnings are held back"
    )
    quiet_end: str | None = Field(None, pattern=_HHMM)
    repeat_minutes: int = Field(
        60, ge=0, le=10080, description="the same alert is sent again at most once in this many minutes"
    )


class AlertChannelCreate(_ChannelCommon):
    name: str = Field(min_length=1, max_length=100)
    kind: ChannelKind
    # webhook
    url: str | None = Field(None, max_length=2000, description="webhook URL (kept in the secret store)")
    preset: WebhookPreset = Field("generic", description="body shape: generic JSON, Slack, DingTalk, Feishu")
    hmac_secret: str | None = Field(
        None, max_length=500, description="signs the body: X-ModelTrain-Signature: sha256=<hex>"
    )
    # e-mail
    smtp_host: str | None = Field(None, max_length=255)
    smtp_port: int | None = Field(None, ge=1, le=65535)
    smtp_security: SmtpSecurity = "starttls"
    smtp_username: str | None = Field(None, max_length=320)
    smtp_password: str | None = Field(None, max_length=500, description="kept in the secret store")
    email_from: Address | None = None
    email_to: list[Address] = Field(default_factory=list, max_length=20)


class AlertChannelUpdate(BaseModel):
    """Only the fields given change; an empty ``hmac_secret`` or ``smtp_password`` removes it."""

    name: str | None = Field(None, min_length=1, max_length=100)
    enabled: bool | None = None
    min_level: Level | None = None
    quiet_start: str | None = Field(None, pattern=_HHMM)
    quiet_end: str | None = Field(None, pattern=_HHMM)
    repeat_minutes: int | None = Field(None, ge=0, le=10080)
    url: str | None = Field(None, max_length=2000)
    preset: WebhookPreset | None = None
    hmac_secret: str | None = Field(None, max_length=500)
    smtp_host: str | None = Field(None, max_length=255)
    smtp_port: int | None = Field(None, ge=1, le=65535)
    smtp_security: SmtpSecurity | None = None
    smtp_username: str | None = Field(None, max_length=320)
    smtp_password: str | None = Field(None, max_length=500)
    email_from: Address | None = None
    email_to: list[Address] | None = Field(None, max_length=20)


class AlertChannelRead(_ChannelCommon):
    id: uuid.UUID
    name: str
    kind: ChannelKind
    url_hint: str | None = Field(None, description="the webhook's scheme and host (the rest may be a token)")
    preset: WebhookPreset | None = None
    signed: bool = False
    smtp_host: str | None = None
    smtp_port: int | None = None
    smtp_security: SmtpSecurity | None = None
    smtp_username: str | None = None
    has_password: bool = False
    email_from: str | None = None
    email_to: list[str] = Field(default_factory=list)
    last_status: str | None = Field(None, description="ok | failing; None before the first attempt")
    last_error: str | None = None
    last_attempt_at: datetime | None = None
    last_success_at: datetime | None = None
    pending: int = Field(0, description="deliveries waiting (a retry is due later)")
    failed: int = Field(0, description="deliveries given up after every attempt")
    created_at: datetime


class AlertChannelList(BaseModel):
    items: list[AlertChannelRead]


class AlertChannelTestResult(BaseModel):
    ok: bool
    error: str | None = None

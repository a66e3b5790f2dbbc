from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from server.schemas.common import StrictModel


class ApiKeyCreate(StrictModel):
    name: str = Field(min_length=1, max_length=100)
    #: When the key stops working (None: never).
    expires_at: datetime | None = None
    #: Model ids or ``*``-globs the key may use (None: every model).
    models: list[str] | None = Field(default=None, max_length=100)
    #: Client IPs or CIDR networks the key may be used from (None: any address).
    ips: list[str] | None = Field(default=None, max_length=100)


class ApiKeyRead(BaseModel):
    """A key as listed: never the key itself, only its shown prefix."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    prefix: str
    user_id: uuid.UUID
    user_email: str = ""
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    models: list[str] | None
    ips: list[str] | None


class ApiKeyCreated(ApiKeyRead):
    #: The key: returned here once and never again.
    key: str


class ApiKeyList(BaseModel):
    items: list[ApiKeyRead]


class ApiKeySettings(BaseModel):
    #: Whether users with the ``user`` role may create keys (administrators always may).
    user_creation: bool


class ApiKeySettingsUpdate(StrictModel):
    user_creation: bool

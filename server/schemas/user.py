from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from server.schemas.common import Page, StrictModel

Role = Literal["admin", "user"]
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")
#: The same, for the API document: what normalize_email accepts (surrounding blanks are trimmed).
EMAIL_PATTERN = r"^\s*[^@\s]{1,64}@[^@\s]{1,255}\s*$"


def normalize_email(value: str) -> str:
    value = value.strip().lower()
    if not _EMAIL.match(value):
        raise ValueError("is not a valid e-mail address")
    return value


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str
    display_name: str
    role: Role
    is_active: bool
    must_change_password: bool
    created_at: datetime
    last_login_at: datetime | None


class UserCreate(StrictModel):
    email: str = Field(max_length=320, json_schema_extra={"pattern": EMAIL_PATTERN})
    password: str = Field(max_length=1024)
    display_name: str = Field(default="", max_length=100)
    role: Role = "user"

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        return normalize_email(value)


class UserUpdate(StrictModel):
    display_name: str | None = Field(default=None, max_length=100)
    role: Role | None = None
    is_active: bool | None = None


class UserSelfUpdate(StrictModel):
    """What a user may change on their own account (role and status are not here on purpose)."""

    display_name: str = Field(max_length=100)


class PasswordReset(StrictModel):
    new_password: str = Field(max_length=1024)


UserPage = Page[UserRead]

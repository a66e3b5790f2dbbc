from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from server.schemas.common import StrictModel
from server.schemas.user import UserRead


class LoginRequest(StrictModel):
    email: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=1024)


class PasswordChange(StrictModel):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(max_length=1024)


class TokenRead(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    user: UserRead
    #: True for the desktop owner's session inside the desktop app (the initial-password rule is relaxed).
    desktop: bool = False


class DesktopPasswordSet(StrictModel):
    """Desktop app: replace the initial password without knowing it (desktop sessions only)."""

    new_password: str = Field(max_length=1024)

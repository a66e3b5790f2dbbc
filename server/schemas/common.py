from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

T = TypeVar("T")


class ErrorRead(BaseModel):
    code: str
    message: str
    detail: Any = None


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    page: int
    size: int


class StrictModel(BaseModel):
    """Request bodies: unknown fields are rejected, so a typo or a mass-assignment attempt is a 422."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

from __future__ import annotations

import math
import uuid
from datetime import datetime
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator

from server.schemas.common import Page, StrictModel

MAX_SYSTEM_PROMPT_CHARS = 100_000

#: Extra generation options a configuration may carry, with their accepted types.
OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "seed": (int,),
    "stop": (str, list),
    "top_k": (int,),
    "min_p": (int, float),
    "repeat_penalty": (int, float),
    "presence_penalty": (int, float),
    "frequency_penalty": (int, float),
    "keep_alive": (str, int, float),
}


def check_options(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    for key, item in value.items():
        types = OPTION_TYPES.get(key)
        if types is None:
            raise ValueError(f"unknown option {key!r}; known: {', '.join(sorted(OPTION_TYPES))}")
        if isinstance(item, bool) or not isinstance(item, types):
            raise ValueError(f"option {key!r} has the wrong type")
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"option {key!r} must be a finite number")
        if key == "stop":
            stops: list[Any] = [item] if isinstance(item, str) else list(cast("list[Any]", item))
            if len(stops) > 16 or not all(isinstance(s, str) and 0 < len(s) <= 100 for s in stops):
                raise ValueError("option 'stop' takes up to 16 strings of 1-100 characters")
        if key == "keep_alive" and isinstance(item, str) and len(item) > 20:
            raise ValueError("option 'keep_alive' is too long")
    return value


def _clean_text(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if not value:
        raise ValueError("must not be empty")
    if any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in value):
        raise ValueError(f"{what} must not contain control characters")
    return value


class ModelConfigRead(BaseModel):
    """A preset as the caller sees it."""

    model_config = ConfigDict(from_attributes=True, protected_namespaces=())

    id: uuid.UUID
    provider_id: uuid.UUID
    #: The user a personal preset belongs to; ``None`` for a shared one.
    owner_id: uuid.UUID | None
    #: Shared with everyone (managed by admins) rather than personal.
    shared: bool
    #: Whether the caller may change or delete it (its owner; an admin for a shared one).
    editable: bool
    name: str
    model: str
    system_prompt: str
    temperature: float | None
    top_p: float | None
    context_length: int | None
    max_tokens: int | None
    options: dict[str, Any]
    enabled: bool
    created_at: datetime
    updated_at: datetime


class _ModelConfigFields(StrictModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    system_prompt: str | None = Field(default=None, max_length=MAX_SYSTEM_PROMPT_CHARS)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    context_length: int | None = Field(default=None, ge=1, le=4_194_304)
    max_tokens: int | None = Field(default=None, ge=1, le=1_048_576)
    options: dict[str, Any] | None = None
    enabled: bool | None = None

    @field_validator("options")
    @classmethod
    def _options(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return check_options(value)


class ModelConfigCreate(_ModelConfigFields):
    """The base model is either ``provider_id`` + ``model`` or ``base_model_id`` (an id from
    ``GET /api/models`` of a discovered model, e.g. ``ollama:<provider id>:<name>``), not both."""

    provider_id: uuid.UUID | None = None
    name: str = Field(min_length=1, max_length=200)
    model: str | None = Field(default=None, min_length=1, max_length=300)
    base_model_id: str | None = Field(default=None, min_length=1, max_length=1200)
    #: Shared with everyone (admins only). Omitted: shared when an admin creates it, personal otherwise.
    shared: bool | None = None

    @field_validator("name")
    @classmethod
    def _text(cls, value: str) -> str:
        return _clean_text(value, "the value") or ""

    @field_validator("model")
    @classmethod
    def _model(cls, value: str | None) -> str | None:
        return _clean_text(value, "the value")


class ModelConfigUpdate(_ModelConfigFields):
    """Omitted fields stay as they are; ``null`` clears a numeric default."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    model: str | None = Field(default=None, min_length=1, max_length=300)
    #: Another base model (a discovered model id, as on create); replaces provider and model.
    base_model_id: str | None = Field(default=None, min_length=1, max_length=1200)
    #: Admins: make a preset shared with everyone, or a shared one their own personal preset again.
    shared: bool | None = None

    @field_validator("name", "model")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        return _clean_text(value, "the value")


ModelConfigPage = Page[ModelConfigRead]

"""Explicit routes (``/api/routes``, admin): one model name served by several (provider, model) targets."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, field_validator

from server.schemas.common import STRIPPED_TEXT_PATTERN, StrictModel

#: A route's name is its model id in the picker and at ``/v1``: no spaces, no control characters.
ROUTE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,99}$")
#: The same for the API document (the name is stripped first).
ROUTE_NAME_PATTERN = r"^\s*[A-Za-z0-9][A-Za-z0-9_.:/-]{0,99}\s*$"
MAX_TARGETS = 32


def _clean_route_name(value: str) -> str:
    value = value.strip()
    if not ROUTE_NAME.match(value):
        raise ValueError(
            "a route name is 1-100 letters, digits, '.', '_', ':', '/' or '-', "
            "starting with a letter or digit"
        )
    return value


class ModelRouteTarget(StrictModel):
    provider_id: uuid.UUID
    #: The model's name on that provider (as its model list spells it).
    model: str = Field(min_length=1, max_length=256, json_schema_extra={"pattern": STRIPPED_TEXT_PATTERN})
    #: The smallest priority is tried first.
    priority: int = Field(default=0, ge=0, le=1000)
    #: Targets of one priority share the requests in proportion to their weights.
    weight: float = Field(default=1.0, gt=0, le=1000)

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        value = value.strip()
        if not value or any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in value):
            raise ValueError("must be a model name without control characters")
        return value


class ModelRouteRead(BaseModel):
    id: uuid.UUID
    name: str
    enabled: bool
    targets: list[ModelRouteTarget]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> ModelRouteRead:
        return cls(
            id=row.id,
            name=row.name,
            enabled=row.enabled,
            targets=[ModelRouteTarget.model_validate(t) for t in row.targets or []],
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class ModelRouteCreate(StrictModel):
    name: str = Field(min_length=1, max_length=100, json_schema_extra={"pattern": ROUTE_NAME_PATTERN})
    enabled: bool = True
    targets: list[ModelRouteTarget] = Field(min_length=1, max_length=MAX_TARGETS)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _clean_route_name(value)


class ModelRouteUpdate(StrictModel):
    """Omitted fields stay as they are; ``targets`` replaces the whole list."""

    name: str | None = Field(
        default=None, min_length=1, max_length=100, json_schema_extra={"pattern": ROUTE_NAME_PATTERN}
    )
    enabled: bool | None = None
    targets: list[ModelRouteTarget] | None = Field(default=None, min_length=1, max_length=MAX_TARGETS)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return None if value is None else _clean_route_name(value)


class ModelRouteList(BaseModel):
    items: list[ModelRouteRead]

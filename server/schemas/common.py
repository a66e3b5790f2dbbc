from __future__ import annotations

import functools
import re
import types
from datetime import date, datetime
from typing import Annotated, Any, Generic, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationInfo, field_validator

T = TypeVar("T")

# The Ollama model-name grammar of server/providers/model_names.py (docs/protocols.md, §F.5) as a JSON
# Schema (ECMAScript) pattern, for the API document: ``[host/][namespace/]model[:tag]``, ASCII, no part
# starting with "." or "-", no "..". The services enforce it themselves, answering 422
# ``invalid_model_name`` (the code the UI knows); the schema states it so that clients and generated
# requests know it too. tests/server/test_openapi_contract.py checks the two agree.
_HOST = r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,349}"
_NS = r"[A-Za-z0-9_][A-Za-z0-9_-]{0,79}"
_PART = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}"
MODEL_NAME_PATTERN = rf"^(?!.*\.\.)(?!.*\n)(?:(?:{_HOST}/)?{_NS}/)?{_PART}(?::{_PART})?$"
MODEL_NAME_MAX_LENGTH = 593
#: For ``json_schema_extra`` of a model-name field or parameter (documented, enforced by the service).
MODEL_NAME_SCHEMA: dict[str, Any] = {"pattern": MODEL_NAME_PATTERN, "maxLength": MODEL_NAME_MAX_LENGTH}

# What the usual clean-up validators accept, as JSON Schema patterns for the document (``\s`` as in
# Python: str.split and str.strip take the same characters for blanks).
_CONTROL = r"\x00-\x1f\x7f-\x9f"
#: Control characters that are no blanks (split and strip leave them in place).
_HARD_CONTROL = r"\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f"
#: A name cleaned with ``" ".join(value.split())``: blanks anywhere, no other control character, not blank.
SPACED_NAME_PATTERN = rf"^[^{_HARD_CONTROL}]*[^\s{_CONTROL}][^{_HARD_CONTROL}]*$"
#: Text cleaned with ``.strip()``: blanks around it, no control character inside, not blank.
STRIPPED_TEXT_PATTERN = rf"^\s*[^\s{_CONTROL}](?:[^{_CONTROL}]*[^\s{_CONTROL}])?\s*$"
#: A token (an API key) cleaned with ``.strip()``: no space or control character inside, not blank.
TOKEN_PATTERN = r"^\s*[^\s\x00-\x20\x7f](?:[^\x00-\x20\x7f]*[^\s\x00-\x20\x7f])?\s*$"


class ErrorRead(BaseModel):
    code: str
    message: str
    detail: Any = None


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    page: int
    size: int


class JsonScalars(BaseModel):
    """A request model whose scalar fields take only the JSON type the schema names: pydantic's lax mode
    would also take ``0`` for ``false``, ``"5"`` for ``5`` or a number for a time, which the document does
    not allow (a 422 like any other type error)."""

    @field_validator("*", mode="before")
    @classmethod
    def _json_types_only(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None or info.field_name is None:
            return value
        kinds = _field_kinds(cls, info.field_name)
        if not kinds:
            return value
        if isinstance(value, bool):
            ok = bool in kinds
        elif isinstance(value, (int, float)):  # JSON Schema's integer includes 2.0
            ok = float in kinds or (int in kinds and (isinstance(value, int) or value.is_integer()))
        else:
            ok = not isinstance(value, str) or bool(kinds & {str, date, datetime})
        if not ok:
            names = " or ".join(sorted({_JSON_NAMES[k] for k in kinds}))
            raise ValueError(f"must be {names}")
        return value


class StrictModel(JsonScalars):
    """Request bodies: unknown fields are rejected, so a typo or a mass-assignment attempt is a 422; scalars
    take their JSON type only (:class:`JsonScalars`)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


_JSON_NAMES = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    date: "an ISO 8601 date",
    datetime: "an ISO 8601 time",
}


@functools.cache
def _field_kinds(model: type[BaseModel], name: str) -> frozenset[type] | None:
    field = model.model_fields.get(name)
    return _scalar_kinds(field.annotation) if field is not None else None


def _scalar_kinds(annotation: Any) -> frozenset[type] | None:
    """The scalar types (bool, int, float, str, date, datetime) a field takes, when its type is such a
    scalar or a union of them with None; None for any other field (and for plain strings)."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    members = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    members = tuple(m for m in members if m is not type(None))
    if not members or any(m not in _JSON_NAMES for m in members):
        return None
    if all(m is str for m in members):
        return None
    return frozenset(members)


_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")


def _iso_text(value: Any) -> Any:
    """A date or a time given as ISO 8601 text only: pydantic would also read a number as a Unix time,
    which the schema (``format: date`` / ``date-time``) does not allow."""
    if (isinstance(value, (int, float)) and not isinstance(value, bool)) or (
        isinstance(value, str) and _NUMBER.fullmatch(value)
    ):
        raise ValueError("must be an ISO 8601 date or time, not a number")
    return value


#: Query parameters: a day (``2026-12-04``) or a time (``2026-12-04T10:00:00Z``), as text.
IsoDate = Annotated[date, BeforeValidator(_iso_text)]
IsoDateTime = Annotated[datetime, BeforeValidator(_iso_text)]

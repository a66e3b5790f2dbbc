from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator

from server.schemas.common import SPACED_NAME_PATTERN, TOKEN_PATTERN, Page, StrictModel

ProviderKind = Literal["ollama", "openai"]
MAX_API_KEY_LENGTH = 4096
MAX_ALLOWLIST_ENTRIES = 200
MAX_MODEL_ID_LENGTH = 256


def _clean_name(value: str) -> str:
    value = " ".join(value.split())
    if not value:
        raise ValueError("must not be empty")
    if any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in value):
        raise ValueError("must not contain control characters")
    return value


#: What _clean_name and _clean_key accept, stated in the API document.
NAME_PATTERN = SPACED_NAME_PATTERN
API_KEY_PATTERN = TOKEN_PATTERN
#: The shape services/providers.validate_base_url requires (http or https, no credentials, query or
#: fragment); where its host resolves is the network policy's to judge (docs/security.md, D3).
BASE_URL_PATTERN = r"^\s*[Hh][Tt][Tt][Pp][Ss]?://[^\x00-\x20\x7f\\?#@]+\s*$"


def _clean_key(value: SecretStr | None) -> SecretStr | None:
    if value is None:
        return None
    raw = value.get_secret_value().strip()
    if not raw:
        raise ValueError("must not be empty (send null to remove the key)")
    if any(ord(c) < 33 or ord(c) == 0x7F for c in raw):
        raise ValueError("must not contain spaces or control characters")
    return SecretStr(raw)


def _clean_allowlist(value: list[str] | None) -> list[str] | None:
    """Model ids as the upstream spells them: trimmed, duplicates and blanks dropped, order kept."""
    if value is None:
        return None
    seen: dict[str, None] = {}
    for raw in value:
        item = raw.strip()
        if not item:
            continue
        if len(item) > MAX_MODEL_ID_LENGTH:
            raise ValueError(f"a model id must be at most {MAX_MODEL_ID_LENGTH} characters")
        if any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in item):
            raise ValueError("a model id must not contain control characters")
        seen.setdefault(item, None)
    return list(seen)


#: A host group's name: letters, digits, ".", "_" and "-" (it appears in model ids).
GROUP_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_GROUP_HELP = (
    "Ollama providers: the host group. Providers of one group that hold the same model name serve it "
    "as one model (routing and failover); null or empty: no group."
)

_PRIORITY_HELP = "Within the host group: hosts of the smallest priority are tried first."
_WEIGHT_HELP = (
    "Within the host group: hosts of one priority share the requests in proportion to their weights."
)


def _clean_group(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    value = value.strip()
    if not GROUP_PATTERN.match(value):
        raise ValueError(
            "a group name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return value


_ALLOWLIST_HELP = (
    "OpenAI-compatible providers: the model ids offered for chat (empty: all the upstream lists)."
)


class ProviderRead(BaseModel):
    id: uuid.UUID
    name: str
    kind: ProviderKind
    base_url: str
    has_api_key: bool
    #: e.g. "…wxyz"; "" when there is no key. The key itself is write-only.
    api_key_masked: str
    is_default: bool
    enabled: bool
    #: OpenAI-compatible providers: the model ids offered for chat; empty = every listed model.
    model_allowlist: list[str]
    #: Ollama providers: the host group, null when none.
    group: str | None = None
    #: Within the group: the smallest priority is tried first; weights share the requests of a priority.
    priority: int = 0
    weight: float = 1.0
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> ProviderRead:
        masked = ""
        if row.has_api_key:
            masked = f"…{row.api_key_hint}" if row.api_key_hint else "…"
        return cls(
            id=row.id,
            name=row.name,
            kind=row.kind,
            base_url=row.base_url,
            has_api_key=row.has_api_key,
            api_key_masked=masked,
            is_default=row.is_default,
            enabled=row.enabled,
            model_allowlist=list(row.model_allowlist or []),
            group=getattr(row, "host_group", None),
            priority=getattr(row, "route_priority", 0) or 0,
            weight=getattr(row, "route_weight", 1.0) or 1.0,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class ProviderCreate(StrictModel):
    name: str = Field(min_length=1, max_length=100, json_schema_extra={"pattern": NAME_PATTERN})
    kind: ProviderKind
    base_url: str = Field(min_length=1, max_length=2048, json_schema_extra={"pattern": BASE_URL_PATTERN})
    api_key: SecretStr | None = Field(
        default=None, max_length=MAX_API_KEY_LENGTH, json_schema_extra={"pattern": API_KEY_PATTERN}
    )
    is_default: bool = False
    enabled: bool = True
    model_allowlist: list[str] = Field(
        default_factory=list, max_length=MAX_ALLOWLIST_ENTRIES, description=_ALLOWLIST_HELP
    )
    group: str | None = Field(default=None, max_length=64, description=_GROUP_HELP)
    priority: int = Field(default=0, ge=0, le=1000, description=_PRIORITY_HELP)
    weight: float = Field(default=1.0, gt=0, le=1000, description=_WEIGHT_HELP)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _clean_name(value)

    @field_validator("group")
    @classmethod
    def _group(cls, value: str | None) -> str | None:
        return _clean_group(value)

    @field_validator("model_allowlist")
    @classmethod
    def _allowlist(cls, value: list[str]) -> list[str]:
        return _clean_allowlist(value) or []

    @field_validator("api_key")
    @classmethod
    def _key(cls, value: SecretStr | None) -> SecretStr | None:
        return _clean_key(value)


class ProviderUpdate(StrictModel):
    """Omitted fields stay as they are. ``api_key``: a string replaces the key, ``null`` removes it.
    Changing ``base_url`` drops the stored key unless a new ``api_key`` comes in the same request."""

    name: str | None = Field(
        default=None, min_length=1, max_length=100, json_schema_extra={"pattern": NAME_PATTERN}
    )
    base_url: str | None = Field(
        default=None, min_length=1, max_length=2048, json_schema_extra={"pattern": BASE_URL_PATTERN}
    )
    api_key: SecretStr | None = Field(
        default=None, max_length=MAX_API_KEY_LENGTH, json_schema_extra={"pattern": API_KEY_PATTERN}
    )
    is_default: bool | None = None
    enabled: bool | None = None
    model_allowlist: list[str] | None = Field(
        default=None, max_length=MAX_ALLOWLIST_ENTRIES, description=_ALLOWLIST_HELP
    )
    #: A name sets the group, null or "" removes the provider from its group.
    group: str | None = Field(default=None, max_length=64, description=_GROUP_HELP)
    priority: int | None = Field(default=None, ge=0, le=1000, description=_PRIORITY_HELP)
    weight: float | None = Field(default=None, gt=0, le=1000, description=_WEIGHT_HELP)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return None if value is None else _clean_name(value)

    @field_validator("group")
    @classmethod
    def _group(cls, value: str | None) -> str | None:
        return _clean_group(value)

    @field_validator("model_allowlist")
    @classmethod
    def _allowlist(cls, value: list[str] | None) -> list[str] | None:
        return _clean_allowlist(value)

    @field_validator("api_key")
    @classmethod
    def _key(cls, value: SecretStr | None) -> SecretStr | None:
        return _clean_key(value)


class ProviderTestError(BaseModel):
    code: str
    message: str


class ProviderTestResult(BaseModel):
    ok: bool
    models: list[str]
    error: ProviderTestError | None


ProviderPage = Page[ProviderRead]

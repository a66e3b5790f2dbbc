"""``GET /api/models``: what the signed-in user can chat with."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ModelProviderRef(BaseModel):
    id: uuid.UUID
    name: str
    kind: Literal["ollama", "openai"]


#: What a model can do, as Ollama's ``/api/show`` names it (``GET /api/models?capability=``).
ModelCapability = Literal["completion", "embedding", "vision", "tools", "insert", "thinking"]


class ModelDefaults(BaseModel):
    system_prompt: str = ""
    temperature: float | None = None
    top_p: float | None = None
    context_length: int | None = None
    max_tokens: int | None = None
    options: dict[str, Any] = {}


class ModelRead(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    #: Opaque and stable: "cfg:<config id>", "ollama:<provider id>:<model name>", "group:<group>:<model>",
    #: "route:<route id>" or
    #: "openai:<provider id>:<model id>" (names with "/" and the like base64url-encoded behind "~").
    #: Pass it to /api/chat.
    id: str
    name: str
    provider: ModelProviderRef
    model: str
    capabilities: list[str]
    #: "config" (a model configuration), "route" (an explicit route), or the kind of provider that listed
    #: the model.
    source: Literal["ollama", "openai", "config", "route"]
    #: Presets ("config"): shared with everyone (true) or the caller's personal one (false); else null.
    shared: bool | None = None
    defaults: ModelDefaults
    #: A host group's model ("group:<group>:<model>"): the group, and every host that serves it
    #: (``provider`` is the first of them); a route ("route:<id>"): its targets' providers. Null and empty
    #: for any other model.
    group: str | None = None
    hosts: list[ModelProviderRef] = Field(default_factory=list)


class ModelListError(BaseModel):
    provider_id: uuid.UUID
    #: The provider itself, as in a model's ``provider``: the UI names it in the warning.
    provider: ModelProviderRef
    code: str
    message: str


class ModelList(BaseModel):
    items: list[ModelRead]
    errors: list[ModelListError]

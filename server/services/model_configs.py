"""Model configurations: a named model on a provider with default generation options."""

from __future__ import annotations

import logging
import uuid

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.db.models import ModelConfig, Provider
from server.errors import Conflict, InvalidInput, NotFound
from server.providers.model_names import is_valid_model_name
from server.schemas.model_config import ModelConfigCreate, ModelConfigUpdate
from server.services.providers import get_provider

log = logging.getLogger(__name__)


def _check_model(provider: Provider, model: str) -> None:
    if provider.kind == "ollama" and not is_valid_model_name(model):
        raise InvalidInput(
            "invalid Ollama model name: use [host/][namespace/]model[:tag]",
            code="invalid_model_name",
            detail={"field": "model"},
        )


def _check_name_free(session: Session, provider_id: uuid.UUID, name: str, exclude: uuid.UUID | None) -> None:
    query = select(ModelConfig.id).where(
        ModelConfig.provider_id == provider_id, func.lower(ModelConfig.name) == name.lower()
    )
    if exclude is not None:
        query = query.where(ModelConfig.id != exclude)
    if session.scalar(query) is not None:
        raise Conflict(
            "this provider already has a configuration with this name", code="model_config_name_taken"
        )


def get_model_config(session: Session, config_id: uuid.UUID) -> ModelConfig:
    config = session.get(ModelConfig, config_id)
    if config is None:
        raise NotFound("model configuration not found", code="model_config_not_found")
    return config


def list_model_configs(
    session: Session, *, include_disabled: bool, page: int = 1, size: int = 50
) -> tuple[list[ModelConfig], int]:
    """Admins see every configuration; others only enabled ones on enabled providers."""
    query = select(ModelConfig)
    if not include_disabled:
        query = query.join(Provider, Provider.id == ModelConfig.provider_id).where(
            ModelConfig.enabled.is_(True), Provider.enabled.is_(True)
        )
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.order_by(ModelConfig.name, ModelConfig.id).offset((page - 1) * size).limit(size)
    )
    return list(rows.all()), total


def create_model_config(session: Session, data: ModelConfigCreate) -> ModelConfig:
    provider = get_provider(session, data.provider_id)
    _check_model(provider, data.model)
    _check_name_free(session, provider.id, data.name, None)
    config = ModelConfig(
        provider_id=provider.id,
        name=data.name,
        model=data.model,
        system_prompt=data.system_prompt or "",
        temperature=data.temperature,
        top_p=data.top_p,
        context_length=data.context_length,
        max_tokens=data.max_tokens,
        options=dict(data.options or {}),
        enabled=True if data.enabled is None else data.enabled,
    )
    session.add(config)
    session.flush()
    log.info("model configuration %s created on provider %s", config.id, provider.id)
    return config


def update_model_config(session: Session, config_id: uuid.UUID, data: ModelConfigUpdate) -> ModelConfig:
    config = get_model_config(session, config_id)
    fields = data.model_fields_set
    if "name" in fields and data.name is not None and data.name != config.name:
        _check_name_free(session, config.provider_id, data.name, config.id)
        config.name = data.name
    if "model" in fields and data.model is not None:
        _check_model(get_provider(session, config.provider_id), data.model)
        config.model = data.model
    if "system_prompt" in fields:
        config.system_prompt = data.system_prompt or ""
    for name in ("temperature", "top_p", "context_length", "max_tokens"):
        if name in fields:
            setattr(config, name, getattr(data, name))
    if "options" in fields:
        config.options = dict(data.options or {})
    if "enabled" in fields and data.enabled is not None:
        config.enabled = data.enabled
    session.flush()
    return config


def delete_model_config(session: Session, config_id: uuid.UUID) -> None:
    session.delete(get_model_config(session, config_id))
    session.flush()

"""Presets (model configurations): a named base model on a provider with default generation options.

A preset is personal (``owner_id`` set: only that user sees, uses, changes it) or shared (``owner_id`` NULL:
everyone sees and uses it, admins change it). Names are unique, case-insensitive, among a user's personal
presets and among the shared ones. Someone else's personal preset is "not found", never "forbidden".
"""

from __future__ import annotations

import logging
import uuid

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from server.db.models import ModelConfig, Provider, User
from server.errors import Conflict, Forbidden, InvalidInput, NotFound
from server.providers.model_names import is_valid_model_name
from server.schemas.model_config import ModelConfigCreate, ModelConfigRead, ModelConfigUpdate
from server.services import models as models_service
from server.services.providers import get_provider

log = logging.getLogger(__name__)

#: Tried in turn for the copy's name when duplicating ("Coder (copy)", "Coder (copy 2)", ...).
MAX_COPY_SUFFIX = 50


def _is_admin(user: User) -> bool:
    return user.role == "admin"


def _admin_required(message: str) -> Forbidden:
    return Forbidden(message, code="admin_required")


def _check_model(provider: Provider, model: str) -> None:
    if provider.kind == "ollama" and not is_valid_model_name(model):
        raise InvalidInput(
            "invalid Ollama model name: use [host/][namespace/]model[:tag]",
            code="invalid_model_name",
            detail={"field": "model"},
        )


def _base_model(session: Session, base_model_id: str) -> tuple[Provider, str]:
    """A discovered model id from ``GET /api/models`` -> its provider and upstream model name."""
    try:
        kind, provider_id, name = models_service.parse_model_id(base_model_id)
    except NotFound:
        kind, provider_id, name = "", None, None
    provider = session.get(Provider, provider_id) if provider_id is not None and kind != "cfg" else None
    if provider is None or provider.kind != kind or name is None:
        raise InvalidInput(
            "the base model must be a model from the chat's model list, not a preset",
            code="invalid_base_model",
            detail={"field": "base_model_id"},
        )
    return provider, name


def _check_name_free(
    session: Session, owner_id: uuid.UUID | None, name: str, exclude: uuid.UUID | None
) -> None:
    query = select(ModelConfig.id).where(func.lower(ModelConfig.name) == name.lower())
    query = query.where(
        ModelConfig.owner_id.is_(None) if owner_id is None else ModelConfig.owner_id == owner_id
    )
    if exclude is not None:
        query = query.where(ModelConfig.id != exclude)
    if session.scalar(query) is not None:
        where = "a shared preset" if owner_id is None else "one of your presets"
        raise Conflict(f"{where} already has this name", code="model_config_name_taken")


def can_edit(user: User, config: ModelConfig) -> bool:
    return config.owner_id == user.id if config.owner_id is not None else _is_admin(user)


def to_read(user: User, config: ModelConfig) -> ModelConfigRead:
    return ModelConfigRead.model_validate(
        {
            **{c: getattr(config, c) for c in ModelConfigRead.model_fields if hasattr(config, c)},
            "shared": config.owner_id is None,
            "editable": can_edit(user, config),
        }
    )


def get_model_config(session: Session, user: User, config_id: uuid.UUID) -> ModelConfig:
    """A preset the user can see: shared, or their own personal one."""
    config = session.get(ModelConfig, config_id)
    if config is None or (config.owner_id is not None and config.owner_id != user.id):
        raise NotFound("preset not found", code="model_config_not_found")
    return config


def _editable(session: Session, user: User, config_id: uuid.UUID) -> ModelConfig:
    config = get_model_config(session, user, config_id)
    if not can_edit(user, config):
        raise _admin_required("only an admin can change a shared preset")
    return config


def list_model_configs(
    session: Session, user: User, *, page: int = 1, size: int = 50
) -> tuple[list[ModelConfig], int]:
    """The shared presets and the caller's own. Users other than admins see only the enabled shared ones
    on enabled providers; their own are listed whatever their state."""
    shared = [ModelConfig.owner_id.is_(None)]
    if not _is_admin(user):
        usable = select(Provider.id).where(Provider.enabled.is_(True))
        shared += [ModelConfig.enabled.is_(True), ModelConfig.provider_id.in_(usable)]
    query = select(ModelConfig).where(or_(and_(*shared), ModelConfig.owner_id == user.id))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.order_by(ModelConfig.name, ModelConfig.id).offset((page - 1) * size).limit(size)
    )
    return list(rows.all()), total


def _owner_for(user: User, shared: bool | None) -> uuid.UUID | None:
    if shared is None:
        shared = _is_admin(user)  # what the API did before presets could be personal
    if shared and not _is_admin(user):
        raise _admin_required("only an admin can share a preset with everyone")
    return None if shared else user.id


def _where(session: Session, data: ModelConfigCreate | ModelConfigUpdate) -> tuple[Provider, str] | None:
    """The base model a create/update body names, validated; ``None`` when it names none."""
    if data.base_model_id is not None:
        provider_id = data.provider_id if isinstance(data, ModelConfigCreate) else None
        if provider_id is not None or data.model is not None:
            raise InvalidInput(
                "give either base_model_id or provider_id and model, not both",
                code="invalid_base_model",
                detail={"field": "base_model_id"},
            )
        return _base_model(session, data.base_model_id)
    return None


def create_model_config(session: Session, user: User, data: ModelConfigCreate) -> ModelConfig:
    owner_id = _owner_for(user, data.shared)
    base = _where(session, data)
    if base is not None:
        provider, model = base
    else:
        if data.provider_id is None or data.model is None:
            raise InvalidInput(
                "a preset needs a base model: base_model_id, or provider_id and model",
                code="invalid_base_model",
                detail={"field": "base_model_id"},
            )
        provider, model = get_provider(session, data.provider_id), data.model
    _check_model(provider, model)
    _check_name_free(session, owner_id, data.name, None)
    config = ModelConfig(
        provider_id=provider.id,
        owner_id=owner_id,
        name=data.name,
        model=model,
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
    kind = "shared" if owner_id is None else "personal"
    log.info("preset %s (%s) created on provider %s", config.id, kind, provider.id)
    return config


def update_model_config(
    session: Session, user: User, config_id: uuid.UUID, data: ModelConfigUpdate
) -> ModelConfig:
    config = _editable(session, user, config_id)
    fields = data.model_fields_set
    owner_id = config.owner_id
    if "shared" in fields and data.shared is not None and data.shared != (owner_id is None):
        owner_id = _owner_for(user, data.shared)
    name = data.name if "name" in fields and data.name is not None else config.name
    if name != config.name or owner_id != config.owner_id:
        _check_name_free(session, owner_id, name, config.id)
    config.name, config.owner_id = name, owner_id
    base = _where(session, data)
    if base is not None:
        provider, model = base
        _check_model(provider, model)
        config.provider_id, config.model = provider.id, model
    elif "model" in fields and data.model is not None:
        _check_model(get_provider(session, config.provider_id), data.model)
        config.model = data.model
    if "system_prompt" in fields:
        config.system_prompt = data.system_prompt or ""
    for key in ("temperature", "top_p", "context_length", "max_tokens"):
        if key in fields:
            setattr(config, key, getattr(data, key))
    if "options" in fields:
        config.options = dict(data.options or {})
    if "enabled" in fields and data.enabled is not None:
        config.enabled = data.enabled
    session.flush()
    return config


def duplicate_model_config(session: Session, user: User, config_id: uuid.UUID) -> ModelConfig:
    """A personal copy, for the caller, of a preset they can see (theirs or a shared one)."""
    source = get_model_config(session, user, config_id)
    taken = {
        n.lower()
        for n in session.scalars(select(ModelConfig.name).where(ModelConfig.owner_id == user.id)).all()
    }
    for i in range(1, MAX_COPY_SUFFIX + 1):
        suffix = " (copy)" if i == 1 else f" (copy {i})"
        name = source.name[: 200 - len(suffix)] + suffix
        if name.lower() not in taken:
            break
    else:
        raise Conflict("too many copies of this preset already", code="model_config_name_taken")
    copy = ModelConfig(
        provider_id=source.provider_id,
        owner_id=user.id,
        name=name,
        model=source.model,
        system_prompt=source.system_prompt,
        temperature=source.temperature,
        top_p=source.top_p,
        context_length=source.context_length,
        max_tokens=source.max_tokens,
        options=dict(source.options or {}),
        enabled=True,
    )
    session.add(copy)
    session.flush()
    return copy


def delete_model_config(session: Session, user: User, config_id: uuid.UUID) -> None:
    session.delete(_editable(session, user, config_id))
    session.flush()

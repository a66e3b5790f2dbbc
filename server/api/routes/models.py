from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from server.deps import CurrentUser, RuntimeDep, SessionDep
from server.schemas.model import ModelCapability, ModelList
from server.services import models as models_service

router = APIRouter(prefix="/api/models", tags=["models"])


@router.get("", response_model=ModelList, summary="Models you can chat with (or that have a capability)")
async def list_models(
    user: CurrentUser,
    session: SessionDep,
    runtime: RuntimeDep,
    capability: Annotated[
        ModelCapability | None,
        Query(
            description="Only models with this capability (embedding: those a knowledge collection can use)."
        ),
    ] = None,
) -> ModelList:
    # Async because it asks every Ollama provider at once; the DB part runs in a worker thread.
    return await models_service.list_models(session, runtime, user.id, capability)

from __future__ import annotations

from fastapi import APIRouter

from server.deps import CurrentUser, RuntimeDep, SessionDep
from server.schemas.model import ModelList
from server.services import models as models_service

router = APIRouter(prefix="/api/models", tags=["models"])


@router.get("", response_model=ModelList, summary="Models you can chat with")
async def list_models(user: CurrentUser, session: SessionDep, runtime: RuntimeDep) -> ModelList:
    # Async because it asks every Ollama provider at once; the DB part runs in a worker thread.
    return await models_service.list_models(session, runtime, user.id)

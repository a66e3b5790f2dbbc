"""``/api/onboarding``: the first-run guide's state (per user) and the suggested models with their fit
against this machine's memory. Reading the state needs a signed-in user; the rest an administrator."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from server.deps import AdminUser, CurrentUser, RuntimeDep, SessionDep
from server.runtime import Runtime
from server.schemas.onboarding import OnboardingRead, SuggestedModelList
from server.services import onboarding as onboarding_service
from server.services.onboarding import Action

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from server.db.models import User

router = APIRouter(prefix="/api/onboarding", tags=["onboarding"])


@router.get("", response_model=OnboardingRead, summary="The first-run guide's state, and whether to show it")
async def get_onboarding(user: CurrentUser, session: SessionDep, runtime: RuntimeDep) -> OnboardingRead:
    # Async because it asks the providers whether there is anything to chat with (cached).
    return await onboarding_service.get_onboarding(session, runtime, user)


async def _act(action: Action, user: User, session: Session, runtime: Runtime) -> OnboardingRead:
    await run_in_threadpool(onboarding_service.set_state, session, user.id, action)
    return await onboarding_service.get_onboarding(session, runtime, user)


@router.post("/complete", response_model=OnboardingRead, summary="Finish the guide (admin)")
async def complete(user: AdminUser, session: SessionDep, runtime: RuntimeDep) -> OnboardingRead:
    return await _act("complete", user, session, runtime)


@router.post("/skip", response_model=OnboardingRead, summary="Skip the guide (admin)")
async def skip(user: AdminUser, session: SessionDep, runtime: RuntimeDep) -> OnboardingRead:
    return await _act("skip", user, session, runtime)


@router.post("/reopen", response_model=OnboardingRead, summary="Open the guide again (admin)")
async def reopen(user: AdminUser, session: SessionDep, runtime: RuntimeDep) -> OnboardingRead:
    return await _act("reopen", user, session, runtime)


@router.get(
    "/models", response_model=SuggestedModelList, summary="Suggested small models and their fit (admin)"
)
async def suggested_models(_: AdminUser, runtime: RuntimeDep) -> SuggestedModelList:
    # psutil, NVML and sysfs reads: off the event loop.
    return await run_in_threadpool(onboarding_service.suggested_models, runtime.settings.gpu_sysfs_root)

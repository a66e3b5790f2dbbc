"""The first-run guide: who sees it, its state per user, this machine's memory and the suggested models.

**Who sees it.** The guide sets up the install (a runtime, a model), which only an administrator can do.
``show`` is true for an administrator whose state is ``open`` (reopened from Settings and not finished
since), or ``pending`` (never finished nor skipped) while the install offers them nothing to chat with.
Users never see it. Finishing (``completed``) or skipping (``skipped``) hides it until it is reopened.

**Fit rule.** A model needs about its download size x 1.2 + 512 MiB to run (weights, a few thousand
tokens of context, the runtime). It ``fits`` when that is at most the free GPU memory (the GPU's total
when its use is unknown) or the available RAM; it is ``tight`` when it is at most the total RAM or the
GPU's total (it runs once other programs let go of memory); otherwise it is ``too_big``. With neither RAM
nor GPU memory known, the fit is None. The machine is the one the server runs on: an Ollama on another
machine is not measured. The GPU is the largest one ``services/gpus.py`` reads (NVML, amdgpu sysfs).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import psutil
from sqlalchemy.orm import Session

from server.db.models import User
from server.errors import NotFound
from server.runtime import Runtime
from server.schemas.onboarding import (
    Fit,
    MachineRead,
    OnboardingRead,
    OnboardingState,
    SuggestedModelList,
    SuggestedModelRead,
)
from server.services import gpus as gpus_service
from server.services import models as models_service

log = logging.getLogger(__name__)

Action = Literal["complete", "skip", "reopen"]
_NEXT_STATE: dict[Action, OnboardingState] = {"complete": "completed", "skip": "skipped", "reopen": "open"}
_STATES: frozenset[str] = frozenset(("pending", "open", "completed", "skipped"))

MIB = 1024 * 1024
#: Memory a model needs beyond its download size: x 1.2 plus this (context and runtime).
OVERHEAD_FACTOR = 1.2
OVERHEAD_BYTES = 512 * MIB


@dataclass(frozen=True)
class Suggestion:
    name: str
    key: str
    download_size: int
    parameter_size: str


#: Small models worth a first try (sizes of the default quantisations in the Ollama library).
SUGGESTIONS: tuple[Suggestion, ...] = (
    Suggestion("qwen3:0.6b", "qwen3Tiny", 523_000_000, "0.6B"),
    Suggestion("qwen3:1.7b", "qwen3Small", 1_400_000_000, "1.7B"),
    Suggestion("gemma3:1b", "gemma3Small", 815_000_000, "1B"),
    Suggestion("llama3.2:1b", "llama32Tiny", 1_300_000_000, "1.2B"),
    Suggestion("llama3.2:3b", "llama32Small", 2_000_000_000, "3.2B"),
    Suggestion("smollm2:135m", "smollm2Tiny", 271_000_000, "135M"),
)


# --- state -----------------------------------------------------------------------------------------


def state_of(user: User) -> OnboardingState:
    value = user.onboarding_state
    return value if value in _STATES else "pending"  # type: ignore[return-value]


def should_show(user: User, has_models: bool) -> bool:
    if user.role != "admin":
        return False
    state = state_of(user)
    return state == "open" or (state == "pending" and not has_models)


async def get_onboarding(session: Session, runtime: Runtime, user: User) -> OnboardingRead:
    """The user's state and whether to show the guide (asks the providers for their models, cached)."""
    catalog = await models_service.list_models(session, runtime, user.id)
    has_models = bool(catalog.items)
    return OnboardingRead(state=state_of(user), show=should_show(user, has_models), has_models=has_models)


def set_state(session: Session, user_id: uuid.UUID, action: Action) -> OnboardingState:
    """Finish, skip or reopen the guide for this user; returns the new state (idempotent)."""
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("user not found", code="user_not_found")
    user.onboarding_state = _NEXT_STATE[action]
    session.flush()
    log.info("onboarding of user %s: %s", user.id, user.onboarding_state)
    return state_of(user)


# --- the machine -----------------------------------------------------------------------------------


def _largest_gpu(readings: list[gpus_service.GpuReading]) -> tuple[str, int, int | None] | None:
    best: tuple[str, int, int | None] | None = None
    for gpu in readings:
        total = gpu.memory_total
        if not total or (best is not None and total <= best[1]):
            continue
        free = max(0, total - gpu.memory_used) if gpu.memory_used is not None else None
        best = (gpu.name, total, free)
    return best


def read_machine(*, gpus: Callable[[], list[gpus_service.GpuReading]] | None = None) -> MachineRead:
    """RAM (psutil) and the largest GPU's memory (``services/gpus.py``: NVIDIA through NVML, AMD through
    sysfs; ``gpus`` replaces the reader); None for what cannot be read."""
    machine = MachineRead()
    try:
        vm = psutil.virtual_memory()
        machine.ram_total, machine.ram_available = int(vm.total), int(vm.available)
    except Exception:  # a sandbox without /proc: memory unknown
        log.warning("could not read the RAM size", exc_info=True)
    reader = gpus if gpus is not None else gpus_service.GpuReader().read
    try:
        gpu = _largest_gpu(reader())
    except Exception:  # the guide must open whatever a driver does
        log.warning("could not read the GPUs", exc_info=True)
        gpu = None
    if gpu is not None:
        machine.gpu_name, machine.gpu_total, machine.gpu_free = gpu
    return machine


def memory_needed(download_size: int) -> int:
    return int(download_size * OVERHEAD_FACTOR) + OVERHEAD_BYTES


def fit(needed: int, machine: MachineRead) -> Fit | None:
    """The fit rule of the module docstring."""
    if machine.ram_total is None and machine.gpu_total is None:
        return None
    gpu_free = machine.gpu_free if machine.gpu_free is not None else machine.gpu_total
    room = max(gpu_free or 0, machine.ram_available if machine.ram_available is not None else 0)
    if needed <= room:
        return "fits"
    if needed <= max(machine.ram_total or 0, machine.gpu_total or 0):
        return "tight"
    return "too_big"


def suggestions(machine: MachineRead) -> SuggestedModelList:
    items = []
    for s in SUGGESTIONS:
        needed = memory_needed(s.download_size)
        items.append(
            SuggestedModelRead(
                name=s.name,
                key=s.key,
                download_size=s.download_size,
                parameter_size=s.parameter_size,
                memory_needed=needed,
                fit=fit(needed, machine),
            )
        )
    return SuggestedModelList(machine=machine, items=items)


def suggested_models(sysfs_root: Path | None = None) -> SuggestedModelList:
    """The curated list with fit badges for the machine the server runs on (blocking: call in a thread)."""
    reader = gpus_service.GpuReader(sysfs_root) if sysfs_root is not None else gpus_service.GpuReader()
    return suggestions(read_machine(gpus=reader.read))

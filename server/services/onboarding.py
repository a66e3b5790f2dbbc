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
machine is not measured.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import uuid
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
from server.services import models as models_service

log = logging.getLogger(__name__)

Action = Literal["complete", "skip", "reopen"]
_NEXT_STATE: dict[Action, OnboardingState] = {"complete": "completed", "skip": "skipped", "reopen": "open"}
_STATES: frozenset[str] = frozenset(("pending", "open", "completed", "skipped"))

MIB = 1024 * 1024
#: Memory a model needs beyond its download size: x 1.2 plus this (context and runtime).
OVERHEAD_FACTOR = 1.2
OVERHEAD_BYTES = 512 * MIB
#: nvidia-smi gets this long; a driver that hangs must not hold the guide up.
GPU_QUERY_TIMEOUT = 2.0


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


def _nvidia(binary: str) -> tuple[str, int, int | None] | None:
    try:
        out = subprocess.run(
            [binary, "--query-gpu=name,memory.total,memory.used", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=GPU_QUERY_TIMEOUT,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    best: tuple[str, int, int | None] | None = None
    for line in out.splitlines():
        parts = [p.strip() for p in line.rsplit(",", 2)]
        if len(parts) != 3:
            continue
        try:
            total = int(float(parts[1]) * MIB)
            used = int(float(parts[2]) * MIB)
        except ValueError:
            continue
        if best is None or total > best[1]:
            best = (parts[0] or "NVIDIA GPU", total, max(0, total - used))
    return best


def _amd(drm_root: Path) -> tuple[str, int, int | None] | None:
    best: tuple[str, int, int | None] | None = None
    for total_file in sorted(drm_root.glob("card*/device/mem_info_vram_total")):
        try:
            total = int(total_file.read_text().strip())
        except (OSError, ValueError):
            continue
        free: int | None = None
        with contextlib.suppress(OSError, ValueError):
            free = max(0, total - int((total_file.parent / "mem_info_vram_used").read_text().strip()))
        if total > 0 and (best is None or total > best[1]):
            best = ("AMD GPU", total, free)
    return best


def read_machine(*, nvidia_smi: str | None = None, drm_root: Path | None = None) -> MachineRead:
    """RAM (psutil) and the largest GPU's memory: NVIDIA through ``nvidia-smi`` when it is on PATH (or
    ``nvidia_smi`` names it), AMD through the amdgpu sysfs files; None for what cannot be read."""
    machine = MachineRead()
    try:
        vm = psutil.virtual_memory()
        machine.ram_total, machine.ram_available = int(vm.total), int(vm.available)
    except Exception:  # a sandbox without /proc: memory unknown
        log.warning("could not read the RAM size", exc_info=True)
    binary = nvidia_smi if nvidia_smi is not None else shutil.which("nvidia-smi")
    gpu = _nvidia(binary) if binary else None
    if gpu is None:
        gpu = _amd(drm_root if drm_root is not None else Path("/sys/class/drm"))
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


def suggested_models() -> SuggestedModelList:
    """The curated list with fit badges for the machine the server runs on (blocking: call in a thread)."""
    return suggestions(read_machine())

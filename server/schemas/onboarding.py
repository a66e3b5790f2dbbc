"""The first-run guide: its state per user, this machine's memory and the suggested small models."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

OnboardingState = Literal["pending", "open", "completed", "skipped"]
Fit = Literal["fits", "tight", "too_big"]


class OnboardingRead(BaseModel):
    state: OnboardingState = Field(
        description="pending: never finished or skipped; open: reopened from Settings; completed; skipped"
    )
    show: bool = Field(description="Whether the web UI opens the guide for this user after sign-in")
    has_models: bool = Field(description="Whether the signed-in user has anything to chat with")


class MachineRead(BaseModel):
    """The memory of the machine the server runs on (None: could not be read)."""

    ram_total: int | None = Field(default=None, description="Total RAM in bytes")
    ram_available: int | None = Field(default=None, description="RAM available to new processes, in bytes")
    gpu_name: str | None = Field(default=None, description="The largest GPU found (NVIDIA or AMD)")
    gpu_total: int | None = Field(default=None, description="That GPU's memory in bytes")
    gpu_free: int | None = Field(default=None, description="Its memory not in use, in bytes (when known)")


class SuggestedModelRead(BaseModel):
    name: str = Field(description="Ollama model name, e.g. qwen3:0.6b")
    key: str = Field(description="The web UI's text key for what the model is good at")
    download_size: int = Field(description="Download size in bytes")
    parameter_size: str = Field(description="Parameters, e.g. 1.7B")
    memory_needed: int = Field(description="Estimated memory to run it, in bytes")
    fit: Fit | None = Field(default=None, description="Against this machine's memory; None: memory unknown")


class SuggestedModelList(BaseModel):
    machine: MachineRead
    items: list[SuggestedModelRead]

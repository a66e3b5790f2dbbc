"""API models of the Ollama daemon and model management (``/api/ollama``)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from server.schemas.common import MODEL_NAME_SCHEMA, StrictModel

DaemonState = Literal["not_installed", "stopped", "starting", "running", "external", "crashed", "failed"]


def _name(description: str = "Ollama model name, e.g. llama3.2:latest") -> Any:
    return Field(min_length=1, max_length=600, description=description, json_schema_extra=MODEL_NAME_SCHEMA)


class RuntimeCheckError(BaseModel):
    code: str
    message: str


class OllamaRuntimeRead(BaseModel):
    """The Ollama runtime on this machine: the user's own (``source`` "user", never touched) or the one
    ModelTrain installed in its data dir ("managed"); ``None`` when there is none."""

    source: Literal["user", "managed"] | None = None
    path: str | None = Field(None, description="the ollama executable in use")
    installed_version: str | None = Field(None, description="the managed runtime's version")
    latest_version: str | None = Field(
        None, description="the newest release (when checked: ?check=true or the daily update check)"
    )
    asset: str | None = Field(None, description="the archive for this OS and CPU (when checked)")
    size: int | None = Field(None, description="download size in bytes, all archives together (when checked)")
    update_available: bool = False
    installing: bool = Field(False, description="an install or update is running")
    check_error: RuntimeCheckError | None = Field(None, description="why the newest release is unknown")


class OllamaStatusRead(BaseModel):
    state: DaemonState
    url: str
    managed: bool
    version: str | None = None
    pid: int | None = None
    uptime_s: float | None = None
    restart_count: int = 0
    last_error: str | None = None
    binary: str | None = None
    log_file: str | None = None
    autostart: bool = False
    provider_id: uuid.UUID | None = None
    runtime: OllamaRuntimeRead | None = Field(
        None, description="the Ollama runtime installed on this machine"
    )


class OllamaLogsRead(BaseModel):
    lines: list[str]


class OllamaModelRead(BaseModel):
    name: str
    size: int
    family: str
    parameter_size: str
    quantization: str
    format: str
    digest: str
    modified_at: str | None = None
    capabilities: list[str] = []


class OllamaModelPage(BaseModel):
    items: list[OllamaModelRead]
    total: int


class OllamaModelDetailRead(BaseModel):
    name: str
    parameters: str = ""
    template: str = ""
    system: str = ""
    license: str = ""
    modelfile: str = ""
    details: dict[str, Any] = {}
    model_info: dict[str, Any] = {}
    capabilities: list[str] = []
    modified_at: str | None = None


class OllamaModelRef(BaseModel):
    name: str


class OllamaModelCopy(StrictModel):
    source: str = _name()
    destination: str = _name()


ParameterValue = float | int | str | list[str]


class OllamaModelCreate(StrictModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = _name()
    from_: str | None = Field(
        default=None,
        alias="from",
        min_length=1,
        max_length=600,
        description="Base model name (either this or modelfile)",
        json_schema_extra=MODEL_NAME_SCHEMA,
    )
    system: str | None = Field(default=None, max_length=32_768)
    template: str | None = Field(default=None, max_length=32_768, description="Prompt template (Go template)")
    parameters: dict[str, ParameterValue] | None = Field(default=None, max_length=32)
    modelfile: str | None = Field(
        default=None,
        min_length=1,
        max_length=65_536,
        description="A Modelfile (FROM, SYSTEM, TEMPLATE, PARAMETER, ADAPTER, LICENSE, MESSAGE) instead of "
        "from/system/template/parameters",
    )
    quantize: Literal["q4_K_M", "q4_K_S", "q8_0"] | None = Field(
        default=None, description="Quantize the weights (the base must be F16 or F32)"
    )


class OllamaRunningRead(BaseModel):
    name: str
    size: int
    size_vram: int
    vram_share: float = Field(description="Share of the loaded model in GPU memory, 0..1")
    expires_at: str | None = None
    pinned: bool = False


class OllamaRunningPage(BaseModel):
    items: list[OllamaRunningRead]
    total: int


class OllamaModelLoad(StrictModel):
    keep_alive: int | float | str | None = Field(
        default=None,
        description="Seconds or a duration ('10m'); -1 pins the model; omitted: Ollama's default",
        # a string: the duration grammar services/ollama_admin.check_keep_alive enforces
        json_schema_extra={
            "pattern": r"^(?!.*\n)-?(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+$",
            "maxLength": 32,
        },
    )


class OllamaPullCreate(StrictModel):
    name: str = _name()


class OllamaPullError(BaseModel):
    code: str
    message: str
    detail: Any = None


class OllamaPullRead(BaseModel):
    name: str
    provider_id: uuid.UUID | None = None
    url: str
    state: Literal["running", "success", "error", "cancelled"]
    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None
    percent: float | None = None
    bytes_per_s: float | None = None
    eta_s: float | None = None
    stalled: bool = False
    error: OllamaPullError | None = None
    started_at: datetime
    finished_at: datetime | None = None
    events: int = 0
    instance: str | None = Field(
        None, description="the server instance (or gunicorn worker) running the pull"
    )


class OllamaPullPage(BaseModel):
    items: list[OllamaPullRead]
    total: int


# --- Server-Sent Events of the streaming Ollama operations (documented by server/api/openapi.py) ----------


class OllamaPullProgress(BaseModel):
    """``progress`` of a pull: Ollama's status line and the byte counts of the layer being downloaded."""

    name: str
    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None
    percent: float | None = None
    bytes_per_s: float | None = None
    eta_s: float | None = None
    stalled: bool = False


class OllamaPullDone(BaseModel):
    """``done``: the pull succeeded (the last event)."""

    name: str
    status: Literal["success"]
    elapsed_s: float


class OllamaStreamError(BaseModel):
    """``error``: the operation failed (the last event); ``code`` as in the JSON errors."""

    code: str
    message: str
    detail: Any = None


class OllamaPullFailed(OllamaStreamError):
    """``error`` of a pull: the model's name with the error."""

    name: str


class OllamaJobProgress(BaseModel):
    """``progress`` of a runtime install or a GGUF import: the phase, with its own counters."""

    phase: str


class OllamaRuntimeDone(BaseModel):
    """``done`` of a runtime install or update: the version now installed (and more about it)."""

    version: str


class OllamaImportDone(BaseModel):
    """``done`` of a GGUF import: the new model."""

    name: str
    digest: str
    size: int
    blob_reused: bool

"""Settings: the spec's ``.env`` names plus ``MODELTRAIN_*`` for everything else.

Nothing here reads the environment at import time. Entry points build ``Settings()`` (which reads
the environment and ``.env``) and pass it down; tests build their own with explicit arguments.
Precedence: explicit arguments > environment > ``.env`` > defaults.
"""

from __future__ import annotations

import ipaddress
import secrets
from pathlib import Path
from typing import Annotated, Any, Literal

import platformdirs
from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

APP_NAME = "modeltrain"

#: Values that appear in docs, tutorials and templates. A key equal to one of these is refused.
WELL_KNOWN_SECRETS = frozenset(
    {
        "secret",
        "changeme",
        "change-me",
        "changethis",
        "your-secret-key",
        "your_secret_key",
        "supersecret",
        "super-secret-key",
        "secret-key",
        "secret_key",
        "mysecretkey",
        "development",
        "dev",
        "test",
        "password",
        "admin123",
        "随机生成的强密钥",
    }
)
MIN_SECRET_LENGTH = 32


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip()
        if value.startswith("["):
            import json

            return json.loads(value)
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


CsvList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    """All configuration. Each field is described once; the CLI help and docs use these descriptions."""

    model_config = SettingsConfigDict(
        env_prefix="MODELTRAIN_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        validate_default=True,
    )

    # --- the spec's names (table 6-4) ---
    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "database_url"),
        description="SQLAlchemy URL. Default: SQLite file modeltrain.db in the data directory.",
    )
    secret_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("SECRET_KEY", "secret_key"),
        description="JWT signing key (>= 32 random characters). Unset: generated once, stored 0600.",
    )
    cors_origins: CsvList = Field(
        default_factory=list,
        validation_alias=AliasChoices("CORS_ORIGINS", "cors_origins"),
        description="Comma-separated origins allowed to call the API cross-origin. Default: none.",
    )
    access_token_expire: int = Field(
        default=30,
        ge=1,
        le=24 * 60,
        validation_alias=AliasChoices("ACCESS_TOKEN_EXPIRE", "access_token_expire"),
        description="Access token lifetime in minutes.",
    )
    refresh_token_expire: int = Field(
        default=7,
        ge=1,
        le=90,
        validation_alias=AliasChoices("REFRESH_TOKEN_EXPIRE", "refresh_token_expire"),
        description="Refresh token (session) lifetime in days.",
    )
    refresh_reuse_grace_seconds: int = Field(
        default=10,
        ge=0,
        le=60,
        description=(
            "Seconds after a refresh token was rotated during which presenting it again (two tabs "
            "refreshing at once) gets a new access token but no new refresh token, instead of being "
            "treated as reuse, which revokes the whole session. 0 turns the grace window off."
        ),
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO",
        validation_alias=AliasChoices("LOG_LEVEL", "log_level"),
        description="Log level: DEBUG, INFO, WARNING or ERROR.",
    )
    initial_admin_password: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "INITIAL_ADMIN_PASSWORD", "MODELTRAIN_INITIAL_ADMIN_PASSWORD", "initial_admin_password"
        ),
        description="Initial password of admin@example.com on first start. Unset: a random one.",
    )

    # --- MODELTRAIN_* ---
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Data directory: the SQLite database, the generated secret key, logs and LAN state.",
    )
    host: str = Field(default="127.0.0.1", description="Address the headless server (`serve`) binds.")
    port: int = Field(default=8000, ge=0, le=65535, description="Port to bind (0: any free port).")
    allowed_hosts: CsvList = Field(
        default_factory=list,
        description="Extra Host names/addresses accepted besides loopback (never '*').",
    )
    trusted_proxies: CsvList = Field(
        default_factory=list,
        description="Proxy addresses whose X-Forwarded-* headers are honoured.",
    )
    max_body_bytes: int = Field(
        default=2 * 1024 * 1024, ge=1024, description="Largest accepted request body (bytes)."
    )
    max_upload_bytes: int = Field(
        default=4 * 1024**3, ge=1024, description="Largest accepted upload (backup restore), bytes."
    )
    log_dir: Path | None = Field(default=None, description="Log directory. Default: <data dir>/logs.")
    secret_store: Literal["auto", "keyring", "file"] = Field(
        default="auto",
        description="Where provider API keys are kept: 'keyring' (the OS keyring), 'file' (AES-GCM "
        "encrypted file in the data directory) or 'auto' (a usable keyring, else the file).",
    )
    secret_store_key_file: Path | None = Field(
        default=None,
        description="Key file of the encrypted secret store (0600, created on first use). "
        "Default: <data dir>/secrets.key.",
    )
    login_max_failures: int = Field(
        default=5, ge=1, description="Failed sign-ins (per account and per client address) before a back-off."
    )
    login_lockout_seconds: int = Field(
        default=30, ge=1, description="Length of the first back-off in seconds; each further one doubles it."
    )
    password_min_length: int = Field(default=8, ge=8, le=64, description="Minimum password length.")
    initial_password_ttl_hours: int = Field(
        default=24, ge=1, description="Hours the random initial admin password stays valid."
    )
    ollama_url: str | None = Field(
        default=None,
        description="URL of the default Ollama provider. Default: OLLAMA_HOST, else http://127.0.0.1:11434.",
    )
    ollama_bin: Path | None = Field(
        default=None,
        description="Path of the ollama executable. Default: from PATH, else the usual install places.",
    )
    ollama_autostart: bool = Field(
        default=False, description="Start `ollama serve` with the app (an Ollama already running is adopted)."
    )
    ollama_models_dir: Path | None = Field(
        default=None,
        # Ollama's own variable counts too (also from .env): the model store a local Ollama fills.
        validation_alias=AliasChoices("MODELTRAIN_OLLAMA_MODELS_DIR", "OLLAMA_MODELS", "ollama_models_dir"),
        description="Model store (OLLAMA_MODELS) of an Ollama that ModelTrain starts, and whose free space "
        "a pull checks. Default: OLLAMA_MODELS, else ~/.ollama/models.",
    )
    ollama_host: str | None = Field(
        default=None,
        validation_alias=AliasChoices("OLLAMA_HOST", "ollama_host"),
        description="Ollama's own OLLAMA_HOST (host, host:port or URL), read from the environment or .env: "
        "the default Ollama provider's address when MODELTRAIN_OLLAMA_URL is not set.",
    )
    # --- Ollama daemon supervision and model management (services/ollama_daemon.py,
    #     services/ollama_runtime.py, ollama_admin.py, ollama_pulls.py) ---
    ollama_start_timeout: float = Field(
        default=60.0, gt=0, description="Seconds a started `ollama serve` may take to answer GET /."
    )
    ollama_stop_grace: float = Field(
        default=10.0, ge=0, description="Seconds between SIGTERM and SIGKILL when stopping Ollama."
    )
    ollama_restart_backoff: float = Field(
        default=0.5, ge=0, description="First delay (s) before restarting a crashed Ollama; it doubles."
    )
    ollama_restart_backoff_max: float = Field(default=30.0, ge=0, description="Longest restart delay (s).")
    ollama_max_restarts: int = Field(
        default=5, ge=0, description="Consecutive failed restarts before giving up (state 'failed')."
    )
    ollama_log_max_bytes: int = Field(
        default=5 * 1024 * 1024, ge=4096, description="Size at which <log dir>/ollama.log is rotated."
    )
    ollama_log_backups: int = Field(default=3, ge=0, le=20, description="Rotated ollama.log files kept.")
    ollama_pull_stall_seconds: float = Field(
        default=30.0, gt=0, description="A pull without progress for this long is reported as stalled."
    )
    ollama_disk_reserve_bytes: int = Field(
        default=1024**3, ge=0, description="Free space that must remain after a model download (bytes)."
    )
    ollama_registries: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["registry.ollama.ai", "hf.co"],
        description="Registry hosts model names may name for pull/create (comma-separated).",
    )
    gguf_import_max_bytes: int = Field(
        default=64 * 1024**3,
        ge=1024,
        description="Largest GGUF file POST /api/ollama/models/import accepts (bytes); this route alone is "
        "exempt from MODELTRAIN_MAX_BODY_BYTES.",
    )

    # --- The Ollama runtime ModelTrain installs per user (services/ollama_install.py, ollama_releases.py) ---
    ollama_releases_url: str = Field(
        default="https://github.com/ollama/ollama/releases",
        description="Where the Ollama runtime is downloaded from: a base laid out like a GitHub project's "
        "releases (<base>/latest/download/<asset>, <base>/download/<tag>/<asset>, sha256sum.txt beside the "
        "assets), a local folder with the same layout (mirrors), or one downloaded archive file with "
        "sha256sum.txt beside it (offline installs).",
    )
    ollama_update_check: bool = Field(
        default=False,
        description="Look for a newer Ollama runtime once a day (only a version check: an install or update "
        "never starts without an administrator's click).",
    )
    ollama_download_stall_seconds: float = Field(
        default=30.0, gt=0, description="A runtime download that receives no bytes for this long fails."
    )

    @field_validator("ollama_registries", mode="before")
    @classmethod
    def _ollama_registries_csv(cls, value: Any) -> Any:
        value = _split_csv(value)
        return [str(v).strip().lower() for v in value] if isinstance(value, list) else value

    migrate_on_start: bool = Field(default=True, description="Upgrade the database schema at start.")
    api_docs: bool = Field(default=False, description="Serve interactive API docs at /api/docs.")
    webui_dist: Path | None = Field(
        default=None,
        description="Built web UI directory. Default: webui/dist of the source tree or of the packaged app.",
    )

    # --- desktop host and LAN access (server/embedded.py, security/desktop_token.py,
    #     services/lan.py, desktop/) ---
    desktop_mode: bool = Field(
        default=False,
        description="Desktop host only: create a per-process desktop sign-in token. Never set for `serve`.",
    )
    lan_host: str = Field(default="0.0.0.0", description="Default address of the optional LAN listener.")
    lan_port: int = Field(
        default=8765, ge=0, le=65535, description="Default port of the optional LAN listener."
    )
    shutdown_grace_seconds: float = Field(
        default=2.0,
        ge=0,
        le=60,
        description="Seconds open requests and streams get at shutdown before cancel.",
    )
    keep_alive_seconds: float = Field(
        default=75.0,
        ge=1,
        le=3600,
        description="Seconds an idle HTTP keep-alive connection stays open. Longer than the idle time of "
        "the clients that reuse connections (nginx's upstream keepalive_timeout is 60 s, httpx's 5 s), "
        "so the server never closes a connection at the moment a client sends on it.",
    )

    # --- operations: backups, logs, metrics, alerts (services/backups/, logs.py, metrics.py, alerts.py) ---
    backup_dir: Path | None = Field(
        default=None,
        description="Backup directory. Default: '<data dir>-backups' beside the data directory "
        "(kept apart from the database file's directory).",
    )
    backup_schedule: str = Field(
        default="03:00",
        description="Daily automatic backup time, HH:MM local time, or 'off'.",
    )
    backup_keep_days: int = Field(default=7, ge=1, le=3650, description="Days automatic backups are kept.")
    backup_check_seconds: float = Field(
        default=60.0,
        ge=0.05,
        le=3600,
        description="How often the backup scheduler checks whether one is due.",
    )
    log_keep_days: int = Field(default=30, ge=1, le=3650, description="Days of rotated logs kept (gzipped).")
    metrics_enabled: bool = Field(default=True, description="Sample CPU, memory, disk and API metrics.")
    metrics_interval_seconds: float = Field(
        default=5.0, ge=0.05, le=300, description="Seconds between two metric samples."
    )
    metrics_history_seconds: int = Field(
        default=3600, ge=60, le=86400, description="How much metric history is kept for charts (seconds)."
    )
    memory_trim_seconds: float = Field(
        default=60.0,
        ge=0,
        le=3600,
        description="Seconds between two hand-backs of freed heap memory to the operating system "
        "(glibc's malloc_trim, which also pins malloc's mmap threshold at 128 KiB and caps its arenas at 2; "
        "0 = never; a no-op with other C libraries).",
    )
    usage_raw_days: int = Field(
        default=30,
        ge=1,
        le=3650,
        description="Days the raw usage records (one per chat or embedding request) are kept; pruned daily.",
    )
    usage_rollup_days: int = Field(
        default=400,
        ge=1,
        le=36500,
        description="Days the daily usage rollups (per day, user, API key and model) are kept; pruned daily.",
    )
    audit_days: int = Field(
        default=365,
        ge=1,
        le=36500,
        description="Days the audit log (sign-ins, user, key, provider, backup, model and settings changes) "
        "is kept; older entries are pruned daily.",
    )
    alert_days: int = Field(
        default=90,
        ge=1,
        le=36500,
        description="Days the alert history (alerts raised and resolved, every instance) and the alert "
        "deliveries are kept; older entries are pruned daily.",
    )
    log_surge_warning_factor: float = Field(
        default=3.0,
        ge=1.0,
        le=1000,
        description="Error-log surge: a warning when the ERROR/CRITICAL log records of the last 5 minutes "
        "exceed this many times the 5-minute average of the hour before.",
    )
    log_surge_alert_factor: float = Field(
        default=10.0,
        ge=1.0,
        le=10000,
        description="Error-log surge: an alert at this many times the baseline (at least the warning one).",
    )
    log_surge_floor: int = Field(
        default=10,
        ge=1,
        le=1_000_000,
        description="Error-log surge: fewest ERROR/CRITICAL records in the last 5 minutes that can count as "
        "a surge, so one error on a quiet server is not one.",
    )
    tls_cert_files: CsvList = Field(
        default_factory=list,
        description="Certificate files (PEM) whose expiry doctor and the daily check watch (14 days: "
        "warning, 3 days: alert). Default: the ssl_certificate files of the shipped nginx configuration.",
    )
    alert_delivery_attempts: int = Field(
        default=8,
        ge=1,
        le=100,
        description="Attempts to deliver one alert to one channel (webhook or e-mail) before it is marked "
        "failed; retries back off exponentially (alert_retry_seconds, doubled each time, at most 1 h).",
    )
    alert_retry_seconds: float = Field(
        default=30.0,
        ge=0.01,
        le=3600,
        description="First back-off before a failed alert delivery is retried.",
    )
    metrics_thresholds: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description="Overrides of the (warning, alert) thresholds, JSON such as "
        '{"cpu": [70, 90], "latency": [500, 2000]}; keys cpu, memory, disk (percent), latency (ms), '
        "error_rate (percent), gpu_memory (percent, default 80/95), gpu_temperature (°C, default 80/90).",
    )
    gpu_sysfs_root: Path = Field(
        default=Path("/sys/class/drm"),
        description="Where AMD GPUs are read from (the kernel's DRM sysfs: card*/device/gpu_busy_percent, "
        "mem_info_vram_*, hwmon). Only for demos and tests: point it at a generated tree to show fake GPUs "
        "on a machine without one. NVIDIA GPUs are read through NVML (nvidia-ml-py).",
    )

    # --- providers, model configurations and model discovery (providers/registry.py,
    #     services/providers.py, services/models.py); upstream timeouts are the chat_*_timeout below ---
    provider_max_connections: int = Field(
        default=256, ge=1, le=10_000, description="Most simultaneous connections to all upstream providers."
    )
    models_discovery_timeout: float = Field(
        default=3.0,
        gt=0,
        le=60,
        description="Seconds GET /api/models waits for each provider's model list (Ollama's /api/tags, "
        "an OpenAI-compatible /v1/models).",
    )
    models_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        le=3600,
        description="Seconds discovered model lists (Ollama, OpenAI-compatible) are cached.",
    )

    # --- chat streaming and conversations (services/chat.py, conversations.py, conversation_search.py,
    #     conversation_transfer.py) ---
    max_streams_per_user: int = Field(
        default=4,
        ge=1,
        le=1000,
        description="Concurrent replies (chat and /v1) one user may run (more: 429): the default of the "
        "concurrent_streams limit for both roles.",
    )
    # --- limits (services/limits.py): role defaults; per-user and per-key overrides live in the database.
    #     None = unlimited. A key's effective limit is the smaller of its own and its user's.
    limits_user_requests_per_minute: int | None = Field(
        default=None,
        ge=1,
        description="Requests per minute (UTC minute) a user may make (chat and /v1); "
        "unset: unlimited. A per-user override wins.",
    )
    limits_user_tokens_per_minute: int | None = Field(
        default=None, ge=1, description="Tokens per UTC minute a user may use; unset: unlimited."
    )
    limits_user_tokens_per_day: int | None = Field(
        default=None, ge=1, description="Tokens per UTC day a user may use; unset: unlimited."
    )
    limits_user_tokens_per_month: int | None = Field(
        default=None, ge=1, description="Tokens per UTC calendar month a user may use; unset: unlimited."
    )
    limits_user_concurrent_streams: int | None = Field(
        default=None,
        ge=1,
        description="Concurrent replies (chat and /v1) a user may run; "
        "unset: MODELTRAIN_MAX_STREAMS_PER_USER.",
    )
    limits_admin_requests_per_minute: int | None = Field(
        default=None, ge=1, description="Requests per UTC minute an administrator may make; unset: unlimited."
    )
    limits_admin_tokens_per_minute: int | None = Field(
        default=None, ge=1, description="Tokens per UTC minute an administrator may use; unset: unlimited."
    )
    limits_admin_tokens_per_day: int | None = Field(
        default=None, ge=1, description="Tokens per UTC day an administrator may use; unset: unlimited."
    )
    limits_admin_tokens_per_month: int | None = Field(
        default=None, ge=1, description="Tokens per UTC month an administrator may use; unset: unlimited."
    )
    limits_admin_concurrent_streams: int | None = Field(
        default=None,
        ge=1,
        description="Concurrent replies an administrator may run; unset: MODELTRAIN_MAX_STREAMS_PER_USER.",
    )
    limits_default_completion_tokens: int = Field(
        default=1024,
        ge=1,
        le=1_000_000,
        description="Tokens reserved for the answer at admission when the request sets no max_tokens "
        "(settled with the real count when the reply ends).",
    )
    limits_reservation_seconds: float = Field(
        default=60.0,
        ge=1,
        le=3600,
        description="Lifetime of a stream's reservation without a heartbeat: a crashed instance's stream "
        "slots are free again after this long (live ones are renewed every third of it).",
    )
    chat_max_message_chars: int = Field(
        default=100_000, ge=1, description="Longest chat message a user may send, in characters (more: 422)."
    )
    chat_ping_interval: float = Field(
        default=15.0, gt=0, description="Seconds between ': ping' keep-alive comments on a chat stream."
    )
    chat_coalesce_ms: float = Field(
        default=30.0, ge=0, description="Deltas arriving within this many ms are sent as one SSE event."
    )
    chat_persist_interval: float = Field(
        default=0.5, gt=0, description="Seconds between writes of a growing reply to the database."
    )
    chat_persist_bytes: int = Field(
        default=65536,
        ge=1,
        description="Unsaved reply bytes that trigger a database write before the interval is up (a very "
        "fast model; each write rewrites the whole reply and its search index).",
    )
    chat_connect_timeout: float = Field(default=5.0, gt=0, description="Upstream connect timeout (s).")
    chat_first_token_timeout: float = Field(
        default=120.0, gt=0, description="Seconds to wait for the first upstream token (covers a model load)."
    )
    chat_idle_timeout: float = Field(
        default=60.0, gt=0, description="Seconds allowed between two upstream chunks once streaming."
    )
    chat_preflight_timeout: float = Field(
        default=2.0,
        ge=0,
        description="Seconds POST /api/chat waits for the upstream's first answer, so early upstream errors "
        "(503, 429) are plain JSON responses; after that the event stream starts anyway.",
    )
    chat_title_generation: bool = Field(
        default=True, description="Ask the model for a short conversation title after the first exchange."
    )
    chat_title_timeout: float = Field(default=30.0, gt=0, description="Seconds allowed for title generation.")
    conversation_import_max_bytes: int = Field(
        default=50 * 1024 * 1024, ge=1024, description="Largest conversation import body (bytes)."
    )
    knowledge_embedding_model: str = Field(
        default="",
        max_length=1200,
        description="Model id (as GET /api/models lists it) that embeds long documents attached to a chat, "
        "for users without a knowledge collection (otherwise the model of their newest collection). Empty: "
        "such documents are searched by full text only.",
    )
    knowledge_chunk_chars: int = Field(
        default=1200, ge=200, le=20_000, description="Largest knowledge chunk (passage), in characters."
    )
    knowledge_chunk_overlap: int = Field(
        default=200,
        ge=0,
        le=5_000,
        description="Characters a knowledge chunk repeats from the end of the previous one (at most half "
        "a chunk).",
    )
    knowledge_embed_batch: int = Field(
        default=32, ge=1, le=512, description="Chunks sent to the embedding model in one request."
    )
    max_upload_mb: int = Field(
        default=25,
        ge=1,
        le=10_240,
        description="Largest file a user may attach or add to a collection (POST /api/files), in MiB "
        "(more: 413 file_too_large).",
    )
    chat_document_context_share: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="A document attached to a chat goes into the context whole while its tokens stay under "
        "this share of the model's context length; a longer one is searched and only its best passages sent.",
    )
    chat_document_passages: int = Field(
        default=6,
        ge=1,
        le=50,
        description="Passages retrieved for a chat from its long documents and knowledge collections.",
    )

    # --- deployment: gunicorn/systemd/logrotate/multi-instance (packaging/, server/asgi.py) ---
    log_rotation: Literal["app", "external"] = Field(
        default="app",
        description="Who rotates app.log/access.log: 'app' (daily, gzipped, log_keep_days kept) or "
        "'external' (logrotate: the files are reopened when moved; use with several processes, e.g. gunicorn "
        "workers).",
    )
    instance_name: str = Field(
        default="",
        max_length=64,
        description="Name of this server process in metrics and logs (several instances behind nginx). "
        "Default: <hostname>:<pid>.",
    )
    stop_poll_seconds: float = Field(
        default=0.25,
        gt=0,
        le=10,
        description="While this instance streams replies, how often it checks the database for a stop "
        "requested through another instance.",
    )
    route_retries: int = Field(
        default=2,
        ge=0,
        le=10,
        description="A model served by several hosts (a host group): how many other hosts a request moves "
        "to after a connect error, a timeout, or a 5xx/429 answer before the first token.",
    )
    route_strategy: Literal["weighted", "least_busy"] = Field(
        default="weighted",
        description="How a request picks among the healthy hosts of the best priority: weighted random, "
        "or the one with the fewest replies streaming on this instance.",
    )
    host_probe_seconds: float = Field(
        default=15.0,
        gt=0,
        le=3600,
        description="How often each provider's host is probed (Ollama /api/version, OpenAI-compatible "
        "/models) for the Hosts view and routing; a cooled-down host is probed as soon as it is due.",
    )
    host_cooldown_seconds: float = Field(
        default=2.0,
        gt=0,
        le=600,
        description="The first cool-down of a host after a failed request; it doubles with each further "
        "consecutive failure, up to MODELTRAIN_HOST_COOLDOWN_MAX_SECONDS.",
    )
    host_cooldown_max_seconds: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="The longest cool-down of a host that keeps failing.",
    )

    @field_validator("cors_origins", "allowed_hosts", "trusted_proxies", "tls_cert_files", mode="before")
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("secret_key")
    @classmethod
    def _strong_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        raw = value.get_secret_value()
        if raw == "":
            return None
        if raw.strip().lower() in WELL_KNOWN_SECRETS or len(set(raw)) < 8:
            raise ValueError("is a well-known or low-entropy value")
        if len(raw) < MIN_SECRET_LENGTH:
            raise ValueError(f"is too short ({len(raw)} characters, need at least {MIN_SECRET_LENGTH})")
        return value

    @field_validator("backup_schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        value = value.strip().lower()
        if value in ("off", "none", "disabled", ""):
            return "off"
        hh, sep, mm = value.partition(":")
        if not sep or not hh.isdigit() or not mm.isdigit() or int(hh) > 23 or int(mm) > 59:
            raise ValueError("must be HH:MM (24-hour local time) or 'off'")
        return f"{int(hh):02d}:{int(mm):02d}"

    @field_validator("metrics_thresholds")
    @classmethod
    def _thresholds(cls, value: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        known = {"cpu", "memory", "disk", "latency", "error_rate", "gpu_memory", "gpu_temperature"}
        for key, (warning, alert) in value.items():
            if key not in known:
                raise ValueError(f"unknown metric {key!r} (use {', '.join(sorted(known))})")
            if not 0 <= warning <= alert:
                raise ValueError(f"{key}: need 0 <= warning <= alert")
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _no_wildcard_hosts(cls, value: list[str]) -> list[str]:
        for host in value:
            if "*" in host:
                raise ValueError("must list explicit names or addresses; '*' is not allowed")
        return [h.lower().rstrip(".") for h in value]

    @field_validator("cors_origins")
    @classmethod
    def _explicit_origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin == "*" or not origin.startswith(("http://", "https://")):
                raise ValueError(f"{origin!r} is not an explicit http(s) origin ('*' is not allowed)")
        return [o.rstrip("/") for o in value]

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_addresses(cls, value: list[str]) -> list[str]:
        for item in value:
            ipaddress.ip_network(item, strict=False)  # raises ValueError with a clear message
        return value

    @field_validator("data_dir", mode="before")
    @classmethod
    def _expand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return Path(value).expanduser()
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("sqlite", "postgresql")):
            raise ValueError("must be a sqlite:/// or postgresql:// URL")
        return value or None

    # --- derived values (no I/O) ---
    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'modeltrain.db'}"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @property
    def resolved_log_dir(self) -> Path:
        return self.log_dir or self.data_dir / "logs"

    @property
    def resolved_backup_dir(self) -> Path:
        # A sibling of the data directory: not the directory holding the database file, so deleting
        # or wiping the data directory does not take the backups with it (point it at another disk
        # with MODELTRAIN_BACKUP_DIR for real protection against a disk failure).
        if self.backup_dir is not None:
            return self.backup_dir.expanduser()
        data = self.data_dir.expanduser()
        return data.parent / f"{data.name}-backups"

    @property
    def default_ollama_url(self) -> str:
        if self.ollama_url:
            return self.ollama_url.rstrip("/")
        if self.ollama_host and self.ollama_host.strip():
            return ollama_host_to_url(self.ollama_host)
        return "http://127.0.0.1:11434"


def ollama_host_to_url(value: str) -> str:
    """Turn an ``OLLAMA_HOST`` value (``host``, ``host:port``, ``scheme://host:port``) into a client URL."""
    value = value.strip().rstrip("/")
    scheme = "http"
    if "://" in value:
        scheme, value = value.split("://", 1)
    host, port = value, "11434"
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        host = f"[{host}]"
        if rest.startswith(":"):
            port = rest[1:]
    elif value.count(":") == 1:
        host, port = value.split(":")
    if host in ("", "0.0.0.0", "[::]"):
        host = "127.0.0.1"
    return f"{scheme}://{host}:{port}"


class SettingsError(Exception):
    """A setting is invalid. ``str()`` is one line naming the setting and the fix."""


_FIXES = {
    "SECRET_KEY": "unset it to have one generated, or set a random value such as the output of "
    '`python -c "import secrets; print(secrets.token_urlsafe(48))"`',
    "DATABASE_URL": "use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB",
    "LOG_LEVEL": "use DEBUG, INFO, WARNING or ERROR",
    "CORS_ORIGINS": "list origins like http://localhost:5173, comma-separated",
}


def env_names(field: str) -> list[str]:
    """The environment variables a setting is read from, the preferred one first: its own upper-case
    aliases (the spec's names, Ollama's OLLAMA_HOST...), else ``MODELTRAIN_<FIELD>``."""
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        names = [choice for choice in alias.choices if isinstance(choice, str) and choice.isupper()]
        if names:
            return names
    return [f"MODELTRAIN_{field.upper()}"]


def env_name(field: str) -> str:
    return env_names(field)[0]


def load_settings(**overrides: Any) -> Settings:
    """Build settings from arguments, environment and ``.env``; raise :class:`SettingsError` on bad input."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = err.get("loc") or ("settings",)
        field = str(loc[0])
        name = env_name(field) if field in Settings.model_fields else field
        message = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        fix = _FIXES.get(name, "correct or unset it")
        raise SettingsError(f"invalid setting {name}: {message}; fix: {fix}") from None


def generate_secret() -> str:
    return secrets.token_urlsafe(48)

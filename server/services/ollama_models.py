"""Ollama model management: list/show/delete/copy/create, running models, and background pulls.

Every request to Ollama is built here from validated fields (no pass-through, ``insecure`` never sent)
with httpx (redirects off, proxies from the environment ignored). Names are checked against Ollama's
grammar (protocols.md §F) and a registry allow-list *before* anything is sent.

Pulls are asyncio tasks owned by a :class:`PullManager` (``runtime.extras["ollama_pulls"]``): several at
once, cancellable, independent of the HTTP request that started them, with progress snapshots a
client can re-attach to, a free-disk check before each layer downloads, and stall reports.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import psutil
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.db.models import Provider
from server.errors import (
    Conflict,
    DomainError,
    InsufficientStorage,
    InvalidInput,
    NotFound,
    Unavailable,
    UpstreamError,
)
from server.providers.model_names import MAX_NAME_LENGTH, is_valid_model_name, parse_model_name
from server.services.ollama_daemon import (
    OllamaDaemon,
    async_http_client,
    fetch_version,
    http_client,
    is_loopback_url,
    probe,
)
from server.settings import Settings

if TYPE_CHECKING:
    from server.runtime import Runtime

log = logging.getLogger(__name__)

DAEMON_KEY = "ollama_daemon"
PULLS_KEY = "ollama_pulls"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DURATION = re.compile(r"^-?(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+$")
#: Modelfile parameters a created model may set (``PARAMETER`` names of the Modelfile reference).
CREATE_PARAMETERS = frozenset(
    {
        "temperature",
        "top_k",
        "top_p",
        "min_p",
        "typical_p",
        "num_ctx",
        "num_predict",
        "num_keep",
        "repeat_penalty",
        "repeat_last_n",
        "presence_penalty",
        "frequency_penalty",
        "seed",
        "stop",
        "mirostat",
        "mirostat_eta",
        "mirostat_tau",
        "num_batch",
        "num_gpu",
        "num_thread",
    }
)


# --------------------------------------------------------------------------------------------------
# Life cycle (called from the app lifespan)
# --------------------------------------------------------------------------------------------------


async def start_ollama(runtime: Runtime) -> None:
    """Register the daemon supervisor and the pull manager; autostart Ollama when the setting says so."""
    settings = runtime.settings
    daemon = OllamaDaemon(settings)
    runtime.extras[DAEMON_KEY] = daemon
    runtime.extras[PULLS_KEY] = PullManager(settings)
    if settings.ollama_autostart:
        try:
            await anyio.to_thread.run_sync(daemon.start)
        except DomainError as exc:
            log.warning("Ollama autostart: %s", exc.message)


async def stop_ollama(runtime: Runtime) -> None:
    """Cancel pulls, then stop a managed Ollama (an external one is never touched)."""
    pulls = runtime.extras.get(PULLS_KEY)
    if pulls is not None:
        await pulls.aclose()
    daemon = runtime.extras.get(DAEMON_KEY)
    if daemon is not None:
        await anyio.to_thread.run_sync(daemon.close)


def get_daemon(runtime: Runtime) -> OllamaDaemon:
    daemon = runtime.extras.get(DAEMON_KEY)
    if daemon is None:
        raise Unavailable("the Ollama supervisor is not running (app not started)", code="ollama_unavailable")
    return daemon


#: States the daemon settles in after a start or restart (success or a clear failure).
SETTLED_STATES = ("running", "external", "failed", "stopped", "not_installed")


def wait_settled(daemon: OllamaDaemon, settings: Settings) -> None:
    """Block until a start/restart has an outcome (or the start timeout passes)."""
    daemon.wait_for(SETTLED_STATES, settings.ollama_start_timeout + 5)


def get_pulls(runtime: Runtime) -> PullManager:
    pulls = runtime.extras.get(PULLS_KEY)
    if pulls is None:
        raise Unavailable("the pull manager is not running (app not started)", code="ollama_unavailable")
    return pulls


# --------------------------------------------------------------------------------------------------
# Targets: which Ollama host a request is about
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OllamaTarget:
    url: str
    provider_id: uuid.UUID | None = None


def resolve_target(session: Session, settings: Settings, provider_id: uuid.UUID | None) -> OllamaTarget:
    """``provider_id`` names an Ollama provider row; without it, the default Ollama provider (or the
    configured default URL when there is no such row)."""
    if provider_id is not None:
        row = session.get(Provider, provider_id)
        if row is None or row.kind != "ollama":
            raise NotFound("no Ollama provider with this id", code="provider_not_found")
        return OllamaTarget(row.base_url.rstrip("/"), row.id)
    row = session.scalar(
        select(Provider).where(Provider.kind == "ollama", Provider.is_default.is_(True)).limit(1)
    )
    if row is not None:
        return OllamaTarget(row.base_url.rstrip("/"), row.id)
    return OllamaTarget(settings.default_ollama_url.rstrip("/"), None)


def target_status(daemon: OllamaDaemon, target: OllamaTarget) -> dict[str, Any]:
    """Daemon status for the supervised URL; a probe for any other Ollama host."""
    if _same_url(target.url, daemon.url):
        return {**daemon.status(refresh=True).as_dict(), "provider_id": target.provider_id}
    up = probe(target.url)
    return {
        "state": "external" if up else "stopped",
        "url": target.url,
        "managed": False,
        "version": fetch_version(target.url) if up else None,
        "pid": None,
        "uptime_s": None,
        "restart_count": 0,
        "last_error": None if up else f"no Ollama answers at {target.url}",
        "binary": None,
        "log_file": None,
        "autostart": False,
        "provider_id": target.provider_id,
    }


def _same_url(a: str, b: str) -> bool:
    def norm(u: str) -> str:
        return u.rstrip("/").lower().replace("://localhost:", "://127.0.0.1:")

    return norm(a) == norm(b)


# --------------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------------


def check_name(name: str, what: str = "name") -> str:
    """Ollama's grammar (§F) plus security.md C4: no ``..`` anywhere, bounded length."""
    if (
        not isinstance(name, str)
        or len(name) > MAX_NAME_LENGTH
        or ".." in name
        or not is_valid_model_name(name)
    ):
        raise InvalidInput(
            f"invalid model {what}: use [host/][namespace/]model[:tag] with letters, digits, '_', '-', '.'",
            code="invalid_model_name",
            detail={"field": what},
        )
    return name


def check_registry_name(settings: Settings, name: str, what: str = "name") -> str:
    """A name that makes Ollama contact a registry (pull, create from a missing base): the host must
    be allow-listed and cloud/local markers are refused (protocols.md §D.5)."""
    check_name(name, what)
    parts = parse_model_name(name)
    assert parts is not None
    if parts["host"].lower() not in settings.ollama_registries:
        raise InvalidInput(
            f"registry {parts['host']!r} is not allowed (MODELTRAIN_OLLAMA_REGISTRIES)",
            code="registry_not_allowed",
            detail={"field": what},
        )
    tag = parts["tag"].lower()
    if tag in ("cloud", "local") or tag.endswith("-cloud"):
        raise InvalidInput(
            "cloud models are not managed here", code="cloud_model_not_allowed", detail={"field": what}
        )
    return name


def canonical_name(name: str) -> str:
    """Case-insensitive identity of a name: ``host/namespace/model:tag``, lower-cased."""
    parts = parse_model_name(name)
    if parts is None:
        return name.lower()
    return f"{parts['host']}/{parts['namespace']}/{parts['model']}:{parts['tag']}".lower()


def check_keep_alive(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidInput(
            "keep_alive must be seconds or a duration such as '10m'", code="invalid_keep_alive"
        )
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str) and len(value) <= 32 and _DURATION.match(value):
        return value
    raise InvalidInput("keep_alive must be seconds or a duration such as '10m'", code="invalid_keep_alive")


# --------------------------------------------------------------------------------------------------
# Synchronous Ollama calls
# --------------------------------------------------------------------------------------------------


def _clean(text: Any, limit: int = 300) -> str:
    return _CONTROL.sub(" ", str(text))[:limit].strip()


def _upstream_message(response: httpx.Response) -> str:
    try:
        body = response.json()
        if isinstance(body, dict) and body.get("error"):
            return _clean(body["error"])
    except ValueError:
        pass
    return _clean(response.text) or f"HTTP {response.status_code}"


def _raise_for(response: httpx.Response, name: str | None = None) -> None:
    if response.status_code < 400:
        return
    message = _upstream_message(response)
    if response.status_code == 404:
        raise NotFound(f"model {name!r} not found" if name else message, code="model_not_found")
    if response.status_code == 400:
        raise InvalidInput(f"Ollama refused the request: {message}", code="ollama_rejected")
    if response.status_code == 503:
        raise Unavailable(f"Ollama is busy: {message}", code="ollama_busy", headers={"Retry-After": "2"})
    raise UpstreamError(f"Ollama failed: {message}", code="ollama_error")


def _request(
    url: str, method: str, path: str, *, json_body: Any = None, timeout: float | httpx.Timeout = 15.0
) -> httpx.Response:
    try:
        with http_client(timeout) as client:
            return client.request(method, url + path, json=json_body)
    except httpx.TimeoutException:
        raise Unavailable(f"Ollama at {url} did not answer in time", code="ollama_timeout") from None
    except (httpx.HTTPError, OSError):
        raise Unavailable(f"Ollama at {url} is not reachable", code="ollama_unreachable") from None


def _json_of(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise UpstreamError("Ollama sent a malformed answer", code="upstream_protocol") from None
    if not isinstance(body, dict):
        raise UpstreamError("Ollama sent a malformed answer", code="upstream_protocol")
    return body


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _model_summary(entry: dict[str, Any]) -> dict[str, Any]:
    details = entry.get("details") if isinstance(entry.get("details"), dict) else {}
    caps = entry.get("capabilities")
    return {
        "name": _str(entry.get("name") or entry.get("model")),
        "size": int(entry.get("size") or 0),
        "family": _str(details.get("family")),
        "parameter_size": _str(details.get("parameter_size")),
        "quantization": _str(details.get("quantization_level")),
        "format": _str(details.get("format")),
        "digest": _str(entry.get("digest")),
        "modified_at": _str(entry.get("modified_at")) or None,
        "capabilities": [c for c in caps if isinstance(c, str)] if isinstance(caps, list) else [],
    }


#: (url, name, digest) -> capabilities, for servers whose /api/tags does not report them.
_CAPABILITIES: dict[tuple[str, str, str], list[str]] = {}
_CAPABILITIES_LOCK = threading.Lock()


def _capabilities_of(target: OllamaTarget, name: str) -> list[str]:
    try:
        r = _request(target.url, "POST", "/api/show", json_body={"model": name}, timeout=5.0)
    except Unavailable:
        return []
    if r.status_code != 200:
        return []
    try:
        caps = r.json().get("capabilities")
    except (ValueError, AttributeError):
        return []
    return [c for c in caps if isinstance(c, str)] if isinstance(caps, list) else []


def _fill_capabilities(target: OllamaTarget, items: list[dict[str, Any]]) -> None:
    missing = []
    with _CAPABILITIES_LOCK:
        for item in items:
            if not item["capabilities"]:
                cached = _CAPABILITIES.get((target.url, item["name"], item["digest"]))
                if cached is not None:
                    item["capabilities"] = list(cached)
                elif item["name"]:
                    missing.append(item)
    if not missing:
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(missing))) as pool:
        results = list(pool.map(lambda item: _capabilities_of(target, item["name"]), missing))
    with _CAPABILITIES_LOCK:
        if len(_CAPABILITIES) > 4096:
            _CAPABILITIES.clear()
        for item, caps in zip(missing, results):
            item["capabilities"] = caps
            if caps:
                _CAPABILITIES[(target.url, item["name"], item["digest"])] = caps


def list_models(target: OllamaTarget) -> list[dict[str, Any]]:
    """Local models. Older servers leave capabilities out of /api/tags; they are then read (once per
    model digest) from /api/show."""
    r = _request(target.url, "GET", "/api/tags")
    _raise_for(r)
    models = _json_of(r).get("models") or []
    items = [_model_summary(m) for m in models if isinstance(m, dict)]
    _fill_capabilities(target, items)
    return items


def _exists(target: OllamaTarget, name: str) -> bool:
    key = canonical_name(name)
    r = _request(target.url, "GET", "/api/tags")
    _raise_for(r)
    names = [_model_summary(m)["name"] for m in _json_of(r).get("models") or [] if isinstance(m, dict)]
    return any(canonical_name(n) == key for n in names)


def show_model(target: OllamaTarget, name: str) -> dict[str, Any]:
    check_name(name)
    r = _request(target.url, "POST", "/api/show", json_body={"model": name})
    _raise_for(r, name)
    body = _json_of(r)
    details = body.get("details") if isinstance(body.get("details"), dict) else {}
    license_ = body.get("license")
    if isinstance(license_, list):
        license_ = "\n\n".join(str(x) for x in license_)
    caps = body.get("capabilities")
    info = body.get("model_info")
    return {
        "name": name,
        "parameters": _str(body.get("parameters")),
        "template": _str(body.get("template")),
        "system": _str(body.get("system")),
        "license": _str(license_),
        "modelfile": _str(body.get("modelfile")),
        "details": {k: v for k, v in details.items() if isinstance(v, (str, int, float, list)) or v is None},
        "model_info": info if isinstance(info, dict) else {},
        "capabilities": [c for c in caps if isinstance(c, str)] if isinstance(caps, list) else [],
        "modified_at": _str(body.get("modified_at")) or None,
    }


def delete_model(target: OllamaTarget, name: str) -> None:
    check_name(name)
    r = _request(target.url, "DELETE", "/api/delete", json_body={"model": name})
    _raise_for(r, name)
    log.info("Ollama model %s deleted at %s", name, target.url)


def copy_model(target: OllamaTarget, source: str, destination: str) -> dict[str, Any]:
    check_name(source, "source")
    check_name(destination, "destination")
    if _exists(target, destination):
        raise Conflict(f"a model named {destination!r} already exists", code="model_exists")
    r = _request(target.url, "POST", "/api/copy", json_body={"source": source, "destination": destination})
    _raise_for(r, source)
    return {"name": destination}


def create_model(
    settings: Settings,
    target: OllamaTarget,
    name: str,
    base: str,
    system: str | None,
    parameters: dict[str, Any] | None,
) -> dict[str, Any]:
    check_name(name)
    check_registry_name(settings, base, "from")
    for key in parameters or {}:
        if key not in CREATE_PARAMETERS:
            raise InvalidInput(
                f"unknown model parameter {key!r}", code="invalid_parameter", detail={"field": key}
            )
    if _exists(target, name):
        raise Conflict(f"a model named {name!r} already exists", code="model_exists")
    body: dict[str, Any] = {"model": name, "from": base, "stream": False}
    if system is not None:
        body["system"] = system
    if parameters:
        body["parameters"] = parameters
    # Creating from a base that is not local makes Ollama pull it first: allow a long read.
    r = _request(target.url, "POST", "/api/create", json_body=body, timeout=httpx.Timeout(15.0, read=1800.0))
    if r.status_code == 500 and "file does not exist" in _upstream_message(r):
        raise NotFound(f"base model {base!r} not found", code="model_not_found")
    _raise_for(r, base)
    log.info("Ollama model %s created from %s at %s", name, base, target.url)
    return {"name": name}


def list_running(target: OllamaTarget) -> list[dict[str, Any]]:
    r = _request(target.url, "GET", "/api/ps")
    _raise_for(r)
    items = []
    for entry in _json_of(r).get("models") or []:
        if not isinstance(entry, dict):
            continue
        size = int(entry.get("size") or 0)
        vram = int(entry.get("size_vram") or 0)
        expires = _str(entry.get("expires_at")) or None
        items.append(
            {
                "name": _str(entry.get("name") or entry.get("model")),
                "size": size,
                "size_vram": vram,
                "vram_share": round(vram / size, 4) if size else 0.0,
                "expires_at": expires,
                "pinned": _far_future(expires),
            }
        )
    return items


def _far_future(stamp: str | None) -> bool:
    if not stamp:
        return False
    try:
        return int(stamp[:4]) - datetime.now(timezone.utc).year > 100
    except ValueError:
        return False


def _keep_alive_call(target: OllamaTarget, name: str, keep_alive: Any) -> None:
    body: dict[str, Any] = {"model": name, "stream": False}
    if keep_alive is not None:
        body["keep_alive"] = keep_alive
    timeout = httpx.Timeout(15.0, read=600.0)  # a load can take minutes
    r = _request(target.url, "POST", "/api/generate", json_body=body, timeout=timeout)
    if r.status_code == 400 and "does not support generate" in _upstream_message(r):
        # Embedding-only models load through /api/embed with no input.
        embed = {"model": name, "input": []}
        if keep_alive is not None:
            embed["keep_alive"] = keep_alive
        r = _request(target.url, "POST", "/api/embed", json_body=embed, timeout=timeout)
    _raise_for(r, name)


def unload_model(target: OllamaTarget, name: str) -> None:
    check_name(name)
    _keep_alive_call(target, name, 0)


def load_model(target: OllamaTarget, name: str, keep_alive: Any) -> None:
    """Load ``name`` into memory; ``keep_alive=-1`` pins it."""
    check_name(name)
    _keep_alive_call(target, name, check_keep_alive(keep_alive))


# --------------------------------------------------------------------------------------------------
# Pulls
# --------------------------------------------------------------------------------------------------


def default_free_space(path: Path) -> int:
    return psutil.disk_usage(str(path)).free


def models_dir_for(settings: Settings, url: str) -> Path | None:
    """The directory whose free space a pull into ``url`` consumes: local Ollama only."""
    if not is_loopback_url(url):
        return None
    if settings.ollama_models_dir:
        candidate = Path(settings.ollama_models_dir).expanduser()
    elif os.environ.get("OLLAMA_MODELS"):
        candidate = Path(os.environ["OLLAMA_MODELS"]).expanduser()
    else:
        candidate = Path.home() / ".ollama" / "models"
    for path in (candidate, *candidate.parents):
        if path.exists():
            return path
    return settings.data_dir


class _PullFailed(Exception):
    def __init__(self, code: str, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail


_FINAL = ("done", "error")


@dataclass
class PullJob:
    key: str
    name: str
    url: str
    provider_id: uuid.UUID | None
    check_dir: Path | None
    state: str = "running"  # running | success | error | cancelled
    status: str = "starting"
    digest: str | None = None
    total: int | None = None
    completed: int | None = None
    bytes_per_s: float | None = None
    stalled: bool = False
    error: dict[str, Any] | None = None
    started_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    finished_at: datetime | None = None
    events: int = 0
    last_change: float = field(default_factory=time.monotonic)
    last_event: tuple[str, dict[str, Any]] | None = None
    subscribers: set[asyncio.Queue] = field(default_factory=set)
    task: asyncio.Task | None = None
    checkpoint: asyncio.Event = field(default_factory=asyncio.Event)
    checked: set[str] = field(default_factory=set)
    samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=64))
    started_mono: float = field(default_factory=time.monotonic)

    @property
    def percent(self) -> float | None:
        if self.total and self.completed is not None:
            return round(100.0 * min(self.completed, self.total) / self.total, 2)
        return None

    @property
    def eta_s(self) -> float | None:
        if self.total and self.completed is not None and self.bytes_per_s:
            return round(max(self.total - self.completed, 0) / self.bytes_per_s, 1)
        return None

    @property
    def remaining(self) -> int:
        if self.state != "running" or not self.total:
            return 0
        return max(self.total - (self.completed or 0), 0)

    def progress(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "digest": self.digest,
            "total": self.total,
            "completed": self.completed,
            "percent": self.percent,
            "bytes_per_s": self.bytes_per_s,
            "eta_s": self.eta_s,
            "stalled": self.stalled,
        }

    def summary(self) -> dict[str, Any]:
        return {
            **self.progress(),
            "provider_id": self.provider_id,
            "url": self.url,
            "state": self.state,
            "error": self.error,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "events": self.events,
        }


class PullManager:
    """Background pulls on the server's event loop. ``list``/``cancel`` may be called from threads."""

    def __init__(
        self,
        settings: Settings,
        *,
        free_space: Callable[[Path], int] = default_free_space,
        keep_finished: int = 50,
        queue_size: int = 256,
    ) -> None:
        self.settings = settings
        self.free_space = free_space
        self.keep_finished = keep_finished
        self.queue_size = queue_size
        self._jobs: dict[str, PullJob] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- public ------------------------------------------------------------------------------

    async def start(self, target: OllamaTarget, name: str) -> tuple[PullJob, bool]:
        """Start pulling ``name`` into ``target`` (or join the pull already running). Returns the job and
        whether it was created by this call."""
        check_registry_name(self.settings, name)
        self._loop = asyncio.get_running_loop()
        key = self._key(target.url, name)
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and job.state == "running":
                return job, False
            job = PullJob(
                key=key,
                name=name,
                url=target.url,
                provider_id=target.provider_id,
                check_dir=models_dir_for(self.settings, target.url),
            )
            self._jobs[key] = job
            self._prune()
        job.task = asyncio.create_task(self._run(job), name=f"ollama-pull {name}")
        log.info("pull of %s started at %s", name, target.url)
        return job, True

    async def wait_checkpoint(self, job: PullJob, timeout: float) -> None:
        """Until the first layer passed the disk check, or the pull ended (bounded by ``timeout``)."""
        try:
            await asyncio.wait_for(job.checkpoint.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    def get(self, url: str, name: str) -> PullJob | None:
        with self._lock:
            return self._jobs.get(self._key(url, name))

    def subscribe(self, job: PullJob) -> asyncio.Queue:
        """A queue of ``(event, data)``: the latest snapshot first, then live events until the end."""
        queue: asyncio.Queue = asyncio.Queue(maxsize=self.queue_size)
        if job.last_event is not None:
            queue.put_nowait(job.last_event)
        if job.state == "running":
            job.subscribers.add(queue)
        elif job.last_event is None or job.last_event[0] not in _FINAL:
            queue.put_nowait(self._final_event(job))
        return queue

    def unsubscribe(self, job: PullJob, queue: asyncio.Queue) -> None:
        job.subscribers.discard(queue)

    def list(self, url: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            self._prune()
            jobs = [j for j in self._jobs.values() if url is None or j.url == url]
        jobs.sort(key=lambda j: j.started_at, reverse=True)
        return [j.summary() for j in jobs]

    def cancel(self, url: str, name: str, timeout: float = 10.0) -> dict[str, Any]:
        """Cancel a running pull; blocks until it ended. Call from a worker thread, not the loop."""
        job = self.get(url, name)
        if job is None or job.state != "running" or job.task is None or self._loop is None:
            raise NotFound("no pull of this model is running", code="pull_not_found")
        future = asyncio.run_coroutine_threadsafe(self._cancel(job), self._loop)
        try:
            future.result(timeout)
        except concurrent.futures.TimeoutError:
            pass
        return job.summary()

    async def aclose(self) -> None:
        with self._lock:
            tasks = [j.task for j in self._jobs.values() if j.task is not None and not j.task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # ---- internals ---------------------------------------------------------------------------

    @staticmethod
    def _key(url: str, name: str) -> str:
        return f"{url.rstrip('/').lower()}|{canonical_name(name)}"

    def _prune(self) -> None:
        finished = [j for j in self._jobs.values() if j.state != "running"]
        finished.sort(key=lambda j: j.finished_at or j.started_at)
        for job in finished[: max(0, len(finished) - self.keep_finished)]:
            self._jobs.pop(job.key, None)

    async def _cancel(self, job: PullJob) -> None:
        if job.task is not None and not job.task.done():
            job.task.cancel()
            await asyncio.gather(job.task, return_exceptions=True)

    def _emit(self, job: PullJob, event: str, data: dict[str, Any]) -> None:
        job.events += 1
        job.last_event = (event, data)
        for queue in list(job.subscribers):
            if queue.full():  # a slow reader loses intermediate progress, never the final event
                try:
                    queue.get_nowait()
                except asyncio.QueueEmpty:
                    pass
            queue.put_nowait((event, data))

    def _final_event(self, job: PullJob) -> tuple[str, dict[str, Any]]:
        if job.state == "success":
            return "done", {
                "name": job.name,
                "status": "success",
                "elapsed_s": round(time.monotonic() - job.started_mono, 3),
            }
        error = job.error or {"code": "pull_failed", "message": "the pull failed"}
        return "error", {"name": job.name, **error}

    def _finish(self, job: PullJob, state: str, error: dict[str, Any] | None = None) -> None:
        job.state = state
        job.error = error
        job.finished_at = datetime.now(timezone.utc)
        job.stalled = False
        self._emit(job, *self._final_event(job))
        job.subscribers.clear()
        job.checkpoint.set()

    def _on_line(self, job: PullJob, line: dict[str, Any]) -> None:
        now = time.monotonic()
        status = _clean(line.get("status") or "", 120)
        digest = line.get("digest") if isinstance(line.get("digest"), str) else None
        total = line.get("total") if isinstance(line.get("total"), int) else None
        completed = line.get("completed") if isinstance(line.get("completed"), int) else None
        if digest is None:
            changed = status != job.status
            job.digest, job.total, job.completed, job.bytes_per_s = None, None, None, None
            job.samples.clear()
        else:
            completed = completed or 0
            new_layer = digest != job.digest
            changed = new_layer or status != job.status or completed > (job.completed or 0)
            if new_layer:
                job.samples.clear()
            job.digest, job.total, job.completed = digest, total, completed
            job.samples.append((now, completed))
            job.bytes_per_s = self._rate(job.samples)
            if digest not in job.checked and total:
                job.checked.add(digest)
                self._check_disk(job, total - completed)
                job.checkpoint.set()
        job.status = status
        if changed:
            job.last_change = now
            job.stalled = False
        self._emit(job, "progress", job.progress())

    @staticmethod
    def _rate(samples: deque[tuple[float, int]]) -> float | None:
        if len(samples) < 2:
            return None
        latest_t, latest_c = samples[-1]
        first_t, first_c = samples[0]
        for t, c in samples:  # a window of the last ~5 s
            if latest_t - t <= 5.0:
                first_t, first_c = t, c
                break
        if latest_t - first_t < 0.05:
            return None
        return round((latest_c - first_c) / (latest_t - first_t), 1)

    def _check_disk(self, job: PullJob, remaining: int) -> None:
        if job.check_dir is None or remaining <= 0:
            return
        with self._lock:
            others = sum(
                j.remaining for j in self._jobs.values() if j is not job and j.check_dir == job.check_dir
            )
        needed = remaining + others + self.settings.ollama_disk_reserve_bytes
        free = self.free_space(job.check_dir)
        if free < needed:
            raise _PullFailed(
                "disk_full",
                f"not enough free disk space for {job.name}: {needed} bytes needed, {free} free",
                {"needed_bytes": needed, "free_bytes": free},
            )

    async def _watch_stall(self, job: PullJob) -> None:
        limit = self.settings.ollama_pull_stall_seconds
        interval = min(1.0, limit / 4)
        while job.state == "running":
            await asyncio.sleep(interval)
            if job.state == "running" and not job.stalled and time.monotonic() - job.last_change >= limit:
                job.stalled = True
                log.warning("pull of %s stalled (no progress for %.0f s)", job.name, limit)
                self._emit(job, "progress", job.progress())

    async def _run(self, job: PullJob) -> None:
        watchdog = asyncio.create_task(self._watch_stall(job))
        timeout = httpx.Timeout(10.0, read=900.0)
        try:
            async with async_http_client(timeout) as client:
                # Built from validated fields only; `insecure` is never sent.
                body = {"model": job.name, "stream": True}
                async with client.stream("POST", job.url + "/api/pull", json=body) as response:
                    if response.status_code != 200:
                        await response.aread()
                        code = "invalid_model_name" if response.status_code == 400 else "pull_failed"
                        raise _PullFailed(code, f"Ollama refused the pull: {_upstream_message(response)}")
                    async for raw in response.aiter_lines():
                        if not raw.strip():
                            continue
                        try:
                            line = json.loads(raw)
                        except ValueError:
                            raise _PullFailed(
                                "upstream_protocol", "Ollama sent a malformed progress line"
                            ) from None
                        if not isinstance(line, dict):
                            raise _PullFailed("upstream_protocol", "Ollama sent a malformed progress line")
                        if line.get("error"):
                            message = _clean(line["error"])
                            code = "model_not_found" if "file does not exist" in message else "pull_failed"
                            raise _PullFailed(code, message)
                        self._on_line(job, line)
                        if line.get("status") == "success":
                            self._finish(job, "success")
                            log.info("pull of %s finished", job.name)
                            return
            raise _PullFailed("pull_incomplete", "the pull ended before Ollama reported success")
        except asyncio.CancelledError:
            self._finish(job, "cancelled", {"code": "cancelled", "message": "the pull was cancelled"})
            log.info("pull of %s cancelled", job.name)
        except _PullFailed as exc:
            self._finish(job, "error", {"code": exc.code, "message": exc.message, "detail": exc.detail})
            log.warning("pull of %s failed: %s", job.name, exc.message)
        except httpx.TimeoutException:
            self._finish(job, "error", {"code": "ollama_timeout", "message": "Ollama stopped answering"})
        except (httpx.HTTPError, OSError):
            self._finish(
                job,
                "error",
                {"code": "ollama_unreachable", "message": f"Ollama at {job.url} is not reachable"},
            )
        finally:
            watchdog.cancel()
            job.checkpoint.set()


#: HTTP errors for a pull that failed before its stream started.
PULL_ERRORS: dict[str, type[DomainError]] = {
    "disk_full": InsufficientStorage,
    "ollama_unreachable": Unavailable,
    "ollama_timeout": Unavailable,
    "model_not_found": NotFound,
    "invalid_model_name": InvalidInput,
}


def early_pull_error(job: PullJob) -> DomainError | None:
    """The error to answer instead of a stream when the pull already failed (e.g. disk full)."""
    if job.state not in ("error",) or job.error is None:
        return None
    cls = PULL_ERRORS.get(job.error["code"], UpstreamError)
    return cls(job.error["message"], code=job.error["code"], detail=job.error.get("detail"))

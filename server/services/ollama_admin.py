"""Ollama model administration: which host a request is about, name checks, and the synchronous calls
(list/show/delete/copy/create, running models, load/unload).

Every request to Ollama is built here from validated fields (no pass-through, ``insecure`` never sent)
with httpx (redirects off, proxies from the environment ignored). Names are checked against Ollama's
grammar (docs/protocols.md, §F) and a registry allow-list *before* anything is sent.
"""

from __future__ import annotations

import concurrent.futures
import logging
import re
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.db.models import Provider
from server.errors import Conflict, InvalidInput, NotFound, Unavailable, UpstreamError
from server.providers.model_names import MAX_NAME_LENGTH, is_valid_model_name, parse_model_name
from server.schemas.ollama import OllamaStatusRead
from server.services.modelfile import CREATE_PARAMETERS, QUANTIZE_TYPES, ModelfileSpec, parse_modelfile
from server.services.ollama_daemon import OllamaDaemon, fetch_version, http_client, probe
from server.settings import Settings

log = logging.getLogger(__name__)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DURATION = re.compile(r"^-?(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+$")


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


def target_status(daemon: OllamaDaemon, target: OllamaTarget) -> OllamaStatusRead:
    """Daemon status for the supervised URL; a probe for any other Ollama host."""
    if _same_url(target.url, daemon.url):
        return daemon.status(refresh=True).model_copy(update={"provider_id": target.provider_id})
    up = probe(target.url)
    return OllamaStatusRead(
        state="external" if up else "stopped",
        url=target.url,
        managed=False,
        version=fetch_version(target.url) if up else None,
        pid=None,
        uptime_s=None,
        restart_count=0,
        last_error=None if up else f"no Ollama answers at {target.url}",
        binary=None,
        log_file=None,
        autostart=False,
        provider_id=target.provider_id,
    )


def _same_url(a: str, b: str) -> bool:
    def norm(u: str) -> str:
        return u.rstrip("/").lower().replace("://localhost:", "://127.0.0.1:")

    return norm(a) == norm(b)


# --------------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------------


def check_name(name: str, what: str = "name") -> str:
    """Ollama's grammar (docs/protocols.md, §F) plus docs/security.md, C4: no ``..`` anywhere, bounded
    length."""
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
    be allow-listed and cloud/local markers are refused (docs/protocols.md, §D.5)."""
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


def clean_text(text: Any, limit: int = 300) -> str:
    return _CONTROL.sub(" ", str(text))[:limit].strip()


def upstream_message(response: httpx.Response) -> str:
    try:
        body = response.json()
        if isinstance(body, dict) and body.get("error"):
            return clean_text(body["error"])
    except ValueError:
        pass
    return clean_text(response.text) or f"HTTP {response.status_code}"


def _raise_for(response: httpx.Response, name: str | None = None) -> None:
    if response.status_code < 400:
        return
    message = upstream_message(response)
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


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _model_summary(entry: dict[str, Any]) -> dict[str, Any]:
    details = _dict(entry.get("details"))
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
        for item, caps in zip(missing, results, strict=True):
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
    details = _dict(body.get("details"))
    license_ = body.get("license")
    if isinstance(license_, list):
        license_ = "\n\n".join(str(x) for x in license_)
    caps = body.get("capabilities")
    return {
        "name": name,
        "parameters": _str(body.get("parameters")),
        "template": _str(body.get("template")),
        "system": _str(body.get("system")),
        "license": _str(license_),
        "modelfile": _str(body.get("modelfile")),
        "details": {k: v for k, v in details.items() if isinstance(v, (str, int, float, list)) or v is None},
        "model_info": _dict(body.get("model_info")),
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
    base: str | None,
    system: str | None,
    parameters: dict[str, Any] | None,
    *,
    template: str | None = None,
    modelfile: str | None = None,
    quantize: str | None = None,
) -> dict[str, Any]:
    """Create ``name`` from a base model plus fields, or from a Modelfile (translated into the structured
    form of /api/create: ``from``, ``system``, ``template``, ``parameters``, ``adapters``...)."""
    check_name(name)
    if (modelfile is None) == (base is None):
        raise InvalidInput("give either a base model ('from') or a Modelfile", code="invalid_create")
    if modelfile is not None and (system is not None or parameters or template is not None):
        raise InvalidInput(
            "with a Modelfile, put SYSTEM, TEMPLATE and PARAMETER lines in it", code="invalid_create"
        )
    if quantize is not None and quantize not in QUANTIZE_TYPES:
        raise InvalidInput(
            f"quantize must be one of {', '.join(QUANTIZE_TYPES)}",
            code="invalid_quantize",
            detail={"field": "quantize"},
        )
    spec = (
        parse_modelfile(modelfile)
        if modelfile is not None
        else ModelfileSpec(base=base or "", system=system, template=template, parameters=parameters)
    )
    check_registry_name(settings, spec.base, "from")
    for key in spec.parameters or {}:
        if key not in CREATE_PARAMETERS:
            raise InvalidInput(
                f"unknown model parameter {key!r}", code="invalid_parameter", detail={"field": key}
            )
    if _exists(target, name):
        raise Conflict(f"a model named {name!r} already exists", code="model_exists")
    body: dict[str, Any] = {"model": name, "from": spec.base, "stream": False}
    for key in ("system", "template", "license", "parameters", "messages"):
        value = getattr(spec, key)
        if value is not None:
            body[key] = value
    if spec.adapters:
        body["adapters"] = {f"adapter-{i}": digest for i, digest in enumerate(spec.adapters, 1)}
    if quantize is not None:
        body["quantize"] = quantize
    # Creating from a base that is not local makes Ollama pull it first: allow a long read.
    r = _request(target.url, "POST", "/api/create", json_body=body, timeout=httpx.Timeout(15.0, read=1800.0))
    if r.status_code == 500:
        message = upstream_message(r)
        if "file does not exist" in message:
            raise NotFound(f"base model {spec.base!r} not found", code="model_not_found")
        if "quantiz" in message:
            raise InvalidInput(f"Ollama cannot quantize this model: {message}", code="quantize_unsupported")
        if "blob" in message or "adapter" in message:
            raise InvalidInput(f"Ollama refused the adapter: {message}", code="ollama_rejected")
    _raise_for(r, spec.base)
    log.info("Ollama model %s created from %s at %s", name, spec.base, target.url)
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
    if r.status_code == 400 and "does not support generate" in upstream_message(r):
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

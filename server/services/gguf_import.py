"""Import a GGUF file as an Ollama model (docs/protocols.md, A.7).

Two steps, so that every mistake the upload itself can reveal is a plain HTTP error:

1. :func:`receive` takes the request body as it streams in: it is hashed (SHA-256) while it is written
   to a 0600 temporary file in ``<data dir>/tmp``, its first bytes must be the GGUF magic, and it may
   not exceed ``MODELTRAIN_GGUF_IMPORT_MAX_BYTES`` (checked against Content-Length up front by
   :func:`prepare`, and while streaming). :func:`prepare` also checks the name, that no model has it
   yet and the free disk space, before a byte is read.
2. :func:`import_events` hands the file to Ollama and reports progress as events: the blob is offered
   with ``HEAD /api/blobs/sha256:<hex>`` and sent (``POST``, streamed from the file) only when missing,
   then the model is created with ``/api/create`` and ``files: {"<file>.gguf": "sha256:<hex>"}``.

The temporary file is removed on every outcome (:meth:`ReceivedGguf.discard`); a file a crashed process
left behind is removed by the next import after a day.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import anyio
import httpx
import psutil

from server.errors import (
    Conflict,
    DomainError,
    InsufficientStorage,
    InvalidInput,
    PayloadTooLarge,
    Unavailable,
    UpstreamError,
)
from server.services.ollama_admin import (
    OllamaTarget,
    canonical_name,
    check_name,
    clean_text,
    upstream_message,
)
from server.services.ollama_daemon import async_http_client
from server.services.ollama_pulls import models_dir_for
from server.settings import Settings
from server.stream_events import ServerSentEvent

log = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
TEMP_PREFIX = "gguf-import-"
#: Bytes gathered before one write + hash step in a worker thread.
WRITE_CHUNK = 1 << 20
#: Bytes read from the file per piece of the blob upload.
UPLOAD_CHUNK = 1 << 20
#: Least time between two progress events of the same phase.
PROGRESS_INTERVAL = 0.25
#: A temporary file older than this was left by a process that died mid-import.
STALE_TEMP_SECONDS = 24 * 3600
_FILENAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def free_space(path: Path) -> int:
    """Free bytes on the file system holding ``path`` (tests replace this function)."""
    return int(psutil.disk_usage(str(path)).free)


@dataclass
class ReceivedGguf:
    """A GGUF file received in full: where it lies, its name for ``files``, size and digest."""

    path: Path
    filename: str
    size: int
    digest: str  # "sha256:<64 hex>"

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)


def temp_dir(settings: Settings) -> Path:
    return settings.data_dir / "tmp"


def check_filename(raw: str | None) -> str:
    """The key of ``files`` in /api/create: a plain relative name ending in ``.gguf`` (Ollama refuses
    absolute paths and picks the GGUF reader by the extension)."""
    base = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = _FILENAME_UNSAFE.sub("_", base).lstrip("._-")[:120]
    if not base.lower().endswith(".gguf"):
        base = f"{base or 'model'}.gguf"
    return base


# --------------------------------------------------------------------------------------------------
# Step 1: before and while receiving
# --------------------------------------------------------------------------------------------------


def _too_large(cap: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the file is larger than this server accepts ({cap} bytes, MODELTRAIN_GGUF_IMPORT_MAX_BYTES)",
        code="payload_too_large",
        detail={"max_bytes": cap},
    )


def _not_gguf() -> InvalidInput:
    return InvalidInput(
        "this is not a GGUF file (it must start with the bytes 'GGUF')", code="not_gguf", detail=None
    )


def _device(path: Path) -> int:
    for candidate in (path, *path.parents):
        with contextlib.suppress(OSError):
            return candidate.stat().st_dev
    return -1


def check_disk(settings: Settings, target: OllamaTarget, size: int) -> None:
    """The temporary copy needs ``size`` bytes in the data directory and, for an Ollama on this machine,
    the blob as much again in its models directory (twice on one file system), plus the reserve."""
    wanted: dict[int, tuple[Path, int]] = {}
    places = [temp_dir(settings)]
    models = models_dir_for(settings, target.url)
    if models is not None:
        places.append(models)
    for place in places:
        key = _device(place)
        path, needed = wanted.get(key, (place, 0))
        wanted[key] = (path, needed + size)
    for path, needed in wanted.values():
        existing = next((p for p in (path, *path.parents) if p.exists()), path)
        needed += settings.ollama_disk_reserve_bytes
        free = free_space(existing)
        if free < needed:
            raise InsufficientStorage(
                f"not enough free disk space for this file: {needed} bytes needed, {free} free",
                code="disk_full",
                detail={"needed_bytes": needed, "free_bytes": free},
            )


async def prepare(settings: Settings, target: OllamaTarget, name: str, content_length: int | None) -> None:
    """Everything that can be refused before the body is read: the name, the cap and disk space against
    Content-Length, and a model of that name already on the host (which also finds Ollama down)."""
    check_name(name)
    cap = settings.gguf_import_max_bytes
    if content_length is not None:
        if content_length > cap:
            raise _too_large(cap)
        if content_length < len(GGUF_MAGIC):
            raise _not_gguf()
        await anyio.to_thread.run_sync(check_disk, settings, target, content_length)
    async with async_http_client(httpx.Timeout(15.0)) as client:
        if await _model_exists(client, target, name):
            raise _name_taken(name)


def _name_taken(name: str) -> Conflict:
    return Conflict(f"a model named {name!r} already exists", code="model_exists", detail={"field": "name"})


def _open_temp(settings: Settings) -> tuple[Path, IO[bytes]]:
    folder = temp_dir(settings)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = time.time()
    for stale in folder.glob(f"{TEMP_PREFIX}*"):
        with contextlib.suppress(OSError):
            if now - stale.stat().st_mtime > STALE_TEMP_SECONDS:
                stale.unlink()
    path = folder / f"{TEMP_PREFIX}{secrets.token_hex(8)}.part"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    return path, os.fdopen(fd, "wb", buffering=0)  # unbuffered: nothing is left to fail at close


def _write(handle: IO[bytes], hasher: Any, data: bytes) -> None:
    view = memoryview(data)
    try:
        while view:
            written = handle.write(view)
            if not written:
                raise OSError(errno.EIO, "the temporary file took no bytes")
            view = view[written:]
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise InsufficientStorage(
                "the disk filled up while the file was received", code="disk_full"
            ) from None
        raise
    hasher.update(data)


async def receive(
    settings: Settings, chunks: AsyncIterator[bytes], filename: str | None, content_length: int | None
) -> ReceivedGguf:
    """Stream ``chunks`` into a 0600 temporary file, hashing as it goes; the magic is checked on the
    first bytes and the cap on every chunk. On any failure (the client going away included) the file is
    removed and the exception propagates."""
    cap = settings.gguf_import_max_bytes
    path, handle = await anyio.to_thread.run_sync(_open_temp, settings)
    hasher = hashlib.sha256()
    size = 0
    checked = False
    pending: list[bytes] = []
    pending_size = 0
    try:
        try:
            async for chunk in chunks:
                if not chunk:
                    continue
                size += len(chunk)
                if size > cap:
                    raise _too_large(cap)
                pending.append(chunk)
                pending_size += len(chunk)
                if not checked and pending_size >= len(GGUF_MAGIC):
                    if not b"".join(pending)[: len(GGUF_MAGIC)] == GGUF_MAGIC:
                        raise _not_gguf()
                    checked = True
                if checked and pending_size >= WRITE_CHUNK:
                    data, pending, pending_size = b"".join(pending), [], 0
                    await anyio.to_thread.run_sync(_write, handle, hasher, data)
            if not checked:
                raise _not_gguf()
            if pending:
                await anyio.to_thread.run_sync(_write, handle, hasher, b"".join(pending))
        finally:
            handle.close()
        if content_length is not None and size != content_length:
            raise InvalidInput(
                f"the upload ended after {size} of {content_length} bytes", code="incomplete_upload"
            )
    except BaseException:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
        raise
    return ReceivedGguf(
        path=path, filename=check_filename(filename), size=size, digest=f"sha256:{hasher.hexdigest()}"
    )


# --------------------------------------------------------------------------------------------------
# Step 2: blob and create, as events
# --------------------------------------------------------------------------------------------------


def _progress(phase: str, completed: int, total: int, **extra: Any) -> ServerSentEvent:
    return ServerSentEvent("progress", {"phase": phase, "bytes": completed, "total": total, **extra})


async def _model_exists(client: httpx.AsyncClient, target: OllamaTarget, name: str) -> bool:
    r = await _call(client, target, "GET", "/api/tags")
    if r.status_code != 200:
        raise UpstreamError(f"Ollama failed: {upstream_message(r)}", code="ollama_error")
    try:
        models = r.json().get("models") or []
    except (ValueError, AttributeError):
        raise UpstreamError("Ollama sent a malformed answer", code="upstream_protocol") from None
    key = canonical_name(name)
    return any(
        isinstance(m, dict) and canonical_name(str(m.get("name") or m.get("model") or "")) == key
        for m in models
    )


async def _call(
    client: httpx.AsyncClient, target: OllamaTarget, method: str, path: str, **kwargs: Any
) -> httpx.Response:
    try:
        return await client.request(method, target.url + path, **kwargs)
    except httpx.TimeoutException:
        raise Unavailable(f"Ollama at {target.url} did not answer in time", code="ollama_timeout") from None
    except (httpx.HTTPError, OSError):
        raise Unavailable(f"Ollama at {target.url} is not reachable", code="ollama_unreachable") from None


async def _file_pieces(path: Path, sent: list[int]) -> AsyncIterator[bytes]:
    handle = await anyio.to_thread.run_sync(open, path, "rb")
    try:
        while True:
            piece = await anyio.to_thread.run_sync(handle.read, UPLOAD_CHUNK)
            if not piece:
                return
            sent[0] += len(piece)
            yield piece
    finally:
        handle.close()


async def _upload_blob(
    client: httpx.AsyncClient, target: OllamaTarget, received: ReceivedGguf
) -> AsyncIterator[ServerSentEvent]:
    """POST the file to /api/blobs/<digest>, yielding ``uploading`` progress while it goes."""
    sent = [0]
    total = received.size
    request = client.build_request(
        "POST",
        f"{target.url}/api/blobs/{received.digest}",
        content=_file_pieces(received.path, sent),
        headers={"Content-Length": str(total), "Content-Type": "application/octet-stream"},
    )
    sending = asyncio.ensure_future(client.send(request))
    try:
        while True:
            done, _ = await asyncio.wait({sending}, timeout=PROGRESS_INTERVAL)
            if done:
                break
            if sent[0] < total:
                yield _progress("uploading", sent[0], total)
        response = sending.result()
    except httpx.TimeoutException:
        raise Unavailable(f"Ollama at {target.url} did not answer in time", code="ollama_timeout") from None
    except (httpx.HTTPError, OSError):
        raise Unavailable(
            f"Ollama at {target.url} went away while the file was sent", code="ollama_unreachable"
        ) from None
    finally:
        if not sending.done():
            sending.cancel()
            await asyncio.wait({sending}, timeout=5.0)  # lets it close the file; never raises
    if response.status_code not in (200, 201):
        raise UpstreamError(
            f"Ollama refused the file: {upstream_message(response)}",
            code="ollama_rejected",
            detail={"status": response.status_code},
        )
    yield _progress("uploading", total, total)


async def _create(
    client: httpx.AsyncClient, target: OllamaTarget, name: str, received: ReceivedGguf
) -> AsyncIterator[ServerSentEvent]:
    """/api/create with ``files``, streamed: each status line becomes a ``creating`` progress event."""
    body = {"model": name, "files": {received.filename: received.digest}, "stream": True}
    try:
        async with client.stream("POST", f"{target.url}/api/create", json=body) as response:
            if response.status_code != 200:
                await response.aread()
                message = upstream_message(response)
                raise UpstreamError(f"Ollama could not create the model: {message}", code="ollama_rejected")
            succeeded = False
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except ValueError:
                    raise UpstreamError("Ollama sent a malformed answer", code="upstream_protocol") from None
                if not isinstance(item, dict):
                    continue
                if item.get("error"):
                    raise UpstreamError(
                        f"Ollama could not create the model: {clean_text(item['error'])}",
                        code="ollama_rejected",
                    )
                status = clean_text(item.get("status") or "")
                if status == "success":
                    succeeded = True
                yield _progress("creating", received.size, received.size, status=status)
            if not succeeded:
                raise Unavailable("Ollama stopped before the model was created", code="ollama_unreachable")
    except httpx.TimeoutException:
        raise Unavailable(f"Ollama at {target.url} did not answer in time", code="ollama_timeout") from None
    except (httpx.HTTPError, OSError):
        raise Unavailable(
            f"Ollama at {target.url} went away while the model was created", code="ollama_unreachable"
        ) from None


async def import_events(
    settings: Settings, target: OllamaTarget, name: str, received: ReceivedGguf
) -> AsyncIterator[ServerSentEvent]:
    """Blob (skipped when Ollama has it), then create: ``progress`` events (phase ``hashing`` once, with
    the digest; ``uploading`` with bytes sent; ``creating`` with Ollama's status), then ``done`` or
    ``error`` (``{code, message, detail}``). Removes the temporary file when it ends, however it ends."""
    total = received.size
    try:
        yield _progress("hashing", total, total, digest=received.digest)
        timeout = httpx.Timeout(30.0, read=1800.0)  # Ollama hashes the blob again before it answers
        async with async_http_client(timeout) as client:
            head = await _call(client, target, "HEAD", f"/api/blobs/{received.digest}")
            reused = head.status_code == 200
            if reused:
                yield _progress("uploading", total, total, reused=True)
            elif head.status_code == 404:
                async for event in _upload_blob(client, target, received):
                    yield event
            else:
                raise UpstreamError(f"Ollama failed: HTTP {head.status_code}", code="ollama_error")
            received.discard()  # Ollama holds its own copy now
            if await _model_exists(client, target, name):
                raise _name_taken(name)
            async for event in _create(client, target, name, received):
                yield event
        log.info(
            "GGUF file imported as Ollama model %s at %s (%s, %d bytes)",
            name,
            target.url,
            received.digest,
            total,
        )
        yield ServerSentEvent(
            "done", {"name": name, "digest": received.digest, "size": total, "blob_reused": reused}
        )
    except DomainError as exc:
        log.warning("GGUF import of %s failed: %s", name, exc.message)
        yield ServerSentEvent("error", {"code": exc.code, "message": exc.message, "detail": exc.detail})
    finally:
        received.discard()

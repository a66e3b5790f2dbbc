"""The Ollama release site: asset names for this machine, the newest tag, sizes, checksums, downloads.

``MODELTRAIN_OLLAMA_RELEASES_URL`` is a base laid out like a GitHub project's releases:
``<base>/latest/download/<asset>`` (redirects to ``<base>/download/<tag>/<asset>``, so the tag is read from
the redirect chain) and ``<base>/download/<tag>/<asset>`` with ``sha256sum.txt`` beside the assets. A local
folder (a path or a ``file://`` URL) works the same way: ``<base>/download/<tag>/`` holds the assets and
``<base>/latest`` is a symlink to ``download/<tag>`` (or a plain folder holding the assets; the version is
then read from ``ollama --version`` after unpacking).

Downloads resume from a partial file (HTTP ``Range``), fail with ``runtime_stalled`` when no byte arrives
for ``MODELTRAIN_OLLAMA_DOWNLOAD_STALL_SECONDS``, and stop between two chunks when cancelled. Every failure
is a :class:`~server.errors.DomainError` with its own code (see :data:`ERROR_CODES`).
"""

from __future__ import annotations

import errno
import hashlib
import os
import platform
import re
import shutil
import sys
import tarfile
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx
import zstandard

from server.errors import Conflict, DomainError, InsufficientStorage, NotFound, Unavailable, UpstreamError

CHECKSUMS = "sha256sum.txt"
#: Where the executable sits in an unpacked release (Linux, macOS, Windows archives).
BINARY_CANDIDATES = ("bin/ollama", "ollama", "ollama.exe", "bin/ollama.exe")
CHUNK = 256 * 1024
#: Error codes the install can end with (the web UI translates each).
ERROR_CODES = (
    "runtime_not_found",
    "runtime_network",
    "runtime_stalled",
    "runtime_truncated",
    "runtime_checksum_mismatch",
    "runtime_disk_full",
    "runtime_cancelled",
    "runtime_unsupported",
    "runtime_broken",
    "runtime_start_failed",
)
_TAG_IN_URL = re.compile(r"/download/([^/]+)/[^/]+$")

Progress = Callable[[int, int | None], None]


class Cancelled(DomainError):
    status = 409
    code = "runtime_cancelled"


def disk_full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


def disk_full_error(where: Path) -> InsufficientStorage:
    return InsufficientStorage(f"the disk holding {where} is full", code="runtime_disk_full")


# --- asset names ----------------------------------------------------------------------------------


def amd_gpu_present(root: Path = Path("/")) -> bool:
    """An AMD GPU driven by ROCm's kernel driver (``/dev/kfd`` or ``/sys/class/kfd``)."""
    return (root / "dev" / "kfd").exists() or (root / "sys" / "class" / "kfd").exists()


def asset_names(
    system: str | None = None, machine: str | None = None, *, rocm: bool | None = None
) -> list[str]:
    """The archives to install for this OS and CPU, the main one first. On Linux amd64 with an AMD GPU the
    ROCm archive (the GPU libraries only) is added; it unpacks into the same folder, as Ollama's own
    installer does."""
    system = (system or sys.platform).lower()
    machine = (machine or platform.machine()).lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine)
    if system.startswith("linux"):
        if arch is None:
            raise Conflict(f"no Ollama build for Linux on {machine}", code="runtime_unsupported")
        names = [f"ollama-linux-{arch}.tar.zst"]
        if arch == "amd64" and (amd_gpu_present() if rocm is None else rocm):
            names.append("ollama-linux-amd64-rocm.tar.zst")
        return names
    if system == "darwin":
        return ["ollama-darwin.tgz"]
    if system in ("win32", "windows"):
        if arch is None:
            raise Conflict(f"no Ollama build for Windows on {machine}", code="runtime_unsupported")
        return [f"ollama-windows-{arch}.zip"]
    raise Conflict(f"no Ollama build for {system}", code="runtime_unsupported")


def parse_checksums(text: str) -> dict[str, str]:
    """``sha256sum`` output (``<hex>  ./name`` or ``<hex> *name``) as ``{name: hex}``."""
    sums: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) != 2 or not re.fullmatch(r"[0-9a-fA-F]{64}", parts[0]):
            continue
        name = parts[1].strip().lstrip("*")
        sums[name.removeprefix("./")] = parts[0].lower()
    return sums


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def version_of_tag(tag: str) -> str:
    return tag[1:] if tag[:1] in ("v", "V") and tag[1:2].isdigit() else tag


def find_binary(folder: Path) -> Path | None:
    for relative in BINARY_CANDIDATES:
        path = folder / relative
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


def unpack(archive: Path, asset: str, dest: Path) -> None:
    """Unpack a ``.tar.zst``, ``.tgz`` or ``.zip`` into ``dest`` (members must stay inside it)."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if asset.endswith(".tar.zst"):
            with (
                open(archive, "rb") as fh,
                zstandard.ZstdDecompressor().stream_reader(fh) as reader,
                tarfile.open(fileobj=reader, mode="r|") as tar,
            ):
                tar.extractall(dest, filter="data")
        elif asset.endswith((".tgz", ".tar.gz")):
            with tarfile.open(archive, mode="r:gz") as tar:
                tar.extractall(dest, filter="data")
        elif asset.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                root = dest.resolve()
                for member in zf.namelist():
                    if not (dest / member).resolve().is_relative_to(root):
                        raise UpstreamError(
                            f"{asset} holds an unsafe path {member!r}", code="runtime_truncated"
                        )
                zf.extractall(dest)
        else:
            raise UpstreamError(f"unknown archive type: {asset}", code="runtime_unsupported")
    except (tarfile.TarError, zstandard.ZstdError, zipfile.BadZipFile, EOFError) as exc:
        raise UpstreamError(f"{asset} is damaged or incomplete: {exc}", code="runtime_truncated") from exc


# --- the site -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Release:
    """The newest release as the site names it: ``tag`` (``None`` for a local ``latest`` folder that is
    not a link to ``download/<tag>``), where its assets live, and their sizes."""

    tag: str | None
    assets: dict[str, int | None]


class ReleaseSite:
    """One release source: an HTTP(S) base, a local folder laid out like it, or one local archive file
    (an offline install from a downloaded asset: its ``sha256sum.txt`` must lie beside it, and the
    version comes from the unpacked ``ollama --version``)."""

    def __init__(self, base: str, *, stall_seconds: float = 30.0, timeout: float = 20.0) -> None:
        self.base = base.rstrip("/")
        self.stall_seconds = stall_seconds
        self.timeout = timeout
        parts = urlsplit(self.base)
        self.local: Path | None = None
        #: The one archive of a single-file source (``local`` is then its folder).
        self.single: Path | None = None
        if parts.scheme == "file":
            self.local = Path(unquote(parts.path))
        elif parts.scheme not in ("http", "https"):
            self.local = Path(self.base).expanduser()
        if self.local is not None and self.local.is_file():
            self.single, self.local = self.local, self.local.parent

    def assets_for(self, names: list[str]) -> list[str]:
        """Which of this machine's archives (``asset_names()``, the main one first) this source offers: all
        of them, or for a single file the main one, which the file must be."""
        if self.single is None:
            return names
        if self.single.name != names[0]:
            raise NotFound(
                f"{self.single} is not the Ollama archive for this computer: use {names[0]}",
                code="runtime_not_found",
            )
        return names[:1]

    # --- locations ---

    def _local_dir(self, tag: str | None) -> Path:
        assert self.local is not None
        if self.single is not None:
            return self.local
        if tag is not None:
            return self.local / "download" / tag
        latest = self.local / "latest"
        return latest / "download" if (latest / "download").is_dir() else latest

    def url(self, tag: str | None, name: str) -> str:
        return f"{self.base}/download/{tag}/{name}" if tag else f"{self.base}/latest/download/{name}"

    def _client(self, *, read: float | None = None) -> httpx.Client:
        timeout = httpx.Timeout(self.timeout, read=read if read is not None else self.timeout)
        return httpx.Client(timeout=timeout, follow_redirects=True, trust_env=True)

    # --- queries ---

    def latest(self, names: list[str]) -> Release:
        """The newest release's tag (from the ``latest`` redirect) and the size of each asset."""
        if self.local is not None:
            folder = self._local_dir(None)
            resolved = folder.resolve()
            local_tag = resolved.name if resolved.parent.name == "download" and self.single is None else None
            local_sizes: dict[str, int | None] = {}
            for name in names:
                path = folder / name
                if not path.is_file():
                    raise NotFound(f"{path} does not exist", code="runtime_not_found")
                local_sizes[name] = path.stat().st_size
            return Release(tag=local_tag, assets=local_sizes)
        tag: str | None = None
        sizes: dict[str, int | None] = {}
        with self._client() as client:
            for name in names:
                url = self.url(None, name)
                response = self._head(client, url)
                if tag is None:
                    for hop in [*response.history, response]:
                        match = _TAG_IN_URL.search(hop.url.path)
                        if match and match.group(1) != "latest":
                            tag = unquote(match.group(1))
                            break
                if response.status_code >= 400 and (tag is None or response.status_code == 404):
                    _check_status(response, url)
                # A storage host that refuses HEAD after the redirect only costs the size, not the tag.
                length = response.headers.get("content-length") if response.status_code < 400 else None
                sizes[name] = int(length) if length and length.isdigit() else None
        if tag is None:
            raise UpstreamError(
                f"{self.base}/latest/download/ did not redirect to a release tag", code="runtime_not_found"
            )
        return Release(tag=tag, assets=sizes)

    def _head(self, client: httpx.Client, url: str) -> httpx.Response:
        try:
            response = client.head(url)
        except httpx.TimeoutException as exc:
            raise Unavailable(f"no answer from {url}: {exc}", code="runtime_network") from exc
        except httpx.HTTPError as exc:
            raise Unavailable(f"cannot reach {url}: {exc}", code="runtime_network") from exc
        return response

    def checksums(self, tag: str | None) -> dict[str, str]:
        if self.local is not None:
            path = self._local_dir(tag) / CHECKSUMS
            try:
                return parse_checksums(path.read_text(encoding="utf-8", errors="replace"))
            except FileNotFoundError as exc:
                raise NotFound(f"{path} does not exist", code="runtime_not_found") from exc
        url = self.url(tag, CHECKSUMS)
        try:
            with self._client() as client:
                response = client.get(url)
        except httpx.HTTPError as exc:
            raise Unavailable(f"cannot reach {url}: {exc}", code="runtime_network") from exc
        _check_status(response, url)
        return parse_checksums(response.text)

    # --- download ---

    def download(
        self, tag: str | None, name: str, target: Path, *, progress: Progress, cancel: threading.Event
    ) -> None:
        """Fetch ``name`` into ``target``, resuming a partial ``target``. Raises on any failure; the partial
        file stays for the next attempt (except on a full disk, where it is removed to free the space)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            if self.local is not None:
                self._copy(self._local_dir(tag) / name, target, progress, cancel)
            else:
                self._fetch(self.url(tag, name), target, progress, cancel)
        except OSError as exc:
            if disk_full(exc):
                target.unlink(missing_ok=True)
                raise disk_full_error(target.parent) from exc
            raise

    def _copy(self, source: Path, target: Path, progress: Progress, cancel: threading.Event) -> None:
        try:
            total = source.stat().st_size
            src = open(source, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError as exc:
            raise NotFound(f"{source} does not exist", code="runtime_not_found") from exc
        with src, open(target, "ab") as out:
            done = out.tell() if out.tell() <= total else 0
            if done == 0:
                out.truncate(0)
            src.seek(done)
            progress(done, total)
            for block in iter(lambda: src.read(CHUNK), b""):
                if cancel.is_set():
                    raise Cancelled("the download was cancelled")
                out.write(block)
                done += len(block)
                progress(done, total)

    def _fetch(self, url: str, target: Path, progress: Progress, cancel: threading.Event) -> None:
        have = target.stat().st_size if target.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            with (
                self._client(read=self.stall_seconds) as client,
                client.stream("GET", url, headers=headers) as response,
            ):
                if response.status_code == 416 and have:  # the partial file is already complete
                    progress(have, have)
                    return
                _check_status(response, url)
                if response.status_code != 206:
                    have = 0  # the server ignored the range: start over
                length = response.headers.get("content-length")
                total = have + int(length) if length and length.isdigit() else None
                done = have
                progress(done, total)
                with open(target, "ab" if have else "wb") as out:
                    for block in response.iter_bytes():
                        if cancel.is_set():
                            raise Cancelled("the download was cancelled")
                        out.write(block)
                        done += len(block)
                        progress(done, total)
        except httpx.ReadTimeout as exc:
            raise Unavailable(
                f"the download of {url} stalled: no data for {self.stall_seconds:g} s", code="runtime_stalled"
            ) from exc
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise UpstreamError(f"the download of {url} broke off: {exc}", code="runtime_truncated") from exc
        except httpx.TimeoutException as exc:
            raise Unavailable(f"no answer from {url}", code="runtime_network") from exc
        except httpx.HTTPError as exc:
            raise Unavailable(f"cannot reach {url}: {exc}", code="runtime_network") from exc
        if total is not None and done < total:
            raise UpstreamError(
                f"the download of {url} ended after {done} of {total} bytes", code="runtime_truncated"
            )


def _check_status(response: httpx.Response, url: str) -> None:
    if response.status_code == 404:
        raise NotFound(f"{url} does not exist (404)", code="runtime_not_found")
    if response.status_code >= 400:
        raise UpstreamError(f"{url} answered {response.status_code}", code="runtime_network")


def free_bytes(path: Path) -> int:
    path.mkdir(parents=True, exist_ok=True)
    return shutil.disk_usage(path).free


class Speed:
    """Bytes per second over the last few seconds (for progress events)."""

    def __init__(self) -> None:
        self._samples: list[tuple[float, int]] = []

    def update(self, done: int) -> float | None:
        now = time.monotonic()
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[0][0] > 3.0:
            self._samples.pop(0)
        (t0, d0) = self._samples[0]
        return round((done - d0) / (now - t0), 1) if now - t0 > 0.2 else None

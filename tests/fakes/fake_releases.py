"""A stand-in for Ollama's release site (GitHub releases layout), for the runtime install tests.

    releases = FakeReleases()
    releases.add_release("v0.13.0", asset_names())       # real .tar.zst archives and their sha256sum.txt
    with releases:                                        # a thread serving http://127.0.0.1:<port>/releases
        settings = make_settings(ollama_releases_url=releases.base)

Layout: ``<base>/latest/download/<asset>`` answers 302 to ``<base>/download/<tag>/<asset>``; the assets and
``sha256sum.txt`` are there. Each archive holds ``bin/ollama``, a small shell script that runs the fake
Ollama (tests/fakes/ollama): ``ollama --version`` prints ``ollama version is <version>``, ``ollama serve``
serves the fake API on OLLAMA_HOST, or exits 1 at once for a release added with ``broken=True``.

Knobs per asset (``behaviour[name]``): ``"truncate"`` (announce the full length, send half, close),
``"interrupt_once"`` (truncate the first GET only; a ``Range`` request then gets the rest as 206),
``"stall"`` (send half, then nothing until the server stops), ``"gate"`` (send about half, then wait
for ``gate`` to be set). ``requests`` records ``(method, path, range header)``.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import sys
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import zstandard

REPO = Path(__file__).resolve().parents[2]
FAKE_OLLAMA = REPO / "tests" / "fakes" / "ollama"
CHUNK = 64 * 1024


def stand_in_script(version: str, *, broken: bool = False) -> bytes:
    """The ``ollama`` executable inside the fake archives."""
    serve = (
        'if [ "$1" = serve ]; then echo "Error: this build cannot start" >&2; exit 1; fi\n' if broken else ""
    )
    return (
        "#!/bin/sh\n"
        f"{serve}"
        f"export FAKE_OLLAMA_VERSION='{version}' FAKE_OLLAMA_REPO='{REPO}'\n"
        f'exec "{sys.executable}" "{FAKE_OLLAMA}" "$@"\n'
    ).encode()


def tar_zst(files: dict[str, tuple[bytes, int]]) -> bytes:
    """A ``.tar.zst`` of ``{path: (content, mode)}``."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for path, (content, mode) in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(content)
            info.mode = mode
            tar.addfile(info, io.BytesIO(content))
    return zstandard.ZstdCompressor(level=3).compress(raw.getvalue())


def runtime_archive(version: str, *, broken: bool = False, padding: bytes = b"") -> bytes:
    files = {"bin/ollama": (stand_in_script(version, broken=broken), 0o755)}
    if padding:
        files["lib/ollama/libpadding.so"] = (padding, 0o644)
    return tar_zst(files)


class FakeReleases:
    def __init__(self) -> None:
        self.releases: dict[str, dict[str, bytes]] = {}
        self.checksum_override: dict[str, dict[str, str]] = {}
        self.latest: str | None = None
        self.behaviour: dict[str, str] = {}
        self.missing: set[str] = set()  # asset names answered with 404
        self.gate = threading.Event()
        self.requests: list[tuple[str, str, str | None]] = []
        self._stop = threading.Event()
        self._interrupted: set[str] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def add_release(
        self,
        tag: str,
        names: list[str],
        *,
        broken: bool = False,
        padding: bytes = b"",
        wrong_checksum: bool = False,
    ) -> None:
        """A release whose main asset (``names[0]``) holds the stand-in ``ollama``; any further asset (the
        ROCm archive) holds a library file only. It becomes the latest release."""
        version = tag.removeprefix("v")
        assets = {names[0]: runtime_archive(version, broken=broken, padding=padding)}
        for extra in names[1:]:
            assets[extra] = tar_zst({"lib/ollama/rocm/librocm-stand-in.so": (b"rocm", 0o644)})
        self.releases[tag] = assets
        if wrong_checksum:
            self.checksum_override[tag] = {names[0]: "0" * 64}
        self.latest = tag

    def checksums(self, tag: str) -> str:
        sums = {name: hashlib.sha256(data).hexdigest() for name, data in self.releases[tag].items()}
        sums.update(self.checksum_override.get(tag, {}))
        return "".join(f"{digest}  ./{name}\n" for name, digest in sums.items())

    def write_local(self, folder: Path, *, link: bool = True) -> Path:
        """The same releases as a local folder: ``download/<tag>/`` and ``latest`` -> ``download/<tag>``
        (with ``link=False`` a plain ``latest`` folder holding a copy: no tag to read)."""
        assert self.latest is not None
        for tag, assets in self.releases.items():
            directories = [folder / "download" / tag]
            if tag == self.latest and not link:
                directories.append(folder / "latest")
            for directory in directories:
                directory.mkdir(parents=True, exist_ok=True)
                for name, data in assets.items():
                    (directory / name).write_bytes(data)
                (directory / "sha256sum.txt").write_text(self.checksums(tag))
        if link:
            (folder / "latest").symlink_to(Path("download") / self.latest)
        return folder

    # --- serving ---

    @property
    def base(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/releases"

    def __enter__(self) -> FakeReleases:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                fake._handle(self, head=True)

            def do_GET(self) -> None:
                fake._handle(self, head=False)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.gate.set()
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def _handle(self, h: BaseHTTPRequestHandler, *, head: bool) -> None:
        self.requests.append((h.command, h.path, h.headers.get("Range")))
        latest = re.fullmatch(r"/releases/latest/download/([^/]+)", h.path)
        if latest and self.latest is not None:
            h.send_response(302)
            h.send_header("Location", f"/releases/download/{self.latest}/{latest.group(1)}")
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        match = re.fullmatch(r"/releases/download/([^/]+)/([^/]+)", h.path)
        if not match or match.group(1) not in self.releases:
            return self._send(h, 404, b"Not Found", head)
        tag, name = match.groups()
        if name == "sha256sum.txt":
            return self._send(h, 200, self.checksums(tag).encode(), head)
        data = self.releases[tag].get(name)
        if data is None or name in self.missing:
            return self._send(h, 404, b"Not Found", head)
        start = 0
        ranged = re.fullmatch(r"bytes=(\d+)-", h.headers.get("Range") or "")
        if ranged and not head:
            start = int(ranged.group(1))
            if start >= len(data):
                return self._send(h, 416, b"", head)
        h.send_response(206 if start else 200)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(len(data) - start))
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.end_headers()
        if head:
            return
        body = data[start:]
        behaviour = self.behaviour.get(name, "")
        if behaviour == "interrupt_once" and name not in self._interrupted:
            self._interrupted.add(name)
            behaviour = "truncate"
        try:
            if behaviour in ("truncate", "stall"):
                h.wfile.write(body[: len(body) // 2])
                h.wfile.flush()
                if behaviour == "stall":
                    self._stop.wait()
                h.close_connection = True
                return
            for offset in range(0, len(body), CHUNK):
                h.wfile.write(body[offset : offset + CHUNK])
                h.wfile.flush()
                if behaviour == "gate" and offset < len(body) // 2 <= offset + CHUNK:
                    self.gate.wait()  # half the file sent
        except OSError:
            h.close_connection = True

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, body: bytes, head: bool) -> None:
        h.send_response(status)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head:
            h.wfile.write(body)


def random_padding(size: int) -> bytes:
    """Bytes that do not compress (to make an archive of a given size)."""
    return os.urandom(size)

"""Serve the built web UI (webui/dist): SPA fallback, path containment, cache headers.

- ``/assets/*`` (hashed by Vite) are cached for a year as immutable; ``index.html`` is never cached.
- Client routes (``/chat/123``) fall back to ``index.html``; unknown ``/api/*`` paths stay JSON 404s.
- Any path that resolves outside the dist directory (``..``, encoded forms, symlinks) is a 404.
- A method an API path does not serve (the UI is mounted at ``/`` after the API, so such a request lands
  here) is a 405 whose ``Allow`` header lists the methods it does serve (RFC 9110).
"""

from __future__ import annotations

import gzip
import mimetypes
import sys
import threading
from pathlib import Path
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.types import Receive, Scope, Send

from server.api.methods import allowed_methods, method_not_allowed

IMMUTABLE = "public, max-age=31536000, immutable"
NO_CACHE = "no-cache"
#: Text types worth compressing (fonts like woff2 and images are compressed already).
COMPRESSIBLE = frozenset({".js", ".mjs", ".css", ".html", ".svg", ".json", ".map", ".txt", ".ttf"})
MIN_COMPRESS_BYTES = 1024
MAX_COMPRESS_BYTES = 8 * 1024 * 1024

_NOT_BUILT = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>ModelTrain</title></head>
<body style="font-family: system-ui, 'PingFang SC', 'Microsoft YaHei', 'Noto Sans CJK SC', sans-serif; \
margin: 3rem">
<h1>ModelTrain</h1><p>The server is running, but the web UI has not been built.
Run <code>make run</code> (or <code>cd webui &amp;&amp; npm ci &amp;&amp; npm run build</code>).</p>
<p>服务器已运行，但网页界面尚未构建。请运行 <code>make run</code>。</p></body></html>"""


def default_dist_dir() -> Path:
    """webui/dist next to the source tree, or inside a PyInstaller bundle."""
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        return Path(bundle) / "webui" / "dist"
    return Path(__file__).resolve().parent.parent / "webui" / "dist"


class StaticUI:
    """ASGI app mounted at ``/`` after the API routes."""

    def __init__(self, dist_dir: Path) -> None:
        self.root = dist_dir.resolve()
        # (path, mtime_ns, size) -> gzip bytes; the build is small, so every compressed file stays cached.
        self._gzip_cache: dict[tuple[Path, int, int], bytes] = {}
        self._gzip_lock = threading.Lock()

    def _gzipped(self, path: Path) -> bytes | None:
        stat = path.stat()
        if path.suffix not in COMPRESSIBLE or not MIN_COMPRESS_BYTES <= stat.st_size <= MAX_COMPRESS_BYTES:
            return None
        key = (path, stat.st_mtime_ns, stat.st_size)
        with self._gzip_lock:
            cached = self._gzip_cache.get(key)
        if cached is None:
            cached = gzip.compress(path.read_bytes(), compresslevel=9, mtime=0)
            with self._gzip_lock:
                self._gzip_cache = {k: v for k, v in self._gzip_cache.items() if k[0] != path}
                self._gzip_cache[key] = cached
        return cached

    def _file(self, request: Request, path: Path, media_type: str, cache: str) -> Response:
        headers = {"Cache-Control": cache, "Vary": "Accept-Encoding"}
        if "gzip" in request.headers.get("accept-encoding", "").lower():
            body = self._gzipped(path)
            if body is not None:
                headers["Content-Encoding"] = "gzip"
                return Response(
                    body if request.method == "GET" else b"",
                    media_type=media_type,
                    headers={**headers, "Content-Length": str(len(body))},
                )
        return FileResponse(path, media_type=media_type, headers=headers)

    def _resolve(self, url_path: str) -> Path | None:
        # Decode repeatedly so %252e%252e cannot sneak a '..' past the check.
        decoded = url_path
        for _ in range(3):
            nxt = unquote(decoded)
            if nxt == decoded:
                break
            decoded = nxt
        if "\x00" in decoded or "\\" in decoded:
            return None
        candidate = (self.root / decoded.lstrip("/")).resolve()
        if not candidate.is_relative_to(self.root):
            return None
        return candidate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response = self.respond(request)
        await response(scope, receive, send)

    def respond(self, request: Request) -> Response:
        path = request.url.path
        allowed = allowed_methods(request.scope, path)
        if allowed:  # an API path, but not this method
            return method_not_allowed(path, allowed)
        if path == "/v1" or path.startswith("/v1/"):  # the OpenAI-compatible API's shape (server/api/v1)
            error = {"message": "no such endpoint", "type": "invalid_request_error", "code": "not_found"}
            return JSONResponse({"error": {**error, "param": None}}, 404)
        if path == "/api" or path.startswith("/api/"):
            return JSONResponse({"code": "not_found", "message": "no such API endpoint", "detail": None}, 404)
        if request.method not in ("GET", "HEAD"):
            return method_not_allowed(path, ["GET", "HEAD"])
        index = self.root / "index.html"
        if not index.is_file():
            return HTMLResponse(_NOT_BUILT, headers={"Cache-Control": NO_CACHE})
        raw = request.scope.get("raw_path", path.encode()).decode("latin-1").split("?")[0]
        target = self._resolve(raw)
        if target is None or (target != self.root and not target.is_relative_to(self.root)):
            return JSONResponse({"code": "not_found", "message": "not found", "detail": None}, 404)
        if target.is_file():
            cache = IMMUTABLE if target.parent == self.root / "assets" else NO_CACHE
            media_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
            return self._file(request, target, media_type, cache)
        last = raw.rsplit("/", 1)[-1]
        if "." in last or raw.startswith("/assets/"):
            # A missing file (e.g. a stale hashed asset) is a 404, not the SPA shell.
            return JSONResponse({"code": "not_found", "message": "not found", "detail": None}, 404)
        return self._file(request, index, "text/html", NO_CACHE)

"""A tiny asynchronous HTTP client for the shell's own calls (tray, health, LAN), over Qt networking.

It signs in as the desktop owner with the desktop token (``POST /api/auth/desktop`` with the
``X-ModelTrain-Desktop`` header, loopback only), keeps the access token in memory, and signs in again
once on a 401. The shell talks to the server only through HTTP, like any browser
(docs/architecture.md, dependency rules).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QByteArray, QObject, QUrl
from PySide6.QtNetwork import QNetworkAccessManager, QNetworkProxy, QNetworkReply, QNetworkRequest

log = logging.getLogger(__name__)

Callback = Callable[[int, Any], None]
DESKTOP_HEADER = b"X-ModelTrain-Desktop"


class ApiClient(QObject):
    def __init__(
        self, base_url: str, desktop_token: str | None, parent: QObject | None = None, timeout_ms: int = 5000
    ) -> None:
        super().__init__(parent)
        self.base_url = base_url.rstrip("/")
        self._desktop_token = desktop_token
        self._access: str | None = None
        self._timeout_ms = timeout_ms
        self._nam = QNetworkAccessManager(self)
        self._nam.setProxy(QNetworkProxy(QNetworkProxy.ProxyType.NoProxy))  # loopback never via a proxy
        self._pending_sign_in: list[Callable[[bool], None]] | None = None
        self._has_session = False
        self._replies: set[QNetworkReply] = set()

    @property
    def signed_in(self) -> bool:
        return self._access is not None

    # ---- low level ----------------------------------------------------------------------------

    def _send(self, method: str, path: str, body: Any, headers: dict[bytes, bytes], done: Callback) -> None:
        request = QNetworkRequest(QUrl(self.base_url + path))
        request.setTransferTimeout(self._timeout_ms)
        request.setAttribute(
            QNetworkRequest.Attribute.RedirectPolicyAttribute,
            QNetworkRequest.RedirectPolicy.ManualRedirectPolicy,
        )
        data = QByteArray()
        if body is not None:
            request.setHeader(QNetworkRequest.KnownHeaders.ContentTypeHeader, "application/json")
            data = QByteArray(json.dumps(body).encode())
        for key, value in headers.items():
            request.setRawHeader(QByteArray(key), QByteArray(value))
        reply = self._nam.sendCustomRequest(request, QByteArray(method.encode()), data)
        self._replies.add(reply)

        def finished() -> None:
            self._replies.discard(reply)
            status = reply.attribute(QNetworkRequest.Attribute.HttpStatusCodeAttribute) or 0
            raw = bytes(reply.readAll().data())
            reply.deleteLater()
            try:
                payload = json.loads(raw) if raw else None
            except ValueError:
                payload = None
            done(int(status), payload)

        reply.finished.connect(finished)

    def abort_all(self) -> None:
        for reply in list(self._replies):
            reply.abort()

    # ---- desktop sign-in ----------------------------------------------------------------------

    def sign_in(self, done: Callable[[bool], None]) -> None:
        """Get an access token: rotate the refresh cookie if we have a session, else sign in with the
        desktop token. Concurrent callers share one attempt."""
        if self._pending_sign_in is not None:
            self._pending_sign_in.append(done)
            return
        desktop_token = self._desktop_token
        if not desktop_token:
            done(False)
            return
        self._pending_sign_in = [done]

        def finish(ok: bool) -> None:
            waiting, self._pending_sign_in = self._pending_sign_in or [], None
            for callback in waiting:
                callback(ok)

        def accept(payload: Any) -> bool:
            if isinstance(payload, dict) and isinstance(payload.get("access_token"), str):
                self._access = payload["access_token"]
                return True
            self._access = None
            return False

        def desktop_done(status: int, payload: Any) -> None:
            ok = status == 200 and accept(payload)
            if not ok:
                log.warning("desktop sign-in failed with HTTP %s", status)
            finish(ok)

        def refresh_done(status: int, payload: Any) -> None:
            if status == 200 and accept(payload):
                finish(True)
                return
            self._send(
                "POST", "/api/auth/desktop", {}, {DESKTOP_HEADER: desktop_token.encode()}, desktop_done
            )

        if self._has_session:
            self._send("POST", "/api/auth/refresh", {}, {}, refresh_done)
        else:
            self._has_session = True  # the desktop sign-in sets the refresh cookie in our cookie jar
            self._send(
                "POST", "/api/auth/desktop", {}, {DESKTOP_HEADER: desktop_token.encode()}, desktop_done
            )

    def set_access_token(self, token: str) -> None:
        self._access = token

    # ---- API calls ----------------------------------------------------------------------------

    def request(self, method: str, path: str, done: Callback, body: Any = None, *, auth: bool = True) -> None:
        """Call the API; ``done(status, json_or_None)`` runs on the GUI thread (status 0: no answer)."""
        if not auth:
            self._send(method, path, body, {}, done)
            return

        def attempt(retry: bool) -> None:
            headers = {b"Authorization": f"Bearer {self._access}".encode()} if self._access else {}

            def finished(status: int, payload: Any) -> None:
                if status == 401 and retry:
                    self._access = None
                    self.sign_in(lambda ok: attempt(False) if ok else done(401, payload))
                    return
                done(status, payload)

            self._send(method, path, body, headers, finished)

        if self._access is None:
            self.sign_in(lambda ok: attempt(False) if ok else done(401, None))
        else:
            attempt(True)

    def get(self, path: str, done: Callback, *, auth: bool = True) -> None:
        self.request("GET", path, done, auth=auth)

"""The web view: profile, desktop-token interceptor, navigation lock, external links and downloads.

* The desktop token is added as a request header by a ``QWebEngineUrlRequestInterceptor`` — only to
  ``POST``/``GET`` requests for ``/api/auth/desktop`` on our own loopback origin, initiated by our own
  origin (or by the browser itself). Page JavaScript, URLs and logs never see it.
* Navigation is locked to our origin; any other http(s)/mailto link opens in the system browser.
* Downloads (exports, backups) go through a save dialog.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWebEngineCore import (
    QWebEngineDownloadRequest,
    QWebEnginePage,
    QWebEngineProfile,
    QWebEngineUrlRequestInfo,
    QWebEngineUrlRequestInterceptor,
)
from PySide6.QtWidgets import QFileDialog, QWidget

log = logging.getLogger(__name__)

HEADER = b"X-ModelTrain-Desktop"
DESKTOP_SIGN_IN_PATH = "/api/auth/desktop"
EXTERNAL_SCHEMES = frozenset({"http", "https", "mailto"})


def origin_of(url: QUrl | str) -> str:
    """``scheme://host:port`` (lower-case, explicit port) or ``""`` for URLs without an origin."""
    url = QUrl(url) if isinstance(url, str) else url
    scheme = url.scheme().lower()
    if scheme not in ("http", "https") or not url.host():
        return ""
    port = url.port(443 if scheme == "https" else 80)
    host = url.host().lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def should_add_token(request_url: QUrl | str, initiator: QUrl | str, our_origin: str) -> bool:
    """The interceptor's decision: our origin, the sign-in path, and not initiated by another origin."""
    if not our_origin:
        return False
    request_url = QUrl(request_url) if isinstance(request_url, str) else request_url
    if origin_of(request_url) != our_origin:
        return False
    if request_url.path() != DESKTOP_SIGN_IN_PATH:
        return False
    initiator_url = QUrl(initiator) if isinstance(initiator, str) else initiator
    if initiator_url.isEmpty():  # a browser-initiated request (e.g. typed/programmatic navigation)
        return True
    return origin_of(initiator_url) == our_origin


TokenSource = Callable[[], "str | None"]


def _constant(value: str | None) -> TokenSource:
    return lambda: value


class DesktopTokenInterceptor(QWebEngineUrlRequestInterceptor):
    """Adds the desktop token where :func:`should_add_token` says so. ``token`` is the token, or a
    function returning it (None while it does not exist yet): the window starts loading our origin
    before the server is up, and the token exists before the server answers anything, so before the
    page can ask for a sign-in."""

    def __init__(self, our_origin: str, token: str | TokenSource, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._origin = our_origin
        self._token: TokenSource = token if callable(token) else _constant(token)

    def interceptRequest(self, info: QWebEngineUrlRequestInfo) -> None:
        if should_add_token(info.requestUrl(), info.initiator(), self._origin):
            token = self._token()
            if token:
                info.setHttpHeader(HEADER, token.encode("ascii"))


def open_externally(url: QUrl) -> bool:
    if url.scheme().lower() in EXTERNAL_SCHEMES:
        log.info("opening an external link in the system browser")
        return QDesktopServices.openUrl(url)
    log.warning("blocked a navigation to a %s: URL", url.scheme() or "relative")
    return False


class _ExternalWindowPage(QWebEnginePage):
    """Target for window.open/target=_blank: hands the URL to the system browser and goes away."""

    def __init__(self, profile: QWebEngineProfile, opener: Callable[[QUrl], object], parent: QObject) -> None:
        super().__init__(profile, parent)
        self._opener = opener

    def acceptNavigationRequest(self, url: QUrl | str, _type: object, _is_main_frame: bool) -> bool:
        self._opener(QUrl(url))
        self.deleteLater()
        return False


class LockedPage(QWebEnginePage):
    """A page that may only show our origin; other links go to the system browser."""

    def __init__(
        self,
        profile: QWebEngineProfile,
        our_origin: str = "",
        parent: QObject | None = None,
        opener: Callable[[QUrl], object] = open_externally,
    ) -> None:
        super().__init__(profile, parent)
        self.our_origin = our_origin
        self._opener = opener
        self.blocked: list[str] = []
        self._builtin_pending = False

    def show_builtin(self, html: str) -> None:
        """Show our own static HTML (the "starting..." page); only this may be a data: URL."""
        self._builtin_pending = True
        self.setHtml(html, QUrl("about:blank"))

    def allows(self, url: QUrl) -> bool:
        if url.toString() == "about:blank":
            return True
        return bool(self.our_origin) and origin_of(url) == self.our_origin

    def acceptNavigationRequest(self, url: QUrl | str, nav_type: object, is_main_frame: bool) -> bool:
        url = QUrl(url)
        if url.scheme() == "data" and self._builtin_pending:
            self._builtin_pending = False
            return True
        if self.allows(url):
            return True
        self.blocked.append(url.toString())
        self._opener(url)
        return False

    def createWindow(self, _type):
        return _ExternalWindowPage(self.profile(), self._opener, self)


def make_profile(parent: QObject | None, storage_dir: Path | None = None) -> QWebEngineProfile:
    """Off-the-record profile (no cookies or cache on disk) unless ``storage_dir`` is given."""
    if storage_dir is None:
        profile = QWebEngineProfile(parent)  # off-the-record
    else:
        profile = QWebEngineProfile("modeltrain", parent)
        profile.setPersistentStoragePath(str(storage_dir / "storage"))
        profile.setCachePath(str(storage_dir / "cache"))
    profile.setHttpCacheType(QWebEngineProfile.HttpCacheType.MemoryHttpCache)
    return profile


AskSavePath = Callable[[str], "str | None"]


def dialog_save_path(parent: QWidget | None) -> AskSavePath:
    def ask(suggested: str) -> str | None:
        path, _ = QFileDialog.getSaveFileName(parent, "", str(Path.home() / suggested))
        return path or None

    return ask


class DownloadHandler(QObject):
    """Every download asks where to save it (never a silent write to a default folder)."""

    def __init__(self, profile: QWebEngineProfile, ask: AskSavePath, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._ask = ask
        self.finished_paths: list[str] = []
        profile.downloadRequested.connect(self._on_download)

    def _on_download(self, download: QWebEngineDownloadRequest) -> None:
        target = self._ask(download.suggestedFileName() or "download")
        if not target:
            download.cancel()
            return
        path = Path(target)
        download.setDownloadDirectory(str(path.parent))
        download.setDownloadFileName(path.name)
        download.isFinishedChanged.connect(lambda: self._finished(download, path))
        download.accept()

    def _finished(self, download: QWebEngineDownloadRequest, path: Path) -> None:
        if download.state() == QWebEngineDownloadRequest.DownloadState.DownloadCompleted:
            self.finished_paths.append(str(path))

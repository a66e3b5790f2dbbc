"""The main window: a QWebEngineView on our loopback origin, remembered geometry, close-to-tray."""

from __future__ import annotations

import html
import logging
import time
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QSettings, QTimer, QUrl, Signal
from PySide6.QtGui import QCloseEvent, QDesktopServices
from PySide6.QtWebEngineCore import QWebEnginePage
from PySide6.QtWebEngineWidgets import QWebEngineView
from PySide6.QtWidgets import QMainWindow, QMessageBox, QWidget

from desktop.i18n import error_text, tr
from desktop.webview import (
    DesktopTokenInterceptor,
    DownloadHandler,
    LockedPage,
    TokenSource,
    dialog_save_path,
    make_profile,
    origin_of,
)

log = logging.getLogger(__name__)

DEFAULT_SIZE = (1200, 800)
#: When the page's renderer process dies (crash, out of memory, killed), the page is reloaded where it
#: was; after this many deaths within RENDERER_DEATH_WINDOW_S it is not, and the window says so instead
#: (with a link to try again), so a page that kills its renderer cannot loop.
MAX_RENDERER_RESTARTS = 3
RENDERER_DEATH_WINDOW_S = 60.0

#: The window's own pages (shown before the UI has loaded, or instead of it); ``body`` is HTML.
_BUILTIN_PAGE = """<!doctype html><html><head><meta charset="utf-8"><style>
body {{ font-family: system-ui, 'PingFang SC', 'Microsoft YaHei', 'Noto Sans CJK SC', sans-serif;
        display: flex; flex-direction: column; align-items: center; justify-content: center;
        height: 95vh; color: #555; }}
</style></head><body>{body}</body></html>"""


class MainWindow(QMainWindow):
    close_requested = Signal()  # the user closed the window and it should not go to the tray
    ui_loaded = Signal(bool)  # a load of our origin (see open_origin) finished; False if it failed

    def __init__(
        self,
        settings: QSettings,
        close_to_tray: Callable[[], bool],
        lang: str | None = None,
        ask_save_path=None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.lang = lang
        self._qsettings = settings
        self._close_to_tray = close_to_tray
        self._quitting = False
        self.setWindowTitle(tr("app_name", lang))
        self.profile = make_profile(None)
        self.view = QWebEngineView(self)
        self.page = LockedPage(self.profile, "", self.view)
        self.view.setPage(self.page)
        # Children are destroyed in creation order: parenting the profile last makes the page (a child
        # of the view) go first, as QtWebEngine requires, even if the window is deleted abruptly.
        self.profile.setParent(self)
        self.setCentralWidget(self.view)
        self.downloads = DownloadHandler(self.profile, ask_save_path or dialog_save_path(self), self)
        self._interceptor: DesktopTokenInterceptor | None = None
        self._pending_ui: QUrl | None = None  # asked for while the "starting" page was still loading
        self._ui_loading = False
        self.page.loadFinished.connect(self._on_load_finished)
        self.page.renderProcessTerminated.connect(self._on_renderer_gone)
        self._renderer_deaths: list[float] = []  # time.monotonic() of each, within the window
        self.restore_geometry()
        self._starting_page_loading = True
        self.page.show_builtin(_BUILTIN_PAGE.format(body=f"<p>{html.escape(tr('starting', lang))}</p>"))

    # ---- content ------------------------------------------------------------------------------

    def open_origin(self, url: str, desktop_token: str | TokenSource | None) -> None:
        """Lock navigation to ``url``'s origin, install the token interceptor, and load the UI; ``ui_loaded``
        tells when that load has finished. ``desktop_token`` may be a function returning the token (see
        DesktopTokenInterceptor). If the built-in "starting" page is still loading, the UI is loaded right
        after it (loading now would cancel it); the "starting" page stays on screen until the UI's first
        answer arrives, so the URL may be opened before its server answers."""
        origin = origin_of(url)
        self.page.our_origin = origin
        if desktop_token:
            self._interceptor = DesktopTokenInterceptor(origin, desktop_token, self)
            self.profile.setUrlRequestInterceptor(self._interceptor)
        target = QUrl(url + "/")
        if self._starting_page_loading:
            self._pending_ui = target
        else:
            self._load_ui(target)

    def _load_ui(self, url: QUrl) -> None:
        self._ui_loading = True
        self.view.load(url)

    def _on_load_finished(self, ok: bool) -> None:
        if self._starting_page_loading:
            self._starting_page_loading = False
            if self._pending_ui is not None:
                url, self._pending_ui = self._pending_ui, None
                self._load_ui(url)
            return
        if self._ui_loading:
            self._ui_loading = False
            self.ui_loaded.emit(ok)

    def _on_renderer_gone(
        self, status: QWebEnginePage.RenderProcessTerminationStatus, exit_code: int
    ) -> None:
        if self._quitting or status == QWebEnginePage.RenderProcessTerminationStatus.NormalTerminationStatus:
            return
        now = time.monotonic()
        self._renderer_deaths = [t for t in self._renderer_deaths if now - t < RENDERER_DEATH_WINDOW_S]
        self._renderer_deaths.append(now)
        log.warning("the page's renderer process ended (%s, exit code %d)", status.name, exit_code)
        if not self.page.our_origin:
            return  # the "starting" page: the UI replaces it once open_origin is called
        current = self.page.url()
        if not (self.page.allows(current) and current.toString() != "about:blank"):
            current = QUrl(self.page.our_origin + "/")
        if len(self._renderer_deaths) > MAX_RENDERER_RESTARTS:
            log.error(
                "not reloading the page: its renderer ended %d times within %.0f s",
                len(self._renderer_deaths),
                RENDERER_DEATH_WINDOW_S,
            )
            href, label = html.escape(self.page.our_origin + "/"), html.escape(tr("reload", self.lang))
            link = f'<a href="{href}">{label}</a>'
            self.page.show_builtin(
                _BUILTIN_PAGE.format(body=f"<p>{html.escape(tr('page_crashed', self.lang))}</p><p>{link}</p>")
            )
            return
        log.info("reloading the page")
        # After the event loop has delivered the dead page's own signals (its load ends as failed).
        QTimer.singleShot(0, self, lambda: self._load_ui(current))

    # ---- geometry -----------------------------------------------------------------------------

    def restore_geometry(self) -> None:
        geometry = self._qsettings.value("window/geometry")
        if geometry is None or not self.restoreGeometry(geometry):
            self.resize(*DEFAULT_SIZE)
        state = self._qsettings.value("window/state")
        if state is not None:
            self.restoreState(state)

    def save_geometry(self) -> None:
        self._qsettings.setValue("window/geometry", self.saveGeometry())
        self._qsettings.setValue("window/state", self.saveState())
        self._qsettings.sync()

    def bring_to_front(self) -> None:
        if self.isMinimized():
            self.showNormal()
        self.show()
        self.raise_()
        self.activateWindow()

    # ---- closing ------------------------------------------------------------------------------

    def mark_quitting(self) -> None:
        self._quitting = True

    def closeEvent(self, event: QCloseEvent) -> None:
        self.save_geometry()
        if self._quitting:
            event.accept()
            return
        if self._close_to_tray():
            event.ignore()
            self.hide()
            return
        event.ignore()  # the app shuts down in order and closes us then
        self.close_requested.emit()

    def dispose(self) -> None:
        """Release the web page before its profile (else QtWebEngine complains and may crash at exit)."""
        self.profile.setUrlRequestInterceptor(None)  # type: ignore[arg-type]  # Qt takes nullptr
        self.page.deleteLater()
        self.view.deleteLater()
        self.profile.deleteLater()


def show_start_error(
    parent: QWidget | None,
    kind: str,
    message: str,
    log_dir: Path,
    lang: str | None = None,
    exec_dialog: bool = True,
) -> QMessageBox:
    """The translated "could not start" dialog with an "Open logs folder" button."""
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Critical)
    box.setWindowTitle(tr("start_failed_title", lang))
    box.setText(f"{tr('start_failed_intro', lang)}\n\n{error_text(kind, lang)}")
    box.setDetailedText(message)
    logs = box.addButton(tr("open_logs", lang), QMessageBox.ButtonRole.ActionRole)
    box.addButton(tr("close", lang), QMessageBox.ButtonRole.RejectRole)
    logs.clicked.disconnect()  # keep the dialog open after opening the folder
    logs.clicked.connect(lambda: open_folder(log_dir))
    if exec_dialog:
        box.exec()
    return box


def open_folder(path: Path) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))

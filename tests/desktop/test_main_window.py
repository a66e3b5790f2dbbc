"""The main window over a real embedded server: UI load, owner sign-in, geometry, start-error dialog."""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import QObject, QSettings, QUrl, Slot
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QMessageBox

from desktop.app import _SIGN_IN_JS
from desktop.i18n import error_text, tr
from desktop.main_window import MainWindow, show_start_error
from server.embedded import EmbeddedServer


def _window(tmp_path: Path) -> MainWindow:
    settings = QSettings(str(tmp_path / "desktop.ini"), QSettings.Format.IniFormat)
    return MainWindow(settings, close_to_tray=lambda: False, lang="en", ask_save_path=lambda _s: None)


def _run_sign_in(qtbot, window: MainWindow) -> dict:
    window.page.runJavaScript(_SIGN_IN_JS, 0, lambda _v: None)
    box: dict = {}

    def poll() -> bool:
        window.page.runJavaScript("JSON.stringify(window.__mtSelfTest || null)", 0,
                                  lambda v: box.update(value=v))
        return isinstance(box.get("value"), str) and box["value"] != "null"

    qtbot.waitUntil(poll, timeout=20000)
    return json.loads(box["value"])


def test_window_loads_the_ui_and_signs_the_owner_in(qtbot, embedded: EmbeddedServer, tmp_path: Path) -> None:
    window = _window(tmp_path)
    qtbot.addWidget(window)
    window.show()
    with qtbot.waitSignal(window.page.loadFinished, timeout=30000) as loaded:
        window.open_origin(embedded.url, embedded.desktop_token)
    assert loaded.args == [True]
    assert window.page.url().toString().startswith(embedded.url)
    result = _run_sign_in(qtbot, window)
    assert result == {"ok": True, "email": "admin@example.com", "role": "admin"}
    # The page itself never sees the token: not in the DOM, the URL, cookies or storage.
    box: dict = {}
    window.page.runJavaScript(
        "JSON.stringify([document.documentElement.outerHTML, location.href, document.cookie,"
        " JSON.stringify(localStorage), JSON.stringify(sessionStorage)])",
        0, lambda v: box.update(v=v),
    )
    qtbot.waitUntil(lambda: "v" in box, timeout=10000)
    assert embedded.desktop_token not in box["v"]
    window.mark_quitting()
    window.close()
    window.dispose()


def test_without_the_interceptor_the_page_cannot_sign_in(qtbot, embedded: EmbeddedServer, tmp_path: Path) -> None:
    window = _window(tmp_path)
    qtbot.addWidget(window)
    with qtbot.waitSignal(window.page.loadFinished, timeout=30000):
        window.open_origin(embedded.url, None)  # no token: like any other browser on this machine
    result = _run_sign_in(qtbot, window)
    assert result["ok"] is False and "401" in result["error"]
    window.dispose()


def test_geometry_is_remembered(qtbot, tmp_path: Path) -> None:
    first = _window(tmp_path)
    qtbot.addWidget(first)
    first.show()
    first.resize(613, 427)
    qtbot.waitUntil(lambda: first.width() == 613, timeout=5000)
    first.save_geometry()
    first.dispose()
    second = _window(tmp_path)
    qtbot.addWidget(second)
    assert (second.width(), second.height()) == (613, 427)
    second.dispose()


def test_close_goes_to_tray_or_asks_for_shutdown(qtbot, tmp_path: Path) -> None:
    settings = QSettings(str(tmp_path / "desktop.ini"), QSettings.Format.IniFormat)
    to_tray = {"value": True}
    window = MainWindow(settings, close_to_tray=lambda: to_tray["value"], lang="en")
    qtbot.addWidget(window)
    window.show()
    window.close()
    assert not window.isVisible()  # hidden, still alive (tray keeps running)
    window.show()
    to_tray["value"] = False
    with qtbot.waitSignal(window.close_requested, timeout=2000):
        window.close()
    window.mark_quitting()
    window.close()
    window.dispose()


class _UrlCatcher(QObject):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    @Slot(QUrl)
    def catch(self, url: QUrl) -> None:
        self.urls.append(url.toLocalFile())


def test_start_error_dialog_is_translated_and_opens_logs(qtbot, tmp_path: Path) -> None:
    catcher = _UrlCatcher()
    QDesktopServices.setUrlHandler("file", catcher, "catch")
    try:
        for lang in ("en", "zh"):
            box = show_start_error(None, "database_locked", "the database is locked by another program",
                                   tmp_path / "logs", lang, exec_dialog=False)
            qtbot.addWidget(box)
            assert error_text("database_locked", lang) in box.text()
            assert box.windowTitle() == tr("start_failed_title", lang)
            assert box.detailedText() == "the database is locked by another program"
            buttons = {b.text(): b for b in box.buttons()}
            assert tr("open_logs", lang) in buttons
            buttons[tr("open_logs", lang)].click()
        assert catcher.urls == [str(tmp_path / "logs")] * 2
        assert (tmp_path / "logs").is_dir()
        assert "数据库" in error_text("database_locked", "zh")
        assert error_text("something_new", "en") == tr("err_startup_failed", "en")
    finally:
        QDesktopServices.unsetUrlHandler("file")
    assert isinstance(box, QMessageBox)

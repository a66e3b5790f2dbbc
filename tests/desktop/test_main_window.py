"""The main window over a real embedded server: UI load, owner sign-in, geometry, start-error dialog."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from PySide6.QtCore import QObject, QSettings, QUrl, Slot
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QMessageBox

from desktop.i18n import error_text, tr
from desktop.main_window import MAX_RENDERER_RESTARTS, MainWindow, show_start_error
from desktop.self_test import SIGN_IN_JS, SIGN_IN_RESULT_JS
from desktop.server_host import begin_start, bind_loopback
from server.embedded import EmbeddedServer


def _window(tmp_path: Path) -> MainWindow:
    settings = QSettings(str(tmp_path / "desktop.ini"), QSettings.Format.IniFormat)
    return MainWindow(settings, close_to_tray=lambda: False, lang="en", ask_save_path=lambda _s: None)


def _run_sign_in(qtbot, window: MainWindow) -> dict:
    window.page.runJavaScript(SIGN_IN_JS, 0, lambda _v: None)
    box: dict = {}

    def poll() -> bool:
        window.page.runJavaScript(SIGN_IN_RESULT_JS, 0, lambda v: box.update(value=v))
        return isinstance(box.get("value"), str) and box["value"] != "null"

    qtbot.waitUntil(poll, timeout=20000)
    return json.loads(box["value"])


def test_window_loads_the_ui_and_signs_the_owner_in(qtbot, embedded: EmbeddedServer, tmp_path: Path) -> None:
    window = _window(tmp_path)
    qtbot.addWidget(window)
    window.show()
    with qtbot.waitSignal(window.ui_loaded, timeout=30000) as loaded:
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
        0,
        lambda v: box.update(v=v),
    )
    qtbot.waitUntil(lambda: "v" in box, timeout=10000)
    assert embedded.desktop_token not in box["v"]
    window.mark_quitting()
    window.close()
    window.dispose()


def test_without_the_interceptor_the_page_cannot_sign_in(
    qtbot, embedded: EmbeddedServer, tmp_path: Path
) -> None:
    window = _window(tmp_path)
    qtbot.addWidget(window)
    with qtbot.waitSignal(window.ui_loaded, timeout=30000):
        window.open_origin(embedded.url, None)  # no token: like any other browser on this machine
    result = _run_sign_in(qtbot, window)
    assert result["ok"] is False and "401" in result["error"]
    window.dispose()


def test_the_ui_opens_before_its_server_answers_and_signs_in_once_it_does(
    qtbot, desktop_settings, tmp_path: Path
) -> None:
    """The desktop's start-up: the window opens the URL of a socket bound before the server exists, with
    a token source that has no token yet; the "starting" page stays until the server answers."""
    socket = bind_loopback()
    assert socket is not None and socket.getsockname()[0] == "127.0.0.1"
    url = f"http://127.0.0.1:{socket.getsockname()[1]}"
    box: dict = {}
    window = _window(tmp_path)
    qtbot.addWidget(window)
    window.show()
    loads: list[bool] = []
    window.ui_loaded.connect(loads.append)
    window.open_origin(url, lambda: box["server"].desktop_token if "server" in box else None)
    qtbot.waitUntil(lambda: window._ui_loading, timeout=20000)  # the UI's request waits in the backlog
    assert loads == []
    box["server"] = server = EmbeddedServer(desktop_settings)
    try:
        with qtbot.waitSignal(window.ui_loaded, timeout=30000) as loaded:
            assert server.start(timeout=60, sock=socket) == url
        assert loaded.args == [True] and loads == [True]
        assert window.page.url().toString().startswith(url)
        assert _run_sign_in(qtbot, window) == {"ok": True, "email": "admin@example.com", "role": "admin"}
    finally:
        window.dispose()
        server.stop()


def test_a_server_that_fails_to_start_closes_the_waiting_page(
    qtbot, make_desktop_settings, tmp_path: Path
) -> None:
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the data folder should be")
    job = begin_start(make_desktop_settings(data_dir=blocked), lan=False, log_to_console=False)
    assert job.url is not None
    window = _window(tmp_path)
    qtbot.addWidget(window)
    with qtbot.waitSignal(window.ui_loaded, timeout=30000) as loaded:
        window.open_origin(job.url, None)
    assert loaded.args == [False]
    assert job.future.exception(timeout=30) is not None
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
            box = show_start_error(
                None,
                "database_locked",
                "the database is locked by another program",
                tmp_path / "logs",
                lang,
                exec_dialog=False,
            )
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


def test_a_page_whose_renderer_dies_is_reloaded_but_never_in_a_loop(
    qtbot, embedded: EmbeddedServer, tmp_path: Path
) -> None:
    window = _window(tmp_path)
    qtbot.addWidget(window)
    window.show()
    with qtbot.waitSignal(window.ui_loaded, timeout=30000):
        window.open_origin(embedded.url, embedded.desktop_token)
    window.view.load(QUrl(embedded.url + "/settings"))
    qtbot.waitUntil(lambda: window.page.url().path() == "/settings", timeout=10000)
    for _ in range(MAX_RENDERER_RESTARTS):
        pid = window.page.renderProcessPid()
        assert pid > 0
        with qtbot.waitSignal(window.ui_loaded, timeout=30000) as reloaded:
            os.kill(pid, signal.SIGKILL)
        assert reloaded.args == [True]
        # A new renderer shows the page the user was on.
        assert window.page.renderProcessPid() not in (0, pid)
        assert window.page.url().toString() == embedded.url + "/settings"

    # One death more within the window: no reload, the page says so and links to the UI.
    pid = window.page.renderProcessPid()
    with qtbot.waitSignal(window.page.loadFinished, timeout=30000):
        os.kill(pid, signal.SIGKILL)
    box: dict = {}
    window.page.toHtml(lambda text: box.update(html=text))
    qtbot.waitUntil(lambda: "html" in box, timeout=10000)
    assert tr("page_crashed", "en") in box["html"]
    assert f'href="{embedded.url}/"' in box["html"]
    window.mark_quitting()
    window.close()
    window.dispose()


#: Hostile model output (docs/security.md, D1): a subset of webui/e2e/fixtures/hostile.ts, whose full
#: corpus runs in Chromium; here the same kinds reach the desktop shell's QtWebEngine.
_ATTACKER = "http://attacker.test"
HOSTILE = [
    '```\n<img src=x onerror=alert("fence1")>\nno closing fence, then HTML:\n'
    '<script>alert("fence1b")</script>',
    f'<img src=x onerror=alert("img")><svg onload=alert("svg")><iframe src="{_ATTACKER}/frame"></iframe>',
    f'[click](javascript:alert("link")) ![pixel]({_ATTACKER}/pixel.png) '
    f'<a href="{_ATTACKER}/steal">steal</a>',
    f'<div style="background:url({_ATTACKER}/bg.png)">styled</div><object data="{_ATTACKER}/x.swf"></object>',
    '```html\n<script>alert("in code")</script>\n```\n$\\href{javascript:alert(5)}{math}$',
    f'<form action="{_ATTACKER}/f"><button formaction="{_ATTACKER}/g">go</button></form>'
    f'<base href="{_ATTACKER}/">',
]

#: Installed before any page script: records every JavaScript dialog instead of showing it.
_RECORD_DIALOGS = """
window.__dialogs = [];
for (const name of ['alert', 'confirm', 'prompt', 'print']) {
  window[name] = function (m) { window.__dialogs.push(name + ': ' + m); return null; };
}
"""

_INSPECT = """
JSON.stringify({
  at: location.pathname,
  msgs: document.querySelectorAll('.msg').length,
  replies: document.querySelectorAll('.msg-assistant .md').length,
  dialogs: window.__dialogs || [],
  foreign: performance.getEntriesByType('resource').map(e => e.name)
    .filter(u => !u.startsWith(location.origin + '/') && !u.startsWith('data:') && !u.startsWith('blob:')),
  active: [...document.querySelectorAll('.msg-assistant .md *')].filter(el =>
    el.matches('script,iframe,frame,object,embed,img,svg,link,meta,base,form,input,video,audio') ||
    el.getAttributeNames().some(a =>
      a.startsWith('on') || ['src', 'srcdoc', 'action', 'formaction'].includes(a)) ||
    (el.getAttribute('href') || '').trim().toLowerCase().startsWith('javascript')
  ).map(el => el.outerHTML.slice(0, 80)),
})
"""


def test_hostile_model_output_renders_inert_in_the_desktop_window(
    qtbot, embedded: EmbeddedServer, tmp_path: Path
) -> None:
    import httpx
    from PySide6.QtWebEngineCore import QWebEngineScript

    # A conversation of hostile answers, imported for the desktop owner (the administrator).
    with httpx.Client(base_url=embedded.url, timeout=30) as c:
        r = c.post("/api/auth/login", json={"email": "admin@example.com", "password": "initial-Admin-pass-9"})
        token = r.json()["access_token"]
        r = c.post(
            "/api/auth/password",
            json={"current_password": "initial-Admin-pass-9", "new_password": "a-desktop-owner-Pass-42"},
            headers={"Authorization": f"Bearer {token}"},
        )
        token = r.json()["access_token"]
        t = "2026-12-05T00:00:{:02d}Z"
        messages = []
        for i, text in enumerate(HOSTILE):
            parent = messages[-1]["id"] if messages else None
            messages.append(
                {
                    "id": f"u{i}",
                    "parent_id": parent,
                    "role": "user",
                    "content": f"q{i}",
                    "created_at": t.format(2 * i),
                }
            )
            messages.append(
                {
                    "id": f"a{i}",
                    "parent_id": f"u{i}",
                    "role": "assistant",
                    "content": text,
                    "status": "complete",
                    "created_at": t.format(2 * i + 1),
                }
            )
        conversation = {
            "id": "c",
            "title": "hostile",
            "title_edited": True,
            "pinned": False,
            "model": "m/one",
            "system_prompt": "",
            "options": {},
            "created_at": t.format(0),
            "updated_at": t.format(59),
            "messages": messages,
        }
        doc = {
            "format": "modeltrain.conversations",
            "version": 1,
            "exported_at": t.format(59),
            "conversations": [conversation],
        }
        r = c.post("/api/conversations/import", json=doc, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 201, r.text
        conversation = r.json()["ids"]["c"]
        # nothing to chat with here: the first-run guide would open instead of the chat
        assert c.post("/api/onboarding/skip", headers={"Authorization": f"Bearer {token}"}).status_code == 200

    window = _window(tmp_path)
    qtbot.addWidget(window)
    script = QWebEngineScript()
    script.setName("record-dialogs")
    script.setSourceCode(_RECORD_DIALOGS)
    script.setInjectionPoint(QWebEngineScript.InjectionPoint.DocumentCreation)
    script.setWorldId(QWebEngineScript.ScriptWorldId.MainWorld)
    window.profile.scripts().insert(script)
    window.show()
    with qtbot.waitSignal(window.ui_loaded, timeout=30000):
        window.open_origin(embedded.url, embedded.desktop_token)
    ready: dict = {}

    def app_ready() -> bool:  # signed in, on the chat screen
        window.page.runJavaScript(
            "!!document.querySelector('#composer-input')", 0, lambda v: ready.update(v=v)
        )
        return ready.get("v") is True

    qtbot.waitUntil(app_ready, timeout=30000)
    window.page.runJavaScript(
        f"history.pushState({{}}, '', '/chat/{conversation}'); dispatchEvent(new PopStateEvent('popstate'))",
        0,
        lambda _v: None,
    )
    box: dict = {}

    def rendered() -> bool:
        window.page.runJavaScript(_INSPECT, 0, lambda v: box.update(v=v))
        return "v" in box and json.loads(box["v"])["replies"] == len(HOSTILE)

    try:
        qtbot.waitUntil(rendered, timeout=30000)
    except Exception:  # say what the page shows instead
        raise AssertionError(box.get("v")) from None
    seen = json.loads(box["v"])
    assert seen["dialogs"] == []
    assert seen["foreign"] == []
    assert seen["active"] == []
    window.mark_quitting()
    window.close()
    window.dispose()

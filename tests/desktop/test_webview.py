"""The web view: token interceptor decision + real requests, navigation lock, downloads."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QUrl
from PySide6.QtWebEngineCore import QWebEnginePage, QWebEngineProfile

from desktop.webview import (
    DesktopTokenInterceptor,
    DownloadHandler,
    LockedPage,
    origin_of,
    should_add_token,
)

OURS = "http://127.0.0.1:43210"


@pytest.mark.parametrize(
    ("url", "initiator", "expected"),
    [
        (f"{OURS}/api/auth/desktop", OURS, True),
        (f"{OURS}/api/auth/desktop", "", True),  # browser-initiated (no page behind it)
        (f"{OURS}/api/auth/desktop?x=1", OURS, True),
        (f"{OURS}/api/users/me", OURS, False),  # only the sign-in call carries it
        (f"{OURS}/", OURS, False),
        ("http://127.0.0.1:43211/api/auth/desktop", OURS, False),  # other port = other origin
        ("http://localhost:43210/api/auth/desktop", OURS, False),  # other host name = other origin
        ("https://127.0.0.1:43210/api/auth/desktop", OURS, False),  # other scheme
        ("http://evil.test/api/auth/desktop", OURS, False),
        (f"{OURS}/api/auth/desktop", "http://evil.test", False),  # initiated by another origin
        (f"{OURS}/api/auth/desktop", "http://127.0.0.1:43211", False),
        (f"{OURS}/api/auth/desktop", "null", False),
        ("http://127.0.0.1:43210@evil.test/api/auth/desktop", OURS, False),  # userinfo trick
    ],
)
def test_interceptor_decision(url: str, initiator: str, expected: bool) -> None:
    assert should_add_token(QUrl(url), QUrl(initiator), OURS) is expected


def test_no_origin_never_gets_the_token() -> None:
    assert not should_add_token(QUrl(f"{OURS}/api/auth/desktop"), QUrl(""), "")
    assert origin_of("http://127.0.0.1/x") == "http://127.0.0.1:80"
    assert origin_of("about:blank") == ""


def _load(qtbot, page: QWebEnginePage, url: str) -> None:
    with qtbot.waitSignal(page.loadFinished, timeout=20000):
        page.load(QUrl(url))


def test_real_requests_carry_the_header_only_to_our_origin(qtbot, qapp, recording_server) -> None:
    ours, other = recording_server(), recording_server()
    profile = QWebEngineProfile(qapp)
    interceptor = DesktopTokenInterceptor(origin_of(ours.url), "tok-123", profile)
    profile.setUrlRequestInterceptor(interceptor)
    page = QWebEnginePage(profile, profile)
    try:
        _load(qtbot, page, ours.url + "/api/auth/desktop")
        _load(qtbot, page, other.url + "/api/auth/desktop")
        _load(qtbot, page, ours.url + "/api/users/me")
    finally:
        profile.setUrlRequestInterceptor(None)
        page.deleteLater()
    assert [h.get("x-modeltrain-desktop") for h in ours.headers_for("/api/auth/desktop")] == ["tok-123"]
    assert other.headers_for("/api/auth/desktop"), "the other server was reached"
    assert all("x-modeltrain-desktop" not in h for h in other.headers_for("/api/auth/desktop"))
    assert all("x-modeltrain-desktop" not in h for h in ours.headers_for("/api/users/me"))


def test_a_token_source_is_asked_per_request_and_no_token_means_no_header(
    qtbot, qapp, recording_server
) -> None:
    """The window may open our origin before the server (and so the token) exists: the interceptor asks
    its source on each sign-in request and sends nothing while there is no token yet."""
    ours = recording_server()
    current: dict[str, str | None] = {"token": None}
    profile = QWebEngineProfile(qapp)
    interceptor = DesktopTokenInterceptor(origin_of(ours.url), lambda: current["token"], profile)
    profile.setUrlRequestInterceptor(interceptor)  # the profile does not keep it alive: we do
    page = QWebEnginePage(profile, profile)
    try:
        _load(qtbot, page, ours.url + "/api/auth/desktop")
        current["token"] = "tok-456"
        _load(qtbot, page, ours.url + "/api/auth/desktop?again")
    finally:
        profile.setUrlRequestInterceptor(None)
        page.deleteLater()
    assert [h.get("x-modeltrain-desktop") for h in ours.headers_for("/api/auth/desktop")] == [None, "tok-456"]


def test_page_script_cannot_send_the_token_to_another_origin(qtbot, qapp, recording_server) -> None:
    """A script on our page that calls another loopback server's sign-in path: no header goes there."""
    ours, other = recording_server(), recording_server()
    ours.pages["/"] = (200, "text/html", b"<html><body>ours</body></html>", {})
    profile = QWebEngineProfile(qapp)
    interceptor = DesktopTokenInterceptor(origin_of(ours.url), "tok-123", profile)
    profile.setUrlRequestInterceptor(interceptor)  # the profile does not keep it alive: we do
    page = QWebEnginePage(profile, profile)
    try:
        _load(qtbot, page, ours.url + "/")
        page.runJavaScript(
            f"fetch('{other.url}/api/auth/desktop', {{mode: 'no-cors'}}); true", 0, lambda _v: None
        )
        qtbot.waitUntil(lambda: bool(other.headers_for("/api/auth/desktop")), timeout=10000)
        _load(qtbot, page, ours.url + "/api/auth/desktop")  # the interceptor was live all along
    finally:
        profile.setUrlRequestInterceptor(None)
        page.deleteLater()
    assert all("x-modeltrain-desktop" not in h for h in other.headers_for("/api/auth/desktop"))
    assert [h.get("x-modeltrain-desktop") for h in ours.headers_for("/api/auth/desktop")] == ["tok-123"]


def test_navigation_is_locked_to_our_origin(qtbot, qapp, recording_server) -> None:
    ours, other = recording_server(), recording_server()
    ours.pages["/"] = (200, "text/html", b"<html><body><a id=x href='/next'>n</a></body></html>", {})
    ours.pages["/next"] = (200, "text/html", b"<html><body>next</body></html>", {})
    opened: list[str] = []
    profile = QWebEngineProfile(qapp)
    page = LockedPage(profile, origin_of(ours.url), profile, opener=lambda url: opened.append(url.toString()))
    try:
        _load(qtbot, page, ours.url + "/")
        _load(qtbot, page, ours.url + "/next")
        page.runJavaScript(f"location.href = '{other.url}/elsewhere'; true", 0, lambda _v: None)
        qtbot.waitUntil(lambda: bool(opened), timeout=10000)
        page.runJavaScript("window.open('https://example.org/docs'); true", 0, lambda _v: None)
        qtbot.waitUntil(lambda: len(opened) == 2, timeout=10000)
        assert page.url().toString() == ours.url + "/next"
    finally:
        page.deleteLater()
    assert opened == [f"{other.url}/elsewhere", "https://example.org/docs"]
    assert other.headers_for("/elsewhere") == []  # the blocked page was never requested


def test_downloads_go_through_the_save_dialog(qtbot, qapp, recording_server, tmp_path: Path) -> None:
    ours = recording_server()
    ours.pages["/"] = (200, "text/html", b"<html><body>export</body></html>", {})
    ours.pages["/export.json"] = (
        200,
        "application/json",
        b'{"exported": true}',
        {"Content-Disposition": 'attachment; filename="export.json"'},
    )
    asked: list[str] = []
    target = tmp_path / "saved" / "my-export.json"
    target.parent.mkdir()

    def ask(suggested: str) -> str:
        asked.append(suggested)
        return str(target)

    profile = QWebEngineProfile(qapp)
    handler = DownloadHandler(profile, ask, profile)
    page = LockedPage(profile, origin_of(ours.url), profile, opener=lambda _u: None)
    try:
        _load(qtbot, page, ours.url + "/")
        page.runJavaScript("location.href = '/export.json'; true", 0, lambda _v: None)
        qtbot.waitUntil(lambda: handler.finished_paths == [str(target)], timeout=15000)
    finally:
        page.deleteLater()
    assert asked == ["export.json"]
    assert target.read_text() == '{"exported": true}'


def test_cancelled_save_dialog_writes_nothing(qtbot, qapp, recording_server, tmp_path: Path) -> None:
    ours = recording_server()
    ours.pages["/"] = (200, "text/html", b"<html><body>export</body></html>", {})
    ours.pages["/export.json"] = (
        200,
        "application/json",
        b"{}",
        {"Content-Disposition": "attachment; filename=e.json"},
    )
    asked: list[str] = []
    profile = QWebEngineProfile(qapp)
    profile.setDownloadPath(str(tmp_path))
    handler = DownloadHandler(profile, lambda s: asked.append(s) or None, profile)
    page = LockedPage(profile, origin_of(ours.url), profile, opener=lambda _u: None)
    try:
        _load(qtbot, page, ours.url + "/")
        page.runJavaScript("location.href = '/export.json'; true", 0, lambda _v: None)
        qtbot.waitUntil(lambda: asked == ["e.json"], timeout=15000)
    finally:
        page.deleteLater()
    assert handler.finished_paths == []
    assert list(tmp_path.iterdir()) == []

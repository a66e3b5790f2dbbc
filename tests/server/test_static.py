"""Serving webui/dist: SPA fallback, containment, cache headers, JSON 404 for unknown API paths."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from tests.server.conftest import BASE_URL


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    d = tmp_path / "dist"
    (d / "assets").mkdir(parents=True)
    (d / "index.html").write_text("<!doctype html><title>ModelTrain</title><div id=app></div>")
    (d / "assets" / "index-abc123.js").write_text("console.log('ok')")
    (d / "favicon.svg").write_text("<svg/>")
    (tmp_path / "secret.txt").write_text("outside")
    (tmp_path / "dist_evil").mkdir()
    (tmp_path / "dist_evil" / "x.txt").write_text("sibling")
    return d


@pytest.fixture
def ui(make_settings, dist: Path):
    with TestClient(create_app(make_settings(webui_dist=dist)), base_url=BASE_URL) as c:
        yield c


def test_index_and_client_routes_get_the_shell_uncached(ui: TestClient) -> None:
    for path in ("/", "/chat", "/chat/123", "/settings/language"):
        r = ui.get(path)
        assert r.status_code == 200 and "<div id=app>" in r.text, path
        assert r.headers["cache-control"] == "no-cache"


def test_hashed_assets_are_immutable(ui: TestClient) -> None:
    r = ui.get("/assets/index-abc123.js")
    assert r.status_code == 200 and "immutable" in r.headers["cache-control"]
    assert r.headers["content-type"].startswith(("text/javascript", "application/javascript"))
    assert ui.get("/favicon.svg").headers["cache-control"] == "no-cache"


def test_missing_asset_is_404_not_the_shell(ui: TestClient) -> None:
    assert ui.get("/assets/gone-123.js").status_code == 404
    assert ui.get("/robots.txt").status_code == 404


def test_unknown_api_paths_are_json_404(ui: TestClient) -> None:
    for path in ("/api/nope", "/api/", "/api/users/me/extra/path"):
        r = ui.get(path)
        assert r.status_code in (401, 404), path
        assert r.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize(
    "raw",
    [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2e%2e%2fsecret.txt",
        "/..%2fsecret.txt",
        "/%252e%252e%252fsecret.txt",
        "/assets/..%2f..%2fsecret.txt",
        "/..%5csecret.txt",
        "/../dist_evil/x.txt",
        "/%2e%2e/dist_evil/x.txt",
        "/%00index.html",
        "//etc/passwd",
        "/..%2f..%2f..%2f..%2fetc%2fpasswd",
    ],
)
def test_no_path_escapes_the_dist_directory(ui: TestClient, raw: str) -> None:
    # StaticUI reads the raw request target, so the encoded forms reach it undecoded.
    from starlette.requests import Request

    from server.static import StaticUI

    static = StaticUI(ui.app.state.runtime.settings.webui_dist)
    scope = {
        "type": "http",
        "method": "GET",
        "path": raw,
        "raw_path": raw.encode(),
        "headers": [],
        "query_string": b"",
    }
    response = static.respond(Request(scope))
    body = getattr(response, "body", b"") or b""
    if hasattr(response, "path"):
        body = Path(response.path).read_bytes()
    assert b"outside" not in body and b"sibling" not in body and b"root:" not in body
    assert response.status_code in (200, 404)
    if response.status_code == 200:
        assert b"<div id=app>" in body  # only ever the SPA shell
    # And over HTTP too.
    r = ui.get(raw)
    assert "outside" not in r.text and "sibling" not in r.text and "root:" not in r.text


def test_without_a_build_the_server_explains(make_settings, tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(webui_dist=tmp_path / "nothing")), base_url=BASE_URL) as c:
        r = c.get("/")
        assert r.status_code == 200 and "has not been built" in r.text


def test_text_assets_are_gzipped_when_the_browser_accepts_it(ui: TestClient, dist: Path) -> None:
    big = "export const data = " + repr("modeltrain " * 2000) + ";\n"
    (dist / "assets" / "big-1a2b3c.js").write_text(big)
    r = ui.get("/assets/big-1a2b3c.js", headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
    assert r.text == big  # the client decodes it: same bytes
    assert int(r.headers["content-length"]) < len(big) // 5
    assert "immutable" in r.headers["cache-control"] and r.headers["vary"] == "Accept-Encoding"
    raw = ui.get("/assets/big-1a2b3c.js", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in raw.headers and raw.text == big
    # A rebuilt file is served fresh, not from the cache.
    (dist / "assets" / "big-1a2b3c.js").write_text(big + "// v2\n")
    again = ui.get("/assets/big-1a2b3c.js", headers={"Accept-Encoding": "gzip"})
    assert again.text.endswith("// v2\n")

"""The API docs page (server/api/docs.py): same-origin Swagger UI under a CSP without inline script."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from tests.server.conftest import BASE_URL

DOCS_PATHS = ["/api/docs", "/api/docs/init.js", "/api/openapi.json"]


class PageRefs(HTMLParser):
    """The scripts and stylesheets a page loads, and the text of any inline script or style element."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.stylesheets: list[str] = []
        self.inline: list[str] = []
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script":
            if a.get("src"):
                self.scripts.append(a["src"] or "")
            self._open = "script"
        elif tag == "style":
            self._open = "style"
        elif tag == "link" and (a.get("rel") or "").lower() == "stylesheet":
            self.stylesheets.append(a.get("href") or "")
        for name, value in attrs:
            if name.startswith("on") or (value or "").strip().lower().startswith("javascript:"):
                self.inline.append(f"{tag} {name}={value}")

    def handle_endtag(self, tag: str) -> None:
        self._open = None

    def handle_data(self, data: str) -> None:
        if self._open and data.strip():
            self.inline.append(data)


def refs(html: str) -> PageRefs:
    parser = PageRefs()
    parser.feed(html)
    return parser


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    """A built web UI with swagger-ui-dist's files where the build puts them (stand-ins, not real)."""
    d = tmp_path / "dist"
    (d / "swagger-ui").mkdir(parents=True)
    (d / "index.html").write_text("<!doctype html><title>ModelTrain</title><div id=app></div>")
    (d / "swagger-ui" / "swagger-ui-bundle.js").write_text("window.SwaggerUIBundle = function () {}\n" * 64)
    (d / "swagger-ui" / "swagger-ui.css").write_text(".swagger-ui { color: black }\n" * 64)
    return d


@pytest.fixture
def docs(make_settings, dist: Path):
    with TestClient(create_app(make_settings(api_docs=True, webui_dist=dist)), base_url=BASE_URL) as c:
        yield c


def script_sources(csp: str) -> list[str]:
    directives = {d.split()[0]: d.split()[1:] for d in (p.strip() for p in csp.split(";")) if d}
    return directives.get("script-src", directives.get("default-src", []))


def test_docs_page_loads_only_same_origin_files_that_are_served(docs: TestClient) -> None:
    r = docs.get("/api/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = refs(r.text)
    assert page.scripts and page.stylesheets
    assert page.inline == []  # the start-up code is an external file, nothing runs inline
    expected_types = {"script": "javascript", "stylesheet": "text/css"}
    for kind, url in [("script", s) for s in page.scripts] + [("stylesheet", s) for s in page.stylesheets]:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc and url.startswith("/"), url  # same origin, no CDN
        asset = docs.get(url)
        assert asset.status_code == 200, url
        assert expected_types[kind] in asset.headers["content-type"], url
        assert asset.content.strip(), url


def test_init_script_starts_swagger_ui_on_our_schema_without_outside_services(docs: TestClient) -> None:
    init = docs.get("/api/docs/init.js")
    assert init.status_code == 200 and "javascript" in init.headers["content-type"]
    assert "/api/openapi.json" in init.text and "SwaggerUIBundle(" in init.text
    assert "validatorUrl: null" in init.text  # Swagger UI would otherwise post the schema to its validator
    assert "http:" not in init.text and "https:" not in init.text


def test_csp_forbids_inline_and_outside_scripts(docs: TestClient) -> None:
    for path in ("/api/docs", "/api/docs/init.js", "/swagger-ui/swagger-ui-bundle.js"):
        csp = docs.get(path).headers["content-security-policy"]
        sources = script_sources(csp)
        assert sources == ["'self'"], (path, csp)
        assert "'unsafe-inline'" not in sources and "'unsafe-eval'" not in sources


def test_docs_and_schema_need_no_sign_in(docs: TestClient) -> None:
    schema = docs.get("/api/openapi.json")
    assert schema.status_code == 200
    assert "/api/chat" in schema.json()["paths"]
    # the docs' own routes are not API operations
    assert not any(p.startswith("/api/docs") for p in schema.json()["paths"])


def test_docs_respect_the_host_allow_list(docs: TestClient) -> None:
    for path in [*DOCS_PATHS, "/swagger-ui/swagger-ui-bundle.js"]:
        r = docs.get(path, headers={"Host": "rebind.attacker.test:8000"})
        assert r.status_code == 403 and r.json()["code"] == "host_not_allowed", path


def test_docs_off_is_404(make_settings, dist: Path) -> None:
    with TestClient(create_app(make_settings(webui_dist=dist)), base_url=BASE_URL) as c:
        for path in DOCS_PATHS:
            r = c.get(path)
            assert r.status_code == 404, path
            assert r.json()["code"] == "not_found"


def test_docs_without_a_built_ui_say_so(make_settings, tmp_path: Path) -> None:
    settings = make_settings(api_docs=True, webui_dist=tmp_path / "nothing")
    with TestClient(create_app(settings), base_url=BASE_URL) as c:
        r = c.get("/api/docs")
        assert r.status_code == 200 and "npm run build" in r.text
        assert refs(r.text).scripts == []

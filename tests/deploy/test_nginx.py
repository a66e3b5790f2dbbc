"""packaging/nginx for real: nginx rendered from the shipped templates in front of a real `modeltrain serve`.

Covers the SPA and its caching, /api proxying, an unbuffered chat stream, gzip, HTTPS (TLS 1.2/1.3
only, strong ciphers, HSTS) with a throw-away certificate, and that the app honours X-Forwarded-For
and X-Forwarded-Proto only from the trusted proxy.
"""

from __future__ import annotations

import ssl
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.deploy.support import (
    Nginx,
    Proc,
    first_model_id,
    iter_sse,
    json_headers,
    make_dist,
    self_signed_cert,
    sign_in_admin,
    start_nginx,
    start_serve,
    wait_for,
)
from tests.fakes.fake_ollama import FakeOllama

REPLY = " ".join(f"word{i}" for i in range(40))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, Nginx, Nginx, FakeOllama, Path]]:
    """One app (SQLite) + one nginx with HTTP and HTTPS; the fake Ollama streams a token every 50 ms."""
    tmp = tmp_path_factory.mktemp("nginx")
    dist = make_dist(Path(__import__("tempfile").mkdtemp(prefix="modeltrain-dist-")))
    with FakeOllama(token_delay=0.05, reply=REPLY) as fake:
        app = start_serve(
            tmp / "data",
            None,
            tmp / "serve.log",
            MODELTRAIN_TRUSTED_PROXIES="127.0.0.1",
            MODELTRAIN_OLLAMA_URL=fake.url,
            MODELTRAIN_LOGIN_MAX_FAILURES="50",
        )
        cert, key = self_signed_cert(tmp)
        backend = [app.url.removeprefix("http://")]
        nginx = start_nginx(backend, dist)  # modeltrain.conf.template
        try:
            secure = start_nginx(backend, dist, tls=(cert, key))  # modeltrain-https.conf.template
        except BaseException:
            nginx.stop()
            raise
        try:
            yield app, nginx, secure, fake, tmp / "data"
        finally:
            secure.stop()
            nginx.stop()
            app.stop()
            import shutil

            shutil.rmtree(dist.parent, ignore_errors=True)


def test_spa_routes_index_and_hashed_assets(stack) -> None:
    _, nginx, _, _, _ = stack
    with httpx.Client(base_url=nginx.url) as c:
        for path in ("/", "/chat", "/settings/providers", "/c/1234/deep/link"):
            r = c.get(path)
            assert r.status_code == 200, path
            assert '<div id="app">' in r.text
            assert r.headers["cache-control"] == "no-cache"
            assert "script-src 'self'" in r.headers["content-security-policy"]
            assert r.headers["x-content-type-options"] == "nosniff"
            assert "strict-transport-security" not in r.headers  # plain HTTP: no HSTS
        asset = c.get("/assets/index-3f9a2c1b.js")
        assert asset.status_code == 200
        assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert "javascript" in asset.headers["content-type"]
        assert c.get("/assets/missing-0000.js").status_code == 404  # no SPA fallback for assets
        assert c.get("/metrics").status_code == 404  # scraped per instance, never through the proxy


def test_gzip_on_assets(stack) -> None:
    _, nginx, _, _, _ = stack
    with httpx.Client(base_url=nginx.url) as c:
        for path in ("/assets/index-3f9a2c1b.js", "/assets/index-77aa01ce.css"):
            raw = c.get(path, headers={"Accept-Encoding": "gzip"})
            assert raw.headers.get("content-encoding") == "gzip", path
            assert "Accept-Encoding" in raw.headers.get("vary", "")
            plain = c.get(path, headers={"Accept-Encoding": "identity"})
            assert "content-encoding" not in plain.headers
            assert raw.content == plain.content  # httpx decodes: same bytes
            with c.stream("GET", path, headers={"Accept-Encoding": "gzip"}) as wire:
                on_the_wire = sum(len(chunk) for chunk in wire.iter_raw())
            assert int(plain.headers["content-length"]) > 3 * on_the_wire


def test_api_is_proxied_with_the_app_headers(stack) -> None:
    _, nginx, _, _, _ = stack
    with httpx.Client(base_url=nginx.url) as c:
        r = c.get("/api/health")
        assert r.status_code == 200 and r.json() == {"status": "ok"}
        assert r.headers["cache-control"] == "no-store"  # the app's, not nginx's static policy
        assert "x-request-id" in r.headers
        r = c.get("/api/no-such-endpoint")
        assert r.status_code == 404 and r.headers["content-type"].startswith("application/json")
        # A Host the app does not know is refused by the app, proxy or not.
        assert c.get("/api/health", headers={"Host": "evil.example"}).status_code == 403


def test_chat_stream_is_not_buffered(stack) -> None:
    _, nginx, _, fake, _ = stack
    origin = nginx.url
    with httpx.Client(base_url=nginx.url, timeout=30) as c:
        token = sign_in_admin(c, origin)
        model = first_model_id(c, token)
        body = {"model": model, "content": "stream through nginx"}
        started = time.monotonic()
        with c.stream("POST", "/api/chat", json=body, headers=json_headers(origin, token)) as r:
            assert r.status_code == 200, r.read()
            assert r.headers["content-type"].startswith("text/event-stream")
            assert "content-encoding" not in r.headers
            events = iter_sse(r)
            first_delta_at = None
            upstream_busy_at_first_delta = None
            seen = []
            for name, _ in events:
                seen.append(name)
                if name == "delta" and first_delta_at is None:
                    first_delta_at = time.monotonic() - started
                    # Still generating upstream: the event was forwarded, not held until the end.
                    upstream_busy_at_first_delta = fake.active_streams
                if name in ("done", "error"):
                    break
            total = time.monotonic() - started
        assert seen[0] == "meta" and seen[-1] == "done", seen
        assert upstream_busy_at_first_delta and upstream_busy_at_first_delta >= 1
        assert first_delta_at is not None and first_delta_at < total / 2, (first_delta_at, total)


def test_v1_is_proxied_and_streamed_unbuffered(stack) -> None:
    _, nginx, _, fake, _ = stack
    origin = nginx.url
    with httpx.Client(base_url=nginx.url, timeout=30) as c:
        token = sign_in_admin(c, origin)
        r = c.post("/api/keys", json={"name": "nginx"}, headers=json_headers(origin, token))
        assert r.status_code == 201, r.text
        key = {"Authorization": f"Bearer {r.json()['key']}"}  # a program: no Origin, no cookie
        assert (
            c.get("/v1/nothing", headers=key).json()["error"]["code"] == "not_found"
        )  # the app's, not the SPA
        body = {"model": "llama3.2:latest", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        with c.stream("POST", "/v1/chat/completions", json=body, headers=key) as r:
            assert r.status_code == 200, r.read()
            assert r.headers["content-type"].startswith("text/event-stream")
            busy_at_first_chunk = None
            lines = []
            for line in r.iter_lines():
                if line.startswith("data: ") and busy_at_first_chunk is None:
                    busy_at_first_chunk = fake.active_streams
                lines.append(line)
        assert busy_at_first_chunk and busy_at_first_chunk >= 1  # forwarded while still generating
        assert [x for x in lines if x][-1] == "data: [DONE]"


def test_https_tls_versions_ciphers_and_hsts(stack) -> None:
    _, _, nginx, _, _ = stack
    cert = nginx.values["MODELTRAIN_TLS_CERT"]
    ctx = ssl.create_default_context(cafile=cert)
    with httpx.Client(base_url=nginx.https_url, verify=ctx) as c:
        r = c.get("/chat")
        assert r.status_code == 200 and '<div id="app">' in r.text
        assert r.headers["strict-transport-security"].startswith("max-age=63072000")
        r = c.get("/api/health")
        assert r.status_code == 200
        assert r.headers["strict-transport-security"].startswith("max-age=")
        # POST with the browser's https Origin: the app learns the scheme from the trusted proxy.
        token = sign_in_admin(c, nginx.https_url)
        me = c.get("/api/users/me", headers=json_headers(token=token))
        assert me.status_code == 200

    def handshake(min_v: ssl.TLSVersion, max_v: ssl.TLSVersion, ciphers: str | None = None) -> str:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cert)
        if ciphers:
            context.set_ciphers(ciphers)
        context.minimum_version, context.maximum_version = min_v, max_v
        import socket

        with (
            socket.create_connection(("127.0.0.1", nginx.https_port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            return f"{tls.version()} {tls.cipher()[0]}"

    assert handshake(ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_3).startswith("TLSv1.3")
    negotiated = handshake(ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2)
    assert negotiated.startswith("TLSv1.2 ECDHE-") and ("GCM" in negotiated or "CHACHA20" in negotiated)
    # Old protocols and weak suites are refused by the server (the client is made willing to use them).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(ssl.SSLError):
            handshake(ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1, "DEFAULT:@SECLEVEL=0")
    for weak in ("AES128-SHA", "ECDHE-ECDSA-AES128-SHA", "AES256-GCM-SHA384"):
        with pytest.raises(ssl.SSLError):
            handshake(ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2, f"{weak}:@SECLEVEL=0")
    # Port 80 sends browsers to HTTPS.
    r = httpx.get(f"{nginx.url}/chat?x=1", follow_redirects=False)
    assert r.status_code == 301 and r.headers["location"] == "https://127.0.0.1/chat?x=1"


def _throttle_keys(data_dir: Path) -> set[str]:
    engine = create_engine(f"sqlite:///{data_dir / 'modeltrain.db'}")
    try:
        with engine.connect() as conn:
            return {row[0] for row in conn.execute(text("SELECT key FROM login_throttles"))}
    finally:
        engine.dispose()


def _failed_login(base_url: str, source: str, **headers: str) -> None:
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(base_url=base_url, transport=transport) as c:
        email = f"nobody-{uuid.uuid4().hex[:8]}@example.com"
        r = c.post(
            "/api/auth/login",
            json={"email": email, "password": "wrong-password-1"},
            headers={"Content-Type": "application/json", **headers},
        )
        assert r.status_code == 401, r.text


def test_forwarded_for_is_honoured_only_from_the_trusted_proxy(stack) -> None:
    app, nginx, _, _, data_dir = stack
    # Through nginx from 127.0.0.5: the app sees the real client, even if the client forges a header.
    _failed_login(nginx.url, "127.0.0.5")
    _failed_login(nginx.url, "127.0.0.7", **{"X-Forwarded-For": "10.9.9.9", "X-Real-IP": "10.9.9.9"})
    # Straight to the app from 127.0.0.6 (not a trusted proxy) with a forged header: ignored.
    _failed_login(app.url, "127.0.0.6", **{"X-Forwarded-For": "10.1.2.3"})
    keys = wait_for(
        lambda: (k := _throttle_keys(data_dir)) >= {"ip:127.0.0.5", "ip:127.0.0.7", "ip:127.0.0.6"} and k
    )
    assert "ip:10.9.9.9" not in keys and "ip:10.1.2.3" not in keys
    assert "ip:127.0.0.1" not in keys  # nginx's own address is never taken for the client
    access = data_dir / "logs" / "access.log"
    logged = wait_for(lambda: "client=127.0.0.5" in access.read_text() and access.read_text())
    assert (
        "client=127.0.0.6" in logged and "client=10.1.2.3" not in logged and "client=10.9.9.9" not in logged
    )
    # A forged X-Forwarded-Proto from an untrusted peer does not make the app believe it is HTTPS:
    # the https Origin then does not match, and the unsafe request is refused.
    transport = httpx.HTTPTransport(local_address="127.0.0.6")
    with httpx.Client(base_url=app.url, transport=transport) as c:
        port = app.url.rsplit(":", 1)[1]
        r = c.post(
            "/api/auth/login",
            json={"email": "a@example.com", "password": "x" * 12},
            headers={
                "Origin": f"https://127.0.0.1:{port}",
                "X-Forwarded-Proto": "https",
                "Content-Type": "application/json",
            },
        )
        assert r.status_code == 403 and r.json()["code"] == "origin_not_allowed"

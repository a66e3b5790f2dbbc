"""Real deployment pieces for the deploy tests: `modeltrain serve` / gunicorn processes, a rendered nginx,
sign-in helpers and an SSE reader. Every process is started on free loopback ports and stopped again."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
PACKAGING = REPO / "packaging"
PY = sys.executable
SECRET_KEY = "deploy-test-secret-" + "Qm7Zp2Lx9Vt4Rk8Ws3Yd6Fh1Jb5Nc0Ga"
INITIAL_PASSWORD = "initial-Deploy-pass-7"
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "deploy-correct-horse-battery"

NGINX_VARS = (
    "MODELTRAIN_WEBUI_DIST",
    "MODELTRAIN_NGINX_DIR",
    "MODELTRAIN_SERVER_NAME",
    "MODELTRAIN_HTTP_PORT",
    "MODELTRAIN_HTTPS_PORT",
    "MODELTRAIN_BACKENDS",
    "MODELTRAIN_TLS_CERT",
    "MODELTRAIN_TLS_KEY",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Bounded polling: the first truthy value of ``predicate()``, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except (OSError, httpx.HTTPError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        time.sleep(interval)


def base_env(data_dir: Path, database_url: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELTRAIN_", "GUNICORN_"))}
    for k in (
        "DATABASE_URL",
        "SECRET_KEY",
        "CORS_ORIGINS",
        "LOG_LEVEL",
        "INITIAL_ADMIN_PASSWORD",
        "OLLAMA_HOST",
    ):
        env.pop(k, None)
    env.update(
        {
            "MODELTRAIN_DATA_DIR": str(data_dir),
            "SECRET_KEY": SECRET_KEY,
            "INITIAL_ADMIN_PASSWORD": INITIAL_PASSWORD,
            "MODELTRAIN_BACKUP_SCHEDULE": "off",
            "MODELTRAIN_OLLAMA_URL": "http://127.0.0.1:9",  # nothing: tests that need Ollama pass a fake
            "PYTHONUNBUFFERED": "1",
        }
    )
    if database_url:
        env["DATABASE_URL"] = database_url
    env.update(extra)
    return env


@dataclass
class Proc:
    """A child process with its output in a file; ``stop()`` sends SIGTERM, then SIGKILL."""

    popen: subprocess.Popen
    log: Path
    url: str = ""

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, timeout: float = 20.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        return self.popen.returncode


def spawn(args: list[str], env: Mapping[str, str], log: Path, cwd: Path = REPO) -> Proc:
    fh = open(log, "wb")  # noqa: SIM115 - closed with the process
    try:
        popen = subprocess.Popen(
            args, env=dict(env), cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    finally:
        fh.close()
    return Proc(popen, log)


def wait_healthy(proc: Proc, url: str, timeout: float = 60.0) -> None:
    def ok() -> bool:
        if proc.popen.poll() is not None:
            raise AssertionError(f"process exited with {proc.popen.returncode}:\n{proc.output()[-4000:]}")
        return httpx.get(f"{url}/api/health", timeout=2).status_code == 200

    wait_for(ok, timeout)


def start_serve(data_dir: Path, database_url: str | None, log: Path, **env: str) -> Proc:
    """`python -m server serve` on a free port, healthy."""
    port = free_port()
    proc = spawn(
        [PY, "-m", "server", "serve", "--port", str(port)], base_env(data_dir, database_url, **env), log
    )
    proc.url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, proc.url)
    except BaseException:
        proc.stop()
        raise
    return proc


def gunicorn_command(bind: str, workers: int) -> list[str]:
    """The backend image's entry command (packaging/docker/Dockerfile.backend), with our interpreter."""
    return [
        PY,
        "-m",
        "gunicorn",
        "-c",
        str(PACKAGING / "gunicorn" / "gunicorn.conf.py"),
        "--bind",
        bind,
        "--workers",
        str(workers),
        "server.asgi:app()",
    ]


def start_gunicorn(data_dir: Path, database_url: str | None, log: Path, workers: int = 2, **env: str) -> Proc:
    port = free_port()
    proc = spawn(gunicorn_command(f"127.0.0.1:{port}", workers), base_env(data_dir, database_url, **env), log)
    proc.url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, proc.url, timeout=90)
    except BaseException:
        proc.stop()
        raise
    return proc


# --- web UI fixture --------------------------------------------------------------------------------------


def make_dist(root: Path) -> Path:
    """A built-looking web UI: index.html and fingerprinted assets (big enough for gzip)."""
    dist = root / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text(
        '<!doctype html><html><head><meta charset="utf-8"><title>ModelTrain</title>'
        '<script type="module" src="/assets/index-3f9a2c1b.js"></script></head>'
        '<body><div id="app"></div></body></html>\n'
    )
    js = "".join(f"export const value{i} = {{ id: {i}, label: 'item number {i}' }};\n" for i in range(800))
    (dist / "assets" / "index-3f9a2c1b.js").write_text(js)
    (dist / "assets" / "index-77aa01ce.css").write_text("body { margin: 0 }\n" * 400)
    for path in (root, dist, dist / "assets"):
        path.chmod(0o755)
    return dist


# --- nginx -----------------------------------------------------------------------------------------------


def render(template: Path, values: Mapping[str, str]) -> str:
    """envsubst with an explicit variable list: only ${MODELTRAIN_*} names are replaced."""
    text = template.read_text()

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        return values[name] if name in values else match.group(0)

    return re.sub(r"\$\{(MODELTRAIN_[A-Z_]+)\}", sub, text)


@dataclass
class Nginx:
    root: Path
    http_port: int
    https_port: int | None
    proc: Proc | None = None
    values: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def start_nginx(backends: list[str], dist: Path, *, tls: tuple[Path, Path] | None = None) -> Nginx:
    """Render packaging/nginx into a private prefix and run nginx in the foreground."""
    nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
    root = Path(tempfile.mkdtemp(prefix="modeltrain-nginx-"))
    conf_dir = root / "conf"
    conf_dir.mkdir()
    for sub in ("logs", "tmp"):
        (root / sub).mkdir()
    http_port, https_port = free_port(), (free_port() if tls else None)
    values = {
        "MODELTRAIN_WEBUI_DIST": str(dist),
        "MODELTRAIN_NGINX_DIR": str(conf_dir),
        "MODELTRAIN_SERVER_NAME": "127.0.0.1 localhost",
        "MODELTRAIN_HTTP_PORT": f"127.0.0.1:{http_port}",
        "MODELTRAIN_HTTPS_PORT": f"127.0.0.1:{https_port}" if https_port else "",
        "MODELTRAIN_BACKENDS": " ".join(f"server {b};" for b in backends),
        "MODELTRAIN_TLS_CERT": str(tls[0]) if tls else "",
        "MODELTRAIN_TLS_KEY": str(tls[1]) if tls else "",
    }
    site = "modeltrain-https.conf.template" if tls else "modeltrain.conf.template"
    (conf_dir / "modeltrain.conf").write_text(render(PACKAGING / "nginx" / site, values))
    (conf_dir / "modeltrain-locations.conf").write_text(
        render(PACKAGING / "nginx" / "modeltrain-locations.conf.template", values)
    )
    shutil.copy(PACKAGING / "nginx" / "modeltrain-headers.conf", conf_dir / "modeltrain-headers.conf")
    # The main file Debian ships is /etc/nginx/nginx.conf; ours is a minimal equivalent. Tests keep
    # everything in private temp directories, so the workers run as the invoking user.
    user = "user root root;" if os.geteuid() == 0 else ""
    tmp = root / "tmp"
    (conf_dir / "nginx.conf").write_text(
        f"""{user}
worker_processes 2;
daemon off;
pid {root}/nginx.pid;
error_log {root}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    sendfile on;
    access_log {root}/logs/access.log;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {conf_dir}/modeltrain.conf;
}}
"""
    )
    check = subprocess.run(
        [nginx_bin, "-t", "-p", str(root), "-c", str(conf_dir / "nginx.conf")],
        capture_output=True,
        text=True,
        check=False,
    )
    if check.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise AssertionError(f"nginx -t failed:\n{check.stderr}")
    server = Nginx(root, http_port, https_port, values=values)
    server.proc = spawn(
        [nginx_bin, "-p", str(root), "-c", str(conf_dir / "nginx.conf")],
        os.environ,
        root / "logs" / "stdout.log",
    )
    try:

        def listening() -> bool:
            if server.proc.popen.poll() is not None:
                raise AssertionError(f"nginx exited:\n{(root / 'logs' / 'error.log').read_text()}")
            with socket.create_connection(("127.0.0.1", http_port), timeout=1):
                return True

        wait_for(listening, 15)
    except BaseException:
        server.stop()
        raise
    return server


def self_signed_cert(directory: Path, name: str = "127.0.0.1") -> tuple[Path, Path]:
    """A throw-away certificate made by openssl (EC P-256, SAN for 127.0.0.1 and localhost)."""
    cert, key = directory / "fullchain.pem", directory / "privkey.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={name}",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


# --- API helpers -----------------------------------------------------------------------------------------


def json_headers(origin: str | None = None, token: str | None = None) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if origin:
        headers["Origin"] = origin
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def sign_in_admin(client: httpx.Client, origin: str | None = None) -> str:
    """Sign in as the first admin, replacing the initial password on first use; returns an access token."""
    r = client.post(
        "/api/auth/login",
        json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
        headers=json_headers(origin),
    )
    if r.status_code == 200:
        return r.json()["access_token"]
    r = client.post(
        "/api/auth/login",
        json={"email": ADMIN_EMAIL, "password": INITIAL_PASSWORD},
        headers=json_headers(origin),
    )
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    r = client.post(
        "/api/auth/password",
        json={"current_password": INITIAL_PASSWORD, "new_password": ADMIN_PASSWORD},
        headers=json_headers(origin, token),
    )
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def first_model_id(client: httpx.Client, token: str) -> str:
    def found() -> str | None:
        r = client.get("/api/models", headers=json_headers(token=token))
        items = r.json().get("items", []) if r.status_code == 200 else []
        ollama = [
            m
            for m in items
            if str(m.get("id", "")).startswith("ollama") and "completion" in m.get("capabilities", [])
        ]
        return ollama[0]["id"] if ollama else None

    return wait_for(found, 20, 0.2)


def iter_sse(response: httpx.Response) -> Iterator[tuple[str, Any]]:
    """(event, data) pairs as they arrive; comments skipped."""
    name, data = "", []
    for line in response.iter_lines():
        if line == "":
            if data:
                text = "\n".join(data)
                try:
                    value: Any = json.loads(text)
                except ValueError:
                    value = text
                yield name or "message", value
            name, data = "", []
        elif line.startswith(":"):
            continue
        else:
            key, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if key == "event":
                name = value
            elif key == "data":
                data.append(value)

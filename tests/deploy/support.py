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


# --- a service user's view of the machine ----------------------------------------------------------------

#: What systemd's ProtectHome=yes makes empty.
PROTECTED_HOMES = ("/home", "/root", "/run/user")


@dataclass
class ServiceView:
    """The filesystem and identity a hardened service runs with, built with bubblewrap + setpriv.

    Like systemd's ``ProtectSystem=strict`` + ``ProtectHome=yes`` + ``PrivateTmp=yes`` +
    ``PrivateDevices=yes`` + ``ReadWritePaths=``, and like a container's non-root ``USER``: the whole system
    read-only, the homes empty, a private /tmp and /dev, only ``writable`` paths writable (each a host
    directory mounted at the service's own path, owned by ``uid`` with mode 0700), and the process itself
    running as ``uid`` with no capabilities and no way to regain privileges. The interpreter and this
    checkout are mounted back read-only when they live under a hidden home or /tmp (a developer's
    machine, a CI checkout). No D-Bus session and no keyring daemon are reachable, as for a real service user.
    """

    uid: int
    writable: Mapping[str, Path]
    workdir: str

    def command(self, argv: list[str]) -> list[str]:
        bwrap = shutil.which("bwrap")
        assert bwrap, "install bubblewrap (.ci/apt-packages.txt)"
        assert os.geteuid() == 0, "the service-user tests change user: run them as root, as CI does"
        args = [
            bwrap,
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--perms",
            "1777",
            "--tmpfs",
            "/tmp",
        ]
        for hidden in PROTECTED_HOMES:
            if Path(hidden).is_dir():
                args += ["--tmpfs", hidden]
        hidden = (*PROTECTED_HOMES, "/tmp")
        for keep in sorted({Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), REPO}):
            if any(keep.is_relative_to(h) for h in hidden):
                args += ["--ro-bind", str(keep), str(keep)]
        # Room for mount points that do not exist on this machine (e.g. /var/lib/modeltrain): a tmpfs on
        # their parent, once per parent, before any bind below it.
        parents = {str(Path(t).parent) for t in self.writable if not Path(t).exists()}
        for parent in sorted(parents):
            assert parent != "/", f"cannot make a mount point for {parent!r} on the read-only root"
            args += ["--tmpfs", parent]
        for target, source in self.writable.items():
            source.mkdir(parents=True, exist_ok=True)
            os.chown(source, self.uid, self.uid)
            source.chmod(0o700)
            args += ["--bind", str(source), target]
        args += ["--unshare-pid", "--unshare-ipc", "--die-with-parent", "--chdir", self.workdir, "--"]
        setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
        ids = [f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups"]
        return [*args, setpriv, *ids, "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", *argv]

    def spawn(self, argv: list[str], env: Mapping[str, str], log: Path) -> Proc:
        clean = {k: v for k, v in env.items() if not k.startswith(("DBUS_", "XDG_", "PYTHON_KEYRING"))}
        return SandboxedProc(spawn(self.command(argv), clean, log, cwd=REPO).popen, log)

    def start(self, argv: list[str], env: Mapping[str, str], log: Path, port: int) -> Proc:
        """``spawn``, then wait until the server answers on ``port`` (stopped again if it never does)."""
        proc = self.spawn(argv, env, log)
        proc.url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(proc, proc.url, timeout=90)
        except BaseException:
            proc.stop()
            raise
        return proc


class SandboxedProc(Proc):
    """``stop()`` sends SIGTERM to the service's own main process, as systemd and Docker do (bubblewrap does
    not forward signals), then waits for the sandbox to exit."""

    def stop(self, timeout: float = 20.0) -> int:
        import psutil

        if self.popen.poll() is None:
            try:
                main = [
                    p
                    for p in psutil.Process(self.popen.pid).children(recursive=True)
                    if p.name() != "bwrap" and (parent := p.parent()) is not None and parent.name() == "bwrap"
                ]
                main[0].send_signal(signal.SIGTERM)
            except (psutil.NoSuchProcess, IndexError):
                return super().stop(timeout)
            try:
                return self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        return super().stop(timeout)


def provider_key_survives_a_restart(start: Callable[[], Proc], data_dir: Path, log_dir: Path) -> str:
    """Save an OpenAI-compatible provider's API key on a server with no keyring, restart it, chat through the
    provider: the key was kept (encrypted, in the data directory) and is sent upstream. Returns the
    provider's id. ``start`` starts the server healthy; ``data_dir``/``log_dir`` are its directories as
    seen from this machine."""
    from tests.fakes.fake_openai import FakeOpenAI

    key = "sk-service-user-" + "Vq3Lm8Xz2Rt7Wp4N"
    with FakeOpenAI(api_key=key, models=("remote-model",), reply="kept across the restart") as fake:
        proc = start()
        try:
            with httpx.Client(base_url=proc.url, timeout=30) as client:
                token = sign_in_admin(client)
                r = client.post(
                    "/api/providers",
                    json={"name": "Remote", "kind": "openai", "base_url": fake.url, "api_key": key},
                    headers=json_headers(token=token),
                )
                assert r.status_code == 201, r.text
                provider_id = r.json()["id"]
        finally:
            assert proc.stop() == 0, proc.output()[-3000:]
        secrets = data_dir / "secrets.enc.json"
        assert secrets.is_file(), sorted(p.name for p in data_dir.iterdir())
        assert (secrets.stat().st_mode & 0o777) == 0o600
        assert ((data_dir / "secrets.key").stat().st_mode & 0o777) == 0o600
        for path in [*data_dir.rglob("*"), *log_dir.rglob("*")]:
            if path.is_file():
                assert key.encode() not in path.read_bytes(), f"the key is in clear in {path}"
        proc = start()
        try:
            with httpx.Client(base_url=proc.url, timeout=30) as client:
                token = sign_in_admin(client)
                with client.stream(
                    "POST",
                    "/api/chat",
                    json={"model": f"openai:{provider_id}:remote-model", "content": "still there?"},
                    headers=json_headers(token=token),
                ) as r:
                    assert r.status_code == 200, r.read()
                    name, data = next(e for e in iter_sse(r) if e[0] in ("done", "error"))
                assert name == "done", data
                assert data["message"]["content"] == "kept across the restart"
        finally:
            assert proc.stop() == 0, proc.output()[-3000:]
        assert ("POST", "/v1/chat/completions") in fake.requests
    return provider_id

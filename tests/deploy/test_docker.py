"""packaging/docker: the compose file validates with the compose CLI, every file the Dockerfiles copy exists,
and the backend image's entry command (its CMD, run directly on this machine against PostgreSQL with the
compose file's environment) serves /api/health, also as the image's user with only its volumes writable.
No Docker engine runs here."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import yaml
from sqlalchemy import create_engine, text

from tests.deploy.support import (
    INITIAL_PASSWORD,
    PACKAGING,
    PY,
    REPO,
    Proc,
    ServiceView,
    free_port,
    provider_key_survives_a_restart,
    spawn,
    wait_healthy,
)

DOCKER = PACKAGING / "docker"
SECRETS = {
    "MODELTRAIN_DB_PASSWORD": "db-password-for-the-test",
    "MODELTRAIN_SECRET_KEY": "k" * 8 + "Zq3Lm8Vx2Rt7Wp4Ny6Hb1Jc5Gd9Fk0Sa",
}


def compose_cli() -> list[str]:
    """`docker compose` (the plugin) when present, else Debian's `docker-compose` (v1.29)."""
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0
    ):
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    assert legacy, "install the docker compose plugin or Debian's docker-compose package"
    return [legacy]


def _compose(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    import os

    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MODELTRAIN_")}
    full_env.update(env or {})
    return subprocess.run(
        [*compose_cli(), "-f", str(DOCKER / "compose.yaml"), *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=REPO,
        check=False,
    )


def test_compose_config_validates() -> None:
    result = _compose("config", env=SECRETS)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    services = config["services"]
    assert set(services) == {"db", "backend", "web", "ollama"}
    assert services["ollama"]["profiles"] == ["ollama"]
    for name in ("db", "backend", "web", "ollama"):
        assert services[name]["healthcheck"]["test"], name
    assert services["backend"]["depends_on"]["db"]["condition"] == "service_healthy"
    assert services["web"]["depends_on"]["backend"]["condition"] == "service_healthy"
    backend_env = services["backend"]["environment"]
    assert backend_env["DATABASE_URL"].startswith("postgresql://modeltrain:db-password-for-the-test@db:5432/")
    assert "ports" not in services["backend"] and "ports" not in services["db"]  # only nginx is published
    assert {"pgdata", "data", "backups", "logs", "ollama"} <= set(config["volumes"])
    profiles = _compose("config", "--profiles", env=SECRETS)
    assert profiles.returncode == 0 and profiles.stdout.split() == ["ollama"]


def test_compose_refuses_to_run_without_secrets() -> None:
    result = _compose("config")
    assert result.returncode != 0
    assert "MODELTRAIN_DB_PASSWORD" in result.stderr or "MODELTRAIN_SECRET_KEY" in result.stderr


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfiles_copy_files_that_exist_and_run_as_non_root() -> None:
    for name in ("Dockerfile.backend", "Dockerfile.web"):
        for word, rest in _instructions(DOCKER / name):
            if word == "COPY" and not rest.startswith("--from"):
                for source in rest.split()[:-1]:
                    assert (REPO / source).exists(), f"{name}: COPY {source} does not exist"
    backend = {w: r for w, r in _instructions(DOCKER / "Dockerfile.backend") if w in ("USER", "CMD")}
    assert backend["USER"] == "modeltrain"
    web = _instructions(DOCKER / "Dockerfile.web")
    assert any(w == "COPY" and "webui/dist" in r for w, r in web)


def _image_env(dockerfile: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in _instructions(dockerfile):
        if word == "ENV":
            for key, value in re.findall(r'(\w+)=("[^"]*"|\S+)', rest):
                env[key] = value.strip('"')
    return env


def _backend_env(dirs: dict[str, Path], pg_url: str, port: int) -> dict[str, str]:
    """The image's environment plus the compose file's, with the database and port of this machine."""
    env = _image_env(DOCKER / "Dockerfile.backend")
    for key in ("MODELTRAIN_DATA_DIR", "MODELTRAIN_BACKUP_DIR", "MODELTRAIN_LOG_DIR"):
        env[key] = str(dirs.get(env[key], env[key]))
    config = yaml.safe_load(_compose("config", env=SECRETS).stdout)
    compose_env = config["services"]["backend"]["environment"]
    env.update(
        {k: str(v) for k, v in compose_env.items() if k not in ("DATABASE_URL", "MODELTRAIN_OLLAMA_URL")}
    )
    env.update(
        {
            "DATABASE_URL": pg_url,
            "MODELTRAIN_OLLAMA_URL": "http://127.0.0.1:9",
            "GUNICORN_BIND": f"127.0.0.1:{port}",  # the image binds 0.0.0.0:8000 inside its own network
            "GUNICORN_WORKERS": "2",
            "MODELTRAIN_BACKUP_SCHEDULE": "off",
            "PATH": os.environ["PATH"],
        }
    )
    return env


def _backend_command() -> list[str]:
    cmd = json.loads(dict(_instructions(DOCKER / "Dockerfile.backend"))["CMD"])
    assert cmd[0] == "gunicorn"
    return [PY, "-m", "gunicorn", *[a.replace("/app/", f"{REPO}/") for a in cmd[1:]]]


def test_backend_entry_command_serves_health(tmp_path: Path, pg_url: str) -> None:
    """CMD of Dockerfile.backend with /app = this checkout and the image's paths under tmp_path."""
    dirs = {
        path: tmp_path / path.strip("/").replace("/", "_")
        for path in ("/var/lib/modeltrain", "/var/lib/modeltrain-backups", "/var/log/modeltrain")
    }
    port = free_port()
    env = {**_backend_env(dirs, pg_url, port), "HOME": str(tmp_path)}
    proc = spawn(_backend_command(), env, tmp_path / "gunicorn.log", cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, url, timeout=90)
        r = httpx.get(f"{url}/api/health")
        assert r.json() == {"status": "ok"}
        output = proc.output()
        assert "Using worker: server.gunicorn_worker.Worker" in output and output.count("Booting worker") == 2
        assert (Path(env["MODELTRAIN_LOG_DIR"]) / "app.log").is_file()
    finally:
        assert proc.stop() == 0, proc.output()[-3000:]


def test_the_image_user_keeps_provider_keys_without_a_keyring(tmp_path: Path, pg_url: str) -> None:
    """The image's user layout: uid 10001 with its home in the data volume, the volumes the only writable
    paths, the rest read-only, no keyring. Provider keys go to the encrypted file in the data volume,
    survive a restart of the container's command and reach the provider; the database holds no key."""
    (useradd,) = [r for w, r in _instructions(DOCKER / "Dockerfile.backend") if w == "RUN" and "useradd" in r]
    uid = int(re.search(r"useradd [^&]*--uid (\d+)", useradd).group(1))  # type: ignore[union-attr]
    home = re.search(r"useradd [^&]*--home-dir (\S+)", useradd).group(1)  # type: ignore[union-attr]
    (volumes,) = [json.loads(r) for w, r in _instructions(DOCKER / "Dockerfile.backend") if w == "VOLUME"]
    dirs = {path: tmp_path / path.strip("/").replace("/", "_") for path in volumes}
    port = free_port()
    env = {**_backend_env(dirs, pg_url, port), "HOME": home, "INITIAL_ADMIN_PASSWORD": INITIAL_PASSWORD}
    # In the image the data directory is the volume itself, not this machine's directory behind it.
    for key in ("MODELTRAIN_DATA_DIR", "MODELTRAIN_BACKUP_DIR", "MODELTRAIN_LOG_DIR"):
        env[key] = _image_env(DOCKER / "Dockerfile.backend")[key]
    view = ServiceView(uid=uid, writable=dirs, workdir=str(REPO))  # WORKDIR /app = this checkout
    runs = iter(range(1, 3))

    def start() -> Proc:
        return view.start(_backend_command(), env, tmp_path / f"container-{next(runs)}.log", port)

    provider_id = provider_key_survives_a_restart(start, dirs[home], dirs["/var/log/modeltrain"])
    engine = create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            row = conn.execute(text("SELECT * FROM providers WHERE id = :id"), {"id": provider_id}).one()
    finally:
        engine.dispose()
    assert not any("sk-service-user" in str(value) for value in row)

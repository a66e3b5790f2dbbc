"""packaging/systemd/modeltrain.service: `systemd-analyze verify` and the offline security score, on a copy
whose paths point at this checkout (verify checks that ExecStart exists); and the unit's ExecStart run with
its example environment file, under its filesystem hardening, as a service user without a keyring."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from tests.deploy.support import (
    INITIAL_PASSWORD,
    PACKAGING,
    REPO,
    SECRET_KEY,
    Proc,
    ServiceView,
    free_port,
    provider_key_survives_a_restart,
)

UNIT = PACKAGING / "systemd" / "modeltrain.service"
#: The service user: a system uid with no account on this machine (no home, no keyring, no D-Bus).
SERVICE_UID = 990
ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"


def _rendered(tmp_path: Path, text: str | None = None) -> Path:
    gunicorn = Path(
        shutil.which("gunicorn", path=str(REPO / ".venv" / "bin")) or REPO / ".venv" / "bin" / "gunicorn"
    )
    text = text if text is not None else UNIT.read_text()
    text = text.replace("/opt/modeltrain/venv/bin/gunicorn", str(gunicorn)).replace(
        "/opt/modeltrain/src", str(REPO)
    )
    unit = tmp_path / "modeltrain.service"
    unit.write_text(text)
    return unit


def _verify(unit: Path) -> subprocess.CompletedProcess:
    return subprocess.run([ANALYZE, "verify", str(unit)], capture_output=True, text=True, check=False)


def test_unit_verifies_cleanly(tmp_path: Path) -> None:
    result = _verify(_rendered(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "" and result.stdout.strip() == ""


def test_verify_catches_mistakes(tmp_path: Path) -> None:
    """The check above is meaningful: a typo or a missing executable is reported."""
    bad = _rendered(tmp_path, UNIT.read_text().replace("Restart=on-failure", "Restart=sometimes"))
    assert "restart specifier" in _verify(bad).stderr
    missing = _rendered(
        tmp_path, UNIT.read_text().replace("/opt/modeltrain/venv/bin/gunicorn", "/nonexistent/gunicorn")
    )
    result = _verify(missing)
    assert result.returncode != 0 and "/nonexistent/gunicorn" in result.stderr


def test_unit_settings_and_hardening(tmp_path: Path) -> None:
    text = UNIT.read_text()
    for line in (
        "Restart=on-failure",
        "User=modeltrain",
        "WorkingDirectory=/var/lib/modeltrain",
        "EnvironmentFile=/etc/modeltrain/modeltrain.env",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "ReadWritePaths=/var/lib/modeltrain /var/lib/modeltrain-backups /var/log/modeltrain",
    ):
        assert re.search(rf"^{re.escape(line)}$", text, re.MULTILINE), line
    assert "gunicorn.conf.py server.asgi:app()" in text
    security = subprocess.run(
        [ANALYZE, "security", "--offline=true", str(_rendered(tmp_path))],
        capture_output=True,
        text=True,
        check=False,
    )
    score = re.search(r"Overall exposure level for modeltrain.service: ([\d.]+) (\w+)", security.stdout)
    assert score, security.stdout[-2000:] + security.stderr
    assert float(score.group(1)) <= 2.0, score.group(0)  # systemd calls <= 2 "OK"


def test_environment_example_names_real_settings() -> None:
    from server.settings import Settings

    known = {f"MODELTRAIN_{name.upper()}" for name in Settings.model_fields} | {
        "DATABASE_URL",
        "SECRET_KEY",
        "LOG_LEVEL",
        "CORS_ORIGINS",
        "GUNICORN_BIND",
        "GUNICORN_WORKERS",
    }
    names = re.findall(
        r"^#?([A-Z_]+)=", (PACKAGING / "systemd" / "modeltrain.env.example").read_text(), re.MULTILINE
    )
    assert names and set(names) <= known, set(names) - known


def _directives(name: str) -> list[str]:
    return re.findall(rf"^{name}=(.*)$", UNIT.read_text(), re.MULTILINE)


def test_the_hardened_service_keeps_provider_keys_without_a_keyring(tmp_path: Path) -> None:
    """The unit's own command, environment file, working directory, writable paths and hardening, as a
    system user whose home is the data directory: no keyring exists there, so provider keys go to the
    encrypted file store in the data directory, survive a restart and reach the provider."""
    env_file = dict(
        re.findall(
            r"^([A-Z_]+)=(.*)$", (PACKAGING / "systemd" / "modeltrain.env.example").read_text(), re.MULTILINE
        )
    )
    port = free_port()
    env = {
        **env_file,
        "PATH": os.environ["PATH"],
        "HOME": "/var/lib/modeltrain",  # the home `useradd --home-dir` gives the service user
        "DATABASE_URL": "sqlite:////var/lib/modeltrain/modeltrain.db",
        "SECRET_KEY": SECRET_KEY,
        "INITIAL_ADMIN_PASSWORD": INITIAL_PASSWORD,
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": "2",
        "MODELTRAIN_ALLOWED_HOSTS": "127.0.0.1",
        "MODELTRAIN_WEBUI_DIST": env_file["MODELTRAIN_WEBUI_DIST"].replace("/opt/modeltrain/src", str(REPO)),
    }
    assert env_file["MODELTRAIN_DATA_DIR"] == "/var/lib/modeltrain"
    (writable,) = _directives("ReadWritePaths")
    dirs = {path: tmp_path / path.strip("/").replace("/", "_") for path in writable.split()}
    (workdir,) = _directives("WorkingDirectory")
    view = ServiceView(uid=SERVICE_UID, writable=dirs, workdir=workdir)
    (exec_start,) = _directives("ExecStart")
    argv = [
        a.replace("/opt/modeltrain/venv/bin/gunicorn", str(REPO / ".venv" / "bin" / "gunicorn")).replace(
            "/opt/modeltrain/src", str(REPO)
        )
        for a in shlex.split(exec_start)
    ]
    runs = iter(range(1, 3))

    def start() -> Proc:
        return view.start(argv, env, tmp_path / f"service-{next(runs)}.log", port)

    provider_key_survives_a_restart(start, dirs["/var/lib/modeltrain"], dirs["/var/log/modeltrain"])
    # It ran as the service user: what it wrote belongs to that user, not to root.
    assert {p.stat().st_uid for p in dirs["/var/lib/modeltrain"].iterdir()} == {SERVICE_UID}

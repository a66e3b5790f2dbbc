"""packaging/systemd/modeltrain.service: `systemd-analyze verify` and the offline security score, on a copy
whose paths point at this checkout (verify checks that ExecStart exists)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from tests.deploy.support import PACKAGING, REPO

UNIT = PACKAGING / "systemd" / "modeltrain.service"
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

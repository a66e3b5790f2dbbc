"""packaging/logrotate/modeltrain with the app's MODELTRAIN_LOG_ROTATION=external: `logrotate -d` accepts the
config, and a real forced rotation moves the files away while the app keeps logging into fresh ones
(nothing lost, nothing written into the rotated file) and its log viewer still reads both."""

from __future__ import annotations

import getpass
import grp
import logging
import os
import shutil
import subprocess
from datetime import date
from pathlib import Path

from server.log_setup import ACCESS_LOGGER, configure_logging, read_log_lines, shutdown_logging
from server.settings import Settings
from tests.deploy.support import PACKAGING

CONFIG = PACKAGING / "logrotate" / "modeltrain"
LOGROTATE = shutil.which("logrotate") or "/usr/sbin/logrotate"


def _rendered(tmp_path: Path, log_dir: Path) -> Path:
    user, group = getpass.getuser(), grp.getgrgid(os.getgid()).gr_name
    text = (
        CONFIG.read_text()
        .replace("/var/log/modeltrain", str(log_dir))
        .replace("modeltrain modeltrain", f"{user} {group}")
    )
    conf = tmp_path / "modeltrain.logrotate"
    conf.write_text(text)
    conf.chmod(0o644)
    return conf


def test_config_values() -> None:
    text = CONFIG.read_text()
    for directive in ("daily", "rotate 30", "compress", "delaycompress", "missingok", "dateext"):
        assert f"\n    {directive}\n" in text, directive
    assert "/var/log/modeltrain/*.log {" in text
    assert "copytruncate" not in text.split("{", 1)[1]  # the app reopens moved files instead


def test_logrotate_debug_run_accepts_the_config(tmp_path: Path) -> None:
    log_dir = tmp_path / "logs"
    log_dir.mkdir(mode=0o700)
    (log_dir / "app.log").write_text("x\n")
    result = subprocess.run(
        [LOGROTATE, "-d", "-s", str(tmp_path / "state"), str(_rendered(tmp_path, log_dir))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "error" not in result.stderr.lower(), result.stderr
    assert f"rotating pattern: {log_dir}/*.log" in result.stderr


def test_forced_rotation_with_the_app_logging(tmp_path: Path) -> None:
    log_dir = tmp_path / "logs"
    settings = Settings(data_dir=tmp_path / "data", log_dir=log_dir, log_rotation="external", _env_file=None)
    configure_logging(settings, console=False)
    app_log = logging.getLogger("server.deploytest")
    try:
        app_log.warning("before rotation")
        logging.getLogger(ACCESS_LOGGER).info("rid=1 method=GET path=/api/health status=200")
        result = subprocess.run(
            [LOGROTATE, "-f", "-s", str(tmp_path / "state"), str(_rendered(tmp_path, log_dir))],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        rotated = log_dir / f"app.log.{date.today():%Y-%m-%d}"
        assert rotated.is_file() and (log_dir / f"access.log.{date.today():%Y-%m-%d}").is_file()
        app_log.warning("after rotation")
        current = (log_dir / "app.log").read_text()
        assert "after rotation" in current and "before rotation" not in current
        assert "after rotation" not in rotated.read_text()
        assert (log_dir / "app.log").stat().st_mode & 0o777 == 0o600
        messages = [r["message"] for r in read_log_lines(log_dir, q="rotation")]
        assert messages == ["before rotation", "after rotation"]
    finally:
        shutdown_logging()

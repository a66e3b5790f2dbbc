"""``modeltrain doctor`` on a broken setup (bad config, port taken, locked DB, no backups, no Ollama,
unwritable logs) and on a good one."""

from __future__ import annotations

import os
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.cli import main as cli_main
from server.services import doctor
from server.settings import Settings
from tests.fakes.fake_ollama import FakeOllama
from tests.server.ops_support import restore_logging

FAKE_OLLAMA_BIN = Path(__file__).resolve().parents[1] / "fakes" / "ollama"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def _undo_cli_logging() -> Iterator[None]:
    yield from restore_logging()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in list(os.environ):
        if key.startswith(("MODELTRAIN_", "OLLAMA_")) or key in (
            "DATABASE_URL",
            "SECRET_KEY",
            "LOG_LEVEL",
            "CORS_ORIGINS",
        ):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MODELTRAIN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MODELTRAIN_PORT", str(_free_port()))
    monkeypatch.setenv("MODELTRAIN_OLLAMA_BIN", str(tmp_path / "no-such-ollama"))
    monkeypatch.setenv("MODELTRAIN_OLLAMA_URL", f"http://127.0.0.1:{_free_port()}")
    return tmp_path


@pytest.fixture
def ollama(monkeypatch: pytest.MonkeyPatch, env: Path) -> Iterator[FakeOllama]:
    with FakeOllama() as fake:
        monkeypatch.setenv("MODELTRAIN_OLLAMA_URL", fake.url)
        yield fake


def results(**overrides) -> dict[str, doctor.Check]:
    return {c.name: c for c in doctor.run_checks(overrides)}


def _good_setup(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["migrate"]) == 0
    assert cli_main(["backup"]) == 0
    capsys.readouterr()


def test_a_good_setup_passes_every_check(ollama: FakeOllama, capsys: pytest.CaptureFixture[str]) -> None:
    _good_setup(capsys)
    assert cli_main(["doctor"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("[")]
    assert [line.split()[1] for line in lines] == [
        "config",
        "port",
        "database",
        "disk",
        "memory",
        "backups",
        "ollama",
        "logs",
        "deploy",
        "certs",
    ]
    assert all(line.startswith("[PASS]") for line in lines), out
    assert "all checks passed" in out


def test_bad_config_fails_with_the_fix_and_skips_the_rest(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://root@localhost/modeltrain")
    assert cli_main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] config" in out and "DATABASE_URL" in out and "fix: use sqlite:///PATH" in out
    assert out.count("[SKIP]") == 9


def test_port_taken_by_another_program(
    ollama: FakeOllama, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _good_setup(capsys)
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        monkeypatch.setenv("MODELTRAIN_PORT", str(other.getsockname()[1]))
        check = results()["port"]
        assert not check.ok and "in use" in check.detail and "MODELTRAIN_PORT" in check.fix
        assert cli_main(["doctor"]) == 1


def test_port_taken_by_our_own_running_server_passes(
    ollama: FakeOllama, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from server.embedded import EmbeddedServer

    _good_setup(capsys)
    settings = Settings(
        _env_file=None, data_dir=tmp_path / "data", backup_schedule="off", metrics_enabled=False
    )
    server = EmbeddedServer(settings)
    url = server.start()
    try:
        monkeypatch.setenv("MODELTRAIN_PORT", url.rsplit(":", 1)[1].strip("/"))
        check = results()["port"]
        assert check.ok and "running ModelTrain" in check.detail
    finally:
        server.stop()


def test_locked_database_fails(ollama: FakeOllama, capsys: pytest.CaptureFixture[str], env: Path) -> None:
    _good_setup(capsys)
    holder = sqlite3.connect(env / "data" / "modeltrain.db", isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        check = results()["database"]
        assert not check.ok and "locked" in check.detail and "stop it" in check.fix
        assert cli_main(["doctor"]) == 1
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert results()["database"].ok


def test_no_backups_and_stale_or_unverified_backups_fail(
    ollama: FakeOllama, env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from datetime import datetime, timedelta, timezone

    from server.services import backups

    assert cli_main(["migrate"]) == 0
    check = results()["backups"]
    assert not check.ok and "no backup" in check.detail and "modeltrain backup" in check.fix
    assert cli_main(["doctor"]) == 1
    settings = Settings(_env_file=None, data_dir=env / "data")
    old = backups.create_backup(settings, now=datetime.now(timezone.utc) - timedelta(days=3))
    check = results()["backups"]
    assert not check.ok and "h old" in check.detail
    fresh = backups.create_backup(settings)
    assert results()["backups"].ok
    store = backups.store_for(settings)
    info = store.get(fresh.id)
    info.verified, info.verify_error = False, "checksum mismatch"
    store.save(info)
    check = results()["backups"]
    assert not check.ok and "failed verification" in check.detail
    assert old.id


def test_ollama_missing_or_not_running(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _good_setup(capsys)
    check = results()["ollama"]
    assert not check.ok and "not installed" in check.detail and "install Ollama" in check.fix
    monkeypatch.setenv("MODELTRAIN_OLLAMA_BIN", str(FAKE_OLLAMA_BIN))
    check = results()["ollama"]
    assert not check.ok and "not running" in check.detail and "ollama serve" in check.fix


def test_unwritable_log_dir_fails(
    ollama: FakeOllama, env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _good_setup(capsys)
    blocker = env / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("MODELTRAIN_LOG_DIR", str(blocker / "logs"))
    check = results()["logs"]
    assert not check.ok and "not writable" in check.detail and "MODELTRAIN_LOG_DIR" in check.fix
    assert cli_main(["doctor"]) == 1


def test_an_expiring_certificate_fails_doctor(
    ollama: FakeOllama, env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from datetime import datetime, timedelta, timezone

    from tests.server.services.test_certificates import write_cert

    _good_setup(capsys)
    cert = write_cert(env / "fullchain.pem", timedelta(days=5), datetime.now(timezone.utc))
    monkeypatch.setenv("MODELTRAIN_TLS_CERT_FILES", str(cert))
    assert cli_main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert f"[FAIL] certs     warning: {cert}: expires on" in out
    assert "certbot renew" in out


def test_deployed_setup_checks(make_settings, tmp_path: Path) -> None:
    ok = doctor.check_deployment(make_settings(), which=lambda tool: f"/usr/bin/{tool}")
    assert ok.ok and "127.0.0.1" in ok.detail

    exposed = doctor.check_deployment(make_settings(host="0.0.0.0"), which=lambda tool: None)
    assert not exposed.ok and "MODELTRAIN_ALLOWED_HOSTS" in exposed.fix
    named = doctor.check_deployment(make_settings(host="0.0.0.0", allowed_hosts="mt.example.org"))
    assert named.ok and "mt.example.org" in named.detail

    pg = make_settings(database_url="postgresql://mt@127.0.0.1/mt")
    no_tools = doctor.check_deployment(pg, which=lambda tool: None)
    assert not no_tools.ok and "pg_dump and pg_restore not found" in no_tools.detail
    assert doctor.check_deployment(pg, which=lambda tool: f"/usr/bin/{tool}").ok

    external = make_settings(log_rotation="external")
    missing = doctor.check_deployment(external, logrotate_config=tmp_path / "absent")
    assert not missing.ok and "logrotate" in missing.fix
    (tmp_path / "modeltrain").write_text("/var/log/modeltrain/*.log { daily }\n")
    assert doctor.check_deployment(external, logrotate_config=tmp_path / "modeltrain").ok

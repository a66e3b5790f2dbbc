from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from server.cli_support import fail, settings_from_args


def test_cli_never_enables_desktop_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELTRAIN_DESKTOP_MODE", "1")
    settings = settings_from_args(argparse.Namespace(host=None, port=None, data_dir=None))
    assert settings.desktop_mode is False


def test_command_line_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MODELTRAIN_PORT", "9100")
    monkeypatch.setenv("MODELTRAIN_HOST", "127.0.0.2")
    settings = settings_from_args(argparse.Namespace(host=None, port=9200, data_dir=str(tmp_path)))
    assert (settings.host, settings.port, Path(settings.data_dir)) == ("127.0.0.2", 9200, tmp_path)


def test_fail_prints_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert fail("invalid setting X") == 2
    assert fail("refused", 1) == 1
    assert capsys.readouterr().err == "modeltrain: error: invalid setting X\nmodeltrain: error: refused\n"

"""Settings: spec names, defaults, precedence, refusal of weak secrets with one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.settings import Settings, SettingsError, load_settings, ollama_host_to_url


def test_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in (
        "DATABASE_URL",
        "SECRET_KEY",
        "CORS_ORIGINS",
        "LOG_LEVEL",
        "MODELTRAIN_DATA_DIR",
        "OLLAMA_HOST",
    ):
        monkeypatch.delenv(name, raising=False)
    s = Settings()
    assert s.host == "127.0.0.1" and s.port == 8000
    assert s.access_token_expire == 30 and s.refresh_token_expire == 7
    assert s.cors_origins == [] and s.log_level == "INFO"
    assert s.resolved_database_url == f"sqlite:///{s.data_dir / 'modeltrain.db'}"
    assert "modeltrain" in str(s.data_dir)
    assert s.default_ollama_url == "http://127.0.0.1:11434"


def test_spec_names_and_modeltrain_prefix_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", "sqlite:////tmp/x.db")
    monkeypatch.setenv("CORS_ORIGINS", "http://localhost:5173, https://app.example.com")
    monkeypatch.setenv("ACCESS_TOKEN_EXPIRE", "15")
    monkeypatch.setenv("REFRESH_TOKEN_EXPIRE", "3")
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("MODELTRAIN_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("MODELTRAIN_PORT", "9001")
    s = Settings()
    assert s.resolved_database_url == "sqlite:////tmp/x.db"
    assert s.cors_origins == ["http://localhost:5173", "https://app.example.com"]
    assert (s.access_token_expire, s.refresh_token_expire, s.log_level) == (15, 3, "DEBUG")
    assert s.data_dir == tmp_path / "d" and s.port == 9001


def test_precedence_arguments_env_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MODELTRAIN_PORT", raising=False)
    (tmp_path / ".env").write_text("MODELTRAIN_PORT=7001\nLOG_LEVEL=WARNING\n")
    assert Settings().port == 7001
    monkeypatch.setenv("MODELTRAIN_PORT", "7002")
    assert Settings().port == 7002
    assert load_settings(port=7003).port == 7003
    assert Settings().log_level == "WARNING"


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("short-key", "too short"),
        ("changeme", "well-known"),
        ("a" * 64, "well-known or low-entropy"),
        ("随机生成的强密钥", "well-known"),
    ],
)
def test_weak_secret_is_refused_with_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, value: str, fragment: str
) -> None:
    monkeypatch.setenv("SECRET_KEY", value)
    with pytest.raises(SettingsError) as err:
        load_settings(_env_file=None)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("invalid setting SECRET_KEY:") and fragment in message and "fix:" in message


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
        ({"MODELTRAIN_PORT": "99999"}, "MODELTRAIN_PORT"),
        ({"ACCESS_TOKEN_EXPIRE": "-5"}, "ACCESS_TOKEN_EXPIRE"),
        ({"CORS_ORIGINS": "*"}, "CORS_ORIGINS"),
        ({"MODELTRAIN_ALLOWED_HOSTS": "*"}, "MODELTRAIN_ALLOWED_HOSTS"),
    ],
)
def test_bad_settings_name_the_setting(monkeypatch: pytest.MonkeyPatch, env: dict, name: str) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SettingsError) as err:
        load_settings(_env_file=None)
    assert f"invalid setting {name}:" in str(err.value)


@pytest.mark.parametrize(
    ("value", "url"),
    [
        ("0.0.0.0", "http://127.0.0.1:11434"),
        ("127.0.0.1:11500", "http://127.0.0.1:11500"),
        ("http://gpu-box:11434", "http://gpu-box:11434"),
        ("[::1]:9000", "http://[::1]:9000"),
        ("ollama.lan", "http://ollama.lan:11434"),
    ],
)
def test_ollama_host_grammar(value: str, url: str) -> None:
    assert ollama_host_to_url(value) == url


def test_ollama_variables_count_from_dotenv_too(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Ollama's own OLLAMA_HOST and OLLAMA_MODELS are settings like the others: a `.env` value counts."""
    monkeypatch.chdir(tmp_path)
    for name in ("OLLAMA_HOST", "OLLAMA_MODELS", "MODELTRAIN_OLLAMA_URL", "MODELTRAIN_OLLAMA_MODELS_DIR"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / ".env").write_text(f"OLLAMA_HOST=0.0.0.0:11500\nOLLAMA_MODELS={tmp_path / 'store'}\n")
    s = Settings(data_dir=tmp_path / "data")
    assert s.default_ollama_url == "http://127.0.0.1:11500"
    assert s.ollama_models_dir == tmp_path / "store"
    monkeypatch.setenv("MODELTRAIN_OLLAMA_MODELS_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("MODELTRAIN_OLLAMA_URL", "http://10.0.0.2:11434")
    s = Settings(data_dir=tmp_path / "data")
    assert s.ollama_models_dir == tmp_path / "mine" and s.default_ollama_url == "http://10.0.0.2:11434"

"""The generated settings reference (docs/settings.md) is complete and current."""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from server import settings_doc
from server.settings import Settings, env_names
from server.settings_doc import render_settings_reference

DOC = Path(__file__).resolve().parents[2] / "docs" / "settings.md"


def _rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("| `")]


def test_docs_settings_md_is_the_current_render() -> None:
    assert DOC.read_text(encoding="utf-8") == render_settings_reference(), (
        "docs/settings.md is stale: run `make regen-settings-doc` and commit the result"
    )


@pytest.mark.parametrize("name", list(Settings.model_fields))
def test_every_setting_has_a_row_with_its_environment_name_and_a_description(name: str) -> None:
    field = Settings.model_fields[name]
    assert (field.description or "").strip(), f"{name} needs a Field(description=...)"
    names = env_names(name)
    # Documented names are the ones pydantic-settings reads: the field's aliases, else MODELTRAIN_<NAME>.
    aliases = getattr(field.validation_alias, "choices", None)
    expected = (
        {a.upper() for a in aliases if isinstance(a, str)} if aliases else {f"MODELTRAIN_{name.upper()}"}
    )
    assert set(names) <= expected
    rows = [row for row in _rows(render_settings_reference()) if f"`{names[0]}`" in row.split(" | ")[0]]
    assert len(rows) == 1, f"{names[0]} must have exactly one row"
    assert all(f"`{n}`" in rows[0] for n in names)


def test_one_row_per_setting_and_nothing_else() -> None:
    assert len(_rows(render_settings_reference())) == len(Settings.model_fields)


def test_spec_names_aliases_and_defaults_are_rendered() -> None:
    rows = {row.split(" | ")[0]: row for row in _rows(render_settings_reference())}
    assert "| `DATABASE_URL`" in rows
    assert "| `INITIAL_ADMIN_PASSWORD` or `MODELTRAIN_INITIAL_ADMIN_PASSWORD`" in rows
    access = rows["| `ACCESS_TOKEN_EXPIRE`"]
    assert "integer (≥ 1, ≤ 1440)" in access
    assert "`30`" in access
    assert "`registry.ollama.ai,hf.co`" in rows["| `MODELTRAIN_OLLAMA_REGISTRIES`"]
    assert "one of `DEBUG`, `INFO`, `WARNING`, `ERROR`" in rows["| `LOG_LEVEL`"]


def test_the_render_does_not_depend_on_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    before = render_settings_reference()
    monkeypatch.setenv("MODELTRAIN_PORT", "9999")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert render_settings_reference() == before
    assert str(tmp_path) not in before


def test_main_writes_the_reference_to_stdout() -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        assert settings_doc.main() == 0
    assert out.getvalue() == render_settings_reference()

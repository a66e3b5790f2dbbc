"""The repo's own documents stay true: every test the security table names exists, every threat id and
protocol section the code cites is in docs/, and nothing points at documents outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
CODE_DIRS = ("server", "desktop", "tests", "bench", "packaging", "webui/src", "webui/e2e", "webui/scripts")
CODE_SUFFIXES = {".py", ".ts", ".vue", ".mjs", ".js", ".sh", ".conf", ".service", ".spec", ".toml", ".yml"}


def _code_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "Makefile", *sorted((ROOT / ".ci").iterdir())]
    for folder in CODE_DIRS:
        files += [p for p in sorted((ROOT / folder).rglob("*")) if p.suffix in CODE_SUFFIXES and p.is_file()]
    return [p for p in files if p.is_file() and "node_modules" not in p.parts]


def _test_references(text: str) -> list[tuple[str, str]]:
    """``path::name`` pairs; a bare ``::name`` continues the previous path (how the tables abbreviate)."""
    refs: list[tuple[str, str]] = []
    path = ""
    for match in re.finditer(r"`((?:tests|webui)/[^`:\s]+)?::([^`]+)`", text):
        path = match.group(1) or path
        refs.append((path, match.group(2)))
    return refs


def test_reference_parser_follows_abbreviations() -> None:
    text = "`tests/a.py::test_x`; `::test_y`; `webui/e2e/b.spec.ts::signs in`"
    assert _test_references(text) == [
        ("tests/a.py", "test_x"),
        ("tests/a.py", "test_y"),
        ("webui/e2e/b.spec.ts", "signs in"),
    ]


@pytest.mark.parametrize("doc", sorted(p.name for p in DOCS.glob("*.md")))
def test_named_tests_exist(doc: str) -> None:
    missing = _missing_tests((DOCS / doc).read_text(encoding="utf-8"))
    assert not missing, f"{doc} names tests that do not exist:\n" + "\n".join(missing)


def test_the_tests_readme_names_tests_that_exist() -> None:
    """tests/README.md maps the security test plan to the tests that cover it: each one it names exists."""
    text = (ROOT / "tests" / "README.md").read_text(encoding="utf-8")
    assert len(re.findall(r"^\| [A-G]\d \|", text, re.M)) == 40
    missing = _missing_tests(text)
    assert not missing, "tests/README.md names tests that do not exist:\n" + "\n".join(missing)


def _missing_tests(text: str) -> list[str]:
    missing = []
    for path, name in _test_references(text):
        source = ROOT / path
        name = name.split("[")[0].strip()
        if not source.is_file():
            missing.append(f"{path} (no such file)")
        elif path.endswith(".py"):
            if not re.search(rf"^\s*(async\s+)?def {re.escape(name)}\(", source.read_text(), re.M):
                missing.append(f"{path}::{name}")
        elif name not in source.read_text(encoding="utf-8"):
            missing.append(f"{path}::{name}")
    return missing


def test_cited_ids_exist_in_docs() -> None:
    security = (DOCS / "security.md").read_text(encoding="utf-8")
    protocols = (DOCS / "protocols.md").read_text(encoding="utf-8")
    threat_ids = set(re.findall(r"^\| ([A-G]\d) \|", security, re.M))
    sections = set(re.findall(r"^#{2,3} ([A-G](?:\.\d+)?)[. ]", protocols, re.M))
    unknown = []
    for path in _code_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for cited in re.findall(r"docs/security\.md,? ([A-G]\d)", text):
            if cited not in threat_ids:
                unknown.append(f"{path.relative_to(ROOT)}: security {cited}")
        for cited in re.findall(r"docs/protocols\.md,? §?([A-G](?:\.\d+)?)", text):
            if cited not in sections:
                unknown.append(f"{path.relative_to(ROOT)}: protocols {cited}")
    assert threat_ids and sections
    assert not unknown, "citations of ids that docs/ does not have:\n" + "\n".join(unknown)


def test_nothing_points_outside_the_repository() -> None:
    outside = re.compile(
        r'\.\./shared|ARCHITECTURE\.md|(?<![/\w"(\[])(?:security|protocols)\.md|\b[Ii]ssue \d+\b'
    )
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}"
        for path in [*_code_files(), *sorted(DOCS.glob("*.md"))]
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
        if outside.search(line)
    ]
    assert not found, "references a reader of the repository cannot open:\n" + "\n".join(found)

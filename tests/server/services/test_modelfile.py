"""Modelfile parsing (server/services/modelfile.py): the instructions it translates
into Ollama's structured /api/create fields, and the mistakes it refuses with the line they are on."""

from __future__ import annotations

import pytest

from server.errors import InvalidInput
from server.services.modelfile import parse_modelfile

DIGEST = "sha256:" + "ab" * 32


def test_a_full_modelfile_becomes_create_fields() -> None:
    spec = parse_modelfile(
        f"""# my helper
FROM qwen3:0.6b
PARAMETER temperature 0.2
PARAMETER num_ctx 8192
PARAMETER stop "<|im_end|>"
PARAMETER stop END
system You are terse.
TEMPLATE \"\"\"{{{{ .System }}}}
{{{{ .Prompt }}}}\"\"\"
ADAPTER {DIGEST.upper().replace("SHA256", "sha256")}
LICENSE MIT
MESSAGE user Hi
MESSAGE assistant Hello!
"""
    )
    assert spec.base == "qwen3:0.6b"
    assert spec.system == "You are terse."
    assert spec.template == "{{ .System }}\n{{ .Prompt }}"
    assert spec.parameters == {"temperature": 0.2, "num_ctx": 8192, "stop": ["<|im_end|>", "END"]}
    assert isinstance(spec.parameters["num_ctx"], int)
    assert spec.adapters == [DIGEST]
    assert spec.license == ["MIT"]
    assert spec.messages == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]


def test_multi_line_system_and_quoted_values() -> None:
    spec = parse_modelfile('FROM llama3.2\nSYSTEM """\nline one\nline two\n"""\nPARAMETER seed 42\n')
    assert spec.system == "\nline one\nline two\n"
    assert spec.parameters == {"seed": 42}
    assert parse_modelfile('FROM llama3.2\nSYSTEM "quoted"').system == "quoted"
    assert parse_modelfile("from llama3.2").parameters is None


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("SYSTEM hi", None, "FROM is missing"),
        ("# only a comment\n", None, "FROM is missing"),
        ("FROM a\nFROM b", 2, "more than once"),
        ("FROM llama3.2\nQUANTIZE q4", 2, "unknown instruction 'QUANTIZE'"),
        ("FROM llama3.2\n\nPARAMETER evil 1", 3, "unknown parameter 'evil'"),
        ("FROM llama3.2\nPARAMETER temperature hot", 2, "needs a number"),
        ("FROM llama3.2\nPARAMETER num_ctx 1.5", 2, "needs a whole number"),
        ("FROM llama3.2\nPARAMETER temperature", 2, "needs a name and a value"),
        ("FROM llama3.2\nADAPTER ./lora.gguf", 2, "ADAPTER takes the digest"),
        ("FROM llama3.2\nMESSAGE tool hi", 2, "MESSAGE needs a role"),
        ('FROM llama3.2\nSYSTEM """never closed', 2, "unterminated"),
        ('FROM llama3.2\nSYSTEM """a""" b', 2, "after closing"),
        ("FROM", 1, "FROM needs a model name"),
    ],
)
def test_bad_modelfiles_are_refused_with_the_line(text: str, line: int | None, words: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_modelfile(text)
    assert info.value.code == "invalid_modelfile"
    assert words in info.value.message
    assert info.value.detail.get("line") == line


def test_line_numbers_count_multi_line_values() -> None:
    with pytest.raises(InvalidInput) as info:
        parse_modelfile('FROM llama3.2\nSYSTEM """a\nb\nc"""\nBOGUS x')
    assert info.value.detail["line"] == 5

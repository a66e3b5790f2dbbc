"""The Ollama model-name grammar (docs/protocols.md, §F.4/§F.5)."""

from __future__ import annotations

import pytest

from server.errors import InvalidInput
from server.providers.model_names import (
    MAX_NAME_LENGTH,
    display_model_name,
    is_valid_model_name,
    parse_model_name,
    validate_model_name,
)

VALID = {
    "llama3.2": ("registry.ollama.ai", "library", "llama3.2", "latest"),
    "qwen3:4b": ("registry.ollama.ai", "library", "qwen3", "4b"),
    "library/llama3.2": ("registry.ollama.ai", "library", "llama3.2", "latest"),
    "jdoe/my-model:v1.2": ("registry.ollama.ai", "jdoe", "my-model", "v1.2"),
    "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M": (
        "hf.co",
        "bartowski",
        "Llama-3.2-1B-Instruct-GGUF",
        "Q4_K_M",
    ),
    "registry.local:5000/team/m:dev": ("registry.local:5000", "team", "m", "dev"),
    "_why/_the/_lucky:_stiff": ("_why", "_the", "_lucky", "_stiff"),
    "Qwen3:4B": ("registry.ollama.ai", "library", "Qwen3", "4B"),
}

INVALID = [
    "",
    "m:",
    ":t",
    "/m",
    "a//m",
    "-m",
    "m:-t",
    "ns/.m",
    "name.space/m",
    "host/name:space/model:tag",
    "a/b/c/d",
    "m@sha256:" + "a" * 64,
    "../etc/passwd",
    "..",
    "my model",
    " llama3.2",
    "llama3.2\n",
    "m" * 81,
    "m:" + "t" * 81,
    "ns" * 41 + "/m",
    "https://registry.ollama.ai/library/m:t",  # stricter than Ollama: no scheme
    "modèle",
    "m+x",
    "m%2f",
    "~m",
]


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_names(name: str) -> None:
    host, namespace, model, tag = VALID[name]
    assert is_valid_model_name(name)
    assert parse_model_name(name) == {"host": host, "namespace": namespace, "model": model, "tag": tag}
    assert validate_model_name(name) == name


@pytest.mark.parametrize("name", INVALID)
def test_invalid_names(name: str) -> None:
    assert not is_valid_model_name(name)
    assert parse_model_name(name) is None
    with pytest.raises(InvalidInput) as info:
        validate_model_name(name)
    assert info.value.code == "invalid_model_name"
    assert info.value.status == 422


def test_non_strings_are_invalid() -> None:
    for value in (None, 3, b"llama3.2", ["llama3.2"]):
        assert not is_valid_model_name(value)
        with pytest.raises(InvalidInput):
            validate_model_name(value)


def test_length_limits() -> None:
    longest = "h" * 350 + "/" + "n" * 80 + "/" + "m" * 80 + ":" + "t" * 80
    assert len(longest) == MAX_NAME_LENGTH
    assert is_valid_model_name(longest)
    assert not is_valid_model_name("h" * 351 + "/n/m:t")
    assert is_valid_model_name("m" * 80) and not is_valid_model_name("m" * 81)


def test_no_valid_name_contains_a_traversal() -> None:
    for name in ("a/../b", "a/b/..", "../a", "a/./b", "..:t", "m:..", "./m"):
        assert not is_valid_model_name(name), name


def test_policy_options() -> None:
    assert validate_model_name("hf.co/a/b:c", allowed_hosts=["HF.co"]) == "hf.co/a/b:c"
    with pytest.raises(InvalidInput):
        validate_model_name("evil.test/a/b:c", allowed_hosts=["registry.ollama.ai"])
    assert validate_model_name("llama3.2", allowed_hosts=["registry.ollama.ai"]) == "llama3.2"
    for cloud in ("gpt-oss:20b-cloud", "m:cloud", "m:LOCAL"):
        assert validate_model_name(cloud) == cloud
        with pytest.raises(InvalidInput):
            validate_model_name(cloud, allow_cloud=False)


def test_display_form() -> None:
    assert display_model_name("llama3.2") == "llama3.2:latest"
    assert display_model_name("library/llama3.2:1b") == "llama3.2:1b"
    assert display_model_name("registry.ollama.ai/jdoe/m") == "jdoe/m:latest"
    assert display_model_name("hf.co/library/m:q") == "hf.co/library/m:q"
    assert display_model_name("not valid") == "not valid"

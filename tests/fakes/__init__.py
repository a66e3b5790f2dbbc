"""Fake upstream servers for tests: a protocol-faithful Ollama and an OpenAI-compatible API.

    from tests.fakes import FakeOllama, FakeOpenAI, wait_until

The names are imported lazily, so ``python -m tests.fakes.fake_ollama`` does not import its module twice.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.fakes._httpserver import wait_until
    from tests.fakes.fake_ollama import FakeModel, FakeOllama
    from tests.fakes.fake_openai import FakeOpenAI

_EXPORTS = {
    "FakeModel": "fake_ollama",
    "FakeOllama": "fake_ollama",
    "FakeOpenAI": "fake_openai",
    "wait_until": "_httpserver",
}
__all__ = ["FakeModel", "FakeOllama", "FakeOpenAI", "wait_until"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

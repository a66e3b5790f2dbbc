"""Ollama model-name grammar (docs/protocols.md, §F.5): ``[host/][namespace/]model[:tag]``, ASCII only.

Stricter than Ollama in two ways on purpose: no ``scheme://`` prefix and ASCII only. Because no part
may start with ``.`` or ``-``, a valid name can never contain ``..`` and never becomes a path outside
the model store.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from server.errors import InvalidInput

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
#: 350 + 1 + 80 + 1 + 80 + 1 + 80
MAX_NAME_LENGTH = 593

_HOST = r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,349}"
_NS = r"[A-Za-z0-9_][A-Za-z0-9_-]{0,79}"
_PART = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}"
_NAME = re.compile(
    rf"(?:(?:(?P<host>{_HOST})/)?(?P<namespace>{_NS})/)?(?P<model>{_PART})(?::(?P<tag>{_PART}))?",
    re.ASCII,
)


def parse_model_name(name: object) -> dict[str, str] | None:
    """``{"host","namespace","model","tag"}`` with defaults filled in (as in docs/protocols.md, §F.5), or
    ``None`` when ``name`` is not a valid name."""
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH:
        return None
    match = _NAME.fullmatch(name)
    if match is None:
        return None
    return {
        "host": match["host"] or DEFAULT_HOST,
        "namespace": match["namespace"] or DEFAULT_NAMESPACE,
        "model": match["model"],
        "tag": match["tag"] or DEFAULT_TAG,
    }


def display_model_name(name: str) -> str:
    """Ollama's shortest form (default host and ``library`` dropped, tag kept); ``name`` if invalid."""
    parts = parse_model_name(name)
    if parts is None:
        return name
    prefix = []
    if parts["host"].lower() != DEFAULT_HOST:
        prefix.append(parts["host"])
    if prefix or parts["namespace"].lower() != DEFAULT_NAMESPACE:
        prefix.append(parts["namespace"])
    return "/".join([*prefix, parts["model"]]) + f":{parts['tag']}"


def is_cloud_tag(tag: str) -> bool:
    tag = tag.lower()
    return tag in ("cloud", "local") or tag.endswith("-cloud")


def is_valid_model_name(name: object) -> bool:
    return parse_model_name(name) is not None


def validate_model_name(
    name: object, *, allowed_hosts: Collection[str] | None = None, allow_cloud: bool = True
) -> str:
    """Return ``name`` unchanged when it is a valid Ollama model name, else raise ``InvalidInput``
    (422, code ``invalid_model_name``).

    ``allowed_hosts``: registry hosts accepted (case-insensitive); ``None`` accepts any valid host.
    ``allow_cloud=False`` also refuses ``:cloud`` / ``:local`` / ``-cloud`` tags.
    """
    parsed = parse_model_name(name)
    if parsed is None:
        raise InvalidInput(
            "invalid model name: use [host/][namespace/]model[:tag] with letters, digits, '_', '-' and '.'",
            code="invalid_model_name",
        )
    if allowed_hosts is not None and parsed["host"].lower() not in {h.lower() for h in allowed_hosts}:
        raise InvalidInput(f"models from {parsed['host']} are not allowed", code="invalid_model_name")
    if not allow_cloud and is_cloud_tag(parsed["tag"]):
        raise InvalidInput("cloud models are not allowed here", code="invalid_model_name")
    assert isinstance(name, str)
    return name

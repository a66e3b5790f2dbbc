"""A protocol-faithful fake Ollama server for tests (docs/protocols.md §A, behaviours of §A.5).

    with FakeOllama(token_delay=0.01) as fake:
        client = ollama.Client(host=fake.url)

Knobs are plain attributes and may be changed while the server runs. Standalone, from the repo root:

    python -m tests.fakes.fake_ollama --host 127.0.0.1 --port 11434 [--token-delay 0.02]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import ipaddress
import json
import math
import random
import re
import socket
import sys
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.fakes._httpserver import (
    FakeServer,
    HTTPError,
    LazyStream,
    ReplyKnob,
    clip,
    last_user_text,
    message_text,
    resolve_reply,
    run_until_signalled,
    split_tokens,
)
from tests.fakes.gguf import FILE_TYPES, read_metadata

__all__ = ["DEFAULT_VERSION", "FakeModel", "FakeOllama", "Name", "parse_name"]

DEFAULT_VERSION = "0.12.0"
DEFAULT_HOST = "registry.ollama.ai"
BUSY = "server busy, please try again.  maximum pending requests exceeded"
RUNNER_FAILURE = "an error was encountered while running the model: unexpected EOF"
MANIFEST_MISSING = "pull model manifest: file does not exist"
DOWNLOAD_FAILURE = "max retries exceeded: unexpected EOF"
INVALID_NAME = "invalid model name"
INVALID_DIGEST = "invalid digest format"
FILE_PATH_NOT_RELATIVE = "file path must be relative"
NOT_GGUF = "supplied file was not in GGUF format"
BLOBS_DIR = "/usr/share/ollama/.ollama/models/blobs"
"""Where the fake pretends its blobs are (part of the error for a missing blob)."""
BLOB_HEAD = 8 << 20
"""Bytes of each uploaded blob the fake keeps: the GGUF metadata it reports is read from them."""
DEFAULT_KEEP_ALIVE = 300.0
DEFAULT_NUM_CTX = 4096
PULL_STEPS = 10
"""Progress lines reported while the main layer of a model downloads."""

_JSON = "application/json; charset=utf-8"
_JSON_NO_CHARSET = "application/json"  # streaming endpoints set the header before rendering
_NDJSON = "application/x-ndjson"
_SMALL_BLOB = 1 << 20  # blobs below this size "download" within one progress tick
_FOREVER = timedelta(microseconds=(2**63 - 1) // 1000)  # Go's largest time.Duration, ~292 years
#: ``quantize`` values /api/create accepts (case-insensitive), as in ggml.ParseFileType.
QUANTIZE_TYPES = frozenset({"Q4_K_M", "Q4_K_S", "Q8_0", "F16", "F32"})
_DIGEST = re.compile(r"sha256[:-][0-9a-fA-F]{64}")


# --- Go-flavoured encoding ----------------------------------------------------------------------------


def go_json(value: Any) -> bytes:
    """Compact JSON escaped like Go's ``json.Marshal`` (HTML characters as ``\\u00XX``)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escape)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").encode()


def _line(value: Mapping[str, Any]) -> bytes:
    return go_json(value) + b"\n"


def go_time(moment: datetime) -> str:
    """RFC 3339 with trailing zeros of the fraction trimmed and ``Z`` for UTC, like Go."""
    text = moment.isoformat(timespec="microseconds")
    stamp, fraction, offset = text[:19], text[20:26].rstrip("0"), text[26:]
    return stamp + (f".{fraction}" if fraction else "") + ("Z" if offset == "+00:00" else offset)


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _local_now() -> datetime:
    return datetime.now().astimezone()


_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def go_duration(text: str) -> float:
    """Parse a Go duration string (``"5m"``, ``"1h30m"``, ``"-1s"``) into seconds."""
    body, sign = text, 1.0
    if body[:1] in ("+", "-"):
        sign, body = (-1.0 if body[0] == "-" else 1.0), body[1:]
    if body == "0":
        return 0.0
    if not body:
        raise _error(400, f'time: invalid duration "{text}"')
    total, position = 0.0, 0
    while position < len(body):
        match = _DURATION_PART.match(body, position)
        if match is None:
            if re.fullmatch(r"[\d.]+", body[position:]):
                raise _error(400, f'time: missing unit in duration "{text}"')
            raise _error(400, f'time: invalid duration "{text}"')
        total += float(match[1]) * _DURATION_UNITS[match[2]]
        position = match.end()
    return sign * total


def parse_keep_alive(value: Any) -> float | None:
    """``keep_alive`` in seconds (None when absent): a JSON number of seconds or a duration string."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        return go_duration(value)
    raise _error(400, f"time: invalid duration {json.dumps(value)}")


def _go_kind(value: Any) -> str:
    kinds = {bool: "bool", int: "number", float: "number", str: "string", list: "array", dict: "object"}
    return kinds.get(type(value), "value")


_DECODER_CONTEXT = {
    "Expecting value": "looking for beginning of value",
    "Expecting property name enclosed in double quotes": "looking for beginning of object key string",
    "Expecting ':' delimiter": "after object key",
    "Expecting ',' delimiter": "after object key:value pair",
}


def _go_decode_error(exc: json.JSONDecodeError) -> str:
    """Word a Python JSON error like Go's decoder does."""
    if exc.pos >= len(exc.doc.rstrip()) or exc.msg.startswith("Unterminated string"):
        return "unexpected EOF"
    char = exc.doc[exc.pos]
    if exc.msg.startswith("Invalid control character"):
        return f"invalid character {char!r} in string literal"
    return f"invalid character {char!r} {_DECODER_CONTEXT.get(exc.msg, 'looking for beginning of value')}"


def decode_body(raw: bytes, go_type: str) -> dict[str, Any]:
    """Decode a request body the way the Go handlers bind it (errors are 400 with Go's wording)."""
    text = raw.decode("utf-8", "replace").strip(" \t\r\n")
    if not text:
        raise _error(400, "missing request body")
    try:
        value, _ = json.JSONDecoder().raw_decode(text)  # like json.Decoder: trailing data is ignored
    except json.JSONDecodeError as exc:
        raise _error(400, _go_decode_error(exc)) from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _error(400, f"json: cannot unmarshal {_go_kind(value)} into Go value of type api.{go_type}")
    return value


def _string(body: Mapping[str, Any], key: str, go_type: str) -> str:
    value = body.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _error(
            400,
            f"json: cannot unmarshal {_go_kind(value)} into Go struct field {go_type}.{key} of type string",
        )
    return value


def _name_field(body: Mapping[str, Any], go_type: str) -> str:
    """``model``, or the legacy ``name`` field."""
    return _string(body, "model", go_type) or _string(body, "name", go_type)


def _error(status: int, message: str) -> HTTPError:
    return HTTPError(status, {"error": message})


# --- model names (§F) ---------------------------------------------------------------------------------

_HOST_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,349}")
_NAMESPACE_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,79}")
_NAME_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}")


class Name(NamedTuple):
    """A valid, fully qualified model name."""

    host: str
    namespace: str
    model: str
    tag: str

    @property
    def display(self) -> str:
        """The shortest form Ollama shows: default host and ``library`` dropped, tag kept."""
        if self.host.lower() != DEFAULT_HOST:
            return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"
        if self.namespace.lower() != "library":
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.model}:{self.tag}"

    @property
    def full(self) -> str:
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    @property
    def key(self) -> str:
        """Case-insensitive identity used to match names."""
        return self.full.lower()


def parse_name(text: str) -> Name | None:
    """Parse ``[[scheme://]host/][namespace/]model[:tag]`` as §F.2 describes; None if invalid."""
    rest, tag = text, "latest"
    colon, slash = text.rfind(":"), text.rfind("/")
    if colon > slash:
        rest, tag = text[:colon], text[colon + 1 :]
    parts = rest.rsplit("/", 2)
    model = parts[-1]
    namespace = parts[-2] if len(parts) > 1 else "library"
    host = parts[-3].split("://", 1)[-1] if len(parts) > 2 else DEFAULT_HOST
    checks = ((_HOST_PART, host), (_NAMESPACE_PART, namespace), (_NAME_PART, model), (_NAME_PART, tag))
    if all(pattern.fullmatch(value) for pattern, value in checks):
        return Name(host, namespace, model, tag)
    return None


def _display(key: str) -> str:
    name = parse_name(key)
    return name.display if name else key


def _qualified(key: str) -> str:
    name = parse_name(key)
    return name.full if name else key


# --- model metadata -----------------------------------------------------------------------------------


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class FakeModel:
    """What the fake knows about one model; reported by tags, show and ps."""

    family: str = "llama"
    parameter_size: str = "3.2B"
    quantization_level: str = "Q4_K_M"
    size: int = 2_019_393_189
    capabilities: Sequence[str] = ("completion", "tools")
    context_length: int = 131_072
    embedding_length: int = 3_072
    template: str = "{{ .Prompt }}"
    system: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    license: str = ""
    vram_fraction: float = 1.0
    """Share of the loaded model that /api/ps reports in GPU memory (``size_vram``)."""
    modified_at: datetime = field(default_factory=_local_now)

    @classmethod
    def coerce(cls, value: FakeModel | Mapping[str, Any] | None) -> FakeModel:
        """Accept a FakeModel, a mapping of its fields, or None (all defaults)."""
        return value if isinstance(value, FakeModel) else cls(**(value or {}))

    @property
    def digest(self) -> str:
        """Bare hex digest of the "manifest": equal for copies, different after any change."""
        content = (
            self.family,
            self.parameter_size,
            self.quantization_level,
            self.size,
            self.template,
            self.system,
            sorted(self.parameters.items()),
            self.license,
        )
        return _sha256(repr(content))

    @property
    def parameter_count(self) -> int:
        number, unit = float(self.parameter_size[:-1]), self.parameter_size[-1:].upper()
        return int(number * {"K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}.get(unit, 1))

    @property
    def memory_size(self) -> int:
        """Bytes the model occupies once loaded (weights plus a KV cache)."""
        return self.size + self.size // 5

    def details(self) -> dict[str, Any]:
        return {
            "parent_model": "",
            "format": "gguf",
            "family": self.family,
            "families": [self.family],
            "parameter_size": self.parameter_size,
            "quantization_level": self.quantization_level,
        }

    def model_info(self) -> dict[str, Any]:
        arch = self.family
        return {
            "general.architecture": arch,
            "general.parameter_count": self.parameter_count,
            "general.quantization_version": 2,
            f"{arch}.context_length": self.context_length,
            f"{arch}.embedding_length": self.embedding_length,
        }

    def layers(self, main_size: int | None = None) -> list[tuple[str, int]]:
        """``(digest, size)`` of every blob, in manifest order: weights, text layers, then config."""
        texts = [text for text in (self.template, self.system, self.license) if text]
        if self.parameters:
            texts.append(json.dumps(self.parameters, sort_keys=True))
        small = [(f"sha256:{_sha256(text)}", len(text.encode())) for text in texts]
        config = (f"sha256:{_sha256('config' + self.digest)}", 487)
        weights_size = main_size or max(self.size - sum(s for _, s in small) - config[1], 1)
        weights_id = f"weights {self.family} {self.parameter_size} {self.quantization_level}"
        weights = (f"sha256:{_sha256(weights_id)}", weights_size)
        return [weights, *small, config]


_LLAMA_TEMPLATE = (
    "<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>"
    "{{ range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
    "{{ .Content }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n"
)
_CHATML_TEMPLATE = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n"
)


def default_models() -> dict[str, FakeModel]:
    """The models installed when ``models`` is not given (newest first)."""
    now = _local_now()
    return {
        "llama3.2:latest": FakeModel(
            family="llama",
            parameter_size="3.2B",
            quantization_level="Q4_K_M",
            size=2_019_393_189,
            capabilities=("completion", "tools"),
            context_length=131_072,
            embedding_length=3_072,
            template=_LLAMA_TEMPLATE,
            license="LLAMA 3.2 COMMUNITY LICENSE AGREEMENT",
            parameters={"stop": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]},
            modified_at=now - timedelta(days=1),
        ),
        "qwen3:0.6b": FakeModel(
            family="qwen3",
            parameter_size="751.63M",
            quantization_level="Q4_K_M",
            size=522_653_767,
            capabilities=("completion", "tools", "thinking"),
            context_length=40_960,
            embedding_length=1_024,
            template=_CHATML_TEMPLATE,
            license="Apache License 2.0",
            parameters={
                "temperature": 0.6,
                "top_k": 20,
                "top_p": 0.95,
                "stop": ["<|im_start|>", "<|im_end|>"],
            },
            modified_at=now - timedelta(days=2),
        ),
        "nomic-embed-text:latest": FakeModel(
            family="nomic-bert",
            parameter_size="137M",
            quantization_level="F16",
            size=274_302_450,
            capabilities=("embedding",),
            context_length=2_048,
            embedding_length=768,
            template="",
            license="Apache License 2.0",
            parameters={"num_ctx": 8192},
            modified_at=now - timedelta(days=3),
        ),
    }


def default_pull_catalog() -> dict[str, FakeModel]:
    """What the fake registry offers when ``pull_catalog`` is not given."""
    return {
        **default_models(),
        "tinyllama:latest": FakeModel(
            family="llama",
            parameter_size="1.1B",
            quantization_level="Q4_0",
            size=637_700_138,
            capabilities=("completion",),
            context_length=2_048,
            embedding_length=2_048,
        ),
        "smollm2:135m": FakeModel(
            family="llama",
            parameter_size="134.52M",
            quantization_level="F16",
            size=270_898_672,
            capabilities=("completion", "tools"),
            context_length=8_192,
            embedding_length=576,
        ),
    }


def _normalise(models: Mapping[str, FakeModel | Mapping[str, Any] | None]) -> dict[str, FakeModel]:
    table = {}
    for key, value in models.items():
        name = parse_name(key)
        if name is None:
            raise ValueError(f"invalid model name {key!r}")
        table[name.display] = FakeModel.coerce(value)
    return table


def _lookup(table: Mapping[str, Any], name: Name) -> tuple[str, FakeModel] | None:
    """Find ``name`` in a name→model table, case-insensitively."""
    for key, value in list(table.items()):
        parsed = parse_name(key)
        if parsed is not None and parsed.key == name.key:
            return key, FakeModel.coerce(value)
    return None


def _parameters_text(parameters: Mapping[str, Any]) -> str:
    lines = []
    for key, value in parameters.items():
        for item in value if isinstance(value, list) else [value]:
            lines.append(f"{key:<30} {json.dumps(item) if isinstance(item, str) else item}")
    return "\n".join(lines)


def _modelfile(name: str, model: FakeModel) -> str:
    weights = model.layers()[0][0].replace(":", "-")
    lines = [
        '# Modelfile generated by "ollama show"',
        "# To build a new Modelfile based on this, replace FROM with:",
        f"# FROM {name}",
        "",
        f"FROM /root/.ollama/models/blobs/{weights}",
    ]
    for keyword, text in (("TEMPLATE", model.template), ("SYSTEM", model.system)):
        if text:
            lines.append(f'{keyword} """{text}"""')
    lines += [f"PARAMETER {line}" for line in _parameters_text(model.parameters).splitlines()]
    if model.license:
        lines.append(f'LICENSE """{model.license}"""')
    return "\n".join(lines) + "\n"


_EMBED_WORD = re.compile(r"\w+", re.UNICODE)


def _embedding(text: str, dimensions: int) -> list[float]:
    """A deterministic, L2-normalised vector for ``text`` that means something: a feature-hashed bag of its
    words (each lower-cased word adds +-1 at a position its hash picks), so texts sharing words are close
    (cosine) and retrieval can be tested. A text without words gets a fixed pseudo-random vector."""
    vector = [0.0] * dimensions
    for word in _EMBED_WORD.findall(text.lower()):
        digest = hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()
        slot = int.from_bytes(digest[:4], "little") % dimensions
        vector[slot] += 1.0 if digest[4] & 1 else -1.0
    if not any(vector):
        rng = random.Random(text)
        vector = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [round(x / norm, 8) for x in vector]


# --- per-request state --------------------------------------------------------------------------------


@dataclass
class _Slot:
    """A model in memory, as /api/ps reports it."""

    expires_at: datetime
    context_length: int
    in_use: int = 0


def _expiry(keep_alive: float | None) -> datetime:
    seconds = DEFAULT_KEEP_ALIVE if keep_alive is None else keep_alive
    return _local_now() + (_FOREVER if seconds < 0 else timedelta(seconds=seconds))


@dataclass
class _Turn:
    """One validated chat/generate request and the figures gathered while answering it."""

    endpoint: str  # "chat" or "generate"
    model: str  # the name as the client sent it
    key: str  # key into FakeOllama.models
    keep_alive: float | None
    num_ctx: int
    limit: int | None  # options.num_predict
    text: str = ""
    thinking: str = ""
    prompt_tokens: int = 0
    with_context: bool = False  # generate without raw: the final line carries `context`
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    started: int = field(default_factory=time.monotonic_ns)
    loaded: int = 0
    eval_count: int = 0
    done_reason: str = "stop"
    aborted: bool = False  # the server is stopping: end without a final line


def _prompt_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    return sum(len(split_tokens(message_text(m.get("content")))) + 4 for m in messages)


def _messages(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages") or []
    if not isinstance(messages, list):
        raise _error(
            400,
            f"json: cannot unmarshal {_go_kind(messages)} into Go struct field "
            "ChatRequest.messages of type []api.Message",
        )
    for message in messages:
        if not isinstance(message, dict):
            raise _error(
                400,
                f"json: cannot unmarshal {_go_kind(message)} into Go struct field "
                "ChatRequest.messages of type api.Message",
            )
    return messages


def _check_think(value: Any) -> None:
    if value is None or isinstance(value, bool) or value in ("high", "medium", "low", "max"):
        return
    allowed = '"high", "medium", "low", "max", true, or false'
    raise _error(400, f"invalid think value: {json.dumps(value)} (must be {allowed})")


@dataclass(frozen=True)
class FakeBlob:
    """An uploaded blob: its size and first bytes (the whole file is hashed, not kept)."""

    size: int
    head: bytes


def _model_from_gguf(blob: FakeBlob) -> FakeModel:
    """What /api/tags and /api/show report for a model created from a GGUF blob."""
    meta = read_metadata(blob.head)
    arch = str(meta.get("general.architecture") or "llama")
    label = str(meta.get("general.size_label") or "")
    if not re.fullmatch(r"\d+(\.\d+)?[KMBT]", label):
        label = f"{max(blob.size // 1_000_000, 1)}M"
    context = meta.get(f"{arch}.context_length")
    embedding = meta.get(f"{arch}.embedding_length")
    return FakeModel(
        family=arch,
        parameter_size=label,
        quantization_level=FILE_TYPES.get(int(meta.get("general.file_type") or 0), "unknown"),
        size=blob.size,
        capabilities=("completion",),
        context_length=context if isinstance(context, int) else 2048,
        embedding_length=embedding if isinstance(embedding, int) else 0,
        template="{{ .Prompt }}",
        modified_at=_local_now(),
    )


def _valid_file_path(path: str) -> bool:
    """Go's ``fs.ValidPath``: relative, slash-separated, no empty, ``.`` or ``..`` element."""
    return path == "." or (bool(path) and all(part not in ("", ".", "..") for part in path.split("/")))


# --- the server ---------------------------------------------------------------------------------------


class FakeOllama(FakeServer):
    """A fake Ollama server on a real loopback socket.

    Knobs (plain attributes, changeable while running): ``token_delay`` (seconds between tokens),
    ``load_delay`` (seconds before the first chunk), ``fail_after_chunks`` (after N chunks send a
    mid-stream ``{"error"}`` line; 0 fails with HTTP 500 before any byte), ``busy`` (503),
    ``hang`` (send nothing until cleared or stopped), ``reply`` (callable(messages) -> str, or str),
    ``models`` / ``pull_catalog`` (name -> :class:`FakeModel` or a mapping of its fields),
    ``pull_tick``, ``pull_fail_after`` (progress lines before a pull fails), ``pull_total_bytes`` (size
    reported for the main layer; None: the model's own size), ``legacy_not_found`` (pre-0.12 404
    wording on chat/generate), ``check_host`` (Host/Origin check of §D.2, 403 with an empty body),
    ``blob_fail_after`` (a blob upload loses its connection after this many bytes, as when Ollama dies),
    ``tool_calls`` (``[{"function": {"name", "arguments": {...}}}]`` a chat that offers tools answers
    with, whole in one chunk before the final line).
    ``blobs`` maps uploaded blobs (``sha256-<hex>``, the file name) to :class:`FakeBlob`.

    Observations: ``requests``, ``active_streams`` (chat/generate/pull/create requests in progress,
    streamed or not), ``disconnects`` (those ended by the client going away).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        models: Mapping[str, FakeModel | Mapping[str, Any] | None] | None = None,
        token_delay: float = 0.0,
        load_delay: float = 0.0,
        fail_after_chunks: int | None = None,
        busy: bool = False,
        hang: bool = False,
        pull_tick: float = 0.06,
        pull_fail_after: int | None = None,
        pull_total_bytes: int | None = None,
        reply: ReplyKnob = None,
        version: str = DEFAULT_VERSION,
        pull_catalog: Mapping[str, FakeModel | Mapping[str, Any] | None] | None = None,
        legacy_not_found: bool = False,
        check_host: bool = False,
        blob_fail_after: int | None = None,
        tool_calls: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(host, port, hang=hang)
        self.models = _normalise(default_models() if models is None else models)
        self.pull_catalog = _normalise(default_pull_catalog() if pull_catalog is None else pull_catalog)
        self.token_delay = token_delay
        self.load_delay = load_delay
        self.fail_after_chunks = fail_after_chunks
        self.busy = busy
        self.pull_tick = pull_tick
        self.pull_fail_after = pull_fail_after
        self.pull_total_bytes = pull_total_bytes
        self.reply = reply
        self.version = version
        self.legacy_not_found = legacy_not_found
        self.check_host = check_host
        self.blob_fail_after = blob_fail_after
        self.tool_calls = tool_calls
        self.blobs: dict[str, FakeBlob] = {}
        self._loaded: dict[str, _Slot] = {}
        #: What each /api/embed request was sent: (model, inputs), oldest first.
        self.embedded: list[tuple[str, list[str]]] = []

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT``."""
        return self.origin

    def build_app(self) -> ASGIApp:
        held = self.held
        routes = [
            Route("/", held(self._root), methods=["GET"]),
            Route("/api/version", held(self._version), methods=["GET"]),
            Route("/api/tags", held(self._tags), methods=["GET"]),
            Route("/api/ps", held(self._ps), methods=["GET"]),
            Route("/api/show", held(self._show), methods=["POST"]),
            Route("/api/embed", held(self._embed), methods=["POST"]),
            Route("/api/delete", held(self._delete), methods=["DELETE"]),
            Route("/api/copy", held(self._copy), methods=["POST"]),
            Route("/api/chat", self._chat, methods=["POST"]),
            Route("/api/generate", self._generate, methods=["POST"]),
            Route("/api/pull", self._pull, methods=["POST"]),
            Route("/api/create", self._create, methods=["POST"]),
        ]
        handlers = {
            HTTPError: lambda request, exc: _json(exc.payload, exc.status),
            404: lambda request, exc: _plain(404, "404 page not found"),
            405: lambda request, exc: _plain(405, "405 method not allowed"),
        }
        app = Starlette(routes=routes, exception_handlers=handlers)

        async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
            # Blob uploads are read as raw ASGI: a dropped connection must not become a 500 answer.
            if scope["type"] == "http" and scope["path"].startswith("/api/blobs/"):
                await self.hold()
                await self._blob(scope, receive, send)
            else:
                await app(scope, receive, send)

        return self._host_guard(dispatch)

    # --- simple endpoints ---

    async def _root(self, request: Request) -> Response:
        return PlainTextResponse("Ollama is running")

    async def _version(self, request: Request) -> Response:
        return _json({"version": self.version})

    async def _tags(self, request: Request) -> Response:
        entries = sorted(
            ((k, FakeModel.coerce(v)) for k, v in list(self.models.items())),
            key=lambda item: item[1].modified_at,
            reverse=True,
        )
        return _json(
            {
                "models": [
                    {
                        "name": _display(key),
                        "model": _display(key),
                        "modified_at": go_time(model.modified_at),
                        "size": model.size,
                        "digest": model.digest,
                        "details": model.details(),
                    }
                    for key, model in entries
                ]
            }
        )

    async def _ps(self, request: Request) -> Response:
        now = _local_now()
        for key in [k for k, slot in self._loaded.items() if not slot.in_use and slot.expires_at <= now]:
            del self._loaded[key]
        rows = []
        for key, slot in sorted(self._loaded.items(), key=lambda item: item[1].expires_at, reverse=True):
            if key not in self.models:
                continue
            model = FakeModel.coerce(self.models[key])
            rows.append(
                {
                    "name": _display(key),
                    "model": _display(key),
                    "size": model.memory_size,
                    "digest": model.digest,
                    "details": model.details(),
                    "expires_at": go_time(slot.expires_at),
                    "size_vram": int(model.memory_size * model.vram_fraction),
                    "context_length": slot.context_length,
                }
            )
        return _json({"models": rows})

    async def _show(self, request: Request) -> Response:
        body = decode_body(await request.body(), "ShowRequest")
        text = _name_field(body, "ShowRequest")
        if not text:
            raise _error(400, "model is required")
        key, model = self._resolve(text, f"model '{text}' not found")
        info = {
            "license": model.license,
            "modelfile": _modelfile(_display(key), model),
            "parameters": _parameters_text(model.parameters),
            "template": model.template,
            "system": model.system,
            "details": model.details(),
            "model_info": model.model_info(),
            "capabilities": list(model.capabilities),
            "modified_at": go_time(model.modified_at),
        }
        return _json({k: v for k, v in info.items() if v != ""})

    async def _embed(self, request: Request) -> Response:
        body = decode_body(await request.body(), "EmbedRequest")
        text = _string(body, "model", "EmbedRequest")
        keep_alive = parse_keep_alive(body.get("keep_alive"))
        if not text:
            raise _error(404, "model '' not found")
        key, model = self._resolve(text, f'model "{text}" not found, try pulling it first')
        inputs = body.get("input") or []
        inputs = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(inputs, list) or not all(isinstance(item, str) for item in inputs):
            raise _error(400, "invalid input type")
        if self.busy:
            raise _error(503, BUSY)
        self.embedded.append((text, list(inputs)))
        started = time.monotonic_ns()
        await asyncio.sleep(self.load_delay)
        self._acquire(key, keep_alive, DEFAULT_NUM_CTX)
        self._release(key, keep_alive)
        if not inputs:
            return _json({"model": text, "embeddings": []})
        loaded = time.monotonic_ns()
        vectors = [_embedding(item, model.embedding_length) for item in inputs]
        return _json(
            {
                "model": text,
                "embeddings": vectors,
                "total_duration": max(time.monotonic_ns() - started, 1),
                "load_duration": max(loaded - started, 1),
                "prompt_eval_count": sum(len(split_tokens(item)) for item in inputs),
            }
        )

    async def _delete(self, request: Request) -> Response:
        body = decode_body(await request.body(), "DeleteRequest")
        text = _name_field(body, "DeleteRequest")
        if not text:
            raise _error(400, "model is required")
        name = parse_name(text)
        if name is None:
            raise _error(400, f'name "{text}" is invalid')
        found = _lookup(self.models, name)
        if found is None:
            raise _error(404, f"model '{text}' not found")
        del self.models[found[0]]
        self._loaded.pop(found[0], None)
        return Response(status_code=200)

    async def _copy(self, request: Request) -> Response:
        body = decode_body(await request.body(), "CopyRequest")
        source_text = _string(body, "source", "CopyRequest")
        destination_text = _string(body, "destination", "CopyRequest")
        source, destination = parse_name(source_text), parse_name(destination_text)
        if source is None:
            raise _error(400, f'source "{source_text}" is invalid')
        if destination is None:
            raise _error(400, f'destination "{destination_text}" is invalid')
        found = _lookup(self.models, source)
        if found is None:
            raise _error(404, f'model "{source_text}" not found')
        self._install(destination, replace(found[1], modified_at=_local_now()))
        return Response(status_code=200)

    # --- chat and generate ---

    async def _chat(self, request: Request) -> Response:
        body = decode_body(await request.body(), "ChatRequest")
        turn, model = self._new_turn(body, "chat")
        messages = _messages(body)
        if body.get("tools") and "tools" not in model.capabilities:
            raise _error(400, f"{_qualified(turn.key)} does not support tools")
        if body.get("tools") and self.tool_calls:
            turn.tool_calls = [dict(call) for call in self.tool_calls]
        return self._respond(turn, model, body, messages)

    async def _generate(self, request: Request) -> Response:
        body = decode_body(await request.body(), "GenerateRequest")
        turn, model = self._new_turn(body, "generate")
        turn.with_context = body.get("raw") is not True
        if not turn.with_context and (body.get("template") or body.get("system") or body.get("context")):
            raise _error(400, "raw mode does not support template, system, or context")
        prompt = _string(body, "prompt", "GenerateRequest")
        system = _string(body, "system", "GenerateRequest")
        messages = [{"role": "system", "content": system}] if system else []
        messages = [*messages, {"role": "user", "content": prompt}] if prompt else []
        return self._respond(turn, model, body, messages)

    def _new_turn(self, body: Mapping[str, Any], endpoint: str) -> tuple[_Turn, FakeModel]:
        """Validation shared by chat and generate, in the order the real handlers apply it."""
        text = _string(body, "model", f"{endpoint.title()}Request")
        keep_alive = parse_keep_alive(body.get("keep_alive"))
        _check_think(body.get("think"))
        if not text:
            raise (
                _error(400, "model is required") if endpoint == "chat" else _error(404, "model '' not found")
            )
        key, model = self._resolve(text, self._not_found(text))
        return _Turn(endpoint, text, key, keep_alive, *_options(body)), model

    def _respond(
        self, turn: _Turn, model: FakeModel, body: Mapping[str, Any], messages: list[dict[str, Any]]
    ) -> LazyStream:
        """Capability checks, then a load/unload (no messages) or a generated answer."""
        thinking = self._wants_thinking(body.get("think"), turn.model, model)
        if "completion" not in model.capabilities:
            raise _error(400, f'"{turn.model}" does not support {turn.endpoint}')
        if self.busy:
            raise _error(503, BUSY)
        if not messages:
            return self._load_response(turn)
        turn.text = resolve_reply(self.reply, messages)
        turn.thinking = _thinking_text(messages) if thinking else ""
        turn.prompt_tokens = _prompt_tokens(messages)
        return self._answer(turn, stream=body.get("stream") is not False)

    def _not_found(self, text: str) -> str:
        if self.legacy_not_found:
            return f'model "{text}" not found, try pulling it first'
        return f"model '{text}' not found"

    @staticmethod
    def _wants_thinking(think: Any, text: str, model: FakeModel) -> bool:
        capable = "thinking" in model.capabilities
        if think is None:
            return capable  # unset means "on" for thinking models
        if think is False:
            return False
        if not capable:
            raise _error(400, f'"{text}" does not support thinking')
        return True

    def _load_response(self, turn: _Turn) -> LazyStream:
        """Empty messages/prompt: load the model (or unload it with keep_alive 0); one JSON object."""

        async def chunks() -> AsyncGenerator[bytes, None]:
            await self.hold()
            if turn.keep_alive == 0:
                self._loaded.pop(turn.key, None)
                reason = "unload"
            else:
                await asyncio.sleep(self.load_delay)
                self._acquire(turn.key, turn.keep_alive, turn.num_ctx)
                self._release(turn.key, turn.keep_alive)
                reason = "load"
            yield go_json({**self._envelope(turn, ""), "done": True, "done_reason": reason})

        return self._stream(chunks(), _JSON, buffered=True)

    def _answer(self, turn: _Turn, *, stream: bool) -> LazyStream:
        if stream:
            return self._stream(self._ndjson(turn), _NDJSON)
        return self._stream(self._aggregate(turn), _JSON, buffered=True)

    async def _tokens(self, turn: _Turn) -> AsyncGenerator[tuple[str, str], None]:
        """Yield ``(field, token)`` pairs: thinking tokens first, then content tokens."""
        await self.hold()
        await asyncio.sleep(self.load_delay)
        self._acquire(turn.key, turn.keep_alive, turn.num_ctx)
        turn.loaded = time.monotonic_ns()
        try:
            pieces = [("thinking", t) for t in split_tokens(turn.thinking)]
            pieces += [("content", t) for t in split_tokens(turn.text)]
            if turn.limit is not None and 0 <= turn.limit < len(pieces):
                pieces, turn.done_reason = pieces[: turn.limit], "length"
            for index, piece in enumerate(pieces):
                if self.stopping:
                    turn.aborted = True
                    return
                if self.fail_after_chunks is not None and index >= self.fail_after_chunks:
                    raise _error(500, RUNNER_FAILURE)
                yield piece
                turn.eval_count += 1
                await asyncio.sleep(self.token_delay)
        finally:
            self._release(turn.key, turn.keep_alive)

    async def _ndjson(self, turn: _Turn) -> AsyncGenerator[bytes, None]:
        async with aclosing(self._tokens(turn)) as tokens:
            async for kind, token in tokens:
                content, thinking = ("", token) if kind == "thinking" else (token, "")
                yield _line({**self._envelope(turn, content, thinking), "done": False})
        if turn.tool_calls and not turn.aborted:  # whole, in one chunk of their own (§A.3)
            envelope = self._envelope(turn, "")
            envelope["message"]["tool_calls"] = turn.tool_calls
            yield _line({**envelope, "done": False})
        if not turn.aborted:
            yield _line(self._final(turn, "", ""))

    async def _aggregate(self, turn: _Turn) -> AsyncGenerator[bytes, None]:
        parts: dict[str, list[str]] = {"thinking": [], "content": []}
        async with aclosing(self._tokens(turn)) as tokens:
            async for kind, token in tokens:
                parts[kind].append(token)
        if not turn.aborted:
            final = self._final(turn, "".join(parts["content"]), "".join(parts["thinking"]))
            if turn.tool_calls and "message" in final:
                final["message"]["tool_calls"] = turn.tool_calls
            yield go_json(final)

    @staticmethod
    def _envelope(turn: _Turn, content: str, thinking: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {"model": turn.model, "created_at": go_time(_utc_now())}
        if turn.endpoint == "chat":
            out["message"] = {"role": "assistant", "content": content}
            if thinking:
                out["message"]["thinking"] = thinking
        else:
            out["response"] = content
            if thinking:
                out["thinking"] = thinking
        return out

    def _final(self, turn: _Turn, content: str, thinking: str) -> dict[str, Any]:
        now = time.monotonic_ns()
        load = max(turn.loaded - turn.started, 1)
        prompt = turn.prompt_tokens * 100_000
        evaluation = max(now - turn.loaded, turn.eval_count)
        out = {**self._envelope(turn, content, thinking), "done": True, "done_reason": turn.done_reason}
        if turn.with_context:
            out["context"] = list(range(1, turn.prompt_tokens + turn.eval_count + 1))
        timings = {
            "total_duration": max(now - turn.started, load + prompt + evaluation),
            "load_duration": load,
            "prompt_eval_count": turn.prompt_tokens,
            "prompt_eval_duration": prompt,
            "eval_count": turn.eval_count,
            "eval_duration": evaluation if turn.eval_count else 0,
        }
        return {**out, **{k: v for k, v in timings.items() if v}}  # zero counters are omitted

    # --- pull and create ---

    # --- blobs (§A.7) ---

    async def _blob(self, scope: Scope, receive: Receive, send: Send) -> None:
        method, digest = scope["method"], scope["path"][len("/api/blobs/") :]
        if method not in ("HEAD", "POST"):
            await _plain(405, "405 method not allowed")(scope, receive, send)
            return
        if not _DIGEST.fullmatch(digest):
            answer = Response(status_code=400) if method == "HEAD" else _json({"error": INVALID_DIGEST}, 400)
            await answer(scope, receive, send)
            return
        key = digest.replace(":", "-")  # the blob's file name: both spellings name one file
        if method == "HEAD":  # Go sends no body with HEAD
            await Response(status_code=200 if key in self.blobs else 404)(scope, receive, send)
            return
        if key in self.blobs:
            await Response(status_code=200)(scope, receive, send)
            return
        hasher, size, head = hashlib.sha256(), 0, bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnects += 1
                return
            chunk = message.get("body", b"")
            hasher.update(chunk)
            size += len(chunk)
            if len(head) < BLOB_HEAD:
                head += chunk[: BLOB_HEAD - len(head)]
            if self.blob_fail_after is not None and size >= self.blob_fail_after:
                # Start an answer, then fail: uvicorn closes the connection mid-response.
                await send({"type": "http.response.start", "status": 500, "headers": []})
                raise ConnectionAbortedError("fake Ollama dropped the blob upload")
            if not message.get("more_body", False):
                break
        got = f"sha256:{hasher.hexdigest()}"
        if got != digest:
            mismatch = f"digest mismatch, expected {json.dumps(digest)}, got {json.dumps(got)}"
            await _json({"error": mismatch}, 400)(scope, receive, send)
            return
        self.blobs[key] = FakeBlob(size, bytes(head))
        await Response(status_code=201)(scope, receive, send)

    async def _pull(self, request: Request) -> Response:
        body = decode_body(await request.body(), "PullRequest")
        text = _name_field(body, "PullRequest")
        name = parse_name(text)
        if name is None:
            raise _error(400, INVALID_NAME)
        return self._progress(self._pull_events(name), stream=body.get("stream") is not False)

    async def _pull_events(self, name: Name) -> AsyncGenerator[dict[str, Any], None]:
        await self.hold()
        yield {"status": "pulling manifest"}
        await asyncio.sleep(self.pull_tick)
        found = _lookup(self.pull_catalog, name)
        if found is None:
            raise _error(500, MANIFEST_MISSING)
        source = found[1]
        installed = _lookup(self.models, name)
        present = {digest for digest, _ in installed[1].layers()} if installed else set()
        sent = 0
        for digest, total in source.layers(self.pull_total_bytes):
            line = {"status": f"pulling {digest[7:19]}", "digest": digest, "total": total}
            if digest in present or total < _SMALL_BLOB:
                steps = [total]  # already on disk, or small enough to arrive within one tick
            else:
                steps = [0, *(total * step // PULL_STEPS for step in range(1, PULL_STEPS + 1))]
            for completed in steps:
                if self.pull_fail_after is not None and sent >= self.pull_fail_after:
                    raise _error(500, DOWNLOAD_FAILURE)
                if self.stopping:
                    return
                yield {**line, "completed": completed} if completed else line  # omitted while 0
                sent += 1
                if completed < total:
                    await asyncio.sleep(self.pull_tick)
        yield {"status": "verifying sha256 digest"}
        yield {"status": "writing manifest"}
        self._install(name, replace(source, modified_at=_local_now()))
        if installed and installed[1].digest != source.digest:
            yield {"status": "removing unused layers"}
        yield {"status": "success"}

    async def _create(self, request: Request) -> Response:
        body = decode_body(await request.body(), "CreateRequest")
        name = parse_name(_name_field(body, "CreateRequest"))
        if name is None:
            raise _error(400, INVALID_NAME)
        files = body.get("files") or {}
        if not isinstance(files, dict) or not all(_DIGEST.fullmatch(str(d)) for d in files.values()):
            raise _error(400, INVALID_DIGEST)
        if not all(_valid_file_path(str(path)) for path in files):
            raise _error(400, FILE_PATH_NOT_RELATIVE)
        base_text = _string(body, "from", "CreateRequest")
        base_name = parse_name(base_text) if base_text else None
        if base_text and base_name is None:
            raise _error(400, INVALID_NAME)
        if base_name is None and not files:
            raise _error(400, "neither 'from' or 'files' was specified")
        adapters = body.get("adapters") or {}
        if not isinstance(adapters, dict) or not all(_DIGEST.fullmatch(str(d)) for d in adapters.values()):
            raise _error(400, "invalid digest format")
        events = self._create_events(name, base_name, body)
        return self._progress(events, stream=body.get("stream") is not False)

    async def _create_events(
        self, name: Name, base_name: Name | None, body: Mapping[str, Any]
    ) -> AsyncGenerator[dict[str, Any], None]:
        await self.hold()
        base = FakeModel()
        if base_name is None:  # built from uploaded GGUF files: read their metadata, like the real server
            for digest in (body.get("files") or {}).values():
                yield {"status": "parsing GGUF"}
                blob = self.blobs.get(str(digest).replace(":", "-"))
                if blob is None:
                    raise _error(
                        500, f"open {BLOBS_DIR}/{str(digest).replace(':', '-')}: no such file or directory"
                    )
                if not blob.head.startswith(b"GGUF"):
                    raise _error(400, NOT_GGUF)
                base = _model_from_gguf(blob)
                yield {"status": f"using existing layer sha256:{str(digest)[7:]}"}
        if base_name is not None:
            if _lookup(self.models, base_name) is None:  # like the real server: pull the base first
                async with aclosing(self._pull_events(base_name)) as pull:
                    async for event in pull:
                        if event["status"] != "success":
                            yield event
            found = _lookup(self.models, base_name)
            if found is None:  # the pull was cut short by stop()
                return
            base = found[1]
        for digest, _ in base.layers() if base_name is not None else []:
            yield {"status": f"using existing layer {digest}"}
        for digest in (body.get("adapters") or {}).values():
            yield {"status": f"using existing layer {digest}"}
        changes = _create_changes(base, body)
        quantize = body.get("quantize")
        if isinstance(quantize, str) and quantize:
            # like the real server: the type is checked, and only F16/F32 weights are quantized
            want = quantize.upper()
            if want not in QUANTIZE_TYPES:
                raise _error(500, f"unsupported quantization type {quantize}")
            if base.quantization_level.upper() not in ("F16", "F32"):
                raise _error(500, "quantization is only supported for F16 and F32 models")
            if want != base.quantization_level.upper():
                yield {"status": f"quantizing {base.quantization_level} model to {want}"}
                changes["quantization_level"] = want
                changes["size"] = base.size * (9 if want == "Q8_0" else 5) // 16
        for value in changes.values():
            yield {"status": f"creating new layer sha256:{_sha256(repr(value))}"}
        yield {"status": "writing manifest"}
        self._install(name, replace(base, **changes, modified_at=_local_now()))
        yield {"status": "success"}

    def _progress(self, events: AsyncGenerator[dict[str, Any], None], *, stream: bool) -> LazyStream:
        """Status objects as NDJSON, or only the last one for ``stream:false``."""
        if stream:
            return self._stream(_ndjson_lines(events), _NDJSON)
        return self._stream(_last_object(events), _JSON_NO_CHARSET, buffered=True)

    # --- helpers ---

    def _stream(
        self, chunks: AsyncGenerator[bytes, None], media_type: str, *, buffered: bool = False
    ) -> LazyStream:
        return LazyStream(
            self,
            chunks,
            media_type=media_type,
            buffered=buffered,
            frame_error=_line,
            render_error=lambda exc: _json(exc.payload, exc.status, _JSON_NO_CHARSET),
        )

    def _resolve(self, text: str, not_found: str) -> tuple[str, FakeModel]:
        name = parse_name(text)
        if name is None:
            raise _error(400, INVALID_NAME)
        found = _lookup(self.models, name)
        if found is None:
            raise _error(404, not_found)
        return found

    def _install(self, name: Name, model: FakeModel) -> None:
        existing = _lookup(self.models, name)
        self.models[existing[0] if existing else name.display] = model

    def _acquire(self, key: str, keep_alive: float | None, num_ctx: int) -> None:
        slot = self._loaded.setdefault(key, _Slot(_expiry(keep_alive), num_ctx))
        slot.in_use += 1
        slot.expires_at, slot.context_length = _expiry(keep_alive), num_ctx

    def _release(self, key: str, keep_alive: float | None) -> None:
        slot = self._loaded.get(key)
        if slot is None:
            return
        slot.in_use -= 1
        if keep_alive == 0 and not slot.in_use:
            del self._loaded[key]
        else:
            slot.expires_at = _expiry(keep_alive)

    def _host_guard(self, app: ASGIApp) -> ASGIApp:
        """Optional §D.2 fidelity: 403 with an empty body for foreign Host or Origin headers."""

        async def guard(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and self.check_host and not self._allowed(scope):
                await Response(status_code=403)(scope, receive, send)
                return
            await app(scope, receive, send)

        return guard

    def _allowed(self, scope: Scope) -> bool:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        origin = headers.get("origin")
        if origin is not None and not _origin_allowed(origin):
            return False
        return not _is_loopback(self.host) or _host_allowed(headers.get("host", ""))


def _json(value: Any, status: int = 200, media_type: str = _JSON) -> Response:
    return Response(go_json(value), status_code=status, media_type=media_type)


def _plain(status: int, text: str) -> Response:
    return Response(text.encode(), status_code=status, headers={"content-type": "text/plain"})


def _options(body: Mapping[str, Any]) -> tuple[int, int | None]:
    """``(num_ctx, num_predict)`` from the request options."""
    options = body.get("options") if isinstance(body.get("options"), dict) else {}
    num_ctx, num_predict = options.get("num_ctx"), options.get("num_predict")
    return (
        num_ctx if isinstance(num_ctx, int) else DEFAULT_NUM_CTX,
        num_predict if isinstance(num_predict, int) else None,
    )


def _thinking_text(messages: Sequence[Mapping[str, Any]]) -> str:
    return f'The user wrote "{clip(last_user_text(messages))}". A short, direct answer will do.'


def _create_changes(base: FakeModel, body: Mapping[str, Any]) -> dict[str, Any]:
    """The fields a create request overrides on its base model."""
    changes: dict[str, Any] = {k: body[k] for k in ("template", "system") if isinstance(body.get(k), str)}
    license_ = body.get("license")
    if isinstance(license_, (str, list)):
        changes["license"] = license_ if isinstance(license_, str) else "\n".join(map(str, license_))
    if isinstance(body.get("parameters"), dict):
        changes["parameters"] = {**base.parameters, **body["parameters"]}
    return changes


async def _ndjson_lines(events: AsyncGenerator[dict[str, Any], None]) -> AsyncGenerator[bytes, None]:
    async with aclosing(events):
        async for event in events:
            yield _line(event)


async def _last_object(events: AsyncGenerator[dict[str, Any], None]) -> AsyncGenerator[bytes, None]:
    last: dict[str, Any] = {}
    async with aclosing(events):
        async for event in events:
            last = event
    yield go_json(last)


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_allowed(host_header: str) -> bool:
    """Ollama's allowed-host rule for a loopback listener (§D.2)."""
    host = host_header.lower()
    host = host[1:].partition("]")[0] if host.startswith("[") else host.rpartition(":")[0] or host
    if host in ("", "localhost", socket.gethostname().lower()):
        return True
    if host.endswith((".localhost", ".local", ".internal")):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_unspecified


def _origin_allowed(origin: str) -> bool:
    """Ollama's default CORS allow-list: local web origins and desktop/webview schemes."""
    parts = urlsplit(origin)
    if parts.scheme in ("app", "file", "tauri", "vscode-webview", "vscode-file"):
        return True
    local = ("localhost", "127.0.0.1", "0.0.0.0", "::1")
    return parts.scheme in ("http", "https") and parts.hostname in local


def main(argv: Sequence[str] | None = None) -> None:
    """Run a fake Ollama server in the foreground until Ctrl+C or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.fake_ollama", description=main.__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11434)
    parser.add_argument("--token-delay", type=float, default=0.0, help="seconds between streamed tokens")
    parser.add_argument("--load-delay", type=float, default=0.0, help="seconds before the first chunk")
    parser.add_argument(
        "--reply-tokens",
        type=int,
        default=0,
        help="answer every chat with this many tokens (0: the default, prompt-derived reply)",
    )
    args = parser.parse_args(argv)
    reply = None
    if args.reply_tokens > 0:
        text = " ".join(f"word{i % 97}" for i in range(args.reply_tokens))
        reply = text
    fake = FakeOllama(
        args.host, args.port, token_delay=args.token_delay, load_delay=args.load_delay, reply=reply
    )

    def announce() -> None:
        print(f"fake Ollama {fake.version} listening on {fake.url}", file=sys.stderr, flush=True)

    run_until_signalled(fake, announce)


if __name__ == "__main__":
    main()

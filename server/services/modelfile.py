"""Modelfiles: Ollama's recipe for a model (``FROM``, ``SYSTEM``, ``TEMPLATE``, ``PARAMETER``, ``ADAPTER``,
``LICENSE``, ``MESSAGE``), parsed into the fields of Ollama's structured ``/api/create`` (docs/protocols.md,
A.3). Pure functions: no I/O; ``services.ollama_admin.create_model`` sends the result."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from server.errors import InvalidInput

#: Modelfile parameters a created model may set (``PARAMETER`` names of the Modelfile reference).
CREATE_PARAMETERS = frozenset(
    {
        "temperature",
        "top_k",
        "top_p",
        "min_p",
        "typical_p",
        "num_ctx",
        "num_predict",
        "num_keep",
        "repeat_penalty",
        "repeat_last_n",
        "presence_penalty",
        "frequency_penalty",
        "seed",
        "stop",
        "mirostat",
        "mirostat_eta",
        "mirostat_tau",
        "num_batch",
        "num_gpu",
        "num_thread",
    }
)

#: ``PARAMETER`` values that are whole numbers; ``stop`` is a list; every other parameter is a float.
_INT_PARAMETERS = frozenset(
    {"top_k", "num_ctx", "num_predict", "num_keep", "repeat_last_n", "seed", "mirostat", "num_batch"}
    | {"num_gpu", "num_thread"}
)
#: Quantization types Ollama's /api/create accepts in ``quantize`` (from an F16/F32 base).
QUANTIZE_TYPES = ("q4_K_M", "q4_K_S", "q8_0")
_MODELFILE_INSTRUCTIONS = frozenset(
    {"from", "adapter", "parameter", "template", "system", "license", "message"}
)
_MESSAGE_ROLES = frozenset({"system", "user", "assistant"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BLOB_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
MAX_MODELFILE_LENGTH = 65_536


@dataclass
class ModelfileSpec:
    """What a Modelfile asks for, in the fields of Ollama's structured /api/create."""

    base: str
    system: str | None = None
    template: str | None = None
    license: list[str] | None = None
    parameters: dict[str, Any] | None = None
    adapters: list[str] | None = None
    messages: list[dict[str, str]] | None = None


def _printable(text: str, limit: int) -> str:
    """``text`` fit for an error message: control characters blanked, at most ``limit`` characters."""
    return _CONTROL.sub(" ", text)[:limit].strip()


def _modelfile_error(line: int | None, message: str) -> InvalidInput:
    where = f"line {line}: " if line else ""
    detail: dict[str, Any] = {"field": "modelfile"}
    if line:
        detail["line"] = line
    return InvalidInput(f"Modelfile {where}{message}", code="invalid_modelfile", detail=detail)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"')
    return value


def _parameter_value(key: str, raw: str, line: int) -> Any:
    if key not in CREATE_PARAMETERS:
        raise _modelfile_error(line, f"unknown parameter {key!r}")
    value = _unquote(raw.strip())
    if not value:
        raise _modelfile_error(line, f"parameter {key!r} needs a value")
    if key == "stop":
        return value
    try:
        return int(value) if key in _INT_PARAMETERS else float(value)
    except ValueError:
        kind = "a whole number" if key in _INT_PARAMETERS else "a number"
        raise _modelfile_error(line, f"parameter {key!r} needs {kind}, not {value!r}") from None


def parse_modelfile(text: str) -> ModelfileSpec:
    """Parse a Modelfile (FROM, SYSTEM, TEMPLATE, PARAMETER, ADAPTER, LICENSE, MESSAGE; ``#`` comments;
    values in ``\"\"\"`` may span lines). Raises InvalidInput (``invalid_modelfile``) naming the line."""
    if len(text) > MAX_MODELFILE_LENGTH:
        raise _modelfile_error(None, f"is longer than {MAX_MODELFILE_LENGTH} characters")
    base: str | None = None
    spec = ModelfileSpec(base="")
    parameters: dict[str, Any] = {}
    pos, line_no = 0, 0
    while pos < len(text):
        end = text.find("\n", pos)
        end = len(text) if end < 0 else end
        line_no += 1
        start_line = line_no
        line_start, line = pos, text[pos:end]
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            pos = end + 1
            continue
        instruction, _, rest = stripped.partition(" ")
        if "\t" in instruction:
            instruction, _, tail = instruction.partition("\t")
            rest = f"{tail} {rest}"
        rest = rest.strip()
        keyword = instruction.lower()
        if keyword not in _MODELFILE_INSTRUCTIONS:
            raise _modelfile_error(start_line, f"unknown instruction {_printable(instruction, 40)!r}")
        pos = end + 1
        arg_key = ""
        if keyword in ("parameter", "message"):
            arg_key, _, rest = rest.partition(" ")
            rest = rest.strip()
        if rest.startswith('"""'):
            # A value in triple quotes runs up to the closing quotes, possibly lines later.
            offset = text.find('"""', line_start)
            close = text.find('"""', offset + 3)
            if close < 0:
                raise _modelfile_error(start_line, 'unterminated """ quote')
            value = text[offset + 3 : close]
            after_end = text.find("\n", close)
            after_end = len(text) if after_end < 0 else after_end
            if text[close + 3 : after_end].strip():
                raise _modelfile_error(start_line, 'unexpected text after closing """')
            line_no += text.count("\n", offset, close)
            pos = after_end + 1
        else:
            value = _unquote(rest)
        if keyword == "from":
            if base is not None:
                raise _modelfile_error(start_line, "FROM is given more than once")
            base = value.strip()
            if not base:
                raise _modelfile_error(start_line, "FROM needs a model name")
        elif keyword in ("system", "template"):
            setattr(spec, keyword, value)
        elif keyword == "license":
            spec.license = [*(spec.license or []), value]
        elif keyword == "parameter":
            key = arg_key.lower()
            if not key or not value:
                raise _modelfile_error(start_line, "PARAMETER needs a name and a value")
            parsed = _parameter_value(key, value, start_line)
            if key == "stop":
                parameters.setdefault("stop", []).append(parsed)
            else:
                parameters[key] = parsed
        elif keyword == "message":
            role = arg_key.lower()
            if role not in _MESSAGE_ROLES:
                raise _modelfile_error(
                    start_line, "MESSAGE needs a role (system, user or assistant) and text"
                )
            spec.messages = [*(spec.messages or []), {"role": role, "content": value}]
        else:  # adapter
            digest = value.strip().lower()
            if not _BLOB_DIGEST.match(digest):
                raise _modelfile_error(
                    start_line,
                    "ADAPTER takes the digest (sha256:<64 hex>) of a blob already on the Ollama host; "
                    "files cannot be uploaded from here",
                )
            spec.adapters = [*(spec.adapters or []), digest]
    if base is None:
        raise _modelfile_error(None, "FROM is missing: name the local model to build on")
    spec.base = base
    spec.parameters = parameters or None
    return spec

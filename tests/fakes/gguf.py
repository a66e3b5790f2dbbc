"""Just enough GGUF for the fakes and tests: read the key/value metadata at the start of a file, and
write a small synthetic file (the magic, a v3 header, a few keys, no tensors).

Layout (little-endian): ``GGUF``, version u32, tensor count u64, metadata count u64, then per key a
string (u64 length + UTF-8 bytes), a value type u32 and the value; arrays are a type u32, a count u64
and the items.
"""

from __future__ import annotations

import struct
from typing import Any

MAGIC = b"GGUF"
_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9
#: llama.cpp's ``general.file_type`` values, named as Ollama reports ``quantization_level``.
FILE_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    32: "BF16",
}


class _Truncated(Exception):
    pass


def _take(data: bytes, pos: int, size: int) -> tuple[bytes, int]:
    if pos + size > len(data):
        raise _Truncated
    return data[pos : pos + size], pos + size


def _scalar(data: bytes, pos: int, fmt: str) -> tuple[Any, int]:
    raw, pos = _take(data, pos, struct.calcsize(fmt))
    return struct.unpack(fmt, raw)[0], pos


def _string(data: bytes, pos: int) -> tuple[str, int]:
    length, pos = _scalar(data, pos, "<Q")
    raw, pos = _take(data, pos, length)
    return raw.decode("utf-8", "replace"), pos


def _value(data: bytes, pos: int, kind: int) -> tuple[Any, int]:
    if kind in _SCALARS:
        return _scalar(data, pos, _SCALARS[kind])
    if kind == _STRING:
        return _string(data, pos)
    if kind == _ARRAY:  # skipped (tokenizer vocabularies are large): only its length is kept
        item, pos = _scalar(data, pos, "<I")
        count, pos = _scalar(data, pos, "<Q")
        if item in _SCALARS:
            _, pos = _take(data, pos, struct.calcsize(_SCALARS[item]) * count)
        else:
            for _ in range(count):
                _, pos = _value(data, pos, item)
        return count, pos
    raise ValueError(f"unknown GGUF value type {kind}")


def read_metadata(head: bytes) -> dict[str, Any]:
    """The metadata keys found in ``head`` (the first bytes of a file), arrays as their length; keys past
    the end of ``head`` are left out. Raises ``ValueError`` if ``head`` is not GGUF v2 or v3."""
    if head[:4] != MAGIC or len(head) < 24:
        raise ValueError("not a GGUF file")
    version, _tensors, count = struct.unpack("<IQQ", head[4:24])
    if version not in (2, 3):
        raise ValueError(f"unsupported GGUF version {version}")
    found: dict[str, Any] = {}
    pos = 24
    try:
        for _ in range(count):
            key, pos = _string(head, pos)
            kind, pos = _scalar(head, pos, "<I")
            found[key], pos = _value(head, pos, kind)
    except (_Truncated, ValueError):
        pass
    return found


def _encode_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def make_gguf(metadata: dict[str, str | int] | None = None, padding: int = 0) -> bytes:
    """A minimal GGUF v3 file: the given string/u32 keys, no tensors, ``padding`` zero bytes after."""
    items = metadata if metadata is not None else {"general.architecture": "llama", "general.file_type": 15}
    out = [MAGIC, struct.pack("<IQQ", 3, 0, len(items))]
    for key, value in items.items():
        out.append(_encode_string(key))
        if isinstance(value, str):
            out.append(struct.pack("<I", _STRING) + _encode_string(value))
        else:
            out.append(struct.pack("<II", 4, value))
    return b"".join(out) + bytes(padding)

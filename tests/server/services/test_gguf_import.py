"""``services/gguf_import``: receiving the file (hash, 0600 temporary file, magic, cap, removal on every
outcome), the file name given to Ollama and the disk check. The route and Ollama are in
tests/server/test_gguf_import.py."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from server.errors import InsufficientStorage, InvalidInput, PayloadTooLarge
from server.services import gguf_import
from server.services.ollama_admin import OllamaTarget
from server.settings import Settings
from tests.fakes.gguf import make_gguf


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(gguf_import_max_bytes=64 * 1024, ollama_disk_reserve_bytes=0)


def temp_files(settings: Settings) -> list[Path]:
    return sorted(gguf_import.temp_dir(settings).glob(f"{gguf_import.TEMP_PREFIX}*"))


class Source:
    """The request body as chunks; records how many the receiver took and the temp files seen."""

    def __init__(self, chunks: list[bytes], settings: Settings) -> None:
        self.chunks = chunks
        self.settings = settings
        self.taken = 0
        self.modes: list[int] = []

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.modes += [stat.S_IMODE(p.stat().st_mode) for p in temp_files(self.settings)]
            self.taken += 1
            yield chunk


def receive(settings: Settings, chunks: list[bytes], length: int | None = None) -> gguf_import.ReceivedGguf:
    source = Source(chunks, settings)
    return asyncio.run(gguf_import.receive(settings, source.__aiter__(), "x.gguf", length))


def test_receive_hashes_into_a_private_temporary_file(settings: Settings) -> None:
    data = make_gguf(padding=3 * gguf_import.WRITE_CHUNK // 2)
    pieces = [data[i : i + 1000] for i in range(0, 5000, 1000)] + [data[5000:]]
    source = Source(pieces, settings)
    got = asyncio.run(
        gguf_import.receive(
            settings.model_copy(update={"gguf_import_max_bytes": 1 << 30}),
            source.__aiter__(),
            None,
            len(data),
        )
    )
    assert got.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert (got.size, got.filename) == (len(data), "model.gguf")
    assert got.path.read_bytes() == data
    assert set(source.modes) == {0o600}
    got.discard()
    assert temp_files(settings) == []


def test_not_gguf_stops_reading_at_once_and_leaves_nothing(settings: Settings) -> None:
    source = Source([b"GG", b"UX" + bytes(100), *([bytes(1000)] * 20)], settings)
    with pytest.raises(InvalidInput) as error:
        asyncio.run(gguf_import.receive(settings, source.__aiter__(), None, None))
    assert error.value.code == "not_gguf"
    assert source.taken == 2
    assert temp_files(settings) == []
    with pytest.raises(InvalidInput):
        receive(settings, [b"GGU"])  # too short to be anything


def test_the_cap_while_streaming_and_a_short_upload(settings: Settings) -> None:
    head = make_gguf()
    with pytest.raises(PayloadTooLarge) as error:
        receive(settings, [head, *([bytes(16 * 1024)] * 8)])
    assert error.value.detail == {"max_bytes": 64 * 1024}
    with pytest.raises(InvalidInput) as short:
        receive(settings, [head], length=len(head) + 10)
    assert short.value.code == "incomplete_upload"
    assert temp_files(settings) == []


def test_a_client_going_away_removes_the_file(settings: Settings) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield make_gguf()
        raise ConnectionResetError

    with pytest.raises(ConnectionResetError):
        asyncio.run(gguf_import.receive(settings, broken(), None, None))
    assert temp_files(settings) == []


def test_stale_temporary_files_are_swept(settings: Settings) -> None:
    folder = gguf_import.temp_dir(settings)
    folder.mkdir(parents=True)
    stale = folder / f"{gguf_import.TEMP_PREFIX}old.part"
    stale.write_bytes(b"x")
    os.utime(stale, (1, 1))
    receive(settings, [make_gguf()]).discard()
    assert not stale.exists()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, "model.gguf"),
        ("", "model.gguf"),
        ("Qwen2.5-0.5B.Q4_K_M.gguf", "Qwen2.5-0.5B.Q4_K_M.gguf"),
        ("C:\\models\\llama.GGUF", "llama.GGUF"),
        ("../../etc/passwd", "passwd.gguf"),
        ("/abs/my model.bin", "my_model.bin.gguf"),
        ("...gguf", "gguf.gguf"),
        (".gguf", "gguf.gguf"),
    ],
)
def test_check_filename(raw: str | None, expected: str) -> None:
    assert gguf_import.check_filename(raw) == expected


def test_check_disk_counts_the_copy_and_the_blob(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    local = settings.model_copy(update={"ollama_models_dir": models, "ollama_disk_reserve_bytes": 10})
    asked: list[Path] = []

    def free(path: Path) -> int:
        asked.append(path)
        return 2 * 1000 + 10

    monkeypatch.setattr(gguf_import, "free_space", free)
    gguf_import.check_disk(
        local, OllamaTarget("http://127.0.0.1:11434"), 1000
    )  # one disk: 2 copies + reserve
    assert len(asked) == 1
    with pytest.raises(InsufficientStorage) as error:
        gguf_import.check_disk(local, OllamaTarget("http://127.0.0.1:11434"), 1001)
    assert error.value.detail == {"needed_bytes": 2012, "free_bytes": 2010}
    gguf_import.check_disk(local, OllamaTarget("http://ollama.example:11434"), 2000)  # remote: the copy only


def test_events_closed_early_or_ollama_gone_remove_the_file(settings: Settings) -> None:
    nowhere = OllamaTarget("http://127.0.0.1:9")  # nothing listens on the discard port

    async def first_then_close() -> tuple[str | None, bool]:
        received = await gguf_import.receive(
            settings, Source([make_gguf()], settings).__aiter__(), None, None
        )
        events = gguf_import.import_events(settings, nowhere, "m", received)
        first = await events.__anext__()
        still_there = received.path.exists()
        await events.aclose()  # the client went away
        return first.event, still_there

    assert asyncio.run(first_then_close()) == ("progress", True)
    assert temp_files(settings) == []

    async def all_events() -> list[tuple[str | None, dict]]:
        received = await gguf_import.receive(
            settings, Source([make_gguf()], settings).__aiter__(), None, None
        )
        return [(e.event, e.data) async for e in gguf_import.import_events(settings, nowhere, "m", received)]

    got = asyncio.run(all_events())
    assert got[-1][0] == "error" and got[-1][1]["code"] == "ollama_unreachable"
    assert temp_files(settings) == []

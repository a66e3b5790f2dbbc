"""The fit rule and the machine's memory (RAM, the largest GPU services/gpus.py reads)."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.schemas.onboarding import MachineRead
from server.services import gpus, onboarding
from server.services.gpus import GpuReading

GIB = 1024**3
MIB = 1024**2


def machine(**kw: int | None) -> MachineRead:
    return MachineRead(**kw)


def test_memory_needed_is_the_download_plus_overhead() -> None:
    assert onboarding.memory_needed(1 * GIB) == int(1.2 * GIB) + 512 * 1024 * 1024


@pytest.mark.parametrize(
    ("m", "expected"),
    [
        (machine(ram_total=16 * GIB, ram_available=8 * GIB), "fits"),  # available RAM is enough
        (machine(ram_total=16 * GIB, ram_available=1 * GIB), "tight"),  # only once other programs let go
        (machine(ram_total=2 * GIB, ram_available=1 * GIB), "too_big"),
        # a GPU with room fits it even when RAM is short; its total counts as "tight"
        (machine(ram_total=2 * GIB, ram_available=1 * GIB, gpu_total=8 * GIB, gpu_free=6 * GIB), "fits"),
        (machine(ram_total=2 * GIB, ram_available=1 * GIB, gpu_total=8 * GIB, gpu_free=1 * GIB), "tight"),
        (machine(ram_total=2 * GIB, ram_available=1 * GIB, gpu_total=8 * GIB), "fits"),  # use unknown
        (machine(), None),  # nothing known
    ],
)
def test_fit_rule(m: MachineRead, expected: str | None) -> None:
    assert onboarding.fit(3 * GIB, m) == expected


def test_suggestions_are_small_models_with_a_fit_each() -> None:
    result = onboarding.suggestions(machine(ram_total=4 * GIB, ram_available=2 * GIB))
    assert 5 <= len(result.items) <= 8
    fits = {m.name: m.fit for m in result.items}
    assert fits["qwen3:0.6b"] == "fits" and fits["llama3.2:3b"] == "tight"
    assert len({m.key for m in result.items}) == len(result.items)


def reading(index: int, name: str, total: int | None, used: int | None) -> GpuReading:
    return GpuReading(index, "nvidia", name, 10.0, used, total, 50.0, None)


def test_machine_without_a_gpu() -> None:
    m = onboarding.read_machine(gpus=list)
    assert m.ram_total and m.ram_available and m.ram_available <= m.ram_total
    assert (m.gpu_name, m.gpu_total, m.gpu_free) == (None, None, None)


def test_the_largest_gpu_wins() -> None:
    h200 = reading(1, "NVIDIA H200", 143771 * MIB, 0)
    m = onboarding.read_machine(gpus=lambda: [reading(0, "NVIDIA GeForce RTX 3060", 12288 * MIB, MIB), h200])
    assert m.gpu_name == "NVIDIA H200"
    assert m.gpu_total == m.gpu_free == 143771 * MIB


def test_gpu_use_unknown_leaves_free_unknown() -> None:
    m = onboarding.read_machine(gpus=lambda: [reading(0, "GPU", 8 * GIB, None)])
    assert (m.gpu_total, m.gpu_free) == (8 * GIB, None)


def test_a_failing_gpu_reader_leaves_the_gpu_unknown() -> None:
    def broken() -> list[GpuReading]:
        raise RuntimeError("driver bug")

    m = onboarding.read_machine(gpus=broken)
    assert m.ram_total and m.gpu_total is None


def test_suggested_models_read_an_amd_gpu_from_sysfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpus, "_shared", gpus.NvmlSource(loader=no_pynvml))
    device = tmp_path / "card1" / "device"
    device.mkdir(parents=True)
    (device / "mem_info_vram_total").write_text(f"{8 * GIB}\n")
    (device / "mem_info_vram_used").write_text(f"{1 * GIB}\n")
    m = onboarding.suggested_models(tmp_path).machine
    assert (m.gpu_name, m.gpu_total, m.gpu_free) == ("AMD GPU (card1)", 8 * GIB, 7 * GIB)


def no_pynvml() -> None:
    raise ImportError("No module named 'pynvml'")

"""The fit rule and the machine's memory (RAM, an NVIDIA GPU through nvidia-smi, an AMD GPU via sysfs)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from server.schemas.onboarding import MachineRead
from server.services import onboarding

GIB = 1024**3


def machine(**kw: int | None) -> MachineRead:
    return MachineRead(**kw)


def script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "nvidia-smi"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


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


def test_machine_without_a_gpu(tmp_path: Path) -> None:
    m = onboarding.read_machine(nvidia_smi="", drm_root=tmp_path)
    assert m.ram_total and m.ram_available and m.ram_available <= m.ram_total
    assert (m.gpu_name, m.gpu_total, m.gpu_free) == (None, None, None)


def test_nvidia_gpu_the_largest_wins(tmp_path: Path) -> None:
    smi = script(tmp_path, 'echo "NVIDIA GeForce RTX 3060, 12288, 1024"; echo "NVIDIA H200, 143771, 0"')
    m = onboarding.read_machine(nvidia_smi=smi, drm_root=tmp_path / "none")
    assert m.gpu_name == "NVIDIA H200"
    assert m.gpu_total == m.gpu_free == 143771 * 1024 * 1024


def test_a_failing_or_hanging_nvidia_smi_falls_back_to_amd(tmp_path: Path, monkeypatch) -> None:
    device = tmp_path / "drm" / "card1" / "device"
    device.mkdir(parents=True)
    (device / "mem_info_vram_total").write_text(f"{8 * GIB}\n")
    (device / "mem_info_vram_used").write_text(f"{1 * GIB}\n")
    failing = script(tmp_path, "echo 'NVIDIA-SMI has failed' >&2; exit 9")
    m = onboarding.read_machine(nvidia_smi=failing, drm_root=tmp_path / "drm")
    assert (m.gpu_name, m.gpu_total, m.gpu_free) == ("AMD GPU", 8 * GIB, 7 * GIB)

    monkeypatch.setattr(onboarding, "GPU_QUERY_TIMEOUT", 0.2)
    hanging = script(tmp_path, "exec sleep 30")
    m = onboarding.read_machine(nvidia_smi=hanging, drm_root=tmp_path / "drm")
    assert m.gpu_total == 8 * GIB

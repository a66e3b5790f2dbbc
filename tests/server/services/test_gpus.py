"""services/gpus.py: NVIDIA through a fake NVML at the library boundary (the real ``pynvml`` module with its
functions replaced), AMD through a fake sysfs tree; absent library, absent driver, no device; levels."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest

from server.services import gpus
from server.services.gpus import GpuReader, GpuReading, NvmlSource, level_of, read_sysfs

GIB = 1024**3


class FakeNvml:
    """Fake devices behind the real pynvml function names (signatures as in nvidia-ml-py 13.615)."""

    def __init__(self, devices: list[dict[str, Any]]) -> None:
        self.devices = devices
        self.inits = 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def handle(index: int) -> dict[str, Any]:
            return self.devices[index]

        def field(handle: dict[str, Any], key: str) -> Any:
            value = handle[key]
            if isinstance(value, Exception):
                raise value
            return value

        def init() -> None:
            self.inits += 1

        monkeypatch.setattr(pynvml, "nvmlInit", init)
        monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", lambda: len(self.devices))
        monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", handle)
        monkeypatch.setattr(pynvml, "nvmlDeviceGetName", lambda h: field(h, "name"))
        monkeypatch.setattr(
            pynvml, "nvmlDeviceGetUtilizationRates", lambda h: SimpleNamespace(gpu=field(h, "util"), memory=0)
        )
        monkeypatch.setattr(
            pynvml,
            "nvmlDeviceGetMemoryInfo",
            lambda h, version=None: SimpleNamespace(
                total=field(h, "total"), used=field(h, "used"), free=h["total"] - h["used"]
            ),
        )

        def temperature(h: dict[str, Any], sensor: int) -> int:
            assert sensor == pynvml.NVML_TEMPERATURE_GPU
            return field(h, "temp")

        monkeypatch.setattr(pynvml, "nvmlDeviceGetTemperature", temperature)
        monkeypatch.setattr(pynvml, "nvmlDeviceGetPowerUsage", lambda h: field(h, "power_mw"))
        monkeypatch.setattr(pynvml, "nvmlDeviceGetEnforcedPowerLimit", lambda h: field(h, "limit_mw"))


def h200(**kw: Any) -> dict[str, Any]:
    device = {
        "name": "NVIDIA H200",
        "util": 37,
        "total": 141 * GIB,
        "used": 20 * GIB,
        "temp": 41,
        "power_mw": 118_500,
        "limit_mw": 700_000,
    }
    return {**device, **kw}


def raising(exc: type[BaseException]) -> Any:
    def fail(*_: Any) -> None:
        raise exc.__new__(exc)  # NVMLError subclasses take no message

    return fail


def test_nvml_reads_every_device(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml([h200(), h200(name=b"NVIDIA L4", util=99, used=21 * GIB, total=22 * GIB)])
    fake.install(monkeypatch)
    first, second = NvmlSource().read()
    assert first == GpuReading(0, "nvidia", "NVIDIA H200", 37.0, 20 * GIB, 141 * GIB, 41.0, 118.5, 700.0)
    assert second.name == "NVIDIA L4" and second.index == 1  # bytes names are decoded
    assert second.memory_percent == pytest.approx(95.45, abs=0.01)


def test_nvml_initialises_once_and_caches_the_handles(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml([h200()])
    fake.install(monkeypatch)
    source = NvmlSource()
    assert fake.inits == 0  # lazily: nothing at construction
    calls = []
    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", lambda i: calls.append(i) or fake.devices[i])
    for _ in range(3):
        assert [g.name for g in source.read()] == ["NVIDIA H200"]
    assert fake.inits == 1 and calls == [0]


def test_an_unsupported_field_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    not_supported = pynvml.NVMLError_NotSupported.__new__(pynvml.NVMLError_NotSupported)
    FakeNvml([h200(power_mw=not_supported, limit_mw=not_supported, temp=not_supported)]).install(monkeypatch)
    (gpu,) = NvmlSource().read()
    assert (gpu.power_watts, gpu.power_limit_watts, gpu.temperature) == (None, None, None)
    assert gpu.memory_used == 20 * GIB


def test_absent_library_means_no_gpu_and_no_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # ``import pynvml`` fails as if not installed
    with caplog.at_level(logging.DEBUG, logger="server.services.gpus"):
        assert NvmlSource().read() == []
    assert all(r.levelno <= logging.DEBUG for r in caplog.records)


@pytest.mark.parametrize("error", [pynvml.NVMLError_LibraryNotFound, pynvml.NVMLError_DriverNotLoaded])
def test_library_without_a_driver_means_no_gpu_and_no_warning(
    error: type[BaseException], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(pynvml, "nvmlInit", raising(error))
    source = NvmlSource()
    with caplog.at_level(logging.DEBUG, logger="server.services.gpus"):
        assert source.read() == [] and source.read() == []
    assert caplog.records and all(r.levelno <= logging.DEBUG for r in caplog.records)


def test_the_real_library_on_this_machine_never_raises() -> None:
    # whatever the machine has (no driver in CI: an empty list), reading never fails
    assert isinstance(NvmlSource().read(), list)


def test_zero_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeNvml([]).install(monkeypatch)
    assert NvmlSource().read() == []


def amd_card(root: Path, card: str, **files: str) -> Path:
    device = root / card / "device"
    (device / "hwmon" / "hwmon3").mkdir(parents=True)
    for name, value in files.items():
        target = (
            device / "hwmon" / "hwmon3" / name if name in ("temp1_input", "power1_average") else device / name
        )
        target.write_text(value + "\n")
    return device


def test_sysfs_reads_amd_cards(tmp_path: Path) -> None:
    amd_card(
        tmp_path,
        "card1",
        gpu_busy_percent="63",
        mem_info_vram_used=str(12 * GIB),
        mem_info_vram_total=str(16 * GIB),
        temp1_input="71000",
        power1_average="187000000",
        product_name="Radeon RX 7800 XT",
    )
    amd_card(tmp_path, "card10", mem_info_vram_total=str(8 * GIB))  # no busy, no use, no sensors
    (tmp_path / "card1-DP-1").mkdir()  # a connector, not a card
    (tmp_path / "card0" / "device").mkdir(parents=True)  # an Intel iGPU: none of the files
    (tmp_path / "card0" / "device" / "vendor").write_text("0x8086\n")
    first, second = read_sysfs(tmp_path, first_index=2)
    assert first == GpuReading(2, "amd", "Radeon RX 7800 XT", 63.0, 12 * GIB, 16 * GIB, 71.0, 187.0)
    assert second == GpuReading(3, "amd", "AMD GPU (card10)", None, None, 8 * GIB, None, None)


def test_sysfs_without_a_tree_is_empty(tmp_path: Path) -> None:
    assert read_sysfs(tmp_path / "missing") == []


def test_reader_lists_nvidia_then_amd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    FakeNvml([h200()]).install(monkeypatch)
    amd_card(tmp_path, "card2", gpu_busy_percent="5", mem_info_vram_used="1", mem_info_vram_total="2")
    readings = GpuReader(tmp_path, nvml=NvmlSource()).read()
    assert [(g.index, g.vendor) for g in readings] == [(0, "nvidia"), (1, "amd")]


def test_shared_nvml_is_created_on_first_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpus, "_shared", None)
    first = gpus.shared_nvml()
    assert first is gpus.shared_nvml()


def gpu(used: int | None = None, total: int | None = 100, temp: float | None = None) -> GpuReading:
    return GpuReading(0, "amd", "x", None, used, total, temp, None)


@pytest.mark.parametrize(
    ("reading", "expected"),
    [
        (gpu(used=79), "normal"),
        (gpu(used=80), "warning"),  # at the warning threshold
        (gpu(used=95), "warning"),  # at, not above, the alert threshold
        (gpu(used=96), "alert"),
        (gpu(temp=79.9), "normal"),
        (gpu(temp=80), "warning"),
        (gpu(temp=90), "warning"),
        (gpu(temp=90.5), "alert"),
        (gpu(used=10, temp=91), "alert"),  # the worse of the two
        (gpu(used=96, temp=20), "alert"),
        (gpu(used=None, total=None, temp=None), "normal"),  # nothing known
    ],
)
def test_levels_at_the_thresholds(reading: GpuReading, expected: str) -> None:
    assert level_of(reading) == expected


def test_levels_follow_configured_thresholds() -> None:
    limits = {"gpu_memory": (10.0, 20.0), "gpu_temperature": (80.0, 90.0)}
    assert level_of(gpu(used=15), limits) == "warning"
    assert gpus.judged(gpu(used=25), limits)["level"] == "alert"

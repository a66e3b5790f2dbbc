"""The machine's GPUs: NVIDIA through NVML (``nvidia-ml-py``, imported as ``pynvml``), AMD through the
kernel's DRM sysfs. The one GPU reader of the codebase (the health monitor and the setup guide use it).

* **NVML** is initialised once, lazily, on the first read, and the device handles are cached (NVML state
  is process-wide, so one :class:`NvmlSource` is shared: :func:`shared_nvml`). Every NVML call blocks:
  read from a worker thread, never on the event loop. No library, no driver or no device means no GPU —
  no error and no warning in the log (a debug line at most). A field the device does not support (power
  on some boards, temperature on some virtual GPUs) is ``None``.
* **AMD** (amdgpu): ``<root>/card<N>/device/{gpu_busy_percent, mem_info_vram_used, mem_info_vram_total}``
  and the first ``hwmon/hwmon*/{temp1_input (m°C), power1_average (µW)}``, each where present. The root
  (``MODELTRAIN_GPU_SYSFS_ROOT``, default ``/sys/class/drm``) can point at a generated tree: demos and
  tests show fake GPUs on a machine without one through this real code path.
* **Levels**: the worse of memory use (``gpu_memory``, 80/95 %) and temperature (``gpu_temperature``,
  80/90 °C), in the health monitor's vocabulary (normal / warning / alert; ``server/health_levels.py``).
"""

from __future__ import annotations

import importlib
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from server.health_levels import DEFAULT_THRESHOLDS, classify

log = logging.getLogger(__name__)

RANK = {"normal": 0, "warning": 1, "alert": 2}
_CARD = re.compile(r"card(\d+)")


@dataclass(frozen=True)
class GpuReading:
    """One GPU at one moment; ``None`` where the device or driver does not say."""

    index: int
    vendor: str  # nvidia | amd
    name: str
    utilization: float | None  # percent
    memory_used: int | None  # bytes
    memory_total: int | None  # bytes
    temperature: float | None  # °C
    power_watts: float | None
    power_limit_watts: float | None = None

    @property
    def memory_percent(self) -> float | None:
        if self.memory_used is None or not self.memory_total:
            return None
        return round(100.0 * self.memory_used / self.memory_total, 2)


# --- NVIDIA -----------------------------------------------------------------------------------------


def _load_pynvml() -> Any:
    return importlib.import_module("pynvml")


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class NvmlSource:
    """NVIDIA GPUs through NVML. Thread-safe; initialises on the first :meth:`read`."""

    def __init__(self, loader: Callable[[], Any] = _load_pynvml) -> None:
        self._loader = loader
        self._lock = threading.Lock()
        self._nvml: Any = None
        self._handles: list[Any] | None = None  # None: not initialised yet

    def _init(self) -> list[Any]:
        try:
            nvml = self._loader()
        except ImportError:
            log.debug("nvidia-ml-py is not installed: no NVIDIA GPU is read")
            return []
        try:
            nvml.nvmlInit()
            handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(int(nvml.nvmlDeviceGetCount()))]
        except (nvml.NVMLError, OSError) as exc:  # no libnvidia-ml, no driver, no permission...
            log.debug("NVML unavailable (%s): no NVIDIA GPU is read", exc)
            return []
        self._nvml = nvml
        log.debug("NVML: %d GPU(s)", len(handles))
        return handles

    def read(self) -> list[GpuReading]:
        with self._lock:
            if self._handles is None:
                self._handles = self._init()
            handles, nvml = self._handles, self._nvml
        return [self._device(nvml, index, handle) for index, handle in enumerate(handles)]

    @staticmethod
    def _device(nvml: Any, index: int, handle: Any) -> GpuReading:
        def get(call: Callable[[], Any]) -> Any:
            try:
                return call()
            except nvml.NVMLError as exc:  # not supported on this board, or the GPU fell off the bus
                log.debug("NVML GPU %d: %s", index, exc)
                return None

        name = get(lambda: _text(nvml.nvmlDeviceGetName(handle))) or f"NVIDIA GPU {index}"
        rates = get(lambda: nvml.nvmlDeviceGetUtilizationRates(handle))
        memory = get(lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
        temperature = get(lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
        power = get(lambda: nvml.nvmlDeviceGetPowerUsage(handle))  # mW
        limit = get(lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle))  # mW
        return GpuReading(
            index=index,
            vendor="nvidia",
            name=name,
            utilization=float(rates.gpu) if rates is not None else None,
            memory_used=int(memory.used) if memory is not None else None,
            memory_total=int(memory.total) if memory is not None else None,
            temperature=float(temperature) if temperature is not None else None,
            power_watts=round(power / 1000.0, 1) if power is not None else None,
            power_limit_watts=round(limit / 1000.0, 1) if limit is not None else None,
        )


_shared: NvmlSource | None = None
_shared_lock = threading.Lock()


def shared_nvml() -> NvmlSource:
    """The process's NVML source (created on first use, never at import)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = NvmlSource()
        return _shared


# --- AMD (sysfs) ------------------------------------------------------------------------------------


def _number(path: Path) -> float | None:
    try:
        return float(path.read_text().strip())
    except (OSError, ValueError):
        return None


def read_sysfs(root: Path, first_index: int = 0) -> list[GpuReading]:
    """amdgpu cards under ``root`` (a DRM class directory); cards with none of the files are skipped."""
    try:
        cards = [(int(m.group(1)), p) for p in root.iterdir() if (m := _CARD.fullmatch(p.name))]
    except OSError:
        return []
    readings: list[GpuReading] = []
    for _, card in sorted(cards):
        device = card / "device"
        busy = _number(device / "gpu_busy_percent")
        total = _number(device / "mem_info_vram_total")
        if busy is None and total is None:
            continue  # a connector, an Intel or NVIDIA card: not an amdgpu device
        used = _number(device / "mem_info_vram_used")
        hwmons = sorted((device / "hwmon").glob("hwmon*"))
        temp = _number(hwmons[0] / "temp1_input") if hwmons else None
        power = _number(hwmons[0] / "power1_average") if hwmons else None
        try:
            name = (device / "product_name").read_text().strip()
        except OSError:
            name = ""
        readings.append(
            GpuReading(
                index=first_index + len(readings),
                vendor="amd",
                name=name or f"AMD GPU ({card.name})",
                utilization=busy,
                memory_used=int(used) if used is not None else None,
                memory_total=int(total) if total is not None else None,
                temperature=round(temp / 1000.0, 1) if temp is not None else None,
                power_watts=round(power / 1_000_000.0, 1) if power is not None else None,
            )
        )
    return readings


# --- both -------------------------------------------------------------------------------------------


class GpuReader:
    """Every GPU of the machine: NVIDIA first (NVML indices), then AMD. Blocking: call in a thread."""

    def __init__(self, sysfs_root: Path = Path("/sys/class/drm"), nvml: NvmlSource | None = None) -> None:
        self.sysfs_root = sysfs_root
        self._nvml = nvml

    def read(self) -> list[GpuReading]:
        nvidia = (self._nvml or shared_nvml()).read()
        return nvidia + read_sysfs(self.sysfs_root, first_index=len(nvidia))


def level_of(reading: GpuReading, thresholds: dict[str, tuple[float, float]] | None = None) -> str:
    """The worse of the memory and temperature levels (normal when neither is known)."""
    limits = thresholds or DEFAULT_THRESHOLDS
    levels = ["normal"]
    if reading.memory_percent is not None:
        levels.append(classify(reading.memory_percent, limits["gpu_memory"]))
    if reading.temperature is not None:
        levels.append(classify(reading.temperature, limits["gpu_temperature"]))
    return max(levels, key=RANK.__getitem__)


def judged(reading: GpuReading, thresholds: dict[str, tuple[float, float]] | None = None) -> dict[str, Any]:
    """The ``/api/metrics`` ``gpus`` item: the reading, its memory percent and its level."""
    return {
        **asdict(reading),
        "memory_percent": reading.memory_percent,
        "level": level_of(reading, thresholds),
    }

"""What the health monitor reads from this machine's GPUs (a device check, not a benchmark).

    python bench/gpu_check.py [--samples 3] [--interval 1] [--sysfs-root /sys/class/drm]

Runs with nothing but the standard library, ``nvidia-ml-py`` and this repository (``server/services/gpus.py``
and ``server/health_levels.py`` import nothing else), so it can be carried to a GPU machine with the wheel
alone. It prints, as JSON lines: the NVML library and driver versions when NVML answers; each sample's
readings through the real NVML path (and the amdgpu sysfs path) with each GPU's level; the time one read
takes (first read includes nvmlInit). Without a GPU it says so and exits 0 (``make bench`` runs it too).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.services import gpus  # after the path: runs from any directory


def versions() -> dict[str, str]:
    try:
        import pynvml
    except ImportError:
        return {"nvml": "nvidia-ml-py is not installed"}
    out: dict[str, str] = {}
    for key, call in (
        ("driver", "nvmlSystemGetDriverVersion"),
        ("nvml", "nvmlSystemGetNVMLVersion"),
        ("cuda_driver", "nvmlSystemGetCudaDriverVersion_v2"),
    ):
        try:
            pynvml.nvmlInit()
            value = getattr(pynvml, call)()
            out[key] = value.decode() if isinstance(value, bytes) else str(value)
        except Exception as exc:  # a device check reports whatever happens
            out[key] = f"unavailable: {type(exc).__name__}: {exc}"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--sysfs-root", type=Path, default=Path("/sys/class/drm"))
    args = parser.parse_args(argv)

    print(json.dumps({"versions": versions()}))
    source = gpus.NvmlSource()
    reader = gpus.GpuReader(args.sysfs_root, nvml=source)
    found = 0
    for n in range(args.samples):
        started = time.perf_counter()
        readings = reader.read()
        took_ms = (time.perf_counter() - started) * 1000
        found = max(found, len(readings))
        print(
            json.dumps(
                {
                    "sample": n,
                    "read_ms": round(took_ms, 2),
                    "gpus": [
                        {**asdict(r), "memory_percent": r.memory_percent, "level": gpus.level_of(r)}
                        for r in readings
                    ],
                }
            )
        )
        if n + 1 < args.samples:
            time.sleep(args.interval)
    print(
        json.dumps({"result": f"{found} GPU(s) read" if found else "no GPU on this machine (nothing shown)"})
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

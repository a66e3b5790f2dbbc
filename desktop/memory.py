"""Idle memory of the desktop process tree: Chromium switches for the web engine, and handing freed heap
back to the operating system once start-up has settled.

* ``--no-unsandboxed-zygote``: Chromium starts two zygotes (fork servers) on Linux; the unsandboxed one
  only serves child processes that run without a sandbox, and QtWebEngine runs the GPU and network
  services inside the browser process, so it never forks anything. Chromium launches such a child
  directly when this zygote is off (``GetUnsandboxedZygote()`` returns null). The sandbox and the
  sandboxed zygote, which forks the renderers, are untouched. Saves one ~50 MiB (RSS) process.
* ``--no-zygote`` only where the sandbox is already off (QtWebEngine refuses to run sandboxed as root,
  so ``desktop.app`` turns it off there, and a user may turn it off): the remaining zygote exists to set
  up the sandbox and to fork renderers from a pre-initialised image. Without a sandbox the browser
  process starts the one renderer itself, and the ~50 MiB zygote process is gone (the renderer then
  loads the pages it would have shared with the zygote: ~20 MiB net on the tree's RSS). Chromium
  refuses ``--no-zygote`` while the sandbox is on, so it is never added then.
* ``--disable-gpu`` on headless Qt platforms (offscreen, minimal) and on Linux machines without a GPU
  device (no DRM render node, no NVIDIA device: virtual machines, Xvfb, remote X). Qt has no OpenGL on
  the former and composites the page in software anyway; on the latter OpenGL is Mesa's llvmpipe, which
  emulates a GPU on the CPU: Chromium's in-process GPU thread would load it (libLLVM, ~50-60 MiB) for
  no speed. With a GPU, it stays on.
* :func:`apply_qt_rendering`: on such a machine Qt stays off OpenGL too. Qt Quick (which composites
  the web view) renders in software (``QT_QUICK_BACKEND=software``), and the X11 plugin loads no GL
  integration (``QT_XCB_GL_INTEGRATION=none``): otherwise Qt's global share context and QtWebEngine's
  GPU-vendor probe would load llvmpipe anyway. Under Xvfb the app process is ~110 MiB smaller
  (396 -> 286 MiB RSS) and shows the same page. A value the user set is kept.
* :func:`skip_pyside_source_scan`: once PySide6 is imported, shiboken's ``__feature__`` support looks at
  every module imported afterwards with ``inspect.getsource`` (does the source mention "PySide6"?),
  which leaves each whole source file in ``linecache`` for good. With the server stack imported after
  Qt that was up to ~800 files: 12-35 MiB of Python strings (depending on how the server thread's
  imports interleave with Qt's) and up to 0.15 s of start-up CPU. The same question is answered from a
  plain read that caches nothing.
* :func:`release_startup_memory`: once start-up has settled, drop ``linecache`` (refilled on demand by
  tracebacks) and hand freed heap back to the OS: glibc keeps freed memory mapped, ``malloc_trim(0)``
  returns the free pages of every arena. No-op on other C libraries and platforms.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import linecache
import logging
import os
import sys
from collections.abc import Mapping, MutableMapping
from pathlib import Path

log = logging.getLogger(__name__)

ENV_VAR = "QTWEBENGINE_CHROMIUM_FLAGS"
#: QtWebEngine's own switch for running without Chromium's sandbox (documented value: 1).
SANDBOX_OFF_VAR = "QTWEBENGINE_DISABLE_SANDBOX"
#: Qt platform plugins without a GPU surface: the page is composited in software there.
HEADLESS_PLATFORMS = frozenset({"offscreen", "minimal"})
#: Device nodes of a GPU driver on Linux, under /dev: DRM render nodes, NVIDIA's own driver.
GPU_DEVICE_PATTERNS = ("dri/renderD*", "nvidia[0-9]*")
#: What Qt renders with where there is no GPU device (values the user set win).
SOFTWARE_RENDERING_ENV = {"QT_QUICK_BACKEND": "software", "QT_XCB_GL_INTEGRATION": "none"}


def gpu_device_present(system: str | None = None, dev: Path = Path("/dev")) -> bool:
    """False only on Linux without a GPU device node (OpenGL there can only be a software emulation).
    Other systems always reach their GPU (or their own software fallback) through the OS."""
    system = sys.platform if system is None else system
    if not system.startswith("linux"):
        return True
    return any(next(dev.glob(pattern), None) is not None for pattern in GPU_DEVICE_PATTERNS)


def apply_qt_rendering(
    environ: MutableMapping[str, str] | None = None, system: str | None = None, dev: Path = Path("/dev")
) -> list[str]:
    """Before the QApplication: keep Qt off OpenGL on a machine without a GPU device (see the module
    docstring). Returns the variables set; one the user set is left alone."""
    environ = os.environ if environ is None else environ
    if gpu_device_present(system, dev):
        return []
    added = [name for name in SOFTWARE_RENDERING_ENV if not environ.get(name)]
    for name in added:
        environ[name] = SOFTWARE_RENDERING_ENV[name]
    if added:
        log.info("no GPU device: Qt renders in software (%s)", ", ".join(added))
    return added


def chromium_flags(
    platform_name: str, system: str | None = None, *, sandbox_off: bool = False, gpu_device: bool = True
) -> list[str]:
    """The switches we add for this Qt platform (``QGuiApplication.platformName()``); ``sandbox_off``:
    Chromium's sandbox is already disabled (see :func:`sandbox_disabled`); ``gpu_device``: see
    :func:`gpu_device_present`."""
    system = sys.platform if system is None else system
    flags: list[str] = []
    if system.startswith("linux"):
        flags.append("--no-unsandboxed-zygote")
        if sandbox_off:
            flags.append("--no-zygote")
    if platform_name in HEADLESS_PLATFORMS or not gpu_device:
        flags.append("--disable-gpu")
    return flags


def sandbox_disabled(environ: Mapping[str, str]) -> bool:
    """True only when Chromium's sandbox is certainly off: ``QTWEBENGINE_DISABLE_SANDBOX=1`` or
    ``--no-sandbox`` among the user's switches. Anything else counts as on (a wrong guess the other way
    would make Chromium refuse to start)."""
    switches = environ.get(ENV_VAR, "").split()
    return environ.get(SANDBOX_OFF_VAR, "").strip() == "1" or "--no-sandbox" in switches


def apply_chromium_flags(
    platform_name: str,
    environ: MutableMapping[str, str] | None = None,
    system: str | None = None,
    dev: Path = Path("/dev"),
) -> str:
    """Append our switches to ``QTWEBENGINE_CHROMIUM_FLAGS`` (read when the web engine starts, i.e. when
    the first profile is created), keeping whatever the user set; a switch the user already gave is not
    repeated. Call it after the sandbox decision (``QTWEBENGINE_DISABLE_SANDBOX``) is made. Returns the
    resulting value."""
    environ = os.environ if environ is None else environ
    existing = environ.get(ENV_VAR, "").split()
    given = {flag.split("=", 1)[0] for flag in existing}
    wanted = chromium_flags(
        platform_name,
        system,
        sandbox_off=sandbox_disabled(environ),
        gpu_device=gpu_device_present(system, dev),
    )
    added = [flag for flag in wanted if flag.split("=", 1)[0] not in given]
    value = " ".join([*existing, *added])
    if value:
        environ[ENV_VAR] = value
    if added:
        log.info("web engine switches: %s", " ".join(added))
    return value


def _source_mentions_pyside(module: object) -> bool:
    """shiboken's ``_mod_uses_pyside`` without ``inspect.getsource``/``linecache``. Modules without a
    ``.py`` source file (built-in, extension, frozen, bundled) answer False, as they do there."""
    spec = getattr(module, "__spec__", None)
    origin = getattr(spec, "origin", None) or getattr(module, "__file__", None)
    if not isinstance(origin, str) or not origin.endswith(".py"):
        return False
    try:
        with open(origin, "rb") as source:
            return b"PySide6" in source.read()
    except OSError:
        return False


_source_mentions_pyside.modeltrain = True  # type: ignore[attr-defined]


def skip_pyside_source_scan() -> bool:
    """Replace the source check of PySide6's ``__feature__`` support (see the module docstring). Call it
    right after PySide6 is imported, before the big imports. False if PySide6 (or that check) is absent."""
    feature = sys.modules.get("shibokensupport.feature")
    current = getattr(feature, "_mod_uses_pyside", None)
    if current is None:
        return False
    if not getattr(current, "modeltrain", False):
        feature._mod_uses_pyside = _source_mentions_pyside  # type: ignore[union-attr]
    return True


def release_startup_memory() -> bool:
    """Drop the source-line cache and trim the heap; True if the heap was trimmed."""
    linecache.clearcache()
    return trim_heap()


def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim  # glibc only (musl has none)
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def trim_heap() -> bool:
    """Return free heap pages of every malloc arena to the OS. True if glibc's malloc_trim ran."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True

"""Idle memory helpers: the Chromium switches we add, PySide6's source scan without linecache, and the
post-start-up release (linecache, malloc_trim)."""

from __future__ import annotations

import linecache
import sys
import types
from pathlib import Path

import pytest

from desktop import memory


def test_switches_per_platform() -> None:
    assert memory.chromium_flags("xcb", "linux") == ["--no-unsandboxed-zygote"]
    assert memory.chromium_flags("wayland", "linux") == ["--no-unsandboxed-zygote"]
    assert memory.chromium_flags("offscreen", "linux") == ["--no-unsandboxed-zygote", "--disable-gpu"]
    assert memory.chromium_flags("minimal", "linux") == ["--no-unsandboxed-zygote", "--disable-gpu"]
    # Zygotes are Linux-only; with a display the GPU is never turned off.
    assert memory.chromium_flags("windows", "win32") == []
    assert memory.chromium_flags("cocoa", "darwin") == []
    assert memory.chromium_flags("offscreen", "darwin") == ["--disable-gpu"]
    # Never the sandbox or the single-process model; the zygote only where the sandbox is already off.
    for flags in (memory.chromium_flags(p, s) for p in ("xcb", "offscreen") for s in ("linux", "win32")):
        assert not any(f.startswith(("--no-sandbox", "--single-process", "--no-zygote")) for f in flags)
    without_sandbox = memory.chromium_flags("xcb", "linux", sandbox_off=True)
    assert without_sandbox == ["--no-unsandboxed-zygote", "--no-zygote"]
    assert memory.chromium_flags("windows", "win32", sandbox_off=True) == []
    for p, s in (("xcb", "linux"), ("offscreen", "linux"), ("offscreen", "win32")):
        flags = memory.chromium_flags(p, s, sandbox_off=True)
        assert not any(f.startswith(("--no-sandbox", "--single-process")) for f in flags)


@pytest.mark.parametrize(
    ("environ", "off"),
    [
        ({}, False),
        ({"QTWEBENGINE_DISABLE_SANDBOX": "1"}, True),
        ({"QTWEBENGINE_DISABLE_SANDBOX": " 1 "}, True),
        ({"QTWEBENGINE_DISABLE_SANDBOX": "0"}, False),  # not the documented value: counted as on
        ({"QTWEBENGINE_DISABLE_SANDBOX": ""}, False),
        ({memory.ENV_VAR: "--enable-logging --no-sandbox"}, True),
        ({memory.ENV_VAR: "--no-sandboxing"}, False),
    ],
)
def test_sandbox_counts_as_off_only_when_certainly_off(environ: dict[str, str], off: bool) -> None:
    assert memory.sandbox_disabled(environ) is off


def test_zygote_is_dropped_only_without_the_sandbox(gpu_dev: Path) -> None:
    env = {"QTWEBENGINE_DISABLE_SANDBOX": "1"}
    without_zygotes = memory.apply_chromium_flags("xcb", env, "linux", gpu_dev)
    assert without_zygotes == "--no-unsandboxed-zygote --no-zygote"
    env = {memory.ENV_VAR: "--no-sandbox"}
    added = memory.apply_chromium_flags("xcb", env, "linux", gpu_dev)
    assert added == "--no-sandbox --no-unsandboxed-zygote --no-zygote"
    env = {}
    assert "--no-zygote" not in memory.apply_chromium_flags("xcb", env, "linux", gpu_dev).split()


@pytest.fixture
def gpu_dev(tmp_path: Path) -> Path:
    """A /dev with a DRM render node."""
    dev = tmp_path / "gpu"
    (dev / "dri").mkdir(parents=True)
    (dev / "dri" / "renderD128").touch()
    return dev


@pytest.fixture
def no_gpu_dev(tmp_path: Path) -> Path:
    """A /dev of a virtual machine without a GPU: a DRM card node at most, no render node."""
    dev = tmp_path / "no-gpu"
    (dev / "dri").mkdir(parents=True)
    (dev / "dri" / "card0").touch()
    (dev / "null").touch()
    return dev


def test_gpu_device_is_a_render_node_or_an_nvidia_device(
    gpu_dev: Path, no_gpu_dev: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    assert memory.gpu_device_present("linux", gpu_dev) is True
    assert memory.gpu_device_present("linux", no_gpu_dev) is False
    nvidia = tmp_path_factory.mktemp("nvidia")
    (nvidia / "nvidiactl").touch()
    assert memory.gpu_device_present("linux", nvidia) is False  # the control node alone is no GPU
    (nvidia / "nvidia0").touch()
    assert memory.gpu_device_present("linux", nvidia) is True
    # Elsewhere the OS's graphics API decides; nothing is switched off.
    assert memory.gpu_device_present("win32", no_gpu_dev) is True
    assert memory.gpu_device_present("darwin", no_gpu_dev) is True


def test_without_a_gpu_device_both_qt_and_chromium_render_in_software(
    gpu_dev: Path, no_gpu_dev: Path
) -> None:
    software = ["--no-unsandboxed-zygote", "--disable-gpu"]
    assert memory.chromium_flags("xcb", "linux", gpu_device=False) == software
    env: dict[str, str] = {}
    assert memory.apply_chromium_flags("xcb", env, "linux", no_gpu_dev) == " ".join(software)
    env = {}
    assert memory.apply_qt_rendering(env, "linux", no_gpu_dev) == list(memory.SOFTWARE_RENDERING_ENV)
    assert env == {"QT_QUICK_BACKEND": "software", "QT_XCB_GL_INTEGRATION": "none"}

    # With a GPU nothing changes.
    env = {}
    assert memory.apply_chromium_flags("xcb", env, "linux", gpu_dev) == "--no-unsandboxed-zygote"
    env = {}
    assert memory.apply_qt_rendering(env, "linux", gpu_dev) == []
    assert env == {}
    # The user's own choices stand.
    env = {"QT_QUICK_BACKEND": "opengl"}
    assert memory.apply_qt_rendering(env, "linux", no_gpu_dev) == ["QT_XCB_GL_INTEGRATION"]
    assert env == {"QT_QUICK_BACKEND": "opengl", "QT_XCB_GL_INTEGRATION": "none"}


def test_switches_are_appended_to_the_users_own(gpu_dev: Path) -> None:
    env: dict[str, str] = {}
    assert memory.apply_chromium_flags("xcb", env, "linux", gpu_dev) == "--no-unsandboxed-zygote"
    assert env[memory.ENV_VAR] == "--no-unsandboxed-zygote"

    env = {memory.ENV_VAR: "--enable-logging --v=1"}
    memory.apply_chromium_flags("offscreen", env, "linux", gpu_dev)
    assert env[memory.ENV_VAR] == "--enable-logging --v=1 --no-unsandboxed-zygote --disable-gpu"

    # Applying twice, or over a switch the user already gave, repeats nothing.
    memory.apply_chromium_flags("offscreen", env, "linux", gpu_dev)
    assert env[memory.ENV_VAR].split().count("--disable-gpu") == 1
    env = {memory.ENV_VAR: "--disable-gpu=0"}
    memory.apply_chromium_flags("offscreen", env, "linux", gpu_dev)
    assert env[memory.ENV_VAR] == "--disable-gpu=0 --no-unsandboxed-zygote"

    env = {}
    assert memory.apply_chromium_flags("windows", env, "win32") == ""
    assert memory.ENV_VAR not in env


def _module_from(path: Path) -> types.ModuleType:
    module = types.ModuleType(path.stem)
    module.__file__ = str(path)
    module.__spec__ = None
    return module


def test_pyside_source_scan_answers_the_same_without_linecache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import PySide6.QtCore  # noqa: F401  (registers shibokensupport.feature)

    feature = sys.modules["shibokensupport.feature"]
    monkeypatch.setattr(feature, "_mod_uses_pyside", feature._mod_uses_pyside)  # restored afterwards
    original = feature._mod_uses_pyside

    uses = tmp_path / "uses_qt.py"
    uses.write_text("from PySide6.QtCore import QObject\n")
    plain = tmp_path / "plain.py"
    plain.write_text("VALUE = 1\n")
    modules = [_module_from(uses), _module_from(plain), sys, _module_from(tmp_path / "missing.py")]
    expected = [original(m) for m in modules]
    assert expected == [True, False, False, False]
    linecache.clearcache()

    assert memory.skip_pyside_source_scan() is True
    assert memory.skip_pyside_source_scan() is True  # idempotent
    assert feature._mod_uses_pyside is memory._source_mentions_pyside
    assert [feature._mod_uses_pyside(m) for m in modules] == expected
    assert str(uses) not in linecache.cache and str(plain) not in linecache.cache
    # The hook PySide6 runs after each import goes through the replacement.
    feature.pyside_feature_dict.pop("plain", None)
    feature.feature_imported(_module_from(plain))
    assert feature.pyside_feature_dict.pop("plain") == -1
    assert str(plain) not in linecache.cache


def test_pyside_source_scan_needs_pyside(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "shibokensupport.feature", raising=False)
    assert memory.skip_pyside_source_scan() is False


def test_release_startup_memory_drops_linecache_and_trims(tmp_path: Path) -> None:
    source = tmp_path / "cached.py"
    source.write_text("x = 1\n")
    assert linecache.getline(str(source), 1) == "x = 1\n"
    assert str(source) in linecache.cache
    trimmed = memory.release_startup_memory()
    assert str(source) not in linecache.cache
    if sys.platform.startswith("linux") and memory._malloc_trim() is not None:
        assert trimmed is True
    else:
        assert trimmed is False

"""The desktop package built by `make package` (packaging/pyinstaller/modeltrain.spec): what is inside,
the binary's self-test headless, and the same binary as the `modeltrain` command line. Only
`make test-package` collects it, after building (tests/deploy/conftest.py). Prints the bundle size and the
packaged start-up figures."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import time
from pathlib import Path

import pytest

from tests.deploy.support import PACKAGING, REPO

SPEC = PACKAGING / "pyinstaller" / "modeltrain.spec"


def _size_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink()) / 2**20


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


#: Where `make package` (run by `make deb` and `make test-package`) puts the PyInstaller bundle.
BUNDLE = REPO / "build" / "package" / "dist" / "ModelTrain"


@pytest.mark.timeout(600)
def test_bundle_contents_and_self_test(tmp_path: Path) -> None:
    assert (BUNDLE / "ModelTrain").is_file(), "build the package first (make package)"
    assert SPEC.stat().st_mtime <= (BUNDLE / "ModelTrain").stat().st_mtime, "the bundle predates the spec"
    bundle = BUNDLE
    binary = bundle / "ModelTrain"
    assert binary.is_file() and os.access(binary, os.X_OK)
    internal = bundle / "_internal"
    # The web UI and the migrations are inside; unused Qt modules are not.
    assert (internal / "webui" / "dist" / "index.html").is_file()
    # The API docs page works offline: Swagger UI ships inside, with its licence (server/api/docs.py).
    swagger = internal / "webui" / "dist" / "swagger-ui"
    for name in ("swagger-ui-bundle.js", "swagger-ui.css", "LICENSE", "NOTICE"):
        assert (swagger / name).is_file() and (swagger / name).stat().st_size > 0, name
    assert any((internal / "server" / "migrations" / "versions").glob("*_0001_initial_schema.py"))
    # sqlite-vec's extension beside its package, where loadable_path() looks (server/db/sqlite_vec.py).
    assert list((internal / "sqlite_vec").glob("vec0.*")), "sqlite-vec's vec0 library is not bundled"
    pyside = internal / "PySide6"
    for unused in ("QtQml", "QtQuick", "QtQuickWidgets", "QtMultimedia", "QtCharts", "Qt3DCore"):
        assert not list(pyside.glob(f"{unused}.*")), unused
    assert list(pyside.glob("QtWebEngineWidgets.*"))

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELTRAIN_", "QT_"))}
    env.update({"QT_QPA_PLATFORM": "offscreen", "HOME": str(tmp_path / "home")})
    if os.geteuid() == 0:
        env["QTWEBENGINE_DISABLE_SANDBOX"] = "1"  # QtWebEngine refuses root without it (never for users)
    shot = tmp_path / "shot.png"
    started = time.monotonic()
    run = subprocess.run(
        [str(binary), "--self-test", "--screenshot", str(shot), "--data-dir", str(tmp_path / "data")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        cwd=tmp_path,
    )
    wall_s = time.monotonic() - started
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-5000:]
    result = re.search(r"self-test ok: .*", output)
    assert result, output[-3000:]
    width, height = _png_size(shot)
    assert width >= 400 and height >= 300
    ui = re.search(r"ui ([\d.]+) s", result.group(0))
    print(
        f"\npackage: {_size_mib(bundle):.0f} MiB onedir ({sum(1 for _ in bundle.rglob('*'))} files); "
        f"packaged self-test: UI loaded {ui.group(1) if ui else '?'} s after start, "
        f"whole run {wall_s:.1f} s; {result.group(0)}"
    )


def test_the_same_binary_is_the_command_line_under_its_other_name(tmp_path: Path) -> None:
    """Started as `modeltrain` (how the Linux package links it), the bundle is the server's command line."""
    assert (BUNDLE / "ModelTrain").is_file(), "build the package first (make package)"
    cli = tmp_path / "modeltrain"
    cli.symlink_to(BUNDLE / "ModelTrain")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELTRAIN_", "QT_"))}
    env["HOME"] = str(tmp_path / "home")
    version = subprocess.run([str(cli), "--version"], capture_output=True, text=True, env=env, timeout=60)
    assert version.returncode == 0 and version.stdout.strip().startswith("modeltrain "), version
    data = tmp_path / "data"
    migrate = subprocess.run(
        [str(cli), "migrate", "--data-dir", str(data)], capture_output=True, text=True, env=env, timeout=120
    )
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    assert (data / "modeltrain.db").is_file()
    wrong = subprocess.run([str(cli), "no-such-command"], capture_output=True, text=True, env=env, timeout=60)
    assert wrong.returncode == 2 and "invalid choice" in wrong.stderr

"""Linux packages of the desktop app, made from the PyInstaller bundle (``make package``):

* ``modeltrain_<version>_<arch>.deb``: the bundle under ``/opt/modeltrain``; ``modeltrain-desktop`` (the
  app) and ``modeltrain`` (the server's command line: the same binary, started under that name) on PATH;
  the desktop entry and icon. Its ``Depends`` are the system libraries the bundle links against and does
  not carry, found by ``dpkg-shlibdeps``. No service is installed or enabled, and there are no maintainer
  scripts: nothing in a user's home (the data directory) is ever touched on remove or purge.
* ``modeltrain-<version>-linux-<arch>.tar.xz``: the same folder, for other distributions.

Usage: ``python packaging/deb/build_deb.py [--dist DIR] [--out DIR] [--no-tarball]`` (``make deb``).
Prints the sizes.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINUX = ROOT / "packaging" / "pyinstaller" / "linux"
PREFIX = "opt/modeltrain"
DESCRIPTION = """\
Manager for local large language models
 ModelTrain manages the Ollama daemon and its models, talks to OpenAI-compatible
 APIs, and chats with them, in a desktop window with a tray health monitor. The
 same server can be opened to the local network over HTTPS and offers an
 OpenAI-compatible API to other programs."""


def version() -> str:
    sys.path.insert(0, str(ROOT))
    from server import __version__

    # Debian versions may not contain '-' without a revision; PEP 440 local parts use '+'.
    return __version__.replace("-", "~")


def architecture() -> str:
    return subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()


def _elf_files(root: Path) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            with path.open("rb") as fh:
                if fh.read(4) == b"\x7fELF":
                    found.append(path)
    return found


def shlib_depends(bundle: Path) -> str:
    """The Debian packages providing the shared libraries the bundle needs and does not ship."""
    private = sorted({str(p.parent) for p in _elf_files(bundle) if ".so" in p.name})
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "debian").mkdir()
        (Path(tmp) / "debian" / "control").write_text(
            "Source: modeltrain\n\nPackage: modeltrain\nArchitecture: any\n"
        )
        result = subprocess.run(
            [
                "dpkg-shlibdeps",
                "-O",
                "--ignore-missing-info",
                "--warnings=0",
                *(f"-l{d}" for d in private),
                *(str(p) for p in _elf_files(bundle)),
            ],
            cwd=tmp,
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0:
        raise SystemExit(f"dpkg-shlibdeps failed:\n{result.stderr[-4000:]}")
    match = re.search(r"^shlibs:Depends=(.*)$", result.stdout, re.MULTILINE)
    return match.group(1).strip() if match else ""


def _size_kib(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink()) // 1024


def stage(bundle: Path, staging: Path, ver: str, arch: str) -> None:
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(bundle, staging / PREFIX, symlinks=True)
    binary = f"/{PREFIX}/ModelTrain"
    bin_dir = staging / "usr" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("modeltrain-desktop", "modeltrain"):
        (bin_dir / name).symlink_to(binary)
    apps = staging / "usr" / "share" / "applications"
    apps.mkdir(parents=True)
    desktop_entry = (LINUX / "modeltrain.desktop").read_text()
    (apps / "modeltrain.desktop").write_text(desktop_entry)
    icons = staging / "usr" / "share" / "icons" / "hicolor" / "scalable" / "apps"
    icons.mkdir(parents=True)
    shutil.copy(LINUX / "modeltrain.svg", icons / "modeltrain.svg")
    doc = staging / "usr" / "share" / "doc" / "modeltrain"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
        "Upstream-Name: modeltrain\n\n"
        "Files: *\nCopyright: the ModelTrain authors\n"
        "Comment: the bundled third-party components keep their own licences; see\n"
        f" /{PREFIX}/_internal (PySide6/Qt: LGPLv3, Swagger UI: Apache-2.0, and others).\n"
    )
    debian = staging / "DEBIAN"
    debian.mkdir()
    depends = shlib_depends(staging / PREFIX)
    control = [
        "Package: modeltrain",
        f"Version: {ver}",
        "Section: utils",
        "Priority: optional",
        f"Architecture: {arch}",
        "Maintainer: ModelTrain developers <packaging@modeltrain.invalid>",
        f"Installed-Size: {_size_kib(staging)}",
    ]
    if depends:
        control.append(f"Depends: {depends}")
    control.append(f"Description: {DESCRIPTION}")
    (debian / "control").write_text("\n".join(control) + "\n")
    for path in [staging, *staging.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dist", type=Path, default=ROOT / "build" / "package" / "dist" / "ModelTrain")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "package")
    parser.add_argument(
        "--no-tarball", action="store_true", help="only the .deb (the tests install that; saves minutes)"
    )
    args = parser.parse_args(argv)
    bundle: Path = args.dist
    if not (bundle / "ModelTrain").is_file():
        raise SystemExit(f"no PyInstaller bundle in {bundle}: run `make package` first")
    ver, arch = version(), architecture()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    staging = out / "deb-root"
    stage(bundle, staging, ver, arch)
    deb = out / f"modeltrain_{ver}_{arch}.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(staging), str(deb)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    shutil.rmtree(staging)
    mib = 2**20
    sizes = [f"{deb.name}: {deb.stat().st_size / mib:.0f} MiB"]
    if not args.no_tarball:
        tarball = out / f"modeltrain-{ver}-linux-{arch}.tar.xz"
        subprocess.run(
            ["tar", "-C", str(bundle.parent), "-cJf", str(tarball), bundle.name],
            check=True,
            env={**os.environ, "XZ_OPT": "-T0"},
        )
        sizes.append(f"{tarball.name}: {tarball.stat().st_size / mib:.0f} MiB")
    print(
        f"{out}: {'; '.join(sizes)} (folder {_size_kib(bundle) / 1024:.0f} MiB), "
        f"made in {time.monotonic() - started:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

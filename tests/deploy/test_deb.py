"""The Linux package (packaging/deb/build_deb.py, `make deb`): installed with apt, the installed app passes
its self-test and the command line answers; removed and purged, it leaves the user's data directory alone.

Needs the package built first (`make deb`, which `make test-package` runs) and root (it installs into this
machine's /opt and /usr, as a user would with sudo). Prints the package sizes."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.deploy.support import REPO

OUT = REPO / "build" / "package"
#: The issue's target for the .deb.
MAX_DEB_MIB = 180


def _built(pattern: str) -> Path:
    found = sorted(OUT.glob(pattern), key=lambda p: p.stat().st_mtime)
    assert found, f"no {pattern} in {OUT}: run `make deb` first"
    return found[-1]


def _apt(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(
        ["apt-get", "-y", "-q", *args], capture_output=True, text=True, env=env, check=False
    )


def _installed() -> bool:
    status = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", "modeltrain"], capture_output=True, text=True, check=False
    )
    return status.stdout.strip() == "install ok installed"


@pytest.mark.timeout(900)
def test_install_self_test_remove_keeps_user_data(tmp_path: Path) -> None:
    assert os.geteuid() == 0, "installing a package needs root (CI runs as root)"
    deb = _built("modeltrain_*.deb")
    info = subprocess.run(
        ["dpkg-deb", "--field", str(deb)], capture_output=True, text=True, check=True
    ).stdout
    fields = dict(re.findall(r"^([\w-]+): (.*)$", info, re.MULTILINE))
    assert fields["Package"] == "modeltrain"
    assert "libc6" in fields.get("Depends", ""), fields  # system libraries found by dpkg-shlibdeps
    contents = subprocess.run(["dpkg-deb", "--contents", str(deb)], capture_output=True, text=True).stdout
    assert "./opt/modeltrain/ModelTrain" in contents
    assert "./usr/share/applications/modeltrain.desktop" in contents
    assert not re.search(r"\./(etc|lib)/systemd|\./home|\./root", contents)  # no services, no user files
    scripts = subprocess.run(["dpkg-deb", "--ctrl-tarfile", str(deb)], capture_output=True).stdout
    assert b"postinst" not in scripts and b"postrm" not in scripts

    if _installed():
        _apt("remove", "modeltrain")
    install = _apt("install", "--no-install-recommends", str(deb))
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    try:
        assert _installed()
        for name in ("modeltrain-desktop", "modeltrain"):
            assert os.path.realpath(f"/usr/bin/{name}") == "/opt/modeltrain/ModelTrain"
        home = tmp_path / "home"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELTRAIN_", "QT_", "XDG_"))}
        env.update(
            {
                "HOME": str(home),
                "QT_QPA_PLATFORM": "offscreen",
                "QTWEBENGINE_DISABLE_SANDBOX": "1",  # QtWebEngine refuses root without it (never for users)
                "PATH": "/usr/bin:/bin",
            }
        )
        # The command line, from the same binary started under its other name.
        version = subprocess.run(
            ["modeltrain", "--version"], capture_output=True, text=True, env=env, timeout=60, check=False
        )
        assert version.returncode == 0 and fields["Version"].split("~")[0] in version.stdout + version.stderr
        # The installed app, started as a user would (no --data-dir: the platform's user data folder).
        run = subprocess.run(
            ["modeltrain-desktop", "--self-test"],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
            cwd=tmp_path,
        )
        output = run.stdout + run.stderr
        assert run.returncode == 0 and "self-test ok" in output, output[-4000:]
        data = home / ".local" / "share" / "modeltrain"
        database = list(data.rglob("*.db"))
        assert database, sorted(str(p) for p in home.rglob("*"))[:50]
        before = {p: p.stat().st_size for p in data.rglob("*") if p.is_file()}
    finally:
        removed = _apt("remove", "modeltrain")
        # apt no longer knows a local package once it is removed without conffiles: purge through dpkg.
        purged = subprocess.run(
            ["dpkg", "--purge", "modeltrain"], capture_output=True, text=True, check=False
        )
    assert removed.returncode == 0 and purged.returncode == 0, removed.stderr + purged.stderr
    assert not _installed()
    assert not Path("/usr/bin/modeltrain-desktop").exists() and not Path("/usr/bin/modeltrain").exists()
    # Every file of the package is gone. (QtWebEngine may leave an empty directory it created at run time,
    # which dpkg does not own and so does not remove.)
    leftovers = [p for p in Path("/opt/modeltrain").rglob("*") if not p.is_dir()]
    assert leftovers == [], leftovers[:20]
    after = {p: p.stat().st_size for p in data.rglob("*") if p.is_file()}
    assert after == before  # the user's data is all still there, unchanged
    mib = 2**20
    print(
        f"\n.deb {deb.stat().st_size / mib:.0f} MiB (target <= {MAX_DEB_MIB}), "
        f"installed {int(fields['Installed-Size']) / 1024:.0f} MiB"
    )

"""The managed Ollama runtime: install, update with rollback, and every failure, against a fake release
site (tests/fakes/fake_releases.py) serving real ``.tar.zst`` archives of a stand-in ``ollama``."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from server.errors import Conflict
from server.services.ollama_daemon import OllamaDaemon, fetch_version, find_ollama_binary
from server.services.ollama_install import InstallJob, RuntimeInstaller, parse_version_output
from server.services.ollama_releases import asset_names, parse_checksums, version_of_tag
from server.settings import Settings
from tests.fakes.fake_ollama import FakeOllama
from tests.fakes.fake_releases import FakeReleases, random_padding
from tests.server.services.test_ollama_daemon import FAKE_BIN, free_port, wait_until

NAMES = asset_names()
MAIN = NAMES[0]


@pytest.fixture
def make_runtime(
    make_settings: Callable[..., Settings], releases: FakeReleases, empty_path: Path
) -> Iterator[Callable[..., tuple[RuntimeInstaller, OllamaDaemon]]]:
    daemons: list[OllamaDaemon] = []

    def make(**overrides) -> tuple[RuntimeInstaller, OllamaDaemon]:
        values = {
            "ollama_url": f"http://127.0.0.1:{free_port()}",
            "ollama_releases_url": releases.base,
            "ollama_download_stall_seconds": 0.5,
            "ollama_restart_backoff": 0.1,
            "ollama_stop_grace": 5.0,
            "ollama_start_timeout": 30.0,
        }
        values.update(overrides)
        settings = make_settings(**values)
        installer = RuntimeInstaller(settings)
        daemon = OllamaDaemon(settings, binary_locations=[], managed_binary=installer.managed_binary)
        daemons.append(daemon)
        return installer, daemon

    yield make
    for daemon in daemons:
        daemon.close()


def run_job(installer: RuntimeInstaller, daemon: OllamaDaemon, kind: str = "install") -> InstallJob:
    job = installer.start(kind, daemon)  # type: ignore[arg-type]
    assert job.wait(90), job.events
    return job


def final(job: InstallJob) -> tuple[str, dict]:
    return job.events[-1]


def error_code(job: InstallJob) -> str:
    event, data = final(job)
    assert event == "error", job.events
    return data["code"]


def assert_nothing_installed(installer: RuntimeInstaller) -> None:
    assert installer.current_version() is None
    assert installer.managed_binary() is None
    leftovers = [p.name for p in installer.root.iterdir()] if installer.root.exists() else []
    assert not [n for n in leftovers if not n.startswith(".downloads")], leftovers
    assert not list(installer.root.glob(".unpack-*"))


# --- pure helpers ---------------------------------------------------------------------------------


def test_asset_names_per_platform() -> None:
    assert asset_names("linux", "x86_64", rocm=False) == ["ollama-linux-amd64.tar.zst"]
    assert asset_names("linux", "aarch64", rocm=False) == ["ollama-linux-arm64.tar.zst"]
    assert asset_names("linux", "x86_64", rocm=True) == [
        "ollama-linux-amd64.tar.zst",
        "ollama-linux-amd64-rocm.tar.zst",
    ]
    assert asset_names("darwin", "arm64") == ["ollama-darwin.tgz"]
    assert asset_names("win32", "AMD64") == ["ollama-windows-amd64.zip"]
    with pytest.raises(Conflict) as info:
        asset_names("linux", "riscv64")
    assert info.value.code == "runtime_unsupported"


def test_checksum_list_and_version_parsing() -> None:
    digest = "ab" * 32
    text = f"{digest}  ./ollama-linux-amd64.tar.zst\n{'cd' * 32} *ollama-darwin.tgz\nnot a line\n"
    assert parse_checksums(text) == {"ollama-linux-amd64.tar.zst": digest, "ollama-darwin.tgz": "cd" * 32}
    assert parse_version_output("ollama version is 0.13.0\n") == "0.13.0"
    assert parse_version_output("Warning: could not connect\nWarning: client version is 0.12.1") == "0.12.1"
    assert version_of_tag("v0.13.0") == "0.13.0"


def test_managed_runtime_is_the_last_discovery_candidate(
    tmp_path: Path, empty_path: Path, monkeypatch
) -> None:
    managed = tmp_path / "managed" / "ollama"
    managed.parent.mkdir()
    managed.symlink_to(FAKE_BIN)
    assert find_ollama_binary(None, extra_locations=[], managed=managed) == managed
    user = tmp_path / "user-bin"
    user.mkdir()
    (user / "ollama").symlink_to(FAKE_BIN)
    assert find_ollama_binary(None, extra_locations=[user / "ollama"], managed=managed) == user / "ollama"
    monkeypatch.setenv("PATH", str(user))
    assert find_ollama_binary(None, extra_locations=[], managed=managed) == user / "ollama"
    configured = tmp_path / "nope"
    assert find_ollama_binary(configured, extra_locations=[], managed=managed) is None  # the setting only


# --- install --------------------------------------------------------------------------------------


def test_install_verifies_unpacks_and_the_daemon_runs_it(make_runtime, releases: FakeReleases) -> None:
    installer, daemon = make_runtime()
    before = installer.info(daemon, check=True)
    assert before.source is None and before.installed_version is None
    assert before.latest_version == "0.13.0" and before.asset == MAIN
    assert before.size == sum(len(a) for a in releases.releases["v0.13.0"].values())

    job = run_job(installer, daemon)
    event, data = final(job)
    assert event == "done", job.events
    assert data["version"] == "0.13.0" and data["changed"] is True
    phases = [d.get("phase") for e, d in job.events if e == "progress"]
    assert phases[0] == "resolving" and phases[-1] == "starting"

    binary = installer.root / "0.13.0" / "bin" / "ollama"
    assert installer.managed_binary() == binary
    assert (installer.root / "current").read_text().strip() == "0.13.0"
    assert not list(installer.root.glob(".unpack-*")) and not list(installer.downloads.glob("*"))
    assert subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip() == (
        "ollama version is 0.13.0"
    )
    status = daemon.status()
    assert status.state == "running" and status.managed and status.binary == str(binary)
    assert fetch_version(daemon.url) == "0.13.0"
    info = installer.info(daemon, check=False)
    assert (info.source, info.installed_version, info.path) == ("managed", "0.13.0", str(binary))
    assert info.update_available is False


def test_install_from_a_local_folder(make_runtime, releases: FakeReleases, tmp_path: Path) -> None:
    folder = releases.write_local(tmp_path / "mirror")
    installer, daemon = make_runtime(ollama_releases_url=str(folder))
    assert installer.info(daemon, check=True).latest_version == "0.13.0"
    job = run_job(installer, daemon)
    assert final(job)[0] == "done", job.events
    assert installer.current_version() == "0.13.0"
    assert daemon.state == "running"


def test_a_local_latest_folder_without_a_tag_uses_ollama_version(
    make_runtime, releases: FakeReleases, tmp_path: Path
) -> None:
    folder = releases.write_local(tmp_path / "mirror", link=False)
    installer, daemon = make_runtime(ollama_releases_url=f"file://{folder}")
    assert installer.info(daemon, check=True).latest_version is None  # unknown until unpacked
    job = run_job(installer, daemon)
    assert final(job)[0] == "done", job.events
    assert installer.current_version() == "0.13.0"  # from `ollama --version`
    binary = installer.managed_binary()
    again = run_job(installer, daemon)
    assert final(again)[1]["changed"] is False  # the same version again: the one in use is kept
    assert installer.managed_binary() == binary and binary is not None and binary.is_file()
    assert daemon.state == "running"


def test_install_from_one_downloaded_archive_with_its_checksum_list(
    make_runtime, releases: FakeReleases, tmp_path: Path
) -> None:
    """An offline install: the archive and sha256sum.txt copied from the release page to a USB stick."""
    mirror = releases.write_local(tmp_path / "mirror")
    stick = tmp_path / "stick"
    stick.mkdir()
    for name in (MAIN, "sha256sum.txt"):
        (stick / name).write_bytes((mirror / "latest" / name).read_bytes())
    installer, daemon = make_runtime(ollama_releases_url=str(stick / MAIN))
    info = installer.info(daemon, check=True)
    assert (
        info.latest_version is None
        and info.size == (stick / MAIN).stat().st_size
        and info.check_error is None
    )
    job = run_job(installer, daemon)
    assert final(job)[0] == "done", job.events
    assert installer.current_version() == "0.13.0"  # from `ollama --version`
    assert daemon.state == "running"


def test_a_single_archive_for_another_computer_or_without_checksums_is_refused(
    make_runtime, releases: FakeReleases, tmp_path: Path
) -> None:
    mirror = releases.write_local(tmp_path / "mirror")
    other = tmp_path / "other" / "ollama-windows-amd64.zip"
    other.parent.mkdir()
    other.write_bytes(b"PK")
    installer, daemon = make_runtime(ollama_releases_url=str(other))
    job = run_job(installer, daemon)
    assert final(job) == ("error", final(job)[1]) and final(job)[1]["code"] == "runtime_not_found"
    assert MAIN in final(job)[1]["message"] and installer.current_version() is None
    bare = tmp_path / "bare" / MAIN
    bare.parent.mkdir()
    bare.write_bytes((mirror / "latest" / MAIN).read_bytes())  # no sha256sum.txt beside it
    installer, daemon = make_runtime(ollama_releases_url=str(bare))
    job = run_job(installer, daemon)
    assert final(job)[0] == "error" and final(job)[1]["code"] == "runtime_not_found"
    assert "sha256sum.txt" in final(job)[1]["message"] and installer.current_version() is None


def test_a_wrong_checksum_installs_nothing(make_runtime, releases: FakeReleases) -> None:
    releases.add_release("v0.13.0", NAMES, wrong_checksum=True)
    installer, daemon = make_runtime()
    assert error_code(run_job(installer, daemon)) == "runtime_checksum_mismatch"
    assert_nothing_installed(installer)
    assert not list(installer.downloads.glob("*"))  # the bad file is not resumed later
    assert daemon.state != "running"


def test_a_truncated_download_installs_nothing(make_runtime, releases: FakeReleases) -> None:
    releases.behaviour[MAIN] = "truncate"
    installer, daemon = make_runtime()
    assert error_code(run_job(installer, daemon)) == "runtime_truncated"
    assert_nothing_installed(installer)


def test_a_stalled_download_ends_with_a_clear_error(make_runtime, releases: FakeReleases) -> None:
    releases.behaviour[MAIN] = "stall"
    installer, daemon = make_runtime()
    job = run_job(installer, daemon)
    assert error_code(job) == "runtime_stalled"
    assert "0.5 s" in final(job)[1]["message"]
    assert_nothing_installed(installer)


def test_a_missing_asset_is_not_found(make_runtime, releases: FakeReleases) -> None:
    releases.missing.add(MAIN)
    installer, daemon = make_runtime()
    assert installer.info(daemon, check=True).check_error.code == "runtime_not_found"  # type: ignore[union-attr]
    assert error_code(run_job(installer, daemon)) == "runtime_not_found"
    assert_nothing_installed(installer)


def test_no_network_is_its_own_error(make_runtime) -> None:
    installer, daemon = make_runtime(ollama_releases_url=f"http://127.0.0.1:{free_port()}/releases")
    assert error_code(run_job(installer, daemon)) == "runtime_network"
    assert_nothing_installed(installer)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs as the data dir (the tests run as root)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    system = os.pathsep.join(["/usr/sbin", "/usr/bin", "/sbin", "/bin"])
    mount_bin, umount_bin = shutil.which("mount", path=system), shutil.which("umount", path=system)
    assert mount_bin and umount_bin
    subprocess.run([mount_bin, "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run([umount_bin, str(mount)], check=True)


def test_a_full_disk_installs_nothing_and_frees_the_space(
    make_runtime, releases: FakeReleases, small_disk: Path
) -> None:
    releases.add_release("v0.13.0", NAMES, padding=random_padding(2 * 1024 * 1024))
    installer, daemon = make_runtime(data_dir=small_disk)
    assert error_code(run_job(installer, daemon)) == "runtime_disk_full"
    assert_nothing_installed(installer)
    assert not list(installer.downloads.glob("*"))


def test_an_interrupted_download_resumes(make_runtime, releases: FakeReleases) -> None:
    releases.add_release("v0.13.0", NAMES, padding=random_padding(512 * 1024))
    releases.behaviour[MAIN] = "interrupt_once"
    installer, daemon = make_runtime()
    assert error_code(run_job(installer, daemon)) == "runtime_truncated"
    partial = installer.downloads / f"v0.13.0-{MAIN}"
    have = partial.stat().st_size
    assert have > 0
    job = run_job(installer, daemon)
    assert final(job)[0] == "done", job.events
    gets = [r for r in releases.requests if r[0] == "GET" and r[1].endswith(MAIN)]
    assert gets[-1][2] == f"bytes={have}-"
    assert installer.current_version() == "0.13.0" and daemon.state == "running"


def test_cancel_stops_the_download(make_runtime, releases: FakeReleases) -> None:
    releases.add_release("v0.13.0", NAMES, padding=random_padding(512 * 1024))
    releases.behaviour[MAIN] = "gate"
    installer, daemon = make_runtime(ollama_download_stall_seconds=60)
    job = installer.start("install", daemon)

    def downloading() -> bool:
        return job.latest.get("phase") == "downloading" and job.latest["completed"] > 0

    assert wait_until(downloading, 30)
    assert installer.cancel() is job
    releases.gate.set()
    assert job.wait(30)
    assert job.state == "cancelled" and error_code(job) == "runtime_cancelled"
    assert_nothing_installed(installer)
    assert installer.cancel() is None


# --- update ---------------------------------------------------------------------------------------


def test_update_switches_and_removes_the_previous_version(make_runtime, releases: FakeReleases) -> None:
    installer, daemon = make_runtime()
    assert final(run_job(installer, daemon))[0] == "done"
    releases.add_release("v0.14.0", NAMES)
    info = installer.info(daemon, check=True)
    assert (info.installed_version, info.latest_version, info.update_available) == ("0.13.0", "0.14.0", True)
    job = run_job(installer, daemon, "update")
    assert final(job) == ("done", final(job)[1]) and final(job)[1]["version"] == "0.14.0", job.events
    assert installer.current_version() == "0.14.0"
    assert not (installer.root / "0.13.0").exists()
    assert daemon.state == "running" and fetch_version(daemon.url) == "0.14.0"
    assert installer.info(daemon, check=True).update_available is False


def test_update_rolls_back_when_the_new_version_does_not_start(make_runtime, releases: FakeReleases) -> None:
    installer, daemon = make_runtime()
    assert final(run_job(installer, daemon))[0] == "done"
    releases.add_release("v0.14.0", NAMES, broken=True)
    job = run_job(installer, daemon, "update")
    assert error_code(job) == "runtime_start_failed", job.events
    assert installer.current_version() == "0.13.0"
    assert not (installer.root / "0.14.0").exists()
    assert daemon.state == "running" and fetch_version(daemon.url) == "0.13.0"


def test_update_needs_a_managed_runtime(make_runtime) -> None:
    installer, daemon = make_runtime()
    with pytest.raises(Conflict) as info:
        installer.start("update", daemon)
    assert info.value.code == "runtime_not_installed"


# --- the user's own ollama ------------------------------------------------------------------------


def test_the_users_own_ollama_wins_and_is_never_touched(
    make_runtime, releases: FakeReleases, tmp_path: Path, monkeypatch
) -> None:
    installer, daemon = make_runtime()
    assert final(run_job(installer, daemon))[0] == "done"
    daemon.stop()
    user = tmp_path / "user-bin"
    user.mkdir()
    (user / "ollama").symlink_to(FAKE_BIN)
    monkeypatch.setenv("PATH", f"{user}{os.pathsep}{os.environ['PATH']}")
    info = installer.info(daemon, check=False)
    assert (info.source, info.path) == ("user", str(user / "ollama"))
    asked = len(releases.requests)
    with pytest.raises(Conflict) as refused:
        installer.start("install", daemon)
    assert refused.value.code == "runtime_user_installed"
    assert len(releases.requests) == asked  # refused before any download
    daemon.start()
    assert daemon.wait_for(("running", "failed"), 30)
    assert daemon.status().binary == str(user / "ollama")


def test_a_running_ollama_counts_as_the_users(make_runtime) -> None:
    installer, daemon = make_runtime()
    with FakeOllama("127.0.0.1", daemon.port):
        assert installer.info(daemon, check=False).source == "user"
        with pytest.raises(Conflict) as refused:
            installer.start("install", daemon)
        assert refused.value.code == "runtime_user_installed"


def test_the_daily_update_check_is_off_by_default(make_runtime, releases: FakeReleases) -> None:
    installer, daemon = make_runtime()
    assert final(run_job(installer, daemon))[0] == "done"
    releases.add_release("v0.14.0", NAMES)
    asked = len(releases.requests)
    assert installer.info(daemon, check=False).latest_version is None
    assert len(releases.requests) == asked  # no request at all without the setting

    checking, daemon2 = make_runtime(data_dir=installer.settings.data_dir, ollama_update_check=True)
    daemon.stop()
    info = checking.info(daemon2, check=False)
    assert (info.latest_version, info.update_available) == ("0.14.0", True)
    assert not list(checking.downloads.glob("*"))  # a check, never a download

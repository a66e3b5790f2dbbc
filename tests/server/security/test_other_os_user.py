"""Another OS user on the same machine (docs/security.md, A6), for real: a process running as ``nobody``
(setpriv; the tests run as root, in CI too) reaches the desktop server's loopback port and gets 401 on
every route of the census but the public ones, and can read nothing of the data directory: not the
database, not the signing secret, not the secret file holding provider keys. The desktop token (in
memory only) is nowhere that user can read."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from server.api.router import PUBLIC_ROUTES
from server.embedded import EmbeddedServer
from server.settings import Settings
from tests.server.test_route_census import _concrete, api_routes

pytestmark = pytest.mark.sqlite_only  # about the files of the data directory

NOBODY = 65534
#: Run by the system interpreter as ``nobody`` (the venv's interpreter may live under /root): stdlib only.
PROBE = r"""
import json, os, sys, urllib.request, urllib.error
args = json.load(sys.stdin)
out = {"uid": os.getuid(), "answers": [], "readable": [], "listable": [], "token_seen": []}
for method, path in args["routes"]:
    for headers in ({}, {"X-ModelTrain-Desktop": "guessed-" + "x" * 40}):
        body = b"{}" if method in ("POST", "PUT", "PATCH") else None
        req = urllib.request.Request(args["url"] + path, data=body, method=method,
                                     headers={"Content-Type": "application/json", **headers})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                status, text = r.status, r.read(2000).decode(errors="replace")
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read(2000).decode(errors="replace")
        out["answers"].append([method, path, bool(headers), status, text])
token = args["token"].encode()
def probe(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return
    out["readable"].append(path)
    if token in data:
        out["token_seen"].append(path)
for path in args["files"]:
    probe(path)
for top in args["dirs"]:
    try:
        os.listdir(top)
        out["listable"].append(top)
    except OSError:
        pass
    for root, dirs, files in os.walk(top):
        for name in files:
            probe(os.path.join(root, name))
for name in ("cmdline", "environ", "status"):
    probe(f"/proc/{args['pid']}/{name}")
print(json.dumps(out))
"""


@pytest.fixture
def open_parent() -> Iterator[Path]:
    """A folder every user may enter (unlike pytest's tmp_path): only the data dir's own modes protect it."""
    base = Path(tempfile.mkdtemp(prefix="modeltrain-a6-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run_as_nobody(args: dict) -> dict:
    setpriv = shutil.which("setpriv")
    assert setpriv and os.geteuid() == 0, "this test needs root and setpriv (util-linux), as in CI"
    proc = subprocess.run(
        [
            setpriv,
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            PROBE,
        ],
        input=json.dumps(args),
        capture_output=True,
        text=True,
        timeout=300,
        cwd="/",
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_another_os_user_gets_401_and_reads_nothing(
    make_settings: Callable[..., Settings], open_parent: Path, memory_keyring: object
) -> None:
    data_dir = open_parent / "data"
    settings = make_settings(
        desktop_mode=True,
        data_dir=data_dir,
        database_url=f"sqlite:///{data_dir / 'modeltrain.db'}",
        secret_key="",  # generated into the data dir, as a desktop install does
        secret_store="file",  # provider keys in the encrypted file, beside its key file
    )
    server = EmbeddedServer(settings)
    server.start(timeout=60)
    try:
        token = server.desktop_token
        assert token
        with httpx.Client(base_url=server.url, timeout=30) as http:
            r = http.post("/api/auth/desktop", json={}, headers={"X-ModelTrain-Desktop": token})
            assert r.status_code == 200, r.text
            auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
            r = http.post(
                "/api/providers",
                json={
                    "kind": "openai",
                    "name": "cloud",
                    "base_url": "http://127.0.0.1:9/v1",
                    "api_key": "sk-a6-" + "k" * 40,
                },
                headers=auth,
            )
            assert r.status_code == 201, r.text
        files = sorted(str(p) for p in data_dir.rglob("*") if p.is_file())
        assert any(p.endswith(".db") for p in files) and len(files) >= 3, files
        shared = [p for p in files if stat.S_IMODE(Path(p).stat().st_mode) & 0o077]
        routes = api_routes(server.app)
        concrete = {(m, _concrete(p)): (m, p) for m, p in routes}
        result = run_as_nobody(
            {
                "url": server.url,
                "routes": list(concrete),
                "token": token,
                "files": files,
                "dirs": [str(data_dir)],
                "pid": os.getpid(),
            }
        )
    finally:
        server.stop()

    assert result["uid"] == NOBODY
    guarded, public = [], []
    for method, path, forged, status, text in result["answers"]:
        route = concrete[(method, path)]
        if route in PUBLIC_ROUTES:
            public.append((route, forged, status, text))
        elif status != 401:
            guarded.append((method, path, forged, status))
    assert not guarded, f"routes answering another user without a token: {guarded}"
    for route, forged, status, text in public:
        if route == ("GET", "/api/health"):
            assert status == 200 and json.loads(text) == {"status": "ok"}, text
        else:  # sign-in and refresh refuse, a guessed desktop token too; readiness and the CA tell nothing
            assert status in (200, 204, 401, 404, 409, 422) and "sk-a6" not in text and token not in text, (
                route,
                text,
            )
            if route == ("POST", "/api/auth/desktop"):
                assert status == 401, (forged, status, text)
    # nothing of the data directory; of the server's process only what any process shows (not its environ)
    assert result["readable"] == [f"/proc/{os.getpid()}/cmdline", f"/proc/{os.getpid()}/status"], result
    assert result["listable"] == []
    assert result["token_seen"] == []
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert not shared, f"files other users could read without the 0700 data directory: {shared}"

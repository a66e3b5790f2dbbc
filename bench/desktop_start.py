"""Desktop start-up benchmark: cold start to UI interactive and idle memory of the whole process tree.

Runs ``python -m desktop --self-test`` several times (first starts on fresh data dirs, warm runs on the
data dir of the first one) and, in the same run, a *baseline*: a bare QWebEngineView in a fresh process that
loads a static page and answers one JavaScript call. The ratio ours/baseline shows what the embedded
server, migrations, the desktop sign-in and the real UI cost on top of Qt WebEngine itself, whatever
the machine's load. A second baseline gets the Chromium switches the app adds (desktop/memory.py): the
memory floor of Qt WebEngine as the app configures it. The app's own figures are also split by process
(app = Qt browser process + embedded server; zygote, where there is one; renderer), and the embedded
server's own share is measured alone in a process that has loaded Qt WebEngine's modules.

    .venv/bin/python bench/desktop_start.py [--runs 5] [--idle 2] \
        [--app build/package/dist/ModelTrain/ModelTrain]

Targets: interactive <= 1.5 s, idle RSS of the process tree <= 400 MiB.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_START_S = 1.5
TARGET_RSS_MIB = 400.0

_BASELINE = r"""
import os, sys, time, psutil
if os.geteuid() == 0:
    os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")
from PySide6.QtCore import QCoreApplication, Qt, QTimer
from PySide6.QtWebEngineWidgets import QWebEngineView
QCoreApplication.setAttribute(Qt.ApplicationAttribute.AA_ShareOpenGLContexts)
from PySide6.QtWidgets import QApplication
if sys.argv[2] == "app-switches":
    sys.path.insert(0, os.getcwd())
    from desktop.memory import apply_chromium_flags, apply_qt_rendering
    apply_qt_rendering()
app = QApplication(sys.argv[:1])
if sys.argv[2] == "app-switches":
    apply_chromium_flags(app.platformName())
view = QWebEngineView(); view.resize(1200, 800); view.show()
idle = float(sys.argv[1])
def measure():
    me = psutil.Process(); rss = pss = 0
    for p in [me, *me.children(recursive=True)]:
        try:
            rss += p.memory_info().rss; pss += getattr(p.memory_full_info(), "pss", 0)
        except psutil.Error:
            pass
    print(f"baseline ready {ready:.3f} cpu {cpu:.3f} rss {rss / 2**20:.1f} pss {pss / 2**20:.1f}", flush=True)
    app.quit()
def loaded(ok):
    def answered(_value):
        global ready
        ready = time.time() - psutil.Process().create_time()
        global cpu
        t = psutil.Process().cpu_times(); cpu = t.user + t.system
        QTimer.singleShot(int(idle * 1000), measure)
    view.page().runJavaScript("document.title", 0, answered)
view.loadFinished.connect(loaded)
view.setHtml("<html><head><title>b</title></head><body><h1>baseline</h1></body></html>")
app.exec()
"""

#: The embedded server's own share of the app process: RSS of a process that has loaded Qt WebEngine's
#: modules (as the app has), before and after importing the server, starting it on the bench's data dir
#: and answering the requests the UI makes first, then releasing start-up memory as the app does.
_SERVER_STACK = r"""
import sys, psutil
from pathlib import Path
import PySide6.QtWebEngineWidgets
from desktop.memory import release_startup_memory, skip_pyside_source_scan
skip_pyside_source_scan()
me = psutil.Process(); before = me.memory_info().rss
import httpx
from server.embedded import EmbeddedServer
from server.settings import load_settings
from desktop.paths import webui_dist
server = EmbeddedServer(load_settings(data_dir=Path(sys.argv[1]), desktop_mode=True, webui_dist=webui_dist()))
url = server.start()
with httpx.Client(base_url=url) as client:
    token = client.post("/api/auth/desktop", json={}, headers={"X-ModelTrain-Desktop": server.desktop_token})
    auth = {"Authorization": "Bearer " + token.json()["access_token"]}
    for path in ("/", "/api/users/me", "/api/conversations?page=1&size=50", "/api/models", "/api/health"):
        client.get(path, headers=auth)
release_startup_memory()
print(f"server stack rss {(me.memory_info().rss - before) / 2**20:.1f}", flush=True)
server.stop()
"""

_OURS = re.compile(
    r"self-test ok: ui (?P<ui>[\d.]+) s, interactive (?P<interactive>[\d.]+) s \(cpu (?P<cpu>[\d.]+) s\), .*?"
    r"rss (?P<rss>[\d.]+) MiB \(pss (?P<pss>[\d.]+) MiB\)"
)
_BREAKDOWN = re.compile(r"memory by process \(MiB RSS/PSS\): (?P<rows>.*)")
_STACK = re.compile(r"server stack rss (?P<rss>[\d.]+)")
_BASE = re.compile(
    r"baseline ready (?P<ready>[\d.]+) cpu (?P<cpu>[\d.]+) rss (?P<rss>[\d.]+) pss (?P<pss>[\d.]+)"
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    if sys.platform.startswith("linux") and not env.get("DISPLAY") and not env.get("WAYLAND_DISPLAY"):
        env.setdefault("QT_QPA_PLATFORM", "offscreen")
    return env


def run_ours(data_dir: Path, idle: float, app: list[str]) -> dict[str, float]:
    out = subprocess.run(
        [*app, "--self-test", "--data-dir", str(data_dir), "--idle-seconds", str(idle)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    match = _OURS.search(out.stdout)
    if out.returncode != 0 or match is None:
        raise SystemExit(
            f"self-test failed (exit {out.returncode}): {out.stdout.strip()} {out.stderr[-500:]}"
        )
    result = {k: float(v) for k, v in match.groupdict().items()}
    rows = _BREAKDOWN.search(out.stderr)
    for row in rows.group("rows").split(", ") if rows else []:
        role, figures = row.rsplit(" ", 1)
        rss, pss = figures.split("/")
        result[f"{role} rss"], result[f"{role} pss"] = float(rss), float(pss)
    return result


def run_baseline(idle: float, switches: str = "defaults") -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", _BASELINE, str(idle), switches],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    match = _BASE.search(out.stdout)
    if match is None:
        raise SystemExit(f"baseline failed (exit {out.returncode}): {out.stderr[-500:]}")
    return {k: float(v) for k, v in match.groupdict().items()}


def run_server_stack(data_dir: Path) -> float:
    out = subprocess.run(
        [sys.executable, "-c", _SERVER_STACK, str(data_dir)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    match = _STACK.search(out.stdout)
    if match is None:
        raise SystemExit(f"server stack measurement failed (exit {out.returncode}): {out.stderr[-500:]}")
    return float(match.group("rss"))


def uncached_modules() -> int:
    """How many of ModelTrain's own modules have no bytecode cache while writing one is switched off
    (``PYTHONDONTWRITEBYTECODE``): each start then compiles them again, which an installed app (wheel,
    PyInstaller bundle) never does. 0 when bytecode is written or cached."""
    if not os.environ.get("PYTHONDONTWRITEBYTECODE"):
        return 0
    import importlib.util

    sources = [*ROOT.glob("server/**/*.py"), *ROOT.glob("desktop/*.py")]
    return sum(not Path(importlib.util.cache_from_source(str(src))).exists() for src in sources)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", type=int, default=5, help="warm runs (on the data dir the first first start created)"
    )
    parser.add_argument(
        "--first-runs",
        type=int,
        default=3,
        help="first starts, each on a fresh data dir (the first one prepares the warm runs' dir)",
    )
    parser.add_argument("--idle", type=float, default=2.0, help="idle seconds before measuring memory")
    parser.add_argument(
        "--app",
        type=Path,
        help="measure this executable (e.g. the packaged app, "
        "build/package/dist/ModelTrain/ModelTrain) instead of python -m desktop",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mt-bench-") as tmp:
        data = Path(tmp) / "data"
        app = [str(args.app.resolve())] if args.app else [sys.executable, "-m", "desktop"]
        firsts = [run_ours(data, args.idle, app)]
        warm, base, floor, stack = [], [], [], []
        for i in range(max(args.runs, args.first_runs - 1)):  # interleaved: all see the same machine load
            if i < args.runs:
                base.append(run_baseline(args.idle))
                floor.append(run_baseline(args.idle, "app-switches"))
                warm.append(run_ours(data, args.idle, app))
                stack.append(run_server_stack(data))
            if i < args.first_runs - 1:
                firsts.append(run_ours(Path(tmp) / f"first-{i}", args.idle, app))

    def med(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    b_ready, b_cpu, b_rss, b_pss = med(base, "ready"), med(base, "cpu"), med(base, "rss"), med(base, "pss")
    w_int, w_ui, w_cpu = med(warm, "interactive"), med(warm, "ui"), med(warm, "cpu")
    w_rss, w_pss = med(warm, "rss"), med(warm, "pss")
    print(f"app: {' '.join(app)}")
    print(
        f"runs: {len(firsts)} first + {args.runs} warm, medians; idle {args.idle:g} s before memory; "
        f"load avg {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    )
    print(
        f"baseline (bare QWebEngineView):  ready {b_ready:.2f} s (cpu {b_cpu:.2f} s)   "
        f"tree RSS {b_rss:.0f} MiB   PSS {b_pss:.0f} MiB"
    )
    print(
        f"  same, with the app's switches:  ready {med(floor, 'ready'):.2f} s "
        f"(cpu {med(floor, 'cpu'):.2f} s)   "
        f"tree RSS {med(floor, 'rss'):.0f} MiB   PSS {med(floor, 'pss'):.0f} MiB"
    )
    f_int = med(firsts, "interactive")
    f_range = f"{min(r['interactive'] for r in firsts):.2f}-{max(r['interactive'] for r in firsts):.2f}"
    print(
        f"first start (fresh data dir):    interactive {f_int:.2f} s "
        f"({f_range}; cpu {med(firsts, 'cpu'):.2f} s)   "
        f"tree RSS {med(firsts, 'rss'):.0f} MiB   PSS {med(firsts, 'pss'):.0f} MiB"
    )
    print(
        f"warm start:                      UI loaded {w_ui:.2f} s   "
        f"interactive {w_int:.2f} s (cpu {w_cpu:.2f} s)   "
        f"tree RSS {w_rss:.0f} MiB   PSS {w_pss:.0f} MiB"
    )
    roles = [key[:-4] for key in warm[0] if key.endswith(" rss") and all(key in row for row in warm)]
    if roles:
        print(
            "warm start by process (RSS/PSS MiB): "
            + ", ".join(
                f"{role} {med(warm, role + ' rss'):.0f}/{med(warm, role + ' pss'):.0f}" for role in roles
            )
        )
    f_rss, s_rss = med(floor, "rss"), statistics.median(stack)
    print(
        f"embedded server's share of the app process: RSS +{s_rss:.0f} MiB (measured alone, same data dir); "
        f"floor = switched baseline + server = {f_rss + s_rss:.0f} MiB, the UI and the rest add "
        f"{w_rss - f_rss - s_rss:.0f} MiB"
    )
    print(
        f"ratio vs baseline:               start x{w_int / b_ready:.2f}   cpu x{w_cpu / b_cpu:.2f}   "
        f"RSS x{w_rss / b_rss:.2f}   PSS x{w_pss / b_pss:.2f}"
    )
    uncached = 0 if args.app else uncached_modules()
    if uncached:
        print(
            f"note: PYTHONDONTWRITEBYTECODE is set and {uncached} of ModelTrain's modules "
            "have no bytecode cache: "
            "each start above compiled those it imports from source (an installed app has its bytecode)"
        )
    print(
        f"targets: interactive <= {TARGET_START_S} s -> {'met' if w_int <= TARGET_START_S else 'NOT met'} "
        f"(first start: {'met' if f_int <= TARGET_START_S else 'NOT met'}); "
        f"idle tree RSS <= {TARGET_RSS_MIB:.0f} MiB -> {'met' if w_rss <= TARGET_RSS_MIB else 'NOT met'} "
        f"(PSS, which counts shared pages once: {'met' if w_pss <= TARGET_RSS_MIB else 'NOT met'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

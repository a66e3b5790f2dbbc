"""The E5 kill -9 loop (docs/security.md, E5: SIGKILL at random points during streaming, migration and
backup, 200 times): figures, not a timed test.

Each cycle kills a real ``python -m server serve`` with SIGKILL at a random moment in one of three
situations (in a random order, each as often as the others), restarts it and checks the data at once
(no staleness waited for):

- ``stream``: one to three chat replies streaming from a slow fake Ollama, killed after some text of each
  is saved and a random further delay;
- ``backup``: ``POST /api/backups`` on a database of a few MB, killed a few to a few hundred ms later;
- ``migration``: a server started on a copy of a database at an old revision (made once with the
  migrations' own downgrade), killed at a random moment of its start, while it snapshots and upgrades.

Stream and backup cycles share one data directory (a real SQLite file) for the whole run; each migration
cycle gets a fresh copy of the old database. After each restart:

- ``PRAGMA integrity_check`` is ``ok``;
- every user message and reply the server acknowledged (its ``meta`` SSE event), in any cycle so far, is
  there, and every backup it acknowledged (201) is listed;
- each reply that was streaming is ``error`` with the ``interrupted`` code and its saved text kept, none is
  left ``streaming``, no conversation holds more than its prompt and its reply (nothing duplicated);
- no temporary files: no ``.tmp-*`` work directory, ``*.part``/``*.tmp`` file or archive without its
  sidecar in the backup directory, no journal or half snapshot in ``backups/pre-migration``;
- after a migration cycle, the schema is at head and the old data is all there (same rows, same text).

    .venv/bin/python bench/kill_loop.py [--cycles 200] [--seed 1] [--keep]

Prints per-situation counts (with the phase each kill hit), every failure with its cycle and the seed, a
total line, and exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import platform
import random
import re
import shlex
import shutil
import signal
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.chat_common import start_fake
from server.db import migrate
from server.db.session import create_db_engine
from tests.deploy.support import (
    Proc,
    base_env,
    first_model_id,
    iter_sse,
    json_headers,
    sign_in_admin,
    spawn,
    start_serve,
    wait_for,
)
from tests.server.ops_support import populate

SITUATIONS = ("stream", "backup", "migration")
#: The revision the old database is taken back to: the upgrade then runs 0012 (reply owner: messages
#: rebuilt) to head.
OLD_REVISION = "0011"
TOKEN_DELAY = 0.05
#: Outlasts any cycle at TOKEN_DELAY per token.
REPLY_TOKENS = 4000
DB = "modeltrain.db"


#: Log lines of a start that migrates, from the first import of Alembic to the upgrade's end.
MIGRATING = re.compile(r"alembic|server\.db\.migrate")
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+[+-]\d\d:\d\d) ")


def log_lines(text: str) -> Iterator[tuple[float, str]]:
    """(epoch seconds, line) of the server's timestamped log lines."""
    for line in text.splitlines():
        if m := _STAMP.match(line):
            yield datetime.fromisoformat(m.group(1)).timestamp(), line


def rows(db: Path, sql: str, *args: object) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as conn:
        return conn.execute(sql, args).fetchall()


def hexid(value: str) -> str:
    return uuid.UUID(value).hex


def fingerprint(db: Path) -> tuple[int, int, int, str]:
    """(users, conversations, messages, a hash of every message's id and text)."""
    digest = hashlib.sha256()
    for mid, content in rows(db, "SELECT id, content FROM messages ORDER BY id"):
        digest.update(f"{mid}\0{content}\0".encode())
    [(users,)] = rows(db, "SELECT count(*) FROM users")
    [(convs,)] = rows(db, "SELECT count(*) FROM conversations")
    [(msgs,)] = rows(db, "SELECT count(*) FROM messages")
    return users, convs, msgs, digest.hexdigest()[:16]


def leftovers(backup_dir: Path, data_dir: Path) -> list[str]:
    """Temporary files of interrupted backups and migrations (server/services/backups/store.py
    cleanup_partials, server/db/migrate.py snapshot_sqlite)."""
    found: list[str] = []
    if backup_dir.is_dir():
        names = {p.name for p in backup_dir.iterdir()}
        for name in sorted(names):
            if name.startswith(".tmp-") or name.endswith((".part", ".tmp")):
                found.append(f"{backup_dir.name}/{name}")
            elif name.endswith(".tar.gz") and name.removesuffix(".tar.gz") + ".json" not in names:
                found.append(f"{backup_dir.name}/{name} (no sidecar)")
    snapshots = data_dir / "backups" / "pre-migration"
    if snapshots.is_dir():
        for path in sorted(snapshots.iterdir()):
            if path.name.endswith(("-journal", "-wal", "-shm", ".tmp", ".part")):
                found.append(f"pre-migration/{path.name}")
            elif path.suffix == ".db":
                try:
                    problem = "" if rows(path, "SELECT version_num FROM alembic_version") else "no revision"
                except sqlite3.Error as exc:  # e.g. a hot journal beside it: an interrupted copy
                    problem = str(exc)
                if problem:
                    found.append(f"pre-migration/{path.name} (half snapshot: {problem})")
    return found


@dataclass
class Run:
    root: Path
    rng: random.Random
    seed: int
    env: dict[str, str]
    keep: bool = False
    data: Path = field(init=False)
    proc: Proc | None = None
    token: str = ""
    model: str = ""
    old_db: Path = field(init=False)
    old_print: tuple[int, int, int, str] = (0, 0, 0, "")
    migration_start: float = 0.0
    migration_window: tuple[float, float] = (0.0, 0.0)
    acked_messages: set[str] = field(default_factory=set)
    acked_backups: set[str] = field(default_factory=set)
    counts: Counter[str] = field(default_factory=Counter)
    phases: dict[str, Counter[str]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    #: leftovers already reported: one left by a cycle fails that cycle, not every later one too
    seen_leftovers: set[str] = field(default_factory=set)
    durations: list[float] = field(default_factory=list)
    n_logs: int = 0

    def __post_init__(self) -> None:
        self.data = self.root / "data"
        self.old_db = self.root / "old.db"

    def log(self) -> Path:
        self.n_logs += 1
        return self.root / "logs" / f"{self.n_logs:04d}.log"

    @property
    def db(self) -> Path:
        return self.data / DB

    def start(self, data: Path | None = None) -> Proc:
        return start_serve(data or self.data, None, self.log(), **self.env)

    def client(self, proc: Proc) -> httpx.Client:
        return httpx.Client(base_url=proc.url, timeout=60, headers=json_headers(token=self.token))

    # -- set-up -------------------------------------------------------------------------------------

    def setup(self) -> None:
        (self.root / "logs").mkdir(parents=True)
        # the old database: a server's first start (head schema, the admin), data, then back to OLD_REVISION
        old_dir = self.root / "old"
        proc = self.start(old_dir)
        with httpx.Client(base_url=proc.url, timeout=60) as c:
            sign_in_admin(c)
        proc.stop()
        engine = create_db_engine(f"sqlite:///{old_dir / DB}")
        try:
            populate(engine, conversations=300, messages_per=20, text_size=2000, seed=self.seed)
            migrate.downgrade(engine, OLD_REVISION)
        finally:
            engine.dispose()
        with contextlib.closing(sqlite3.connect(old_dir / DB)) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("PRAGMA journal_mode=DELETE")
        shutil.copy(old_dir / DB, self.old_db)
        shutil.rmtree(old_dir)
        self.old_print = fingerprint(self.old_db)
        # how long a start that migrates takes here, and when it snapshots and upgrades: the kills of
        # migration cycles are drawn over the whole start, and more often over that window
        mig = self.root / "mig-calibration"
        mig.mkdir()
        shutil.copy(self.old_db, mig / DB)
        spawned = time.time()
        proc = self.start(mig)
        self.migration_start = time.time() - spawned
        window = [stamp - spawned for stamp, line in log_lines(proc.output()) if MIGRATING.search(line)]
        self.migration_window = (min(window), max(window)) if window else (0.0, self.migration_start)
        proc.stop()
        shutil.rmtree(mig)
        # the shared data directory: the admin, a few MB of history (so a backup takes a while)
        self.proc = self.start()
        with httpx.Client(base_url=self.proc.url, timeout=60) as c:
            self.token = sign_in_admin(c)
            self.model = first_model_id(c, self.token)
        engine = create_db_engine(f"sqlite:///{self.db}")
        try:
            populate(engine, conversations=300, messages_per=10, text_size=1000, incompressible=True)
        finally:
            engine.dispose()

    # -- one cycle ----------------------------------------------------------------------------------

    def fail(self, cycle: int, situation: str, what: str) -> None:
        self.failures.append(f"cycle {cycle} ({situation}, seed {self.seed}): {what}")

    def phase(self, situation: str, name: str) -> None:
        self.phases.setdefault(situation, Counter())[name] += 1

    def kill(self, proc: Proc) -> None:
        os.kill(proc.popen.pid, signal.SIGKILL)
        proc.popen.wait(30)

    def cycle(self, n: int, situation: str) -> None:
        self.counts[situation] += 1
        t0 = time.monotonic()
        before = len(self.failures)
        try:
            getattr(self, situation)(n)
        except Exception as exc:  # a cycle that could not run is a failure too, with what it hit
            self.fail(n, situation, f"{type(exc).__name__}: {exc}")
            if self.proc is None or self.proc.popen.poll() is not None:
                self.proc = self.start()
        self.durations.append(time.monotonic() - t0)
        mark = "ok" if len(self.failures) == before else "FAILED"
        print(f"cycle {n:4d} {situation:9s} {time.monotonic() - t0:5.1f} s  {mark}", flush=True)

    def stream(self, n: int) -> None:
        assert self.proc is not None
        proc = self.proc
        replies: dict[str, tuple[str, str]] = {}  # reply id -> (user message id, conversation id)
        with contextlib.ExitStack() as stack:
            client = stack.enter_context(self.client(proc))
            for i in range(self.rng.randint(1, 3)):
                r = stack.enter_context(
                    client.stream(
                        "POST", "/api/chat", json={"model": self.model, "content": f"cycle {n}/{i}"}
                    )
                )
                if r.status_code != 200:
                    raise AssertionError(f"chat answered {r.status_code}: {r.read()[:200]!r}")
                events = iter_sse(r)
                stack.callback(events.close)
                event, data = next(events)
                if event != "meta":
                    raise AssertionError(f"first event {event}: {data}")
                ids = (hexid(data["user_message_id"]), hexid(data["conversation_id"]))
                replies[hexid(data["assistant_message_id"])] = ids
                self.acked_messages |= {ids[0], hexid(data["assistant_message_id"])}

            def saved() -> bool:
                return all(self.content(mid) for mid in replies)

            wait_for(saved, 30)
            time.sleep(self.rng.uniform(0, 1.5))
            seen = {mid: self.content(mid) for mid in replies}
            self.kill(proc)
        self.phase("stream", f"{len(replies)} repl{'y' if len(replies) == 1 else 'ies'}")
        self.proc = self.start()
        self.common_checks(n, "stream")
        for mid, (user_mid, conv) in replies.items():
            found = rows(self.db, "SELECT status, content, error FROM messages WHERE id = ?", mid)
            if not found:
                continue  # reported by common_checks
            [(status, content, error)] = found
            if status != "error" or '"interrupted"' not in (error or ""):
                self.fail(n, "stream", f"reply {mid} is {status} ({error}), not interrupted")
            if not content.startswith(seen[mid]):
                self.fail(
                    n, "stream", f"reply {mid} lost saved text: {len(seen[mid])} -> {len(content)} chars"
                )
            in_conv = rows(self.db, "SELECT id, role FROM messages WHERE conversation_id = ?", conv)
            if sorted(in_conv) != sorted([(user_mid, "user"), (mid, "assistant")]):
                self.fail(n, "stream", f"conversation {conv} holds {in_conv}, not its prompt and reply")

    def content(self, mid: str) -> str:
        found = rows(self.db, "SELECT content FROM messages WHERE id = ?", mid)
        return found[0][0] if found else ""

    def backup(self, n: int) -> None:
        assert self.proc is not None
        proc = self.proc
        backup_dir = Path(f"{self.data}-backups")
        answer: list[httpx.Response] = []

        def post() -> None:
            with contextlib.suppress(httpx.HTTPError), self.client(proc) as c:
                answer.append(c.post("/api/backups", json={}))

        def listing() -> set[str]:
            return {p.name for p in backup_dir.iterdir()} if backup_dir.is_dir() else set()

        earlier = listing()  # leftovers of a cycle before (reported there) are not this kill's phase
        thread = threading.Thread(target=post, daemon=True)
        thread.start()
        time.sleep(self.rng.uniform(0.003, 0.4))
        names = listing() - earlier
        self.kill(proc)
        thread.join(30)
        if answer and answer[0].status_code == 201:
            self.acked_backups.add(answer[0].json()["id"])
            self.phase("backup", "finished before the kill")
        elif answer:
            raise AssertionError(f"backup answered {answer[0].status_code}: {answer[0].text[:200]}")
        elif any(name.endswith(".part") for name in names):
            self.phase("backup", "writing the archive (.part)")
        elif any(name.startswith(".tmp-") for name in names):
            self.phase("backup", "snapshotting (.tmp- work dir)")
        else:
            self.phase("backup", "before any file")
        self.proc = self.start()
        self.common_checks(n, "backup")
        with self.client(self.proc) as c:
            listed = {b["id"] for b in c.get("/api/backups").raise_for_status().json()["items"]}
            if missing := self.acked_backups - listed:
                self.fail(n, "backup", f"acknowledged backups not listed: {sorted(missing)}")
            for backup_id in listed & self.acked_backups:  # keep the disk bounded over 200 cycles
                c.delete(f"/api/backups/{backup_id}").raise_for_status()
                self.acked_backups.discard(backup_id)

    def migration(self, n: int) -> None:
        before = len(self.failures)
        data = self.root / f"mig-{n}"
        data.mkdir()
        shutil.copy(self.old_db, data / DB)
        log = self.log()
        proc = spawn(
            [sys.executable, "-m", "server", "serve", "--port", "0"], base_env(data, None, **self.env), log
        )
        if self.rng.random() < 1 / 3:  # anywhere in the start
            time.sleep(self.rng.uniform(0, self.migration_start))
        else:  # in the migration: from its first log line (Alembic imported) to a little past its end
            wait_for(lambda: proc.popen.poll() is not None or MIGRATING.search(proc.output()), 60, 0.002)
            low, high = self.migration_window
            time.sleep(self.rng.uniform(0, (high - low) * 1.1))
        self.kill(proc)
        out = proc.output()
        if "database schema upgraded" in out:
            self.phase("migration", "after the upgrade")
        elif "snapshot before migration written" in out:
            self.phase("migration", "upgrading (after the snapshot)")
        elif (data / "backups" / "pre-migration").is_dir():
            self.phase("migration", "snapshotting")
        else:
            self.phase("migration", "before the snapshot")
        restarted = self.start(data)
        try:
            db = data / DB
            if (result := rows(db, "PRAGMA integrity_check")) != [("ok",)]:
                self.fail(n, "migration", f"integrity_check: {result}")
            if (rev := rows(db, "SELECT version_num FROM alembic_version")) != [(migrate.SCHEMA_HEAD,)]:
                self.fail(n, "migration", f"schema at {rev}, not {migrate.SCHEMA_HEAD}")
            if (now := fingerprint(db)) != self.old_print:
                self.fail(n, "migration", f"old data changed: {self.old_print} -> {now}")
            if left := leftovers(Path(f"{data}-backups"), data):
                self.fail(n, "migration", f"temporary files left: {left}")
        finally:
            restarted.stop()
        if not (self.keep and len(self.failures) > before):  # a failed one is kept with --keep
            shutil.rmtree(data, ignore_errors=True)
            shutil.rmtree(f"{data}-backups", ignore_errors=True)

    def common_checks(self, n: int, situation: str) -> None:
        if (result := rows(self.db, "PRAGMA integrity_check")) != [("ok",)]:
            self.fail(n, situation, f"integrity_check: {result}")
        acked = sorted(self.acked_messages)
        present: set[str] = set()
        for i in range(0, len(acked), 500):
            chunk = acked[i : i + 500]
            marks = ",".join("?" * len(chunk))
            present |= {r[0] for r in rows(self.db, f"SELECT id FROM messages WHERE id IN ({marks})", *chunk)}
        if missing := set(acked) - present:
            self.fail(n, situation, f"{len(missing)} acknowledged message(s) lost: {sorted(missing)[:5]}")
        if streaming := rows(self.db, "SELECT id FROM messages WHERE status = 'streaming'"):
            self.fail(n, situation, f"{len(streaming)} repl(ies) still streaming after the restart")
        left = [x for x in leftovers(Path(f"{self.data}-backups"), self.data) if x not in self.seen_leftovers]
        if left:
            self.seen_leftovers |= set(left)
            self.fail(n, situation, f"temporary files left: {left}")


def header(argv: list[str]) -> str:
    cpu = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else platform.processor()
    )
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"# {shlex.join(['bench/kill_loop.py', *argv])}\n"
        f"# run: {started}; machine: {os.cpu_count()} cores {cpu}, {mem:.0f} GiB RAM, "
        f"Python {platform.python_version()}; load average at start: {load}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the data directories and logs")
    args = parser.parse_args()
    print(header(sys.argv[1:]), flush=True)
    root = Path(tempfile.mkdtemp(prefix="mt-kill-loop-"))
    fake, fake_url = start_fake(TOKEN_DELAY, reply_tokens=REPLY_TOKENS)
    env = {
        "MODELTRAIN_OLLAMA_URL": fake_url,
        "MODELTRAIN_CHAT_PERSIST_INTERVAL": "0.1",
        "MODELTRAIN_CHAT_TITLE_GENERATION": "false",
        # a killed process's stream slots are freed when their reservations expire, not at once
        "MODELTRAIN_MAX_STREAMS_PER_USER": "1000",
    }
    run = Run(root, random.Random(args.seed), args.seed, env, args.keep)
    t0 = time.monotonic()
    try:
        run.setup()
        print(
            f"set-up {time.monotonic() - t0:.1f} s: old database at {OLD_REVISION} "
            f"(users, conversations, messages, hash: {run.old_print}); a migrating start takes "
            f"{run.migration_start:.2f} s here, migrating from "
            f"{run.migration_window[0]:.2f} to {run.migration_window[1]:.2f} s after the spawn",
            flush=True,
        )
        # each situation as often as the others (to one), in a random order
        order = [SITUATIONS[i % len(SITUATIONS)] for i in range(args.cycles)]
        run.rng.shuffle(order)
        for n, situation in enumerate(order, 1):
            run.cycle(n, situation)
    finally:
        if run.proc is not None:
            run.proc.stop()
        fake.terminate()
        fake.wait(10)
        if args.keep:
            print(f"kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print()
    for situation in SITUATIONS:
        phases = ", ".join(f"{k} {v}" for k, v in sorted(run.phases.get(situation, Counter()).items()))
        print(f"{situation:9s} {run.counts[situation]:4d} cycles  (killed: {phases or '-'})")
    for failure in run.failures:
        print(f"FAIL {failure}")
    per = sum(run.durations) / len(run.durations) if run.durations else 0.0
    print(
        f"total: {args.cycles} cycles, {len(run.failures)} failure(s), seed {args.seed}; "
        f"{per:.1f} s per cycle, {time.monotonic() - t0:.0f} s in all"
    )
    return 1 if run.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())

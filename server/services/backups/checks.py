"""Reading and checking databases: SQLite files at rest (integrity, foreign keys, ModelTrain tables,
schema revision), snapshots of the live SQLite file, and the PostgreSQL client tools (pg_dump and
pg_restore)."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, inspect, text
from sqlalchemy.engine import make_url

from server import __version__
from server.db import migrate
from server.errors import Unavailable
from server.services.backups.errors import InvalidBackup, SchemaTooNew, disk_full

EXPECTED_TABLES = frozenset({"alembic_version", "users", "refresh_tokens", "conversations", "messages"})
COUNTED_TABLES = ("users", "conversations", "messages", "providers", "model_configs")
PGDUMP_MAGIC = b"PGDMP"


def _open_sqlite_readonly(path: Path) -> sqlite3.Connection:
    # immutable=1: no locks, no -wal/-shm files next to a file nobody else is using.
    uri = "file:" + _uri_path(path) + "?mode=ro&immutable=1"
    return sqlite3.connect(uri, uri=True)


def _uri_path(path: Path) -> str:
    from urllib.parse import quote

    return quote(str(path.resolve()), safe="/:")


def check_sqlite_database(path: Path) -> dict[str, Any]:
    """Integrity, foreign keys, ModelTrain tables and schema revision of a SQLite file at rest.

    Raises :class:`InvalidBackup` or :class:`SchemaTooNew`; returns ``{"schema_revision", "counts"}``.
    """
    try:
        conn = _open_sqlite_readonly(path)
    except sqlite3.Error as exc:
        raise InvalidBackup(f"cannot open the database: {exc}") from None
    try:
        try:
            rows = conn.execute("PRAGMA integrity_check").fetchall()
        except sqlite3.DatabaseError as exc:
            raise InvalidBackup(f"not a SQLite database, or a damaged one: {exc}") from None
        problems = [r[0] for r in rows if r[0] != "ok"]
        if problems:
            raise InvalidBackup(
                f"the database fails its integrity check: {problems[0]}",
                detail={"integrity_check": problems[:20]},
            )
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "alembic_version" not in tables:
            raise InvalidBackup("not a ModelTrain database (it has no schema version table)")
        missing = sorted(EXPECTED_TABLES - tables)
        if missing:
            raise InvalidBackup(f"not a ModelTrain database (missing tables: {', '.join(missing)})")
        versions = [r[0] for r in conn.execute("SELECT version_num FROM alembic_version")]
        if len(versions) != 1 or not versions[0]:
            raise InvalidBackup("the database's schema revision is unreadable")
        revision = str(versions[0])
        fk = conn.execute("PRAGMA foreign_key_check").fetchall()
        if fk:
            raise InvalidBackup(
                f"the database fails its foreign key check ({len(fk)} dangling reference(s))",
                detail={"foreign_key_check": [list(r) for r in fk[:20]]},
            )
        counts = {
            t: int(conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0])
            for t in COUNTED_TABLES
            if t in tables
        }
    except sqlite3.DatabaseError as exc:
        raise InvalidBackup(f"the database is damaged: {exc}") from None
    finally:
        conn.close()
    _check_revision(revision)
    return {"schema_revision": revision, "counts": counts}


def sqlite_facts(path: Path) -> dict[str, Any]:
    """Schema revision and row counts of a (possibly damaged) SQLite file; blanks when unreadable."""
    revision, counts = "", {}
    try:
        conn = _open_sqlite_readonly(path)
        try:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            revision = str(row[0]) if row else ""
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            for table in COUNTED_TABLES:
                if table in tables:
                    counts[table] = int(conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        pass
    return {"schema_revision": revision, "counts": counts}


def _check_revision(revision: str) -> None:
    if revision not in migrate.known_revisions():
        raise SchemaTooNew(
            f"the backup's schema revision {revision!r} is newer than (or unknown to) ModelTrain "
            f"{__version__}; upgrade ModelTrain before restoring it",
            detail={"schema_revision": revision, "app_head": migrate.head_revision()},
        )


def sqlite_snapshot(db_path: Path, dest: Path) -> None:
    """A consistent copy of a live SQLite database via the online backup API (never a file copy)."""
    if not db_path.is_file():
        raise Unavailable(f"the database file {db_path.name} does not exist yet", code="no_database")
    src = sqlite3.connect(str(db_path), timeout=30)
    try:
        src.execute("PRAGMA busy_timeout = 30000")
        out = sqlite3.connect(str(dest))
        try:
            src.backup(out)  # one step: one read transaction, one consistent snapshot
            out.execute("PRAGMA journal_mode = DELETE")  # a self-contained file, no -wal
        finally:
            out.close()
    finally:
        src.close()
    os.chmod(dest, 0o600)


# --- PostgreSQL ------------------------------------------------------------------------------------


def pg_env(url: str) -> dict[str, str]:
    """libpq connection settings as environment variables: the password never appears in argv
    (docs/security.md, A6)."""
    parsed = make_url(url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    values = {
        "PGHOST": parsed.host,
        "PGPORT": str(parsed.port) if parsed.port else None,
        "PGUSER": parsed.username,
        "PGPASSWORD": parsed.password,
        "PGDATABASE": parsed.database,
    }
    env.update({k: v for k, v in values.items() if v})
    query = dict(parsed.query)
    if "sslmode" in query:
        env["PGSSLMODE"] = str(query["sslmode"])
    return env


def pg_tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        raise Unavailable(
            f"{name} is not installed; install the PostgreSQL client tools", code="pg_tools_missing"
        )
    return found


def run_pg(args: list[str], url: str, *, stdout: Any = subprocess.PIPE) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(args, env=pg_env(url), stdout=stdout, stderr=subprocess.PIPE, check=False)
    if proc.returncode != 0:
        message = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = message[-1] if message else f"exit code {proc.returncode}"
        if "No space left" in reason:
            raise disk_full(Path(args[-1]).parent)
        raise Unavailable(f"{Path(args[0]).name} failed: {reason}", code="pg_tool_failed")
    return proc


def pg_dump(url: str, dest: Path) -> None:
    run_pg(
        [pg_tool("pg_dump"), "-Fc", "--no-owner", "--no-privileges", "-f", str(dest)],
        url,
        stdout=subprocess.DEVNULL,
    )
    os.chmod(dest, 0o600)


def check_pg_dump(path: Path) -> dict[str, Any]:
    """A custom-format dump whose table of contents has ModelTrain's tables and a readable revision."""
    with open(path, "rb") as fh:
        if fh.read(5) != PGDUMP_MAGIC:
            raise InvalidBackup("not a PostgreSQL custom-format dump")
    toc = subprocess.run([pg_tool("pg_restore"), "-l", str(path)], capture_output=True, check=False)
    if toc.returncode != 0:
        raise InvalidBackup("the PostgreSQL dump is damaged (pg_restore cannot read its table of contents)")
    listing = toc.stdout.decode("utf-8", "replace")
    tables = set(re.findall(r"TABLE (?:DATA )?\S+ (\w+) ", listing))
    missing = sorted(EXPECTED_TABLES - tables)
    if missing:
        raise InvalidBackup(f"not a ModelTrain database (missing tables: {', '.join(missing)})")
    data = subprocess.run(
        [pg_tool("pg_restore"), "-a", "-t", "alembic_version", "-f", "-", str(path)],
        capture_output=True,
        check=False,
    )
    match = re.search(
        r"COPY \S*alembic_version \(version_num\) FROM stdin;\n([^\n\\]+)\n",
        data.stdout.decode("utf-8", "replace"),
    )
    if data.returncode != 0 or not match:
        raise InvalidBackup("the dump's schema revision is unreadable")
    revision = match.group(1).strip()
    _check_revision(revision)
    return {"schema_revision": revision, "counts": {}}


def live_counts(engine: Engine) -> dict[str, int]:
    names = set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        return {
            t: int(conn.execute(text(f'SELECT count(*) FROM "{t}"')).scalar() or 0)
            for t in COUNTED_TABLES
            if t in names
        }

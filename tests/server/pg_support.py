"""A throw-away PostgreSQL cluster for tests: ``initdb`` + ``pg_ctl`` into a temp directory.

The cluster listens on 127.0.0.1 (a free port) and on a unix socket inside its own directory, with
``trust`` authentication for the local test user only. As root, the server runs as the ``postgres``
OS user (Debian's package creates it; PostgreSQL refuses to run as root). Each test gets its own
database (``CREATE DATABASE``), dropped after the test.

Used by ``tests/server/conftest.py`` when ``MODELTRAIN_TEST_POSTGRES=1`` and by ``tests/deploy``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

SUPERUSER = "modeltrain_test"


def postgres_bin_dir() -> Path | None:
    """Debian's versioned server binaries (/usr/lib/postgresql/<major>/bin), newest first; else PATH."""
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    found.sort(key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def available() -> bool:
    return postgres_bin_dir() is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresCluster:
    """One private PostgreSQL server. ``start()``/``stop()``; ``new_database()`` gives a fresh URL."""

    def __init__(self) -> None:
        bindir = postgres_bin_dir()
        if bindir is None:
            raise RuntimeError("PostgreSQL server binaries not found: install Debian's postgresql package")
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="modeltrain-pg-"))
        self.datadir = self.root / "data"
        self.port = _free_port()
        self.run_as: str | None = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
                self.run_as = "postgres"
            except KeyError as exc:
                raise RuntimeError(
                    "running as root needs the 'postgres' OS user (Debian's postgresql)"
                ) from exc
        self._lock = threading.Lock()
        self.started = False

    # -- process control

    def _cmd(self, *args: str) -> list[str]:
        if self.run_as:
            return ["runuser", "-u", self.run_as, "--", *args]
        return list(args)

    def _run(self, *args: str, timeout: float = 120) -> None:
        proc = subprocess.run(self._cmd(*args), capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed: {proc.stdout}\n{proc.stderr}")

    def start(self) -> PostgresCluster:
        if self.run_as:
            entry = pwd.getpwnam(self.run_as)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        os.chmod(self.root, 0o700)
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.datadir),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        )
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 "
            "-c shared_buffers=64MB"
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.datadir),
            "-l",
            str(self.root / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )
        self.started = True
        return self

    def stop(self) -> None:
        if self.started:
            try:
                self._run(
                    str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "-w", "stop"
                )
            finally:
                self.started = False
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- databases

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user=SUPERUSER, dbname=database, autocommit=True
        )

    def new_database(self, prefix: str = "t") -> str:
        """Create an empty database; return its SQLAlchemy URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:16]}"
        with self._lock, self.connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with self._lock, self.connect() as conn:
            # FORCE ends connections a test left open (an undisposed pool).
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

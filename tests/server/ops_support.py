"""Helpers for the operations tests (backups, restore, logs, metrics, doctor)."""

from __future__ import annotations

import hashlib
import io
import os
import random
import sqlite3
import string
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import Engine, insert

from server.db.models import Conversation, Message, User


def populate(
    engine: Engine,
    *,
    conversations: int,
    messages_per: int,
    text_size: int = 80,
    seed: int = 7,
    incompressible: bool = False,
    words: bool = False,
) -> uuid.UUID:
    """Insert a user with ``conversations`` x ``messages_per`` messages (one transaction per batch)."""
    rng = random.Random(seed)
    user_id = uuid.uuid4()
    now = datetime.now(timezone.utc)
    alphabet = string.ascii_letters + string.digits + "     "

    if words:  # prose-like: a vocabulary of pseudo-words, as chat text compresses
        vocabulary = [
            "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 9))) for _ in range(3000)
        ]
        corpus = " ".join(rng.choice(vocabulary) for _ in range(20000))
    else:
        corpus = "".join(rng.choice(alphabet) for _ in range(65536))

    def body() -> str:
        if incompressible:
            return os.urandom(text_size // 2).hex()
        start = rng.randrange(0, len(corpus) - text_size) if text_size < len(corpus) else 0
        return corpus[start : start + text_size]

    with engine.begin() as conn:
        conn.execute(
            insert(User.__table__),
            [
                {
                    "id": user_id,
                    "email": f"bulk-{user_id.hex[:8]}@example.com",
                    "display_name": "",
                    "password_hash": "x",
                    "role": "user",
                    "is_active": True,
                    "must_change_password": False,
                    "token_version": 0,
                    "created_at": now,
                    "updated_at": now,
                }
            ],
        )
    batch_convs = 200
    for start in range(0, conversations, batch_convs):
        convs, msgs = [], []
        for i in range(start, min(conversations, start + batch_convs)):
            cid = uuid.uuid4()
            convs.append(
                {
                    "id": cid,
                    "user_id": user_id,
                    "title": f"conversation {i}",
                    "title_edited": False,
                    "model": "m",
                    "system_prompt": "",
                    "options": {},
                    "pinned": False,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            for j in range(messages_per):
                msgs.append(
                    {
                        "id": uuid.uuid4(),
                        "conversation_id": cid,
                        "parent_id": None,
                        "role": "user" if j % 2 == 0 else "assistant",
                        "content": body(),
                        "thinking": "",
                        "status": "complete",
                        "model": "m",
                        "created_at": now + timedelta(seconds=j),
                        "updated_at": now,
                    }
                )
        with engine.begin() as conn:
            conn.execute(insert(Conversation.__table__), convs)
            conn.execute(insert(Message.__table__), msgs)
    return user_id


def logical_hash(db_path: Path) -> str:
    """A hash of the database's content (schema and rows), independent of WAL checkpoints."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        digest = hashlib.sha256()
        for line in conn.iterdump():
            digest.update(line.encode())
        return digest.hexdigest()
    finally:
        conn.close()


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def integrity(db_path: Path) -> str:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def corrupt_index(db_path: Path, index_name: str, columns: str) -> None:
    """Make ``index_name`` disagree with its table: its schema entry is rewritten to index ``columns``
    while the stored entries stay those of the old columns, so ``integrity_check`` reports missing
    rows (the file stays readable, as real damage often does)."""
    conn = sqlite3.connect(str(db_path))
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        table = conn.execute("SELECT tbl_name FROM sqlite_master WHERE name = ?", (index_name,)).fetchone()[0]
        conn.execute("PRAGMA writable_schema = ON")
        conn.execute(
            "UPDATE sqlite_master SET sql = ? WHERE name = ?",
            (f'CREATE INDEX "{index_name}" ON "{table}" ({columns})', index_name),
        )
        conn.commit()
        conn.execute("PRAGMA writable_schema = OFF")
    finally:
        conn.close()


def db_members(archive: Path) -> tuple[bytes, bytes]:
    """(manifest bytes, database bytes) of a backup archive."""
    with tarfile.open(archive, "r:gz") as tar:
        members = tar.getmembers()
        return tar.extractfile(members[0]).read(), tar.extractfile(members[1]).read()  # type: ignore[union-attr]


def build_archive(manifest: bytes, db_name: str, db_bytes: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in (("manifest.json", manifest), (db_name, db_bytes)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class TmpfsMount:
    """A small tmpfs (we run as root): ``with TmpfsMount(path, "512k"):``. Always unmounted."""

    def __init__(self, path: Path, size: str) -> None:
        self.path = path
        self.size = size

    def __enter__(self) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size},mode=0700", "tmpfs", str(self.path)], check=True
        )
        return self.path

    def remount(self, size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.path)], check=True)

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)


def restore_logging() -> Iterator[None]:
    """In-process CLI calls configure logging for the process: undo it after the test."""
    import logging

    from server.log_setup import shutdown_logging

    root = logging.getLogger()
    level = root.level
    yield
    shutdown_logging()
    root.setLevel(level)

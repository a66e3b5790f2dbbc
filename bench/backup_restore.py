"""Backup and restore time for a database with 100,000 messages.

    .venv/bin/python bench/backup_restore.py [--messages 100000] [--chars 400]

Builds a real ModelTrain SQLite database (20 messages per conversation, 400 characters each, by
default), then times:

* baseline: a bare ``sqlite3`` online-backup copy of the file (the least any consistent backup costs);
* ``create_backup``: snapshot + gzip + manifest + full verification (checksum, integrity_check,
  foreign_key_check, revision), what the daily schedule and ``modeltrain backup`` do;
* ``verify_backup_file``: ``modeltrain verify-backup``;
* ``restore_file``: validation + migrate + revoke sessions + keeping the previous database as a
  backup + atomic swap, what ``modeltrain restore`` does.
Figures are printed with their ratio to the baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.bootstrap import prepare_database
from server.db.session import create_db_engine, create_session_factory
from server.services import backups
from server.settings import Settings
from tests.server.ops_support import populate


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--per-conversation", type=int, default=20)
    parser.add_argument("--chars", type=int, default=400, help="characters per message")
    parser.add_argument(
        "--text",
        choices=("words", "random"),
        default="words",
        help="prose-like text (default) or random characters (worst case for gzip)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mt-bench-backup-") as tmp:
        root = Path(tmp)
        settings = Settings(
            _env_file=None,
            data_dir=root / "data",
            backup_schedule="off",
            initial_admin_password="bench-initial-password-1",
            secret_key="bench-secret-" + "x7Kq2mPz9vRt4nLw8sYb3cHd6fJg1aE5",
        )
        engine = create_db_engine(settings.resolved_database_url)
        prepare_database(settings, engine, create_session_factory(engine))
        t_fill, _ = timed(
            populate,
            engine,
            conversations=args.messages // args.per_conversation,
            messages_per=args.per_conversation,
            text_size=args.chars,
            words=args.text == "words",
        )
        engine.dispose()
        db = settings.data_dir / "modeltrain.db"
        size_mb = db.stat().st_size / 1e6
        print(
            f"database: {args.messages:,} messages of {args.chars} {args.text} characters, {size_mb:.1f} MB "
            f"(filled in {t_fill:.1f} s)"
        )

        def bare_copy() -> None:
            src, dst = sqlite3.connect(db), sqlite3.connect(root / "baseline.db")
            src.backup(dst)
            dst.close()
            src.close()

        base, _ = timed(bare_copy)
        t_backup, info = timed(backups.create_backup, settings)
        assert info.verified, info.verify_error
        t_verify, _ = timed(backups.verify_backup_file, settings, info.path)
        t_restore, result = timed(backups.restore_file, settings, info.path)
        assert result.counts["messages"] == args.messages

        print(f"archive: {info.size / 1e6:.1f} MB ({info.size / db.stat().st_size:.0%} of the database)")
        rows = [
            ("baseline: sqlite3 online backup copy", base),
            ("backup (snapshot+gzip+verify)", t_backup),
            ("verify-backup", t_verify),
            ("restore (validate+migrate+revoke+keep previous+swap)", t_restore),
        ]
        for name, seconds in rows:
            print(f"{name:<55} {seconds:7.2f} s   x{seconds / base:6.1f} baseline")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

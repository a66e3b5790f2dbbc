"""Operations sub-commands of ``modeltrain``: backup, restore, verify-backup, doctor.

Registered by :func:`server.cli.build_parser`; exit codes: 0 success, 1 refused/failed (with the
reason on stderr), 2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable
from pathlib import Path

from server.cli_support import settings_from_args


def _log_to_file(settings) -> None:
    from server.log_setup import configure_logging

    # The doctor reports an unwritable log directory; a backup must not fail on it.
    with contextlib.suppress(OSError):
        configure_logging(settings, console=False)


def cmd_backup(args: argparse.Namespace) -> int:
    from server.services import backups

    settings = settings_from_args(args)
    _log_to_file(settings)
    dest = Path(args.dest).expanduser() if args.dest else None
    info = backups.create_backup(settings, dest=dest, keep=args.keep, lock_wait=30.0)
    print(f"backup {info.id}: {info.path} ({info.size} bytes, sha256 {info.sha256})")
    rows = json.dumps(info.counts, sort_keys=True)
    print(f"schema {info.schema_revision}, app {info.app_version}, rows {rows}")
    if not info.verified:
        print(f"modeltrain: error: the backup FAILED verification: {info.verify_error}", file=sys.stderr)
        return 1
    print("verified: checksum, integrity_check, foreign_key_check and schema revision are ok")
    if dest is None:
        removed = backups.store_for(settings).prune(settings.backup_keep_days)
        if removed:
            print(f"retention removed {len(removed)} backup(s) older than {settings.backup_keep_days} days")
    return 0


def _resolve_source(settings, value: str) -> Path:
    """A file path, or the id of a backup in the backup directory."""
    from server.services import backups

    path = Path(value).expanduser()
    if path.exists() or not backups.ID_PATTERN.match(value):
        return path
    return backups.store_for(settings).archive_path(value)


def cmd_restore(args: argparse.Namespace) -> int:
    from server.services import backups

    settings = settings_from_args(args)
    _log_to_file(settings)
    source = _resolve_source(settings, args.file)
    if not args.yes:
        if not sys.stdin.isatty():
            print("modeltrain: error: restoring replaces the database; add --yes to confirm", file=sys.stderr)
            return 2
        answer = input(f"Replace the database with {source}? Everyone will be signed out. [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("cancelled")
            return 1
    result = backups.restore_file(settings, source)
    print(f"restored {result.source}: schema {result.schema_revision_before} -> {result.schema_revision}")
    print(f"rows: {json.dumps(result.counts, sort_keys=True)}")
    if result.previous_backup_id:
        print(f"the previous database was kept as backup {result.previous_backup_id}")
    elif result.previous_database_file:
        print(f"the previous database was kept as {result.previous_database_file}")
    print("all sessions were revoked: everyone signs in again")
    return 0


def cmd_verify_backup(args: argparse.Namespace) -> int:
    from server.services import backups

    settings = settings_from_args(args)
    report = backups.verify_backup_file(settings, _resolve_source(settings, args.file))
    for key in ("file", "database", "schema_revision", "app_version", "created_at", "checksum", "sha256"):
        if report.get(key) is not None:
            print(f"{key}: {report[key]}")
    print(f"rows: {json.dumps(report['counts'], sort_keys=True)}")
    print("ok: the backup is complete and restorable")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from server.services import doctor

    overrides = {k: getattr(args, k, None) for k in ("host", "port", "data_dir")}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    overrides["desktop_mode"] = False
    results = doctor.run_checks(overrides)
    for check in results:
        print(check.line())
    passed = doctor.all_passed(results)
    failed = sum(1 for c in results if not c.ok)
    print("all checks passed" if passed else f"{failed} check(s) failed")
    return 0 if passed else 1


def add_commands(sub: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]) -> None:
    bk = sub.add_parser("backup", help="back up the database now (compressed, verified)")
    bk.add_argument("--dest", help="write the backup into this directory instead of the backup directory")
    bk.add_argument("--keep", action="store_true", help="exempt this backup from retention")
    common(bk)
    bk.set_defaults(func=cmd_backup)

    rs = sub.add_parser("restore", help="validate a backup and make it the database (stop the server first)")
    rs.add_argument("file", help="a backup file (.tar.gz), a ModelTrain database file, or a backup id")
    rs.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    common(rs)
    rs.set_defaults(func=cmd_restore)

    vb = sub.add_parser("verify-backup", help="check that a backup file is complete and restorable")
    vb.add_argument("file", help="a backup file (.tar.gz), a ModelTrain database file, or a backup id")
    common(vb)
    vb.set_defaults(func=cmd_verify_backup)

    dr = sub.add_parser("doctor", help="check configuration, port, database, disk, backups, Ollama and logs")
    dr.add_argument("--host", help="address the server binds (MODELTRAIN_HOST)")
    dr.add_argument("--port", type=int, help="port the server binds (MODELTRAIN_PORT)")
    common(dr)
    dr.set_defaults(func=cmd_doctor)

"""``modeltrain`` command line: serve, migrate, create-admin, reset-password."""

from __future__ import annotations

import argparse
import errno
import functools
import getpass
import logging
import os
import socket
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from server import __version__
from server.cli_ops import add_commands as add_operations_commands
from server.cli_secrets import add_commands as add_secrets_commands
from server.cli_support import fail, settings_from_args
from server.errors import DomainError
from server.settings import Settings, SettingsError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger(__name__)
T = TypeVar("T")


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    if os.name != "nt":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def announce_initial_admin(initial) -> None:
    if initial is None or initial.password is None:
        return
    # Printed once on the console for the operator; deliberately not logged.
    print(
        "\n  ModelTrain created the administrator account\n"
        f"    e-mail:   {initial.email}\n"
        f"    password: {initial.password}\n"
        f"  (also saved, readable only by you, in {initial.password_file}; it expires at "
        f"{initial.expires_at:%Y-%m-%d %H:%M} UTC and must be changed at first sign-in)\n",
        file=sys.stderr,
        flush=True,
    )


def cmd_serve(args: argparse.Namespace) -> int:

    from server.app import create_app, stop_replies
    from server.bootstrap import prepare_database
    from server.db.session import create_db_engine, create_session_factory
    from server.log_setup import configure_logging

    settings = settings_from_args(args)
    configure_logging(settings)
    try:
        sock = bind_socket(settings.host, settings.port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return fail(
                f"port {settings.port} on {settings.host} is already in use; stop the other program "
                "or choose another port with --port or MODELTRAIN_PORT",
                1,
            )
        return fail(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}", 1)
    engine = create_db_engine(settings.resolved_database_url)
    try:
        announce_initial_admin(prepare_database(settings, engine, create_session_factory(engine)))
    finally:
        engine.dispose()
    app = create_app(settings)
    from server.listener import ReadyServer, uvicorn_config

    # SIGTERM: the live replies are asked to stop first (their partial answers saved, their streams
    # ended), then open requests get shutdown_grace_seconds before they are cancelled.
    server = ReadyServer(
        uvicorn_config(app, settings, lifespan="on"), before_shutdown=functools.partial(stop_replies, app)
    )
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    print(
        f"ModelTrain {__version__} listening on http://{host}:{sock.getsockname()[1]}",
        file=sys.stderr,
        flush=True,
    )
    server.run(sockets=[sock])
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from server.db import migrate
    from server.db.session import create_db_engine
    from server.log_setup import configure_logging

    settings = settings_from_args(args)
    configure_logging(settings)
    engine = create_db_engine(settings.resolved_database_url)
    try:
        before = migrate.current_revision(engine)
        snapshot = migrate.upgrade(engine, settings.data_dir / "backups" / "pre-migration")
        after = migrate.current_revision(engine)
    finally:
        engine.dispose()
    print(f"database schema: {before or 'empty'} -> {after}")
    if snapshot:
        print(f"snapshot of the previous database: {snapshot}")
    return 0


def _read_password(args: argparse.Namespace) -> str:
    if getattr(args, "password_stdin", False):
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("New password: ")
    if getpass.getpass("Repeat it: ") != first:
        raise SettingsError("the passwords do not match")
    return first


def _with_session(settings: Settings, work: Callable[[Session], T]) -> T:
    from server.bootstrap import prepare_database
    from server.db.session import create_db_engine, create_session_factory, session_scope

    engine = create_db_engine(settings.resolved_database_url)
    try:
        factory = create_session_factory(engine)
        prepare_database(settings, engine, factory)
        with session_scope(factory) as session:
            return work(session)
    finally:
        engine.dispose()


def cmd_create_admin(args: argparse.Namespace) -> int:
    from server.services import users

    settings = settings_from_args(args)
    password = _read_password(args)
    user = _with_session(settings, lambda s: users.create_admin(s, settings, args.email, password))
    print(f"administrator {user.email} is ready")
    return 0


def cmd_reset_password(args: argparse.Namespace) -> int:
    from server.services import users

    settings = settings_from_args(args)
    user, password = _with_session(settings, lambda s: users.operator_reset_password(s, settings, args.email))
    print(f"new temporary password for {user.email}: {password}")
    print(f"it expires in {settings.initial_password_ttl_hours} h and must be changed at the next sign-in")
    return 0


def cmd_migrate_db(args: argparse.Namespace) -> int:
    """Copy an installation's data to another database (services/db_transfer.py)."""
    from server.services import db_transfer

    source = args.source or os.environ.get("MODELTRAIN_MIGRATE_FROM", "")
    target = args.target or os.environ.get("MODELTRAIN_MIGRATE_TO", "")
    if not source or not target:
        return fail("give both --from URL and --to URL (or MODELTRAIN_MIGRATE_FROM / MODELTRAIN_MIGRATE_TO)")
    report = db_transfer.transfer(
        source, target, force=args.force, progress=lambda table, n: print(f"  {table}: {n} rows", flush=True)
    )
    if report.cleared:
        print("the target's previous rows were deleted (--force)")
    print(
        f"copied {report.total} rows from {report.source} to {report.target} "
        f"(schema {report.schema_revision}); row counts verified"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    fields = Settings.model_fields
    parser = argparse.ArgumentParser(
        prog="modeltrain", description="ModelTrain: manage and chat with local LLMs."
    )
    parser.add_argument("--version", action="version", version=f"modeltrain {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", help=f"{fields['data_dir'].description} (MODELTRAIN_DATA_DIR)")

    serve = sub.add_parser("serve", help="run the server (headless)")
    serve.add_argument("--host", help=f"{fields['host'].description} Default 127.0.0.1 (MODELTRAIN_HOST)")
    serve.add_argument(
        "--port", type=int, help=f"{fields['port'].description} Default 8000 (MODELTRAIN_PORT)"
    )
    common(serve)
    serve.set_defaults(func=cmd_serve)

    mig = sub.add_parser("migrate", help="upgrade the database schema to the latest version")
    common(mig)
    mig.set_defaults(func=cmd_migrate)

    ca = sub.add_parser("create-admin", help="create an administrator (or promote and re-password one)")
    ca.add_argument("email")
    ca.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    common(ca)
    ca.set_defaults(func=cmd_create_admin)

    rp = sub.add_parser("reset-password", help="give a user a new temporary password")
    rp.add_argument("email")
    common(rp)
    rp.set_defaults(func=cmd_reset_password)

    mdb = sub.add_parser(
        "migrate-db",
        help="copy all data to another database (e.g. SQLite -> PostgreSQL), verified by row counts",
        description="Copy every table from --from to --to in foreign-key order in one transaction and verify "
        "the row counts. Stop the server first. The target's schema is created by the migrations; a target "
        "that already holds rows is refused unless --force. URLs: sqlite:///PATH, "
        "postgresql://USER[:PASSWORD]@HOST[:PORT]/DB; to keep a password out of the process list, give the "
        "URLs in MODELTRAIN_MIGRATE_FROM / MODELTRAIN_MIGRATE_TO instead.",
    )
    mdb.add_argument("--from", dest="source", metavar="URL", help="database to copy from")
    mdb.add_argument("--to", dest="target", metavar="URL", help="database to copy into")
    mdb.add_argument("--force", action="store_true", help="delete the rows a non-empty target holds first")
    mdb.set_defaults(func=cmd_migrate_db)

    add_operations_commands(sub, common)  # backup, restore, verify-backup, doctor
    add_secrets_commands(sub, common)  # secrets migrate
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SettingsError as exc:
        return fail(str(exc))
    except DomainError as exc:
        return fail(exc.message, 1)
    except KeyboardInterrupt:
        return 130

"""``modeltrain secrets migrate --to file|keyring``: move the provider API keys between secret stores.

Registered by :func:`server.cli.build_parser`; exit codes: 0 success, 1 refused/failed (with the reason on
stderr), 2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from server.cli_support import fail, settings_from_args

STORES = ("file", "keyring")


def cmd_secrets_migrate(args: argparse.Namespace) -> int:
    from server.bootstrap import prepare_database
    from server.db.session import create_db_engine, create_session_factory, session_scope
    from server.security.secret_store import make_secret_store
    from server.services import providers

    settings = settings_from_args(args)
    source_kind = "keyring" if args.to == "file" else "file"
    source = make_secret_store(settings, source_kind)
    target = make_secret_store(settings, args.to)
    target.check()
    engine = create_db_engine(settings.resolved_database_url)
    try:
        factory = create_session_factory(engine)
        prepare_database(settings, engine, factory)
        with session_scope(factory) as session:
            result = providers.move_api_keys(session, source, target)
    finally:
        engine.dispose()
    print(f"moved {len(result.moved)} provider key(s) from {source.label} to {target.label}")
    if settings.secret_store not in ("auto", args.to):
        print(f"set MODELTRAIN_SECRET_STORE={args.to} (or auto) so that the server reads them there")
    if result.missing:
        return fail(
            f"no key found in {source.label} for: {', '.join(result.missing)}; enter those keys again",
            1,
        )
    return 0


def add_commands(sub: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]) -> None:
    secrets = sub.add_parser("secrets", help="manage where provider API keys are kept")
    actions = secrets.add_subparsers(dest="secrets_command", required=True)
    mv = actions.add_parser(
        "migrate",
        help="move the provider API keys to the encrypted file or to the OS keyring",
        description="Copy every provider API key from the other store into --to, then delete it there. "
        "Stop the server first. The file store is <data dir>/secrets.enc.json, encrypted with the key in "
        "MODELTRAIN_SECRET_STORE_KEY_FILE (default <data dir>/secrets.key).",
    )
    mv.add_argument("--to", required=True, choices=STORES, help="the store to move the keys into")
    common(mv)
    mv.set_defaults(func=cmd_secrets_migrate)

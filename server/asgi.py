"""ASGI entry point for process managers: gunicorn with uvicorn workers, or ``uvicorn --factory``.

    gunicorn -c packaging/gunicorn/gunicorn.conf.py 'server.asgi:app()'
    uvicorn --factory server.asgi:app --host 127.0.0.1 --port 8000

``app()`` is a factory: nothing happens at import time. It builds :class:`Settings` from the environment
(and ``.env``), configures logging and calls :func:`server.app.create_app`. The schema migration and
the first administrator are prepared once by the gunicorn master (``on_starting`` in gunicorn.conf.py,
via :func:`prepare`) before workers fork; each worker's lifespan then finds the database ready.
"""

from __future__ import annotations

import sys

from fastapi import FastAPI

from server.settings import Settings, SettingsError, load_settings


def settings_from_environment() -> Settings:
    """Settings for a headless process; a bad setting ends the process with the one-line message."""
    try:
        return load_settings(desktop_mode=False)
    except SettingsError as exc:
        print(f"modeltrain: error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def prepare(settings: Settings | None = None) -> None:
    """One-time start-up work before workers start: signing secret, schema, first admin (announced once)."""
    from server.bootstrap import prepare_database
    from server.cli import announce_initial_admin
    from server.db.session import create_db_engine, create_session_factory
    from server.security.secret_store import load_or_create_secret

    settings = settings or settings_from_environment()
    load_or_create_secret(settings)  # created once here, so every worker signs with the same key
    engine = create_db_engine(settings.resolved_database_url)
    try:
        announce_initial_admin(prepare_database(settings, engine, create_session_factory(engine)))
    finally:
        engine.dispose()


def app() -> FastAPI:
    """Build the app from the environment (called once per worker process)."""
    from server.app import create_app
    from server.log_setup import configure_logging

    settings = settings_from_environment()
    configure_logging(settings)
    return create_app(settings)

"""Revision 0004 (server/migrations/versions/20261204_0004_preset_owner.py): existing model configurations
become shared presets with nothing else lost; going back drops only the personal ones."""

from __future__ import annotations

import uuid
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.orm import Session

import server.db.models  # noqa: F401
from server.db import migrate
from server.db.models import ModelConfig, Provider, User
from server.db.session import create_db_engine
from tests.server.conftest import database_url


def _rows(conn, sql: str) -> list[tuple]:
    return [tuple(r) for r in conn.execute(text(sql)).all()]


def test_presets_survive_the_round_trip_through_0003(tmp_path: Path) -> None:
    engine = create_db_engine(database_url(tmp_path))
    migrate.upgrade(engine, from_schema_file=False)
    with Session(engine) as session, session.begin():
        provider = Provider(name="Local", kind="ollama", base_url="http://127.0.0.1:11434")
        user = User(email="a@example.com", password_hash="x")
        session.add_all([provider, user])
        session.flush()
        shared = ModelConfig(provider_id=provider.id, name="Team", model="llama3.2", options={"seed": 1})
        mine = ModelConfig(provider_id=provider.id, owner_id=user.id, name="Team", model="qwen3", options={})
        session.add_all([shared, mine])
        session.flush()
        shared_id, provider_id = shared.id, provider.id

    migrate.downgrade(engine, "0003")
    with engine.connect() as conn:
        assert [uuid.UUID(str(r[0])) for r in _rows(conn, "SELECT id FROM model_configs")] == [shared_id]
        assert len(_rows(conn, "SELECT id FROM providers")) == 1  # the table copy cascaded nowhere
        assert len(_rows(conn, "SELECT id FROM users")) == 1

    migrate.upgrade(engine, from_schema_file=False)
    with Session(engine) as session:
        config = session.get(ModelConfig, shared_id)
        assert config is not None and config.owner_id is None  # a shared preset
        assert (config.provider_id, config.name, config.options) == (provider_id, "Team", {"seed": 1})
    engine.dispose()

"""The catalog generation changes with every committed change to a provider or a preset, in the same
transaction, and with nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from server.db import catalog_generation, migrate
from server.db.models import ModelConfig, Provider, User
from server.db.session import create_db_engine, create_session_factory, session_scope


@pytest.fixture
def factory(tmp_path: Path) -> sessionmaker[Session]:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'g.db'}")
    migrate.upgrade(engine)
    return create_session_factory(engine)


def generation(factory: sessionmaker[Session]) -> str | None:
    with session_scope(factory) as s:
        return catalog_generation.read(s)


def test_every_provider_and_preset_change_moves_it(factory: sessionmaker[Session]) -> None:
    seen = [generation(factory)]

    def changed() -> None:
        now = generation(factory)
        assert now is not None and now not in seen
        seen.append(now)

    with session_scope(factory) as s:
        provider = Provider(name="p", kind="ollama", base_url="http://127.0.0.1:11434")
        s.add(provider)
    changed()
    with session_scope(factory) as s:
        s.get(Provider, provider.id).enabled = False  # type: ignore[union-attr]
    changed()
    with session_scope(factory) as s:
        config = ModelConfig(provider_id=provider.id, name="c", model="m")
        s.add(config)
    changed()
    with session_scope(factory) as s:
        s.get(ModelConfig, config.id).system_prompt = "new"  # type: ignore[union-attr]
    changed()
    with session_scope(factory) as s:
        s.delete(s.get(ModelConfig, config.id))
    changed()
    with session_scope(factory) as s:
        s.delete(s.get(Provider, provider.id))
    changed()


def test_other_changes_and_rollbacks_leave_it(factory: sessionmaker[Session]) -> None:
    with session_scope(factory) as s:
        s.add(Provider(name="p", kind="ollama", base_url="http://127.0.0.1:11434"))
    before = generation(factory)
    with session_scope(factory) as s:
        s.add(User(email="u@example.com", password_hash="x"))
    assert generation(factory) == before
    with factory() as s:
        s.add(Provider(name="q", kind="ollama", base_url="http://127.0.0.1:11435"))
        s.flush()
        assert catalog_generation.read(s) != before  # written with the change...
        s.rollback()
    assert generation(factory) == before  # ...and rolled back with it

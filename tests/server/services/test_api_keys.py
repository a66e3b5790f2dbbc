"""API keys service: the keyed hash, the one-query lookup, IP/CIDR and model-glob allow-lists, and the
once-a-minute ``last_used_at`` write (time is moved by hand, never slept)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from server.db.models import ApiKey, User
from server.errors import Forbidden, Unauthorized
from server.security.api_key_hash import KeyHasher, generate_key
from server.services import api_keys
from server.services.api_keys import KeyPrincipal, authenticate_key, model_allowed


@pytest.fixture
def session(client: TestClient, app: FastAPI, admin_token: str) -> Iterator[Session]:
    with app.state.runtime.session_factory() as s:
        yield s


@pytest.fixture
def hasher(app: FastAPI) -> KeyHasher:
    return app.state.runtime.require_key_hasher()


@pytest.fixture
def admin(session: Session) -> User:
    return session.scalars(select(User).where(User.role == "admin")).one()


def test_generated_keys_are_long_random_and_hashed_with_the_server_secret() -> None:
    a, b = generate_key(), generate_key()
    assert a != b and a.startswith("mt-") and len(a) == 3 + 43
    assert set(a[3:]) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    one, other = KeyHasher("secret-one"), KeyHasher("secret-two")
    assert one.hash(a) == KeyHasher("secret-one").hash(a)  # stable across processes and instances
    assert one.hash(a) != other.hash(a) and one.hash(a) != one.hash(b)
    assert len(one.hash(a)) == 64


def test_authentication_is_one_query_by_the_hash(session: Session, hasher: KeyHasher, admin: User) -> None:
    created = api_keys.create_key(session, hasher, admin, name="k")
    session.commit()
    assert created.key.hash == hasher.hash(created.raw)
    api_keys.touch(session, created.key.id)  # last_used_at now fresh: no write is due
    session.commit()
    statements: list[str] = []

    def record(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    engine = session.get_bind()
    event.listen(engine, "before_cursor_execute", record)
    try:
        principal = authenticate_key(session, hasher, created.raw, "127.0.0.1")
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert dataclasses.replace(principal, catalog_generation=None) == KeyPrincipal(
        key_id=created.key.id, user_id=admin.id, role="admin", models=None
    )
    queries = [s for s in statements if not s.startswith("BEGIN")]
    assert len(queries) == 1 and "api_keys.hash = " in queries[0]
    # A key differing in one character, or one with the right prefix only, is simply not found.
    for raw in (created.raw[:-1] + ("A" if created.raw[-1] != "A" else "B"), created.key.prefix, "sk-x"):
        with pytest.raises(Unauthorized) as e:
            authenticate_key(session, hasher, raw, "127.0.0.1")
        assert e.value.code == "invalid_api_key"


@pytest.mark.parametrize(
    ("ips", "client_ip", "allowed"),
    [
        (["10.0.0.0/8"], "10.20.30.40", True),
        (["10.0.0.0/8"], "11.0.0.1", False),
        (["192.168.1.5"], "192.168.1.5", True),
        (["192.168.1.5"], "192.168.1.6", False),
        (["192.168.1.0/24"], "::ffff:192.168.1.9", True),  # IPv4-mapped IPv6 peer
        (["fd00::/8"], "fd12::1", True),
        (["10.0.0.0/8"], None, False),
        (["10.0.0.0/8"], "testclient", False),
        (None, "203.0.113.9", True),
    ],
)
def test_ip_allow_list(
    session: Session,
    hasher: KeyHasher,
    admin: User,
    ips: list[str] | None,
    client_ip: str | None,
    allowed: bool,
) -> None:
    created = api_keys.create_key(session, hasher, admin, name="k", ips=ips)
    if allowed:
        assert authenticate_key(session, hasher, created.raw, client_ip).key_id == created.key.id
    else:
        with pytest.raises(Forbidden) as e:
            authenticate_key(session, hasher, created.raw, client_ip)
        assert e.value.code == "ip_not_allowed"


def test_model_globs() -> None:
    def principal(models: tuple[str, ...] | None) -> KeyPrincipal:
        return KeyPrincipal(key_id=uuid.uuid4(), user_id=uuid.uuid4(), role="user", models=models)

    assert model_allowed(principal(None), "anything")
    p = principal(("llama3*", "openai/gpt-4o", "*-coder:*"))
    assert model_allowed(p, "llama3.2:latest")
    assert model_allowed(p, "openai/gpt-4o")
    assert model_allowed(p, "qwen2.5-coder:7b")
    assert not model_allowed(p, "openai/gpt-4o-mini")
    assert not model_allowed(p, "Llama3.2:latest")  # case-sensitive, as model ids are
    assert not model_allowed(principal(()), "llama3.2:latest")


def test_last_used_at_is_written_at_most_once_a_minute(
    session: Session, hasher: KeyHasher, admin: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)]
    monkeypatch.setattr(api_keys, "_now", lambda: clock[0])
    created = api_keys.create_key(session, hasher, admin, name="k")
    session.commit()

    def last_used() -> datetime | None:
        session.expire_all()
        return session.get(ApiKey, created.key.id).last_used_at  # type: ignore[union-attr]

    authenticate_key(session, hasher, created.raw, None)
    session.commit()
    assert last_used() == clock[0]
    first = clock[0]
    clock[0] = first + timedelta(seconds=59)
    _, due = api_keys.check_key(session, hasher, created.raw, None)
    assert not due
    authenticate_key(session, hasher, created.raw, None)
    session.commit()
    assert last_used() == first
    clock[0] = first + timedelta(seconds=61)
    authenticate_key(session, hasher, created.raw, None)
    session.commit()
    assert last_used() == clock[0]


def test_the_creation_switch_is_stored_and_typed(session: Session) -> None:
    assert api_keys.user_creation_enabled(session) is True
    api_keys.set_user_creation_enabled(session, False)
    assert api_keys.user_creation_enabled(session) is False
    api_keys.set_user_creation_enabled(session, True)
    assert api_keys.user_creation_enabled(session) is True

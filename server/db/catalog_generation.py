"""The catalog generation: a token in ``app_settings`` that changes in the same transaction as any change
to a provider or a preset (model configuration).

Readers that keep something derived from the catalog in memory (the ``/v1`` gateway keeps its model-id
resolutions) read the token with their own request's first query and drop what they kept when it
differs. The token is written by a ``before_flush`` hook on every session factory, so no code path that
changes a provider or a preset through the ORM can forget it, and because it rides in the changing
transaction, another instance on the same database sees the new catalog and the new token together.
"""

from __future__ import annotations

import itertools
import uuid
from typing import Any

from sqlalchemy import ScalarSelect, event, select
from sqlalchemy.orm import Session, sessionmaker

from server.db.models import AppSetting, ModelConfig, ModelRoute, Provider

KEY = "catalog_generation"

_CATALOG_TYPES = (Provider, ModelConfig, ModelRoute)


def column() -> ScalarSelect[Any]:
    """The token as a scalar subquery, to read it in another query's round trip."""
    return select(AppSetting.value).where(AppSetting.key == KEY).scalar_subquery()


def read(session: Session) -> str | None:
    """The current token (None before the catalog's first change)."""
    value = session.scalar(select(AppSetting.value).where(AppSetting.key == KEY))
    return None if value is None else str(value)


def _before_flush(session: Session, _context: object, _instances: object) -> None:
    changed = itertools.chain(session.new, session.dirty, session.deleted)
    if not any(isinstance(obj, _CATALOG_TYPES) for obj in changed):
        return
    token = uuid.uuid4().hex
    with session.no_autoflush:
        row = session.get(AppSetting, KEY)
    if row is None:
        session.add(AppSetting(key=KEY, value=token))
    else:
        row.value = token


def install(factory: sessionmaker[Session]) -> None:
    """Keep the token current for every session ``factory`` makes."""
    if not event.contains(factory, "before_flush", _before_flush):
        event.listen(factory, "before_flush", _before_flush)

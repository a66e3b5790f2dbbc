"""Authentication of ``/v1``: ``Authorization: Bearer mt-…`` (an API key), never a UI access token.

:data:`V1Principal` is the dependency the ``/v1`` routes take. The lookup is one indexed read, done on
the event loop when that is cheaper (SQLite), and committed at once so a long stream never holds a
transaction; the once-a-minute ``last_used_at`` write goes through a worker thread.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from server.deps import ClientIP, RuntimeDep, SessionDep
from server.security.api_key_hash import KeyHasher
from server.services import api_keys as api_keys_service
from server.services.api_keys import KeyPrincipal


def _raw_key(request: Request) -> str:
    values = request.headers.getlist("authorization")
    if len(values) != 1:
        raise api_keys_service.invalid_api_key()
    scheme, _, token = values[0].partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise api_keys_service.invalid_api_key()
    return token


def _check(session: Session, hasher: KeyHasher, raw: str, ip: str) -> tuple[KeyPrincipal, bool]:
    session.connection(execution_options={"sqlite_begin": "DEFERRED"})
    try:
        return api_keys_service.check_key(session, hasher, raw, ip)
    finally:
        session.commit()  # end the read before the route's work (a stream may run for minutes)


def _touch(session: Session, principal: KeyPrincipal) -> None:
    api_keys_service.touch(session, principal.key_id)
    session.commit()


async def v1_principal(
    request: Request, runtime: RuntimeDep, session: SessionDep, ip: ClientIP
) -> KeyPrincipal:
    raw = _raw_key(request)
    hasher = runtime.require_key_hasher()
    if runtime.can_read_inline():  # SQLite: cheaper on the loop than a round trip through a worker thread
        principal, due = _check(session, hasher, raw, ip)
    else:
        principal, due = await run_in_threadpool(_check, session, hasher, raw, ip)
    if due:
        await run_in_threadpool(_touch, session, principal)
    request.state.user_id = principal.user_id
    request.state.api_key_id = principal.key_id
    return principal


V1Principal = Annotated[KeyPrincipal, Depends(v1_principal)]

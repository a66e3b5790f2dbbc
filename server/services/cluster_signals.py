"""Wake-ups between server instances that share one database.

On PostgreSQL each instance keeps one dedicated connection that ``LISTEN``s on :data:`CHANNEL`; a
request recorded for another instance (stop a reply, cancel a pull) and every pull-progress mirror is
followed by a ``NOTIFY`` in the same transaction, so the others see it at once. The connection is
re-opened after a failure (with back-off); while it is down, and always on SQLite, waiters fall back to
their polling interval. Waiting never blocks longer than the caller's interval either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from server import aio

log = logging.getLogger(__name__)

#: The one notification channel of a deployment.
CHANNEL = "modeltrain_cluster"
#: Back-off bounds for re-opening the listening connection.
RECONNECT_MIN_SECONDS = 0.5
RECONNECT_MAX_SECONDS = 10.0
#: The listener looks up from the connection this often, so stopping never depends on the driver
#: delivering a task cancellation (a connect or a wait inside psycopg may not see it at once).
LISTEN_SLICE_SECONDS = 1.0
#: How long ``stop`` waits for the listener to end before leaving it behind.
STOP_TIMEOUT_SECONDS = 5.0


def notify(session: Session, kind: str) -> None:
    """Queue a wake-up for every instance, sent when ``session`` commits (PostgreSQL only)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_notify(:channel, :kind)"), {"channel": CHANNEL, "kind": kind})


def conninfo(engine: Engine) -> str | None:
    """The libpq URL of ``engine``'s database, or None where there is nothing to listen on."""
    if engine.dialect.name != "postgresql":
        return None
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


class Signals:
    """This instance's view of the channel: a generation counter bumped by every notification."""

    def __init__(self, dsn: str | None) -> None:
        self._dsn = dsn
        self.generation = 0
        self.listening = False
        self._changed: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def _event(self) -> asyncio.Event:
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    def wake(self) -> None:
        self.generation += 1
        event, self._changed = self._event(), asyncio.Event()
        event.set()

    async def wait(self, timeout: float, seen: int | None = None) -> int:
        """Until a notification newer than generation ``seen`` (default: now) or ``timeout``; returns the
        generation to pass next time."""
        if seen is not None and seen != self.generation:
            return self.generation
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that arrives as the
        # event is set (a NOTIFY during shutdown), and the watcher would never stop.
        with contextlib.suppress(*aio.TIMEOUT_ERRORS):
            async with aio.timeout(timeout):
                await self._event().wait()
        return self.generation

    async def _listen(self) -> None:
        import psycopg  # the PostgreSQL driver, only needed where there is PostgreSQL

        assert self._dsn is not None
        backoff = RECONNECT_MIN_SECONDS
        while not self._stopping:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._dsn, autocommit=True, connect_timeout=int(RECONNECT_MAX_SECONDS)
                )
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.listening = True
                    backoff = RECONNECT_MIN_SECONDS
                    self.wake()  # whatever was missed while the connection was down
                    while not self._stopping:
                        async for _ in conn.notifies(timeout=LISTEN_SLICE_SECONDS):
                            self.wake()
                    return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("cluster notification channel lost; polling until it is back", exc_info=True)
            finally:
                self.listening = False
            if self._stopping:
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RECONNECT_MAX_SECONDS)

    def start(self) -> None:
        self._stopping = False
        self._event()
        if self._dsn is not None:
            self._task = asyncio.get_running_loop().create_task(self._listen(), name="modeltrain-listen")

    async def stop(self) -> None:
        """End the listener: cancelled at once, and in any case done within a listening slice; never
        waited on for longer than :data:`STOP_TIMEOUT_SECONDS` (shutdown must not hang on the driver)."""
        task, self._task = self._task, None
        self._stopping = True
        if task is None:
            return
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=STOP_TIMEOUT_SECONDS)
        if not done:
            log.warning("the cluster notification listener did not stop in time; left behind")
        elif not task.cancelled() and task.exception() is not None:
            log.warning("the cluster notification listener ended with an error", exc_info=task.exception())

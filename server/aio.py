"""The asyncio features of Python 3.11 the server uses, also on Python 3.10 (``requires-python``).

* :func:`timeout` / :func:`timeout_at`: ``asyncio.timeout`` (3.11) or the ``async-timeout`` backport
  it was taken from (a dependency on 3.10 only); both have ``reschedule``.
* :data:`TIMEOUT_ERRORS`: what they raise. From 3.11 on ``asyncio.TimeoutError is TimeoutError``;
  on 3.10 they are different classes.
* :func:`reschedule`: move such a timeout's deadline (``reschedule`` in asyncio, ``update`` in the
  backport).
* :func:`uncancel`: ``Task.uncancel`` (3.11), which 3.10 does not need (no cancel counting).

And one helper of our own: :func:`cancel_and_wait`, how a service stops its background task.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

if sys.version_info >= (3, 11):
    from asyncio import timeout, timeout_at
else:  # pragma: no cover - exercised on Python 3.10 only
    from async_timeout import timeout, timeout_at

TIMEOUT_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, asyncio.TimeoutError)

__all__ = ["TIMEOUT_ERRORS", "cancel_and_wait", "reschedule", "timeout", "timeout_at", "uncancel"]


async def cancel_and_wait(task: asyncio.Task[None] | None) -> None:
    """Cancel a background task and wait until it has ended (its cancellation is not re-raised)."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def reschedule(cm: object, when: float) -> None:
    """Move the deadline of a :func:`timeout`/:func:`timeout_at` context to loop time ``when``."""
    move = getattr(cm, "reschedule", None) or cm.update  # type: ignore[attr-defined]
    move(when)


def uncancel(task: asyncio.Task | None) -> int:
    """Undo one pending cancellation request of ``task``; returns how many are left."""
    if task is None or not hasattr(task, "uncancel"):
        return 0
    return task.uncancel()

"""server/aio.py: the asyncio features of Python 3.11 the server relies on, on every supported Python."""

from __future__ import annotations

import asyncio

from server import aio


async def times_out(seconds: float) -> bool:
    """True if work longer than ``seconds`` is stopped by :func:`aio.timeout` with a timeout error."""
    try:
        async with aio.timeout(seconds):
            await asyncio.sleep(5)
    except aio.TIMEOUT_ERRORS:
        return True
    return False


def test_timeout_raises_a_timeout_error_and_can_be_moved() -> None:
    async def scenario() -> bool:
        loop = asyncio.get_running_loop()
        # a deadline moved further away lets the work finish (no timeout error leaves this block)
        async with aio.timeout_at(loop.time() + 0.01) as cm:
            aio.reschedule(cm, loop.time() + 5)
            await asyncio.sleep(0.05)
        return await times_out(0.01)

    assert asyncio.run(scenario()) is True


def test_uncancel_after_a_cancellation_was_handled() -> None:
    """A task that caught its cancellation (to save a partial reply) is no longer "being cancelled",
    so timeouts it enters afterwards work normally."""

    async def scenario() -> tuple[int, bool]:
        async def worker() -> tuple[int, bool]:
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                left = aio.uncancel(asyncio.current_task())
            task = asyncio.current_task()
            assert getattr(task, "cancelling", lambda: 0)() == 0  # 3.11+: no longer "being cancelled"
            return left, await times_out(0.01)

        task = asyncio.ensure_future(worker())
        await asyncio.sleep(0)
        task.cancel()
        return await task

    assert asyncio.run(scenario()) == (0, True)
    assert aio.uncancel(None) == 0


def test_cancel_and_wait_ends_the_task_and_runs_its_cleanup() -> None:
    cleaned: list[str] = []

    async def background() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            cleaned.append("done")

    async def main() -> bool:
        task = asyncio.get_running_loop().create_task(background())
        await asyncio.sleep(0)  # let it start
        await aio.cancel_and_wait(task)
        await aio.cancel_and_wait(None)  # nothing to stop: no error
        return task.cancelled()

    assert asyncio.run(main()) is True
    assert cleaned == ["done"]

"""Retention of the database's own history: once a day each process deletes what is older than its
setting — usage records and rollups (``usage_raw_days``, ``usage_rollup_days``) and audit entries
(``audit_days``). Each job deletes in small indexed batches, each its own short transaction, and is
idempotent, so several instances sweep without a lease. (Alert history is pruned with the alert
notifier's own daily checks, services/alert_history.py; backups by their schedule.)"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from anyio import to_thread

from server.runtime import Runtime
from server.services import audit, usage

log = logging.getLogger(__name__)

SWEEP_EVERY_SECONDS = 86_400.0


@dataclass(frozen=True)
class RetentionJob:
    """One kind of history to prune: its name in the log, and the (blocking) pruning function."""

    name: str
    prune: Callable[[Runtime], object]


JOBS: tuple[RetentionJob, ...] = (
    RetentionJob("usage", usage.prune),
    RetentionJob("audit log", audit.prune),
)


class RetentionSweeper:
    """Runs every job at start-up and then every ``every`` seconds; a failing job is logged and tried
    again at the next sweep, and never stops the others."""

    def __init__(
        self, runtime: Runtime, *, every: float = SWEEP_EVERY_SECONDS, jobs: tuple[RetentionJob, ...] = JOBS
    ) -> None:
        self.runtime = runtime
        self.every = every
        self.jobs = jobs
        self._task: asyncio.Task[None] | None = None
        #: Completed sweeps (what the tests wait on).
        self.sweeps = 0

    async def sweep(self) -> None:
        for job in self.jobs:
            try:
                await to_thread.run_sync(job.prune, self.runtime)
            except Exception:
                log.warning("%s pruning failed; trying again at the next sweep", job.name, exc_info=True)
        self.sweeps += 1

    async def _run(self) -> None:
        while True:
            await self.sweep()
            await asyncio.sleep(self.every)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def start(runtime: Runtime) -> RetentionSweeper:
    if runtime.retention is None:
        runtime.retention = RetentionSweeper(runtime)
    runtime.retention.start()
    return runtime.retention


async def stop(runtime: Runtime) -> None:
    if runtime.retention is not None:
        await runtime.retention.stop()

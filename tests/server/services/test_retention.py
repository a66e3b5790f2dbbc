"""The retention sweeper: every job runs at start, a failing one does not stop the others, and the app's
lifespan runs it."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

from server.runtime import Runtime
from server.services.retention import JOBS, RetentionJob, RetentionSweeper
from tests.server.chat_support import wait_for


def test_the_app_sweeps_usage_and_audit_history_at_start(client, app: FastAPI) -> None:
    runtime = app.state.runtime
    assert [job.name for job in JOBS] == ["usage", "audit log"]
    assert runtime.retention is not None
    assert wait_for(lambda: runtime.retention.sweeps >= 1, 10)


def test_a_failing_job_is_logged_and_the_others_still_run(app: FastAPI, caplog) -> None:
    ran: list[str] = []

    def broken(runtime: Runtime) -> None:
        ran.append("broken")
        raise RuntimeError("database away")

    def fine(runtime: Runtime) -> int:
        ran.append("fine")
        return 0

    sweeper = RetentionSweeper(
        app.state.runtime, jobs=(RetentionJob("broken", broken), RetentionJob("fine", fine))
    )
    asyncio.run(sweeper.sweep())
    asyncio.run(sweeper.sweep())
    assert ran == ["broken", "fine", "broken", "fine"]
    assert sweeper.sweeps == 2
    assert "broken pruning failed" in caplog.text

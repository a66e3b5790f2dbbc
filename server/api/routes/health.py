from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from server.deps import RuntimeDep
from server.services.health import readiness

router = APIRouter(prefix="/api/health", tags=["health"])


@router.get("", summary="Liveness (no auth, no details)")
async def health() -> dict:
    return {"status": "ok"}


@router.get("/ready", summary="Readiness: database reachable and migrations at head")
async def ready(runtime: RuntimeDep) -> JSONResponse:
    result = await run_in_threadpool(readiness, runtime.engine)
    return JSONResponse(result, status_code=200 if result["status"] == "ready" else 503)

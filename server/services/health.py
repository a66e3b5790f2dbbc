"""Readiness: the database answers and its schema is at head."""

from __future__ import annotations

from sqlalchemy import Engine, text

from server.db import migrate


def readiness(engine: Engine) -> dict:
    checks: dict[str, dict] = {}
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = {"ok": True, "detail": "reachable"}
    except Exception as exc:  # any driver error means "not ready", never a 500
        checks["database"] = {"ok": False, "detail": type(exc).__name__}
    if checks["database"]["ok"]:
        try:
            current, head = migrate.current_revision(engine), migrate.head_revision()
            checks["migrations"] = {
                "ok": current == head,
                "detail": "at head" if current == head else "behind head",
            }
        except Exception as exc:
            checks["migrations"] = {"ok": False, "detail": type(exc).__name__}
    else:
        checks["migrations"] = {"ok": False, "detail": "database unreachable"}
    ready = all(c["ok"] for c in checks.values())
    return {"status": "ready" if ready else "not_ready", "checks": checks}

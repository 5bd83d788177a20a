"""The dashboard's HTTP side: the page (static files shipped in this package, no CDN) and a
small JSON API it polls.

    GET  /api/overview?window=SECONDS   arms: state, origin, configuration, share, CTR with its
                                        interval, P(best), model freshness
    GET  /api/series?window=&bucket=    CTR and traffic share over time per arm, and the bandit
                                        (all traffic) against its champion alone
    GET  /api/tuner?limit=N             the tuner's cycles: each proposal, its screen, its rationale
    POST /api/arms/{arm_id}/state       {"action": "pause"|"resume"|"retire"|"promote", "reason": ...}
                                        with "Authorization: Bearer <admin token>" when one is set

Changes need the admin token the dashboard was started with (when it has one) and a JSON body,
which a cross-site form cannot send; the page asks for confirmation before it sends one.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Header, HTTPException, Query
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from operators.client import OperatorClient, OperatorError, Series
from operators.settings import OperatorSettings
from rectune.domain.arms import ArmState
from tuner.audit import AuditLog

STATIC = Path(__file__).parent / "static"
ACTIONS = {
    "pause": ArmState.PAUSED,
    "resume": ArmState.ACTIVE,
    "retire": ArmState.RETIRED,
    "promote": ArmState.CHAMPION,
}
# gRPC status -> HTTP status for the page's error line.
HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 409,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "UNAUTHENTICATED": 401,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}
MAX_BUCKETS = 500  # a series longer than this is coarsened (the page draws a few hundred points)


class StateChange(BaseModel):
    action: str = Field(description="pause, resume, retire or promote")
    reason: str = Field(default="", max_length=500)


def create_app(settings: OperatorSettings) -> FastAPI:
    client = OperatorClient(settings)
    audit: AuditLog | None = None

    def audit_log() -> AuditLog:
        nonlocal audit
        if audit is None:
            audit = AuditLog.open(settings.database_url)
        return audit

    app = FastAPI(title="rectune dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    app.router.add_event_handler("shutdown", client.close)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(OperatorError)
    def service_error(_request: Any, exc: OperatorError) -> JSONResponse:
        return JSONResponse({"error": str(exc), "code": exc.code}, status_code=HTTP_STATUS.get(exc.code, 502))

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/overview")
    def overview(window: float | None = Query(default=None, gt=0)) -> dict[str, Any]:
        arms = client.arms(window)
        return {
            "generated_at": time.time(),
            "window_seconds": window,
            "admin_token_required": bool(settings.admin_token),
            "arms": [asdict(arm) for arm in arms],
        }

    @app.get("/api/series")
    def series(
        window: float = Query(default=3600.0, gt=0, le=366 * 86400),
        bucket: float = Query(default=60.0, ge=1),
    ) -> dict[str, Any]:
        bucket = max(bucket, window / MAX_BUCKETS)
        champion = client.champion()  # only its id: no statistics or freshness needed here
        all_series = client.series(window, bucket)
        return {
            "bucket_seconds": bucket,
            "champion": champion,
            "series": [asdict(s) for s in all_series],
            "bandit_vs_champion": bandit_against_champion(all_series, champion),
        }

    @app.get("/api/tuner")
    def tuner(limit: int = Query(default=100, ge=1, le=1000)) -> dict[str, Any]:
        return {"cycles": cycles(audit_log(), limit)}

    @app.post("/api/arms/{arm_id}/state")
    def change_state(arm_id: str, change: StateChange, authorization: str = Header(default="")) -> dict[str, Any]:
        check_admin(settings.admin_token, authorization)
        if change.action not in ACTIONS:
            raise HTTPException(400, f"action: must be one of {', '.join(ACTIONS)}, got {change.action[:20]!r}")
        reason = change.reason or f"{change.action} from the dashboard"
        return {"arm": asdict(client.set_state(arm_id, ACTIONS[change.action], reason))}

    return app


def check_admin(admin_token: str, authorization: str) -> None:
    """Without an admin token configured the services take changes from anyone, and so does
    the page (docs/operations.md says so); with one, the page must send it."""
    if not admin_token:
        return
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), admin_token.encode()):
        raise HTTPException(403, "changing an arm needs the admin token (enter it at the top of the page)")


def bandit_against_champion(all_series: list[Series], champion: str) -> dict[str, Any]:
    """Per bucket, the CTR of all traffic (what the bandit earned) and of the champion's share
    of it (what serving the champion alone would have earned, estimated on that share); and
    over the window, the clicks gained or lost against the champion alone."""
    starts = sorted({b.start for s in all_series for b in s.buckets})
    totals = {start: [0, 0] for start in starts}
    champion_counts = {start: [0, 0] for start in starts}
    for s in all_series:
        for b in s.buckets:
            totals[b.start][0] += b.impressions
            totals[b.start][1] += b.clicks
            if s.arm_id == champion:
                champion_counts[b.start] = [b.impressions, b.clicks]
    impressions = sum(n for n, _ in totals.values())
    clicks = sum(c for _, c in totals.values())
    champion_impressions = sum(n for n, _ in champion_counts.values())
    champion_ctr = sum(c for _, c in champion_counts.values()) / champion_impressions if champion_impressions else 0.0
    return {
        "starts": starts,
        "bandit_ctr": [_rate(*totals[s]) for s in starts],
        "champion_ctr": [_rate(*champion_counts[s]) for s in starts],
        "impressions": impressions,
        "clicks": clicks,
        "bandit_ctr_overall": clicks / impressions if impressions else 0.0,
        "champion_ctr_overall": champion_ctr,
        "clicks_against_champion_alone": clicks - champion_ctr * impressions if champion_impressions else None,
    }


def _rate(impressions: int, clicks: int) -> float | None:
    return clicks / impressions if impressions else None


def cycles(audit: AuditLog, limit: int) -> list[dict[str, Any]]:
    """The newest audit entries grouped by cycle, newest cycle first."""
    grouped: dict[str, dict[str, Any]] = {}
    for entry in audit.recent(limit):
        cycle = grouped.setdefault(
            entry.cycle_id,
            {"cycle_id": entry.cycle_id, "recorded_at": entry.recorded_at, "dry_run": entry.dry_run, "entries": []},
        )
        cycle["entries"].append(asdict(entry))
    return list(grouped.values())


def serve(settings: OperatorSettings, host: str, port: int) -> None:
    """Serve until Ctrl-C or SIGTERM."""
    print(f"rectune dashboard on http://{host}:{port}/", flush=True)
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")

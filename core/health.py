"""The health check that load balancers and monitoring poll: public and cheap, it says whether
the app can reach its database and nothing else about the deployment."""

from __future__ import annotations

from flask import Blueprint, g, jsonify
from flask.typing import ResponseReturnValue

from core.db import HEALTH_WAIT_SECONDS, database_status, get_session

bp = Blueprint("health", __name__)

# How long a client should wait before asking again while the database is unreachable: long
# enough for a restart or a fail-over, short enough that nobody gives up.
DATABASE_RETRY_AFTER = "30"


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    g.database_wait = HEALTH_WAIT_SECONDS  # a monitor's own timeout is short too
    database = database_status(session=get_session())
    if database != "ok":
        return (
            jsonify(status="unavailable", database=database),
            503,
            {"Retry-After": DATABASE_RETRY_AFTER, "Cache-Control": "no-store"},
        )
    return jsonify(status="ok", database="ok"), 200, {"Cache-Control": "no-store"}

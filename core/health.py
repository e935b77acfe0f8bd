"""The health check that load balancers and monitoring poll: public and cheap, it says whether
the app can reach its database and whether background work is moving, and nothing else about
the deployment."""

from __future__ import annotations

from flask import Blueprint, g, jsonify
from flask.typing import ResponseReturnValue

from core.db import HEALTH_WAIT_SECONDS, database_status, get_session
from core.settings import get_settings
from core.tasks import get_queue, queue_status

bp = Blueprint("health", __name__)

# How long a client should wait before asking again while the database is unreachable: long
# enough for a restart or a fail-over, short enough that nobody gives up.
DATABASE_RETRY_AFTER = "30"


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    g.database_wait = HEALTH_WAIT_SECONDS  # a monitor's own timeout is short too
    session = get_session()
    database = database_status(session=session)
    if database != "ok":
        return (
            jsonify(status="unavailable", database=database),
            503,
            {"Retry-After": DATABASE_RETRY_AFTER, "Cache-Control": "no-store"},
        )
    queue = queue_status(session=session, in_process=get_queue().in_process)
    silence = get_settings().task_consumer_silence_seconds
    last = queue.consumer_checked_in_seconds_ago
    consumers = (
        "in-process"
        if queue.in_process
        else ("ok" if last is not None and last <= silence else "silent")
    )
    report = {
        "waiting": queue.waiting,
        "oldest_waiting_seconds": queue.oldest_waiting_seconds,
        "consumer_checked_in_seconds_ago": last,
        "consumers": consumers,
    }
    if consumers == "silent":  # mail and label runs wait for nobody: someone must start one
        return (
            jsonify(status="unavailable", database="ok", tasks=report),
            503,
            {"Cache-Control": "no-store"},
        )
    return jsonify(status="ok", database="ok", tasks=report), 200, {"Cache-Control": "no-store"}

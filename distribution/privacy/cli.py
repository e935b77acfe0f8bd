"""The personal-data purge (cron-safe)."""

from __future__ import annotations

from flask.cli import with_appcontext

from accounts import sessions
from core import formats
from core.actors import Actor
from core.cli import json_option, print_report
from core.db import get_database
from core.settings import get_settings
from distribution.claims.cli import claims_cli
from distribution.privacy import services as personal_data


@claims_cli.command("purge-personal-data")
@json_option
@with_appcontext
def purge_personal_data_command(as_json: bool) -> None:
    """Erase the names, phones and addresses of parcels whose claims were activated or ended
    more than KEYS_PERSONAL_DATA_DAYS ago, complete erasure requests and forget ended sign-in
    sessions (safe from cron)."""
    settings = get_settings()
    with get_database().transaction() as session:
        summary = personal_data.purge_personal_data(
            session=session, settings=settings, actor=Actor.system("retention")
        )
        ended = sessions.purge_expired(session=session)
    print_report(
        summary.as_dict() | {"sessions_forgotten": ended},
        as_json,
        f"Erased the personal data of {summary.shipments} parcel(s) of {summary.claims} "
        f"claim(s) settled before {formats.stamp(summary.cutoff)}, and "
        f"{summary.label_runs} label PDF(s); {summary.requests_completed} erasure request(s) "
        f"completed; forgot {ended} ended session(s).",
    )

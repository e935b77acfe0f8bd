"""A redemption that stops at a chosen point and waits there to be killed.

``tests/test_faults.py`` runs it as a process of its own, with the app's ``KEYS_*`` environment:
``python -m tests.redeem_and_wait USERNAME CODE IDEMPOTENCY_KEY POINT``. It redeems the code the
way the redeem view does (one transaction, the configured mailer) and stops

- ``before-commit``: after the service returned and its writes were flushed, before the commit;
- ``in-commit``: in the commit itself (the test makes the database hold the commit back);
- ``after-commit``: after the commit returned, before anyone could be told.

It prints one line when it gets there and waits. Should the test go away instead of killing
it (its stdin closes), it leaves at once without committing anything. Not a test module.
"""

from __future__ import annotations

import os
import sys

import sqlalchemy as sa
from sqlmodel import select

from accounts.models import Maintainer
from accounts.services import actor_for
from adapters.addresses import validate_address
from app import create_app
from core.db import get_database
from core.mail import get_mailer
from core.settings import get_settings
from distribution.claims import services as claims
from tests.factories import BERLIN, USB_A, USB_C

POINTS = ("before-commit", "in-commit", "after-commit")


def wait_to_be_killed(line: str) -> None:
    print(line, flush=True)
    sys.stdin.read()  # returns only when the test's end of the pipe closes
    os._exit(3)  # no commit, no rollback, no clean-up: as if killed


def main(username: str, code: str, idempotency_key: str, point: str) -> None:
    if point not in POINTS:
        raise SystemExit(f"POINT must be one of {', '.join(POINTS)}")
    app = create_app()
    with app.app_context():
        settings = get_settings()
        with get_database().transaction() as session:
            maintainer = session.exec(
                select(Maintainer).where(Maintainer.username == username)
            ).one()
            shipment = claims.redeem_claim(
                session=session,
                mailer=get_mailer(),
                settings=settings,
                actor=actor_for(maintainer),
                maintainer=maintainer,
                code=code,
                items={USB_A: 1, USB_C: 1},
                recipient=claims.Recipient(
                    validate_address(BERLIN, served=settings.countries), "+49301234567", "Ada"
                ),
                idempotency_key=idempotency_key,
            )
            session.flush()
            if point == "before-commit":
                wait_to_be_killed(f"redeemed {shipment.reference}, not committed")
            elif point == "after-commit":
                sa.event.listen(
                    session,
                    "after_commit",
                    lambda _session: wait_to_be_killed(f"committed {shipment.reference}"),
                )
            else:
                print(f"committing {shipment.reference}", flush=True)
        # Only reached if the commit was not held back: the test expected it to be.
        raise SystemExit("the commit went through without stopping")


if __name__ == "__main__":
    if len(sys.argv) != 5:
        raise SystemExit(__doc__)
    main(*sys.argv[1:])

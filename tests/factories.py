"""Small factories and helpers that build data through the services, as the app would."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable

from flask.testing import FlaskClient
from sqlmodel import Session

from accounts import services
from accounts.models import Maintainer, Staff, StaffRole
from db import Actor

STAFF_PASSWORD = "correct horse battery staple"
_numbers = itertools.count(1)
_CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def make_maintainer(
    session: Session,
    *,
    username: str | None = None,
    email: str | None = None,
    country: str | None = "DE",
    display_name: str = "",
) -> Maintainer:
    number = next(_numbers)
    maintainer = services.create_maintainer(
        session=session,
        actor=Actor.system("test"),
        username=username or f"maintainer-{number}",
        email=email or f"maintainer-{number}@example.org",
        display_name=display_name or f"Maintainer {number}",
        country=country,
    )
    session.flush()
    return maintainer


def make_staff(
    session: Session,
    *,
    roles: Iterable[StaffRole] = (StaffRole.ADMIN,),
    email: str | None = None,
    password: str = STAFF_PASSWORD,
    name: str | None = None,
) -> Staff:
    number = next(_numbers)
    staff = services.create_staff(
        session=session,
        actor=Actor.system("test"),
        email=email or f"staff-{number}@example.org",
        name=name or f"Staff {number}",
        roles=roles,
        password=password,
    )
    session.flush()
    return staff


def sign_in_as(client: FlaskClient, user: Maintainer | Staff) -> None:
    """Start a signed-in session for ``user`` without going through a sign-in form."""
    with client.session_transaction() as flask_session:
        flask_session["_user_id"] = user.get_id()
        flask_session["_fresh"] = True


def csrf_token(client: FlaskClient, path: str) -> str:
    """The CSRF token of the form on the page at ``path``."""
    page = client.get(path).get_data(as_text=True)
    match = _CSRF.search(page)
    assert match, f"no CSRF token on {path}"
    return match.group(1)

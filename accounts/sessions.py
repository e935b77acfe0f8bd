"""Sign-in sessions kept on the server, so that signing out ends them.

The cookie holds only a random id (HttpOnly, SameSite=Lax, Secure over https); the session's
data, its owner and when it ends live in the ``web_session`` table under the id's SHA-256, so a
copy of the database hands out no live cookie. A small table rather than Flask-Session: the
owner of each session must be queryable (to list a person's sessions and end them all when
their password changes), on SQLite and PostgreSQL alike, and it is one indexed read per
request.

The id changes at every sign-in, at the staff password step and at sign-out (the old row is
deleted, so a cookie copied before sign-out opens nothing after it), and the CSRF secret, which
lives in the session, changes with it. A session ends after a time unused or at an absolute
limit (settings, per kind of person). An unknown, forged, expired or ended id is simply a
signed-out visitor.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import Flask, Request, Response, request
from flask import session as current_session
from flask.json.tag import TaggedJSONSerializer
from flask.sessions import SessionInterface, SessionMixin
from flask_login import user_logged_in, user_logged_out
from sqlmodel import Session, col, select
from werkzeug.datastructures import CallbackDict

from accounts.models import WebSession
from core.actors import Actor, ActorKind
from core.audit import record_event
from core.db import get_database, utcnow
from core.settings import Settings

# A visitor who is not signed in keeps a session only for a form's CSRF secret or the staff
# password step: a day is plenty.
VISITOR_LIFETIME = timedelta(days=1)
# How often an unchanged session records that it was used (its idle time starts again).
TOUCH_EVERY = timedelta(minutes=1)
_ID_BYTES = 32
_serializer = TaggedJSONSerializer()


class ServerSession(CallbackDict[str, Any], SessionMixin):
    """The data of one session; ``rotate`` asks for a new id when it is saved."""

    def __init__(
        self,
        initial: dict[str, Any] | None = None,
        *,
        sid: str | None = None,
        last_seen_at: datetime | None = None,
        unreadable: sa.exc.SQLAlchemyError | None = None,
    ) -> None:
        def changed(_data: CallbackDict[str, Any]) -> None:
            self.modified = True

        super().__init__(initial, changed)
        self.sid = sid
        self.last_seen_at = last_seen_at
        # Why the database could not be asked, if it could not: the request answers 503.
        self.unreadable = unreadable
        self.modified = False
        self.rotate = False


def rotate() -> None:
    """A new id for this request's session when the response is saved, the old one ended, and
    a new CSRF secret: at every change of who is signed in."""
    session = current_session._get_current_object()  # type: ignore[attr-defined]
    if isinstance(session, ServerSession):
        session.rotate = True
        session.pop("csrf_token", None)


def lifetimes(settings: Settings, owner_kind: str) -> tuple[timedelta, timedelta]:
    """(idle, absolute) for a session of this kind of owner."""
    if owner_kind == ActorKind.STAFF:
        return (
            timedelta(minutes=settings.staff_session_idle_minutes),
            timedelta(hours=settings.staff_session_hours),
        )
    if owner_kind == ActorKind.MAINTAINER:
        return (
            timedelta(days=settings.maintainer_session_idle_days),
            timedelta(days=settings.maintainer_session_days),
        )
    return VISITOR_LIFETIME, VISITOR_LIFETIME


def owner_of(user_id: object) -> tuple[str, int | None]:
    """The owner named by flask-login's ``_user_id`` (``maintainer:7``, ``staff:3:<nonce>``)."""
    kind, _, rest = str(user_id or "").partition(":")
    number = rest.partition(":")[0]
    if kind in (ActorKind.MAINTAINER, ActorKind.STAFF) and number.isdigit():
        return kind, int(number)
    return "", None


def _reads_no_session(app: Flask, request: Request) -> bool:
    """Static files and the health check: no database read for each of them (they are most of
    the requests), and they answer while the database is away."""
    return request.path == "/healthz" or request.path.startswith(f"{app.static_url_path}/")


def session_key(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


class ServerSessionInterface(SessionInterface):
    """Flask's session, kept in ``web_session``; see the module's docstring."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def open_session(self, app: Flask, request: Request) -> ServerSession:
        sid = request.cookies.get(self.get_cookie_name(app), "")
        if not sid or len(sid) > 100 or _reads_no_session(app, request):
            return ServerSession()
        try:
            with get_database(app).session() as db:
                row = db.get(WebSession, session_key(sid))
                found = None if row is None else (row.data, row.last_seen_at, row.expires_at)
                db.rollback()  # a read: end the transaction (SQLite's write lock) at once
        except sa.exc.SQLAlchemyError as error:
            # Raised again once the request has begun, where the error pages answer it (503
            # for an outage); the session is left as it is.
            return ServerSession(unreadable=error)
        if found is None or found[2] <= utcnow():
            return ServerSession()  # unknown, ended or expired: signed out
        data, last_seen_at, _expires_at = found
        return ServerSession(_serializer.loads(data), sid=sid, last_seen_at=last_seen_at)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        assert isinstance(session, ServerSession)
        if session.unreadable is not None:
            return
        name = self.get_cookie_name(app)
        now = utcnow()
        if not session:
            if session.sid:  # emptied: nothing to keep
                self._end(app, session.sid)
                response.delete_cookie(name, path=self.get_cookie_path(app))
            return
        fresh = session.rotate or session.sid is None
        seen = session.last_seen_at
        if not (fresh or session.modified or seen is None or now - seen >= TOUCH_EVERY):
            return
        sid = secrets.token_urlsafe(_ID_BYTES) if fresh else session.sid
        assert sid is not None
        owner_kind, owner_id = owner_of(session.get("_user_id"))
        idle, absolute = lifetimes(self.settings, owner_kind)
        with get_database(app).transaction() as db:
            if fresh:
                if session.sid:
                    _delete(db, session.sid)
                row = WebSession(
                    id=session_key(sid), created_at=now, last_seen_at=now, expires_at=now,
                    ends_at=now + absolute,
                )  # fmt: skip
                db.add(row)
            else:
                found = db.get(WebSession, session_key(sid))
                if found is None:  # ended by another request meanwhile: it stays ended
                    response.delete_cookie(name, path=self.get_cookie_path(app))
                    return
                row = found
            row.owner_kind, row.owner_id = owner_kind, owner_id
            row.data = _serializer.dumps(dict(session))
            row.user_agent = describe_browser(request.user_agent.string)
            row.last_seen_at = now
            row.expires_at = min(row.ends_at, now + idle)
        if fresh:
            response.set_cookie(
                name,
                sid,
                expires=row.ends_at,
                path=self.get_cookie_path(app),
                httponly=True,
                secure=self.settings.https,
                samesite="Lax",
            )
        response.vary.add("Cookie")

    def _end(self, app: Flask, sid: str) -> None:
        with get_database(app).transaction() as db:
            _delete(db, sid)


def _delete(db: Session, sid: str) -> None:
    db.execute(sa.delete(WebSession).where(col(WebSession.id) == session_key(sid)))


def describe_browser(user_agent: str) -> str:
    """A coarse description of a browser, enough for a person to recognise it ("Firefox on
    Linux"), not enough to fingerprint it."""
    agent = user_agent.lower()
    browser = next(
        (
            name
            for token, name in (
                ("edg/", "Edge"),
                ("opr/", "Opera"),
                ("firefox/", "Firefox"),
                ("chrome/", "Chrome"),
                ("chromium/", "Chromium"),
                ("safari/", "Safari"),
            )
            if token in agent
        ),
        "A browser",
    )
    system = next(
        (
            name
            for token, name in (
                ("android", "Android"),
                ("iphone", "iPhone"),
                ("ipad", "iPad"),
                ("windows", "Windows"),
                ("mac os", "macOS"),
                ("cros", "ChromeOS"),
                ("linux", "Linux"),
            )
            if token in agent
        ),
        "",
    )
    return f"{browser} on {system}" if system else browser


def init_app(app: Flask, settings: Settings) -> None:
    """Keep the app's sessions on the server; a new id at every sign-in and sign-out."""
    app.session_interface = ServerSessionInterface(settings)

    def _refuse_unread_session() -> None:
        unreadable = getattr(current_session, "unreadable", None)
        if unreadable is not None:
            raise unreadable

    # First of all: CSRF protection, finding no secret in a session it could not read, would
    # call every form expired, where the truth is that the database is away (503).
    app.before_request_funcs.setdefault(None, []).insert(0, _refuse_unread_session)


def _changed_hands(_app: Flask, **_extra: Any) -> None:
    """Whoever signs in or out, in whichever app: their session gets a new id."""
    rotate()


user_logged_in.connect(_changed_hands)
user_logged_out.connect(_changed_hands)


def sessions_of(*, session: Session, owner_kind: str, owner_id: int) -> list[WebSession]:
    """A person's live sessions, the most recently used first."""
    now = utcnow()
    return list(
        session.exec(
            select(WebSession)
            .where(
                WebSession.owner_kind == owner_kind,
                WebSession.owner_id == owner_id,
                col(WebSession.expires_at) > now,
            )
            .order_by(col(WebSession.last_seen_at).desc())
        ).all()
    )


def end_sessions(
    *,
    session: Session,
    actor: Actor,
    owner_kind: str,
    owner_id: int,
    only: str | None = None,
    keep: str | None = None,
) -> int:
    """End a person's sessions: the one whose row id is ``only``, or all but the one whose
    cookie id is ``keep``, or all; audited. How many ended (0: ended already)."""
    query = sa.delete(WebSession).where(
        col(WebSession.owner_kind) == owner_kind, col(WebSession.owner_id) == owner_id
    )
    if only is not None:
        query = query.where(col(WebSession.id) == only)
    if keep is not None:
        query = query.where(col(WebSession.id) != session_key(keep))
    ended = int(session.execute(query).rowcount)  # type: ignore[attr-defined]
    if ended:
        record_event(
            session=session,
            actor=actor,
            action="session.ended",
            subject_kind=owner_kind,
            subject_id=owner_id,
            details={"sessions": ended, "which": "one" if only else "others" if keep else "all"},
        )
    return ended


def current_id() -> str | None:
    """The cookie id of this request's session, if it has one."""
    session = current_session._get_current_object()  # type: ignore[attr-defined]
    return session.sid if isinstance(session, ServerSession) else None


def purge_expired(*, session: Session) -> int:
    """Forget sessions that have ended (the daily purge runs it)."""
    gone = session.execute(sa.delete(WebSession).where(col(WebSession.expires_at) <= utcnow()))
    return int(gone.rowcount)  # type: ignore[attr-defined]

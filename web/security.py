"""What every request passes through: sign-in sessions, CSRF, rate limits, security headers and
input that no database can hold.

The extension objects live here, once; ``init_app`` binds them to an app. Who may do what
(roles, the guards views wear) is ``accounts.access``, which also tells the login manager how
to load a user."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from flask import Flask, Response, abort, g, jsonify, request
from flask.typing import ResponseReturnValue
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager, current_user
from flask_wtf.csrf import CSRFProtect
from limits import parse as parse_limit
from werkzeug.routing import IntegerConverter, Map

from core.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])

login_manager = LoginManager()
csrf = CSRFProtect()
limiter = Limiter(key_func=get_remote_address, headers_enabled=True)

# Rate limits on everything that guesses at a secret or sends mail. What is counted per
# person must never stop that person because a stranger sent requests in their name: the
# views that count per person say how (accounts.views, distribution.activation.views).
SIGN_IN_LINK_PER_ADDRESS = "5 per 15 minutes"  # links mailed to one address; never a 429
SIGN_IN_LINK_PER_IP = "30 per hour"
KEY_SIGN_IN_PER_CLIENT = "5 per 15 minutes"  # key sign-in options, per address and client
STAFF_SIGN_IN_PER_IP = "30 per hour"
STAFF_FAILURES_PER_CLIENT = "10 per 15 minutes"  # wrong passwords per account and client
STAFF_FAILURES_PER_ACCOUNT = "100 per hour"  # from every client: stops only those that failed


def count(limit: str, *key: str) -> bool:
    """Count one event under ``key``; False once ``limit`` is used up (the event is then not
    counted). For limits a view applies itself, without answering 429 to everyone."""
    return limiter.limiter.hit(parse_limit(limit), "keys", *key)


def used_up(limit: str, *key: str) -> bool:
    """Whether ``limit`` is used up under ``key``, without counting anything."""
    return not limiter.limiter.test(parse_limit(limit), "keys", *key)


def retry_after(limit: str, *key: str) -> int:
    """Seconds until ``limit`` under ``key`` allows one more."""
    stats = limiter.limiter.get_window_stats(parse_limit(limit), "keys", *key)
    return max(1, int(stats.reset_time - time.time()) + 1)


def counted_any(limit: str, *key: str) -> bool:
    """Whether anything was counted under ``key`` in ``limit``'s current window."""
    item = parse_limit(limit)
    return limiter.limiter.get_window_stats(item, "keys", *key).remaining < item.amount


CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)


# --- input no database can hold ------------------------------------------------------------

# The largest row id (PostgreSQL's ``integer``). A larger id in a URL names no row; left to the
# database, it would overflow the query's parameter (PostgreSQL, and SQLite past 2**63).
MAX_ROW_ID = 2**31 - 1


class RowIdConverter(IntegerConverter):
    """``<int:…>`` in every route: an id past ``MAX_ROW_ID`` is not found (404)."""

    def __init__(
        self,
        map: Map,
        fixed_digits: int = 0,
        min: int | None = None,
        max: int | None = MAX_ROW_ID,
        signed: bool = False,
    ) -> None:
        super().__init__(map, fixed_digits, min, max, signed)


# NUL, which PostgreSQL refuses in text, and lone surrogates (from JSON's "\ud800" escapes),
# which no database driver can encode. No form or key ever sends either.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
UNSTORABLE_TEXT = (
    "The request holds a character that no form or key sends (a NUL byte or half of a "
    "surrogate pair), so nothing was done. Remove it and try again."
)
TOO_DEEP = "The JSON is nested too deeply to read. Send the object the page's script sends."


def holds_unstorable_text(values: Iterable[object]) -> bool:
    """Whether a string in ``values`` (or in their lists and objects) holds a NUL or a lone
    surrogate. Walked without recursion: JSON nests as deeply as its parser allows."""
    pending = list(values)
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            if _UNSTORABLE.search(value):
                return True
        elif isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return False


def _refuse_unstorable_input() -> None:
    """Refuse, before any view or rate-limit key reads it, text that cannot be stored or
    looked up: a 400 with a reason instead of a database error (a 500) half-way through."""
    values: list[object] = [*(request.view_args or {}).values()]
    for multi in (request.args, request.form):
        for name, items in multi.lists():
            values += [name, *items]
    values += [
        upload.filename or "" for _name, uploads in request.files.lists() for upload in uploads
    ]
    if request.is_json:
        try:
            values.append(request.get_json(silent=True))
        except RecursionError:
            abort(400, TOO_DEEP)
    if holds_unstorable_text(values):
        abort(400, UNSTORABLE_TEXT)


def init_app(app: Flask, settings: Settings) -> None:
    app.config.update(
        SECRET_KEY=settings.secret_key,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.https,
        SESSION_COOKIE_NAME="keys_session",
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_SECURE=settings.https,
        RATELIMIT_STORAGE_URI=settings.ratelimit_storage_url,
        # Redis away for a moment: count in each process's memory meanwhile, not answer 500.
        RATELIMIT_IN_MEMORY_FALLBACK_ENABLED=True,
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session
    )

    @app.before_request
    def _allow_large_uploads() -> None:
        # Registered before CSRF protection, which reads the form first.
        view = app.view_functions.get(request.endpoint or "")
        if getattr(view, "accepts_large_upload", False):
            request.max_content_length = settings.max_upload_bytes

    # Before CSRF protection and rate limits, which read the form and the JSON too.
    app.before_request(_refuse_unstorable_input)
    # Before the blueprints add their routes: their converters are made as each rule is added.
    app.url_map.converters["int"] = RowIdConverter

    if settings.ratelimit_storage_url.startswith(("redis://", "rediss://")):
        # A hung Redis answers nothing: give up within half a second, and count in memory.
        app.config["RATELIMIT_STORAGE_OPTIONS"] = {
            "socket_timeout": 0.5,
            "socket_connect_timeout": 0.5,
        }

    @app.after_request
    def _honest_retry_after(response: Response) -> Response:
        # Runs after the limiter's own hook (registered later, run earlier), which puts its
        # window's reset (up to 900 s) in Retry-After on every answer of a limited route, a
        # 200 or a 503 as well: only a 429 is about the limit.
        own = g.pop("retry_after", None)
        if own is not None and response.status_code != 429:
            response.headers["Retry-After"] = own  # the error page's (503: 30 s)
        elif response.status_code < 400:
            response.headers.pop("Retry-After", None)  # a success asks nobody to retry
        return response

    login_manager.init_app(app)
    login_manager.session_protection = "basic"
    csrf.init_app(app)
    limiter.init_app(app)

    @app.after_request
    def _security_headers(response: Response) -> Response:
        headers = response.headers
        headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Referrer-Policy", "same-origin")
        headers.setdefault("X-Frame-Options", "DENY")
        if settings.https:
            headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
        if current_user and current_user.is_authenticated:
            headers.setdefault("Cache-Control", "no-store")
        return response


def forget_user_for_this_response() -> None:
    """Draw the rest of this response as for an anonymous visitor, without asking the database
    who is signed in (it may be unreachable). The session cookie is left as it is."""
    g._login_user = login_manager.anonymous_user()
    g.staff_roles = frozenset()


def accepts_large_upload(view: F) -> F:
    """Lets a view receive files up to KEYS_MAX_UPLOAD_BYTES instead of KEYS_MAX_REQUEST_BYTES."""
    view.accepts_large_upload = True  # type: ignore[attr-defined]
    return view


# --- the JSON endpoints the security-key script calls ----------------------------------------


def json_object() -> dict[str, Any] | None:
    """The request's JSON object, or None when it sent anything else."""
    body = request.get_json(silent=True)
    return body if isinstance(body, dict) else None


def credential_in(body: Mapping[str, Any]) -> dict[str, Any] | str:
    """The browser's ``PublicKeyCredential.toJSON()``; "" (refused as malformed) otherwise."""
    credential = body.get("credential")
    return credential if isinstance(credential, dict) else ""


def json_refusal(status: int, title: str, message: str) -> ResponseReturnValue:
    """A refusal answered by the endpoint itself: unlike the error handler, it keeps what the
    request did (a spent challenge stays spent, an audit event stays written)."""
    return jsonify(error=title, message=message, status=status), status

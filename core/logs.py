"""Structured logs: one JSON line per request and one per state change, none of them personal.

A request line names the route (the URL rule, ``/sign-in/link/<token>``) and never the raw
path, because paths and query strings carry sign-in tokens and claim codes; the actor is a kind
and an id, never an email. State-change lines come from the audit log (``db.record_event``),
once the change is committed, with the action and subject but not the details, which may hold
addresses. Each request has an id, taken from a well-formed ``X-Request-ID`` (a proxy's) or
made up, echoed in the response and written on both kinds of line, so one can be found from
the other. Other loggers that would print raw paths or SQL (werkzeug's development server,
Flask's exception log, SQLAlchemy's echo) are rewritten or kept quiet here.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import sqlalchemy as sa
from flask import Flask, Response, g, has_request_context, request

from core.actors import ActorKind

REQUEST_ID_HEADER = "X-Request-ID"
# What proxies and load balancers send (UUIDs, hex, base64url); anything else is replaced, so
# a client cannot write arbitrary text into the log.
_WELL_FORMED_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{7,127}")

request_log = logging.getLogger("keys.request")
state_change_log = logging.getLogger("keys.state_change")


def write(logger: logging.Logger, event: str, **fields: Any) -> None:
    """One JSON document as one log line."""
    line = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), "event": event}
    logger.info(json.dumps(line | fields, default=str, ensure_ascii=False))


def current_request_id() -> str | None:
    """The id of the request being served, or None outside one (CLI commands, jobs)."""
    return g.get("request_id") if has_request_context() else None


class App(Flask):
    """A Flask app whose exception log names the route instead of the path, which may hold a
    token (Flask's own says "Exception on /sign-in/link/… [POST]")."""

    def log_exception(
        self,
        exc_info: tuple[type, BaseException, TracebackType] | tuple[None, None, None],
    ) -> None:
        rule = request.url_rule.rule if request.url_rule else "(no route)"
        self.logger.error(
            "Exception on %s [%s], request %s",
            rule,
            request.method,
            current_request_id(),
            exc_info=exc_info,
        )


def init_app(app: Flask) -> None:
    """Time and log every request. Call first, before other extensions add their hooks: the
    start runs before theirs, and the request line is written after their changes."""
    _configure_loggers()
    app.before_request(_start_request)
    app.after_request(_finish_request)


def _start_request() -> None:
    g.request_started = time.perf_counter()
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    well_formed = _WELL_FORMED_REQUEST_ID.fullmatch(incoming)
    g.request_id = incoming if well_formed else uuid.uuid4().hex


def _finish_request(response: Response) -> Response:
    request_id = g.get("request_id") or uuid.uuid4().hex
    response.headers[REQUEST_ID_HEADER] = request_id
    started = g.get("request_started", time.perf_counter())
    kind, actor_id = _actor()
    write(
        request_log,
        "request",
        request_id=request_id,
        method=request.method,
        route=request.url_rule.rule if request.url_rule else None,
        endpoint=request.endpoint,
        status=response.status_code,
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
        actor_kind=kind,
        actor_id=actor_id,
    )
    return response


def _actor() -> tuple[str, int | None]:
    """Who made the request, as far as it looked (signing in or out changes it). Read without
    a query: the user is not loaded for the log's sake (the database may be away), and by now
    the request's session is closed, with the user's row expired if it rolled back."""
    user = g.get("_login_user")
    state = sa.inspect(user, raiseerr=False)  # a table row: a maintainer or a staff member
    if state is None:
        return ActorKind.ANONYMOUS.value, None
    kind = ActorKind.STAFF if user.is_staff else ActorKind.MAINTAINER
    return kind.value, int(state.identity[0]) if state.identity else None


# --- other loggers --------------------------------------------------------------------------

# No word boundary before the method: werkzeug colours the line ("\x1b[33mGET /…").
_REQUEST_LINE = re.compile(r"(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS|CONNECT|TRACE) [^\s\"']+")


class _HidePaths(logging.Filter):
    """Rewrites werkzeug's access lines ('"GET /sign-in/link/… HTTP/1.1" 200') without the
    path: the request line above says which route it was."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = _REQUEST_LINE.sub(r"\1 [path hidden]", record.getMessage())
        record.args = ()
        return True


class _HideGunicornPaths(logging.Filter):
    """gunicorn names the request it could not answer ("Error handling request /sign-in/link/…",
    then its own bare 500): the line stays, one per such 500, without the path."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("Error handling request"):
            record.msg, record.args = "Error handling request [path hidden]; answered 500", ()
        return True


def gunicorn_logconfig() -> dict[str, Any]:
    """gunicorn's ``logconfig_dict``: its own lines (starts, WORKER TIMEOUT, a worker killed, the
    500s it answers itself) as JSON lines on stderr, like the app's, so one reader sees all."""
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "json",
        "filters": ["hide_paths"],
        "stream": "ext://sys.stderr",
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonLineFormatter}},
        "filters": {"hide_paths": {"()": _HideGunicornPaths}},
        "handlers": {"console": handler, "error_console": handler},
        "root": {"level": "WARNING", "handlers": ["console"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": False},
        },
    }


# The loggers whose messages are JSON documents already (the rest of ours are sentences).
_JSON_ALREADY = frozenset({request_log.name, state_change_log.name})


class JsonLineFormatter(logging.Formatter):
    """Every record as one JSON line: ours are JSON already; the rest (werkzeug, gunicorn's
    workers, tracebacks) are wrapped, so whatever reads the log reads one format."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.name in _JSON_ALREADY:
            return message
        document = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, ensure_ascii=False)


def _configure_loggers() -> None:
    logging.getLogger("keys").setLevel(logging.INFO)
    # SQLAlchemy logs statements and, at DEBUG, result rows: addresses and emails. Off for good.
    logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)
    werkzeug = logging.getLogger("werkzeug")
    if not any(isinstance(f, _HidePaths) for f in werkzeug.filters):
        werkzeug.addFilter(_HidePaths())
    # Where nothing has set logging up (gunicorn, `flask run`, the CLI), write to stderr. A
    # host's own set-up (an operator's dictConfig, pytest's capture) is left as it is.
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(JsonLineFormatter())
        root.addHandler(handler)

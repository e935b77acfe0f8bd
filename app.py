"""The application factory: wiring only — settings, extensions, blueprints, CLI, error pages."""

from __future__ import annotations

import os
import sys
from typing import Any

import sqlalchemy as sa
from flask import Flask, g, jsonify, render_template, request
from flask.typing import ResponseReturnValue
from flask_wtf.csrf import CSRFError
from sqlmodel import SQLModel
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.middleware.proxy_fix import ProxyFix

import accounts.models  # noqa: F401  (tables, for import_models)
import core.audit  # noqa: F401
import core.tasks  # noqa: F401
import distribution.models  # noqa: F401
import eligibility.models  # noqa: F401
import jobs
from accounts import access, sessions
from accounts.models import StaffRole
from core import db, logs, mail, tasks
from core.errors import DomainError
from core.health import DATABASE_RETRY_AFTER
from core.settings import Settings, SettingsError
from web import filters, security


def import_models() -> type[SQLModel]:
    """``SQLModel`` with every package's tables imported, so its metadata is complete (for
    Alembic and the schema tests)."""
    return SQLModel


def create_app(settings: Settings | None = None) -> Flask:
    """Build an app for ``settings`` (read from the environment when not given)."""
    if settings is None:
        try:
            settings = Settings.from_env(os.environ)
        except SettingsError as error:
            sys.exit(f"Security Key Giveaway cannot start: {error}")

    app = logs.App(__name__, instance_path=str(settings.instance_path))
    logs.init_app(app)  # first: it times the whole request and logs it after the others
    app.extensions["keys_settings"] = settings
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        PREFERRED_URL_SCHEME="https" if settings.https else "http",
    )
    os.makedirs(app.instance_path, exist_ok=True)
    if settings.proxy_hops:
        # Behind nginx or Caddy: the client's address (which rate limits count) and the https
        # scheme come from X-Forwarded-For/-Proto, believed for exactly that many proxies.
        # X-Forwarded-Host is not: the proxy passes Host, and a client could forge the other.
        hops = settings.proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]

    database = db.Database(db.create_db_engine(settings.database_url))
    db.init_app(app, database)
    jobs.register(tasks.init_app(app, settings, database))
    mail.init_app(app, mail.create_mailer(settings))
    security.init_app(app, settings)
    filters.init_app(app)
    access.init_app(app)
    sessions.init_app(app, settings)

    from accounts.key_views import bp as staff_keys_bp
    from accounts.views import bp as accounts_bp
    from core.health import bp as health_bp
    from distribution.activation.views import bp as activation_bp
    from distribution.claims.views import bp as claims_bp
    from distribution.journey.views import bp as journey_bp
    from distribution.privacy.views import bp as personal_data_bp
    from distribution.reports.views import bp as reports_bp
    from distribution.shipping.views import bp as shipping_bp
    from distribution.stock.views import bp as stock_bp
    from eligibility.views import bp as eligibility_bp
    from jobs.views import bp as jobs_bp

    app.register_blueprint(accounts_bp)
    app.register_blueprint(eligibility_bp)
    app.register_blueprint(claims_bp)
    app.register_blueprint(journey_bp)
    app.register_blueprint(stock_bp)
    app.register_blueprint(shipping_bp)
    app.register_blueprint(activation_bp)
    app.register_blueprint(reports_bp)
    app.register_blueprint(personal_data_bp)
    app.register_blueprint(staff_keys_bp)
    app.register_blueprint(jobs_bp)
    app.register_blueprint(health_bp)
    db.retry_conflicts(app)

    _register_cli(app)
    _register_error_pages(app)

    @app.context_processor
    def _template_globals() -> dict[str, Any]:
        return {
            "settings": settings,
            "has_role": access.has_role,
            "StaffRole": StaffRole,
        }

    return app


def _register_cli(app: Flask) -> None:
    from accounts.cli import staff_cli
    from core.mail import mail_cli
    from devtools.demo import seed_command
    from distribution.activation.cli import keys_cli
    from distribution.claims.cli import claims_cli
    from distribution.privacy import cli as _privacy_cli  # noqa: F401  adds its command to claims
    from distribution.reports import cli as _reports_cli  # noqa: F401  adds its command to stock
    from distribution.shipping.cli import shipping_cli
    from distribution.stock.cli import stock_cli
    from eligibility.cli import eligibility_cli

    app.cli.add_command(db.db_cli)
    app.cli.add_command(seed_command)
    app.cli.add_command(staff_cli)
    app.cli.add_command(mail_cli)
    app.cli.add_command(eligibility_cli)
    app.cli.add_command(shipping_cli)
    app.cli.add_command(stock_cli)
    app.cli.add_command(claims_cli)
    app.cli.add_command(keys_cli)
    app.cli.add_command(tasks.tasks_cli)


def _register_error_pages(app: Flask) -> None:
    def render_error(
        status: int, title: str, message: str, headers: dict[str, str] | None = None
    ) -> ResponseReturnValue:
        headers = headers or {}
        if "Retry-After" in headers:  # kept past the rate limiter's own (web.security)
            g.retry_after = headers["Retry-After"]
        if (
            request.path.startswith("/api/")
            or request.path == "/healthz"
            or request.path.endswith(".json")
            or request.accept_mimetypes.best == "application/json"
        ):
            return jsonify(error=title, message=message, status=status), status, headers
        page = render_template("errors/error.html", status=status, title=title, message=message)
        return page, status, headers

    @app.errorhandler(DomainError)
    def _domain_error(error: DomainError) -> ResponseReturnValue:
        db.discard_changes()
        return render_error(error.status_code, error.title, error.message)

    @app.errorhandler(CSRFError)
    def _csrf_error(_error: CSRFError) -> ResponseReturnValue:
        db.discard_changes()
        try:
            signed_out = access.answer_if_signed_out()
        except HTTPException as refusal:  # 401 to a script
            return _http_error(refusal)
        if signed_out is not None:
            return signed_out
        return render_error(
            400,
            "The form had expired",
            "For your safety, forms work only for the page they came from. "
            "Go back, reload the page and send it again.",
        )

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> ResponseReturnValue:
        db.discard_changes()
        status = error.code or 500
        message = error.description or ""
        if status == 429:
            message = "Too many attempts in a short time. Wait a few minutes, then try again."
        # Keep what the exception says about itself (Allow on 405, Retry-After on 429).
        headers = {k: v for k, v in error.get_headers() if k.lower() != "content-type"}
        return render_error(status, error.name, message, headers)

    def database_unavailable() -> ResponseReturnValue:
        # Nor can the database say who is signed in: the page is drawn as for a visitor.
        security.forget_user_for_this_response()
        return render_error(
            503,
            "We will be back in a moment",
            "The site cannot reach its database just now. Please try again in a minute.",
            {"Retry-After": DATABASE_RETRY_AFTER},
        )

    @app.errorhandler(sa.exc.DBAPIError)
    def _database_error(error: sa.exc.DBAPIError) -> ResponseReturnValue:
        if not db.is_unavailable(error):
            raise error  # a fault, not an outage: logged and answered as a 500
        db.discard_changes()
        return database_unavailable()

    @app.errorhandler(InternalServerError)
    def _server_error(error: InternalServerError) -> ResponseReturnValue:
        db.discard_changes()
        if db.is_unavailable(error.original_exception):  # lost while committing, say
            return database_unavailable()
        return render_error(
            500,
            "Something went wrong on our side",
            "The error has been logged and nothing you sent was half-saved. "
            "Please try again in a minute.",
        )

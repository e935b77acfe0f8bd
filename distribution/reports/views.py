"""Reports for staff (web page, CSV tables, PDF) and the public transparency page and JSON."""

from __future__ import annotations

import csv
import functools
import io
import threading
import time
from pathlib import Path

from flask import Blueprint, Response, abort, current_app, jsonify, render_template
from flask.typing import ResponseReturnValue

from accounts.access import staff_required
from adapters import pdf
from core.db import get_session
from core.settings import get_settings
from distribution.reports import staff_report, transparency

bp = Blueprint("reports", __name__)

_PRINT_CSS = Path(__file__).resolve().parents[2] / "templates" / "reports" / "print.css"


@bp.get("/staff/reports")
@staff_required()
def staff_reports() -> ResponseReturnValue:
    report = staff_report.staff_report(session=get_session(), settings=get_settings())
    return render_template(
        "reports/staff.html", report=report, charts=staff_report.report_charts(report)
    )


@bp.get("/staff/reports/<name>.csv")
@staff_required()
def report_csv(name: str) -> ResponseReturnValue:
    if name not in staff_report.TABLES:
        abort(404, f"There is no table {name!r}: the tables are {', '.join(staff_report.TABLES)}.")
    report = staff_report.staff_report(session=get_session(), settings=get_settings())
    header, rows = staff_report.report_table(report, name)
    day = report.stock.taken_at.date().isoformat()
    return _attachment(_csv([header, *rows]), "text/csv", f"keys-{name}-{day}.csv")


@bp.get("/staff/reports.pdf")
@staff_required()
def report_pdf() -> ResponseReturnValue:
    report = staff_report.staff_report(session=get_session(), settings=get_settings())
    html = render_template(
        "reports/print.html", report=report, charts=staff_report.report_charts(report)
    )
    day = report.stock.taken_at.date().isoformat()
    document = pdf.render_pdf(html, css=_print_css())
    return _attachment(document, "application/pdf", f"keys-report-{day}.pdf")


@bp.get("/transparency")
def transparency_page() -> ResponseReturnValue:
    return render_template("reports/transparency.html", figures=_public_figures())


@bp.get("/transparency.json")
def transparency_json() -> ResponseReturnValue:
    return jsonify(_public_figures().as_dict())


# Anyone may ask for the public figures as often as they like; each app computes them at most
# once per PUBLIC_FIGURES_SECONDS, so a crowd (or a script) costs the database nothing more.
PUBLIC_FIGURES_SECONDS = 10.0
_lock = threading.Lock()


def _public_figures() -> transparency.Transparency:
    cache: dict[str, tuple[float, transparency.Transparency]] = current_app.extensions.setdefault(
        "public_figures", {}
    )
    with _lock:
        taken = cache.get("latest")
        if taken is None or time.monotonic() - taken[0] > PUBLIC_FIGURES_SECONDS:
            taken = cache["latest"] = (
                time.monotonic(),
                transparency.transparency(session=get_session()),
            )
        return taken[1]


def _csv(rows: list[list[object]]) -> str:
    """Rows as CSV; a text cell a spreadsheet would run as a formula is quoted with '."""
    out = io.StringIO()
    writer = csv.writer(out)
    for row in rows:
        writer.writerow(
            "'" + cell if isinstance(cell, str) and cell[:1] in "=+-@" and cell else cell
            for cell in row
        )
    return out.getvalue()


def _attachment(body: str | bytes, mimetype: str, filename: str) -> Response:
    response = Response(body, mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@functools.cache
def _print_css() -> str:
    """The report's print stylesheet (A4 portrait), read once per process: the adapter keeps
    the parsed CSS under this text. Charts are ``data:`` URIs, the only thing a PDF fetches."""
    return _PRINT_CSS.read_text(encoding="utf-8")

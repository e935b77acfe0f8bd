"""Eligibility pages: the maintainer's decision and appeals, the public project lookup (HTML and
JSON), the staff appeals queue and the statistics upload."""

from __future__ import annotations

from typing import cast

from flask import Blueprint, flash, jsonify, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user

from accounts.forms import form_status
from accounts.models import Maintainer, StaffRole
from accounts.services import actor_for, set_maintainer_country
from db import get_session
from eligibility import appeals, critical
from eligibility.countries import country_name, display_code, normalize_country
from eligibility.decisions import decide
from eligibility.errors import AppealNotAllowed, ImportRejected, InvalidProjectName
from eligibility.forms import (
    AppealDecisionForm,
    AppealForm,
    CountryForm,
    DownloadsUploadForm,
    ProjectLookupForm,
)
from mail import get_mailer
from security import accepts_large_upload, maintainer_required, staff_required
from settings import get_settings

bp = Blueprint("eligibility", __name__)


def _me() -> Maintainer:
    return cast(Maintainer, current_user._get_current_object())


# --- maintainers ------------------------------------------------------------------------------


@bp.get("/eligibility")
@maintainer_required
def my_eligibility() -> ResponseReturnValue:
    return _render_mine(CountryForm(country=_me().country))


@bp.post("/eligibility/country")
@maintainer_required
def set_country() -> ResponseReturnValue:
    form = CountryForm()
    if not form.validate_on_submit():
        return _render_mine(form), 400
    set_maintainer_country(
        session=get_session(),
        actor=actor_for(current_user),
        maintainer=_me(),
        country=normalize_country(form.country.data),
    )
    flash(f"Saved: keys would be shipped to {country_name(form.country.data)}.", "success")
    return redirect(url_for("eligibility.my_eligibility"))


def _render_mine(country_form: CountryForm) -> str:
    session, maintainer = get_session(), _me()
    decision = decide(
        session=session,
        settings=get_settings(),
        maintainer=maintainer,
        country=maintainer.country,
    )
    return render_template(
        "eligibility/mine.html",
        decision=decision,
        country_form=country_form,
        appeals=appeals.appeals_of(session=session, maintainer=maintainer),
        country_name=country_name,
        display_code=display_code,
    )


@bp.route("/eligibility/appeal", methods=["GET", "POST"])
@maintainer_required
def appeal() -> ResponseReturnValue:
    form = AppealForm()
    if form.validate_on_submit():
        try:
            appeals.file_appeal(
                session=get_session(),
                actor=actor_for(current_user),
                maintainer=_me(),
                text=form.text.data,
                projects=form.project_list,
            )
        except AppealNotAllowed as problem:
            form.text.errors = [problem.message]
        else:
            flash("Your appeal was sent. Programme staff will email you their decision.", "success")
            return redirect(url_for("eligibility.my_eligibility"))
    return render_template("eligibility/appeal.html", form=form), form_status(form)


# --- public -----------------------------------------------------------------------------------


@bp.get("/projects")
def project_lookup() -> ResponseReturnValue:
    form = ProjectLookupForm(request.args)
    standing = None
    if "name" in request.args and form.validate():
        try:
            standing = critical.look_up_project(session=get_session(), name=form.name.data)
        except InvalidProjectName as problem:
            form.name.errors = [problem.message]
    status = form_status(form) if "name" in request.args else 200
    return render_template(
        "eligibility/lookup.html",
        form=form,
        standing=standing,
        searched="name" in request.args and not form.errors,
    ), status


@bp.get("/api/projects/<name>")
def project_api(name: str) -> ResponseReturnValue:
    standing = critical.look_up_project(session=get_session(), name=name)
    if standing is None:
        return jsonify(error="No download statistics have been imported yet.", status=404), 404
    listed = standing.critical_list
    return jsonify(
        project=standing.name,
        critical=standing.critical,
        rank=standing.rank,
        downloads=standing.downloads,
        ranked_projects=listed.total_projects,
        cutoff_rank=listed.cutoff_rank,
        cutoff_downloads=listed.cutoff_downloads,
        percent=listed.percent,
        list_id=listed.id,
        computed_at=listed.created_at.isoformat(),
    )


# --- staff ------------------------------------------------------------------------------------


@bp.get("/staff/appeals")
@staff_required(StaffRole.PROGRAMME)
def appeal_queue() -> ResponseReturnValue:
    return render_template(
        "eligibility/appeal_queue.html", queue=appeals.appeal_queue(session=get_session())
    )


@bp.route("/staff/appeals/<int:appeal_id>", methods=["GET", "POST"])
@staff_required(StaffRole.PROGRAMME)
def appeal_review(appeal_id: int) -> ResponseReturnValue:
    session, settings = get_session(), get_settings()
    appeal, maintainer = appeals.get_appeal_and_appellant(session=session, appeal_id=appeal_id)
    form = AppealDecisionForm()
    if form.validate_on_submit():
        appeals.decide_appeal(
            session=session,
            mailer=get_mailer(),
            actor=actor_for(current_user),
            appeal_id=appeal_id,
            grant=form.decision.data == "grant",
            reason=form.reason.data,
            base_url=settings.base_url,
        )
        flash(f"Appeal {appeal_id} {appeal.status}; the maintainer was emailed.", "success")
        return redirect(url_for("eligibility.appeal_queue"))
    decision = decide(
        session=session, settings=settings, maintainer=maintainer, country=maintainer.country
    )
    return render_template(
        "eligibility/appeal_review.html",
        appeal=appeal,
        maintainer=maintainer,
        decision=decision,
        form=form,
    ), form_status(form)


@bp.route("/staff/critical-lists", methods=["GET", "POST"])
@staff_required(StaffRole.PROGRAMME)
@accepts_large_upload
def critical_lists() -> ResponseReturnValue:
    session, settings = get_session(), get_settings()
    form = DownloadsUploadForm()
    rejected: int | None = None
    if form.validate_on_submit():
        upload = form.file.data
        try:
            with upload.stream:  # a large upload is a temporary file: close it when read
                summary = critical.import_download_statistics(
                    session=session,
                    actor=actor_for(current_user),
                    stream=upload.stream,
                    source_name=upload.filename or "upload",
                    percent=form.percent.data or settings.critical_percent,
                    sticky=settings.critical_sticky,
                    total_projects=form.total_projects.data,
                )
        except ImportRejected as problem:
            form.file.errors = [problem.message]
            rejected = problem.status_code
        else:
            result = summary.as_dict()
            flash(
                "Already imported: nothing changed."
                if summary.unchanged
                else f"Imported: {result['critical_count']:,} critical projects, "
                f"{result['added']} added, {result['removed']} removed.",
                "success",
            )
            return redirect(
                url_for("eligibility.critical_list_detail", list_id=summary.critical_list.id)
            )
    return render_template(
        "eligibility/critical_lists.html",
        form=form,
        history=critical.list_history(session=session),
    ), rejected or form_status(form)


@bp.get("/staff/critical-lists/<int:list_id>")
@staff_required(StaffRole.PROGRAMME, StaffRole.VIEWER)
def critical_list_detail(list_id: int) -> ResponseReturnValue:
    session = get_session()
    listed = critical.get_list(session=session, list_id=list_id)
    return render_template(
        "eligibility/critical_list.html",
        listed=listed,
        first=critical.is_first_list(session=session, critical_list=listed),
        changes=critical.list_changes(session=session, critical_list=listed),
    )

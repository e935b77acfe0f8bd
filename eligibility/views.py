"""Eligibility pages: the maintainer's appeal, the public project lookup (HTML and JSON), the
staff appeals queue and the statistics upload. The decision's own page and the appeal review,
which show the decision, are distribution.claims.views: the decision reads claims and stock."""

from __future__ import annotations

from flask import Blueprint, flash, jsonify, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user

from accounts.access import (
    current_maintainer,
    maintainer_required,
    staff_required,
)
from accounts.models import StaffRole
from accounts.services import actor_for
from core.db import get_session
from core.settings import get_settings
from eligibility import appeals, critical
from eligibility.errors import AppealNotAllowed, ImportRejected, InvalidProjectName
from eligibility.forms import (
    AppealForm,
    DownloadsUploadForm,
    ProjectLookupForm,
)
from web.forms import form_status
from web.security import accepts_large_upload

bp = Blueprint("eligibility", __name__)


@bp.route("/eligibility/appeal", methods=["GET", "POST"])
@maintainer_required
def appeal() -> ResponseReturnValue:
    form = AppealForm()
    if form.validate_on_submit():
        try:
            appeals.file_appeal(
                session=get_session(),
                actor=actor_for(current_user),
                maintainer=current_maintainer(),
                text=form.text.data,
                projects=form.project_list,
            )
        except AppealNotAllowed as problem:
            form.text.errors = [problem.message]
        else:
            flash("Your appeal was sent. Programme staff will email you their decision.", "success")
            return redirect(url_for("claims.my_eligibility"))
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

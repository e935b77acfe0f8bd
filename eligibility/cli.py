"""`flask --app app eligibility …`: import statistics and roles, notify (`eligibility check`,
which reads claims and stock, is added to this group by distribution.claims.cli)."""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack
from pathlib import Path

import click
from click._termui_impl import ProgressBar
from flask.cli import with_appcontext

from core.actors import Actor
from core.cli import json_option
from core.db import get_database
from core.errors import reported_as_cli_error
from core.mail import get_mailer
from core.settings import get_settings
from eligibility import critical, notify, roles
from eligibility.downloads import Progress


@click.group("eligibility")
def eligibility_cli() -> None:
    """Download statistics, critical projects, maintainers' roles and decisions."""


@eligibility_cli.command("import-downloads")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--total-projects",
    type=click.IntRange(min=1),
    help="Projects in all of PyPI (needed for a rank,project file).",
)
@click.option(
    "--percent",
    type=click.FloatRange(min=0, min_open=True, max=100),
    help="The critical top percent (default: KEYS_CRITICAL_PERCENT).",
)
@click.option("--no-sticky", is_flag=True, help="Let projects drop off the critical list.")
@json_option
@with_appcontext
def import_downloads_command(
    file: Path,
    total_projects: int | None,
    percent: float | None,
    no_sticky: bool,
    as_json: bool,
) -> None:
    """Import download statistics and recompute the critical projects (safe to repeat)."""
    settings = get_settings()
    size = file.stat().st_size
    show_progress = sys.stderr.isatty() and not as_json
    with ExitStack() as stack:
        on_progress = None
        if show_progress:
            bar = stack.enter_context(
                click.progressbar(length=size, label=f"Reading {file.name}", file=sys.stderr)
            )
            on_progress = _advance(bar)
        stream = stack.enter_context(file.open("rb"))
        with reported_as_cli_error(), get_database().transaction() as session:
            summary = critical.import_download_statistics(
                session=session,
                actor=Actor.system("cli"),
                stream=stream,
                source_name=file.name,
                percent=percent if percent is not None else settings.critical_percent,
                sticky=settings.critical_sticky and not no_sticky,
                total_projects=total_projects,
                on_progress=on_progress,
            )
    report = summary.as_dict()
    if as_json:
        click.echo(json.dumps(report))
        return
    state = "unchanged (already imported)" if summary.unchanged else "recorded"
    click.echo(
        f"Critical list {report['list_id']} {state}: {report['critical_count']:,} critical of "
        f"{report['total_projects']:,} projects (cutoff rank {report['cutoff_rank']:,}); "
        f"{report['added']} added, {report['removed']} removed."
    )


def _advance(bar: ProgressBar[int]) -> Progress:
    """A progress callback (bytes read so far) that moves a click progress bar."""
    done = 0

    def advance(read: int) -> None:
        nonlocal done
        bar.update(read - done)
        done = read

    return advance


@eligibility_cli.command("import-roles")
@click.argument("file", type=click.File("rb"))
@json_option
@with_appcontext
def import_roles_command(file: click.File, as_json: bool) -> None:
    """Import maintainers' roles (CSV project,username,email,role[,organisation] or JSON)."""
    with reported_as_cli_error():
        rows = roles.read_roles_file(file)  # type: ignore[arg-type]
        with get_database().transaction() as session:
            summary = roles.import_roles(session=session, actor=Actor.system("cli"), rows=rows)
    report = summary.as_dict()
    if as_json:
        click.echo(json.dumps(report))
        return
    click.echo(
        f"{report['rows']} rows: {report['maintainers_added']} maintainers added, "
        f"{report['roles_added']} roles added, {report['roles_changed']} changed, "
        f"{report['roles_ended']} ended."
    )


@eligibility_cli.command("notify")
@click.option("--dry-run", is_flag=True, help="List who would be mailed; mail nobody.")
@json_option
@with_appcontext
def notify_command(dry_run: bool, as_json: bool) -> None:
    """Email maintainers who became eligible since the last run (nobody twice)."""
    settings = get_settings()
    with get_database().transaction() as session:
        notices = notify.newly_eligible(session=session, settings=settings)
        if not dry_run:
            notify.send_notices(
                session=session, mailer=get_mailer(), settings=settings, notices=notices
            )
    people = [{"username": n.maintainer.username, "projects": n.projects} for n in notices]
    if as_json:
        click.echo(json.dumps({"dry_run": dry_run, "notified": people}))
        return
    verb = "Would mail" if dry_run else "Mailed"
    click.echo(f"{verb} {len(people)} maintainer(s).")
    for person in people:
        click.echo(f"- {person['username']}: {', '.join(person['projects']) or 'appeal granted'}")

"""Label runs: a PDF of labels and packing slips rendered outside any request, its progress in
the database for staff to follow, and the claims it moves once the PDF is complete.

``start_run`` records the run and takes its claims with one conditional UPDATE, so two runs
never print the same parcel and an address cannot change under the printer; the view enqueues
``labels.render`` (core.tasks). In a consumer, ``execute_run`` renders (in chunks, on both
cores) and writes the pages done as it goes; only then, in one transaction, the PDF is stored
and the claims still waiting become ``label_printed``. A consumer that dies mid-run leaves the
task to another, which renders the run again; meanwhile its claims stop being held once its
heartbeat is stale (``LabelRun.is_live``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from core import formats
from core.actors import Actor, ActorKind
from core.audit import record_event
from core.db import Database, get_database, utcnow
from core.settings import Settings, get_settings
from core.tasks import TaskFailed
from distribution.claims.services import transition_claim
from distribution.errors import ClaimLocked, PersonalDataErased, RunNotFound
from distribution.models import (
    CLAIM_LIFECYCLE,
    LABEL_RUN_LIFECYCLE,
    Claim,
    ClaimAction,
    ClaimStatus,
    LabelRun,
    LabelRunAction,
    Shipment,
)
from distribution.shipping.fulfilment import QueuedParcel, current_shipments, parcels_of_claims
from distribution.shipping.labels import LabelSettings, Layout, page_count, render_run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunView:
    """A run as staff see it: how far it is and what to do next."""

    run: LabelRun
    now: datetime

    @property
    def rendering(self) -> bool:
        return self.run.is_live(self.now)

    @property
    def interrupted(self) -> bool:
        """The process rendering it died: its claims are back in the queue."""
        return LABEL_RUN_LIFECYCLE.allows(LabelRunAction.FINISH, self.run.status) and not (
            self.rendering
        )


def start_run(
    *,
    session: Session,
    actor: Actor,
    claim_ids: Sequence[int],
    layout: Layout,
    reprint: bool = False,
) -> LabelRun:
    """Record a run of the given claims' labels. A first print takes claims waiting for a label
    (none of them in another live run); a reprint takes claims whose label is printed."""
    wanted = sorted(set(claim_ids))
    if not wanted:
        raise ClaimLocked("Select at least one parcel.")
    _refuse_erased(session, wanted)
    now = utcnow()
    run = LabelRun(
        reprint=reprint,
        layout=layout,
        claim_ids=wanted,
        created_at=now,
        heartbeat_at=now,
        pages_total=page_count(parcels=len(wanted), layout=layout, panels_per_parcel=2),
        actor_kind=actor.kind.value,
        actor_id=actor.id,
        actor_label=actor.label,
    )
    with session.begin_nested():  # nothing is left behind if the claims are not all free
        session.add(run)
        session.flush()
        taken = _take_claims(session, run, now) if not reprint else _printed(session, wanted)
        if taken != len(wanted):
            raise ClaimLocked(
                f"{len(wanted) - taken} of the {len(wanted)} selected parcels changed a moment "
                "ago (printed, cancelled or in another run). Reload the page and select again."
            )
    record_event(
        session=session,
        actor=actor,
        action="labels.run_started",
        subject_kind="label_run",
        subject_id=run.id,
        details={"parcels": len(wanted), "layout": layout, "reprint": reprint},
    )
    return run


def _refuse_erased(session: Session, claim_ids: list[int]) -> None:
    """A parcel whose address went under the retention policy has nothing left to print."""
    erased = session.exec(
        select(Shipment).where(
            col(Shipment.claim_id).in_(claim_ids),
            col(Shipment.id).in_(current_shipments()),
            col(Shipment.personal_data_erased_at).is_not(None),
        )
    ).first()
    if erased is not None and erased.personal_data_erased_at is not None:
        raise ClaimLocked(
            f"Parcel {erased.reference} cannot be printed: its address was erased on "
            f"{formats.day(erased.personal_data_erased_at)} under the retention policy."
        )


def _take_claims(session: Session, run: LabelRun, now: datetime) -> int:
    stale = select(LabelRun.id).where(
        col(LabelRun.status).in_(LABEL_RUN_LIFECYCLE.statuses_allowing(LabelRunAction.FINISH)),
        col(LabelRun.heartbeat_at) < now - LabelRun.STALE_AFTER,
    )
    taken = session.execute(
        sa.update(Claim)
        .where(
            col(Claim.id).in_(run.claim_ids),
            col(Claim.status).in_(CLAIM_LIFECYCLE.statuses_allowing(ClaimAction.PRINT_LABEL)),
            sa.or_(col(Claim.label_run_id).is_(None), col(Claim.label_run_id).in_(stale)),
        )
        .values(label_run_id=run.id)
        .execution_options(synchronize_session=False)
    )
    return int(taken.rowcount)  # type: ignore[attr-defined]


def _printed(session: Session, claim_ids: list[int]) -> int:
    return int(
        session.exec(
            select(sa.func.count())
            .select_from(Claim)
            .where(
                col(Claim.id).in_(claim_ids),
                col(Claim.status) == ClaimStatus.LABEL_PRINTED.value,
            )
        ).one()
    )


def get_run(*, session: Session, run_id: int) -> RunView:
    """A run without its PDF, which is loaded only when read (the run page reloads every two
    seconds while it renders, and a done run's PDF can be tens of megabytes)."""
    without_pdf = sa.orm.defer(LabelRun.pdf)  # type: ignore[arg-type]
    run = session.get(LabelRun, run_id, options=[without_pdf])
    if run is None:
        raise RunNotFound("There is no such label run.")
    return RunView(run, utcnow())


def recent_runs(*, session: Session, limit: int = 10) -> list[RunView]:
    now = utcnow()
    runs = session.exec(
        select(LabelRun)
        .options(sa.orm.defer(LabelRun.pdf))  # type: ignore[arg-type]
        .order_by(col(LabelRun.id).desc())
        .limit(limit)
    ).all()
    return [RunView(run, now) for run in runs]


def run_pdf(*, session: Session, actor: Actor, run_id: int) -> tuple[LabelRun, bytes]:
    """The finished PDF of a run. Each download is audited: it holds addresses, and a second
    download is a second set of labels."""
    run = get_run(session=session, run_id=run_id).run
    if run.pdf_erased_at is not None:
        raise PersonalDataErased(
            f"This run's PDF was erased on {formats.day(run.pdf_erased_at)} under the retention "
            "policy: its labels held addresses. Print a label that is still needed again."
        )
    if run.pdf is None or not LABEL_RUN_LIFECYCLE.allows(LabelRunAction.DOWNLOAD, run.status):
        raise RunNotFound("This run has no PDF: it is still rendering or it failed.")
    record_event(
        session=session,
        actor=actor,
        action="labels.downloaded",
        subject_kind="label_run",
        subject_id=run.id,
    )
    return run, run.pdf


def execute_run(
    *,
    database: Database,
    settings: Settings,
    run_id: int,
    on_progress: Callable[[int, int], None] | None = None,
) -> LabelRun:
    """Render a started run and finish it; its own short transactions, like a CLI command.
    Raises what stopped the rendering, after recording the run as failed."""
    with database.transaction() as session:
        run = get_run(session=session, run_id=run_id).run
        parcels = parcels_of_claims(
            session=session, claim_ids=run.claim_ids, base_url=settings.base_url
        )
        layout = run.layout

    def progress(done: int, total: int) -> None:
        with database.transaction() as session:
            session.execute(
                sa.update(LabelRun)
                .where(col(LabelRun.id) == run_id)
                .values(pages_done=done, pages_total=total, heartbeat_at=utcnow())
            )
        if on_progress is not None:
            on_progress(done, total)

    try:
        pdf = render_run(
            [parcel.label for parcel in parcels],
            settings=LabelSettings.from_settings(settings),
            layout=layout,  # type: ignore[arg-type]  # checked when the run started
            on_progress=progress,
        )
    except Exception as error:  # whatever stopped it, the run must say so and let go
        with database.transaction() as session:
            _fail(session, run_id, str(error) or type(error).__name__)
        raise
    with database.transaction() as session:
        return finish_run(session=session, run_id=run_id, parcels=parcels, pdf=pdf)


def finish_run(
    *, session: Session, run_id: int, parcels: Sequence[QueuedParcel], pdf: bytes
) -> LabelRun:
    """Store the PDF; a first print moves the claims it still holds to label_printed."""
    run = get_run(session=session, run_id=run_id).run
    actor = Actor(ActorKind(run.actor_kind), run.actor_id, run.actor_label)
    printed: set[int] = set()
    if not run.reprint:
        held = session.exec(
            select(Claim).where(
                Claim.label_run_id == run.id,
                col(Claim.status).in_(CLAIM_LIFECYCLE.statuses_allowing(ClaimAction.PRINT_LABEL)),
            )
        ).all()
        for claim in held:
            transition_claim(session, claim, ClaimAction.PRINT_LABEL, actor=actor)
            claim.label_run_id = None
            printed.add(claim.id or 0)
        _release_claims(session, run.id or 0)
    else:  # a reprint holds nothing, so it asks which of its labels still belong to a parcel
        printed = _still_printed(session, parcels)
    run.skipped = [p.label.reference for p in parcels if p.claim_id not in printed]
    run.printed = len(printed)
    done = LABEL_RUN_LIFECYCLE.goes_to(LabelRunAction.FINISH, run.status, subject=f"run {run.id}")
    run.pdf, run.status = pdf, done.value
    run.pages_done = run.pages_total  # counted when the run started, confirmed as it rendered
    run.finished_at = run.heartbeat_at = utcnow()
    session.flush()
    record_event(
        session=session,
        actor=actor,
        action="labels.reprinted" if run.reprint else "labels.printed",
        subject_kind="label_run",
        subject_id=run.id,
        details={
            "parcels": len(parcels),
            "printed": run.printed,
            "skipped": run.skipped,
            "layout": run.layout,
            "references": [parcel.label.reference for parcel in parcels],
        },
    )
    return run


def _still_printed(session: Session, parcels: Sequence[QueuedParcel]) -> set[int]:
    """The claims of ``parcels`` whose printed label still waits to ship under the reference
    the reprint printed: one voided, shipped or returned meanwhile is left out."""
    references = [parcel.label.reference for parcel in parcels]
    return set(
        session.exec(
            select(Shipment.claim_id)
            .join(Claim, col(Claim.id) == Shipment.claim_id)
            .where(
                col(Shipment.reference).in_(references),
                col(Shipment.id).in_(current_shipments()),
                col(Claim.status).in_(CLAIM_LIFECYCLE.statuses_allowing(ClaimAction.SHIP)),
            )
        ).all()
    )


def _fail(session: Session, run_id: int, message: str) -> None:
    run = session.get(LabelRun, run_id)
    if run is None:
        return
    failed = LABEL_RUN_LIFECYCLE.goes_to(LabelRunAction.FAIL, run.status, subject=f"run {run_id}")
    run.status, run.error = failed.value, message[:1000]
    run.finished_at = utcnow()
    _release_claims(session, run_id)
    record_event(
        session=session,
        actor=Actor.system("labels"),
        action="labels.failed",
        subject_kind="label_run",
        subject_id=run_id,
        details={"error": run.error},
    )


def _release_claims(session: Session, run_id: int) -> None:
    session.execute(
        sa.update(Claim)
        .where(col(Claim.label_run_id) == run_id)
        .values(label_run_id=None)
        .execution_options(synchronize_session=False)
    )


RENDER_TASK = "labels.render"


def render_task(run_id: int | None) -> None:
    """The queue's task: render a started run, or go on with one whose consumer died (its
    claims are still its own unless another run took them since; those are skipped)."""
    database, settings = get_database(), get_settings()
    with database.transaction() as session:
        run = session.get(LabelRun, run_id, options=[sa.orm.defer(LabelRun.pdf)])  # type: ignore[arg-type]
        if run is None:
            raise TaskFailed(f"Label run {run_id} no longer exists.")
        if not LABEL_RUN_LIFECYCLE.allows(LabelRunAction.FINISH, run.status):
            return  # finished or failed already: nothing is printed twice
        run.heartbeat_at = utcnow()
    try:
        execute_run(database=database, settings=settings, run_id=run_id or 0)
    except Exception as error:  # recorded on the run; rendering it again would fail again
        raise TaskFailed(f"Label run {run_id} failed: {type(error).__name__}") from error

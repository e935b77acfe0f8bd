"""Fulfilment: the queue of parcels waiting for a label, shipping (one scanned parcel or a
carrier manifest), delivery (one parcel or a carrier's delivery file) and voiding a label.

A claim's parcels are its shipments; the newest is the current one (a returned parcel is sent
again, a lost one replaced). Label runs themselves live in ``label_runs``.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from accounts.models import Maintainer, SecurityKey
from core.actors import Actor
from core.audit import AuditEvent, record_event
from core.db import utcnow
from core.mail import Mail, Mailer, render
from core.settings import Settings
from distribution.claims.services import new_shipment_reference, transition_claim
from distribution.errors import ClaimLocked, InvalidShipping, ParcelNotFound
from distribution.models import (
    CLAIM_LIFECYCLE,
    LABEL_RUN_LIFECYCLE,
    TRACKING_NUMBER_MAX_LENGTH,
    Claim,
    ClaimAction,
    ClaimStatus,
    KeyModel,
    LabelRun,
    LabelRunAction,
    Shipment,
)
from distribution.shipping.labels import ParcelLabel
from distribution.stock import services as stock

# Runs that may still finish: those rendering, whose process may have died meanwhile.
_RENDERING = LABEL_RUN_LIFECYCLE.statuses_allowing(LabelRunAction.FINISH)


def first_shipped_at(*, session: Session, claim: Claim) -> datetime | None:
    """When the claim's first parcel left: no key registered before can be one of its keys."""
    shipped: datetime | None = session.exec(
        select(sa.func.min(Shipment.shipped_at)).where(Shipment.claim_id == claim.id)
    ).one()
    return shipped


def acceptances(*, session: Session, claim: Claim) -> list[SecurityKey]:
    """The keys programme staff counted as Titans for this claim, oldest decision first."""
    since = first_shipped_at(session=session, claim=claim)
    if since is None:
        return []
    return list(
        session.exec(
            select(SecurityKey)
            .where(
                SecurityKey.maintainer_id == claim.maintainer_id,
                col(SecurityKey.accepted_at).is_not(None),
                col(SecurityKey.created_at) >= since,
            )
            .order_by(col(SecurityKey.accepted_at))
        ).all()
    )


@dataclass(frozen=True)
class QueuedParcel:
    claim_id: int
    label: ParcelLabel
    queued_at: datetime  # when the parcel entered the queue (redeemed, re-addressed, replaced)
    skus: tuple[str, ...]


@dataclass(frozen=True)
class QueueFilter:
    """Which waiting parcels staff look at: a destination, a model, a minimum age in days."""

    country: str = ""
    sku: str = ""
    min_age_days: int = 0

    def admits(self, parcel: QueuedParcel, now: datetime) -> bool:
        return (
            (not self.country or parcel.label.country == self.country)
            and (not self.sku or self.sku in parcel.skus)
            and parcel.queued_at <= now - timedelta(days=self.min_age_days)
        )


@dataclass(frozen=True)
class Queue:
    """The parcels a filter admits, oldest first, and counts over the whole queue."""

    parcels: list[QueuedParcel]
    total: int
    by_country: Counter[str] = field(default_factory=Counter)
    by_model: Counter[str] = field(default_factory=Counter)
    in_runs: int = 0  # waiting parcels a live label run is printing right now


def current_shipments() -> sa.ScalarSelect[int]:
    """The newest shipment of each claim: the parcel that counts now."""
    return sa.select(sa.func.max(Shipment.id)).group_by(col(Shipment.claim_id)).scalar_subquery()


def label_queue(*, session: Session, base_url: str, wanted: QueueFilter = QueueFilter()) -> Queue:
    """Parcels waiting for a label and not in a live run, oldest first."""
    now = utcnow()
    live_runs = {
        run.id
        for run in session.exec(
            select(LabelRun)
            .options(sa.orm.defer(LabelRun.pdf))  # type: ignore[arg-type]
            .where(col(LabelRun.status).in_(_RENDERING))
        ).all()
        if run.is_live(now)
    }
    printable = CLAIM_LIFECYCLE.statuses_allowing(ClaimAction.PRINT_LABEL)
    waiting = _parcels(session, base_url, col(Claim.status).in_(printable))
    free = [(claim, parcel) for claim, parcel in waiting if claim.label_run_id not in live_runs]
    parcels = [parcel for _claim, parcel in free]
    return Queue(
        parcels=[parcel for parcel in parcels if wanted.admits(parcel, now)],
        total=len(parcels),
        by_country=Counter(parcel.label.country for parcel in parcels),
        by_model=Counter(sku for parcel in parcels for sku in parcel.skus),
        in_runs=len(waiting) - len(free),
    )


def parcels_with_status(
    *, session: Session, status: ClaimStatus, base_url: str
) -> list[QueuedParcel]:
    """The current parcels of claims in ``status``, oldest first."""
    return [p for _c, p in _parcels(session, base_url, col(Claim.status) == status.value)]


def parcels_of_claims(
    *, session: Session, claim_ids: Sequence[int], base_url: str
) -> list[QueuedParcel]:
    """The current parcels of these claims, whatever their status, oldest first."""
    return [p for _c, p in _parcels(session, base_url, col(Claim.id).in_(claim_ids))]


def _parcels(
    session: Session, base_url: str, condition: sa.ColumnElement[bool]
) -> list[tuple[Claim, QueuedParcel]]:
    rows = session.exec(
        select(Claim, Shipment)
        .join(Shipment, col(Shipment.claim_id) == Claim.id)
        .where(condition, col(Shipment.id).in_(current_shipments()))
        .order_by(col(Shipment.created_at), col(Claim.id))
    ).all()
    names = {model.sku: model.name for model in session.exec(select(KeyModel)).all()}
    return [
        (
            claim,
            QueuedParcel(
                claim_id=claim.id or 0,
                queued_at=shipment.created_at,
                skus=tuple(sorted(shipment.items)),
                label=ParcelLabel(
                    reference=shipment.reference,
                    claim_reference=f"Claim {claim.id} · code …{claim.code_hint}",
                    recipient_lines=list(shipment.address_lines),
                    recipient_local=shipment.recipient_name_local,
                    phone=shipment.phone,
                    country=shipment.country,
                    items=[(names.get(sku, sku), n) for sku, n in sorted(shipment.items.items())],
                    activation_url=f"{base_url}/claim/keys",
                ),
            ),
        )
        for claim, shipment in rows
    ]


def find_parcel(*, session: Session, reference: str) -> tuple[Claim, Shipment]:
    """The claim and shipment behind a scanned or typed reference (case and blanks forgiven)."""
    wanted = "".join(reference.split()).upper()
    row = session.exec(
        select(Claim, Shipment)
        .join(Shipment, col(Shipment.claim_id) == Claim.id)
        .where(Shipment.reference == wanted)
    ).first()
    if row is None:
        voided = _voided_label(session, wanted)
        if voided is not None:
            raise ParcelNotFound(
                f"The label {wanted} was voided: the parcel's reference is now "
                f"{voided.reference}. Throw the old label away and use the newest one."
            )
        raise ParcelNotFound(f"No parcel has the reference {wanted[:40]!r}.")
    return row[0], row[1]


def _voided_label(session: Session, reference: str) -> Shipment | None:
    """The parcel a voided label's reference belonged to, under its reference now (a label
    voided twice is followed to the newest)."""
    for _ in range(20):  # more voids of one parcel than any desk makes
        void = session.exec(
            select(AuditEvent)
            .where(
                AuditEvent.action == "shipment.label_voided",
                col(AuditEvent.details)["before"].as_string() == reference,
            )
            .order_by(col(AuditEvent.id).desc())
        ).first()
        if void is None:
            return None
        reference = str(void.details["after"])
        parcel = session.exec(select(Shipment).where(Shipment.reference == reference)).first()
        if parcel is not None:
            return parcel
    return None


def find_current_parcel(*, session: Session, reference: str) -> tuple[Claim, Shipment]:
    """Like ``find_parcel``, refusing a parcel that a newer one of the same claim replaced."""
    claim, shipment = find_parcel(session=session, reference=reference)
    newest = session.exec(
        select(sa.func.max(Shipment.id)).where(Shipment.claim_id == claim.id)
    ).one()
    if shipment.id != newest:
        raise ClaimLocked(
            f"Parcel {shipment.reference} was replaced by a newer parcel of the same claim: "
            "use the newest label."
        )
    return claim, shipment


def ship_parcel(
    *,
    session: Session,
    mailer: Mailer,
    settings: Settings,
    actor: Actor,
    reference: str,
    carrier: str,
    tracking_number: str,
) -> Shipment:
    """The parcel left: the ledger loses its keys and the maintainer gets a tracking link."""
    claim, shipment = find_current_parcel(session=session, reference=reference)
    parcel = f"parcel {shipment.reference}"
    CLAIM_LIFECYCLE.goes_to(ClaimAction.SHIP, claim.status, subject=parcel)
    carrier, tracking_number = checked_carrier(settings, carrier, tracking_number)
    transition_claim(session, claim, ClaimAction.SHIP, actor=actor, subject=parcel)
    stock.ship(session=session, actor=actor, items=shipment.items, reference=shipment.reference)
    shipment.carrier, shipment.tracking_number = carrier, tracking_number
    shipment.shipped_at = utcnow()
    session.flush()
    maintainer = session.get(Maintainer, claim.maintainer_id)
    assert maintainer is not None  # a foreign key guarantees it
    link = settings.tracking_url(shipment.carrier, shipment.tracking_number)
    mailer.send(
        session=session,
        mail=Mail(
            recipient=maintainer.email,
            subject="Your security keys are on their way",
            body=render(
                "parcel_shipped.txt",
                greeting_name=maintainer.greeting_name,
                reference=shipment.reference,
                carrier=shipment.carrier,
                tracking_number=shipment.tracking_number,
                tracking_link=link,
                base_url=settings.base_url,
            ),
            purpose="parcel_shipped",
        ),
    )
    return shipment


def checked_carrier(settings: Settings, carrier: str, tracking_number: str) -> tuple[str, str]:
    """The carrier as the settings spell it ("dhl" is DHL, so its tracking link is found) and
    the tracking number, trimmed; an unknown carrier or a number the parcel cannot keep is
    refused."""
    tracking = tracking_number.strip()
    if not tracking:
        raise InvalidShipping("Enter the carrier's tracking number.")
    if len(tracking) > TRACKING_NUMBER_MAX_LENGTH:
        raise InvalidShipping(
            f"A tracking number has at most {TRACKING_NUMBER_MAX_LENGTH} characters; "
            f"this one has {len(tracking):,}."
        )
    known = settings.carrier_named(carrier)
    if not known:
        named = carrier.strip()
        named = named if len(named) <= 40 else f"{named[:40]}…"
        raise InvalidShipping(
            f"{named!r} is not a carrier we ship with; the carriers are "
            f"{', '.join(settings.carriers)}."
        )
    return known, tracking


def record_delivery(
    *, session: Session, actor: Actor, reference: str, delivered_at: datetime | None = None
) -> Shipment:
    """The carrier delivered the parcel (at ``delivered_at``, by default now)."""
    claim, shipment = find_current_parcel(session=session, reference=reference)
    when = delivered_at or utcnow()
    problem = _delivery_problem(claim, shipment, when)
    if problem:
        raise ClaimLocked(f"Parcel {shipment.reference}: {problem}.")
    transition_claim(
        session, claim, ClaimAction.DELIVER, actor=actor, subject=f"parcel {shipment.reference}"
    )
    shipment.delivered_at = when
    session.flush()
    return shipment


def _delivery_problem(claim: Claim, shipment: Shipment, when: datetime) -> str:
    if not CLAIM_LIFECYCLE.allows(ClaimAction.DELIVER, claim.status):
        return f"the parcel is {_status(claim)}, not on its way"
    if when > utcnow() + timedelta(minutes=5):
        return "the delivery time is in the future"
    if shipment.shipped_at and when < shipment.shipped_at:
        return "the delivery time is before the parcel shipped"
    return ""


def void_label(*, session: Session, actor: Actor, reference: str, reason: str) -> Shipment:
    """A printed label is void (misprinted, torn, wrong printer): the parcel goes back to the
    queue under a new reference, so the old label can never be scanned by mistake."""
    claim, shipment = find_current_parcel(session=session, reference=reference)
    parcel = f"parcel {shipment.reference}"
    CLAIM_LIFECYCLE.goes_to(ClaimAction.VOID_LABEL, claim.status, subject=parcel)
    if len(reason.strip()) < 3:
        raise InvalidShipping("Say why the label is void (a few words).")
    transition_claim(session, claim, ClaimAction.VOID_LABEL, actor=actor, subject=parcel)
    before, shipment.reference = shipment.reference, new_shipment_reference()
    session.flush()
    record_event(
        session=session,
        actor=actor,
        action="shipment.label_voided",
        subject_kind="claim",
        subject_id=claim.id,
        details={"before": before, "after": shipment.reference, "reason": reason.strip()},
    )
    return shipment


def _status(claim: Claim) -> str:
    return claim.status.replace("_", " ")


# --- carrier files ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ManifestLine:
    """One line of a carrier manifest (reference, carrier, tracking number) and its problem."""

    line: int
    reference: str
    carrier: str
    tracking_number: str
    problem: str = ""


@dataclass(frozen=True)
class DeliveryLine:
    """One line of a carrier's delivery file (reference, delivered at) and its problem."""

    line: int
    reference: str
    delivered_at: datetime | None
    problem: str = ""


def _csv_rows(text: str, header: list[str]) -> list[tuple[int, list[str]]]:
    """Numbered non-blank rows of a CSV, its header (if it has one) left out. Lines may end in
    CR, LF or both, as the csv module reads them with ``newline=""``."""
    try:
        rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"), newline="")))
    except csv.Error as error:  # a cell past the csv module's field limit, say
        raise InvalidShipping(f"The text could not be read as CSV: {error}.") from None
    first = 1
    if rows and [cell.strip().lower() for cell in rows[0]] == header:
        rows, first = rows[1:], 2
    return [
        (number, row)
        for number, row in enumerate(rows, start=first)
        if any(cell.strip() for cell in row)
    ]


def read_manifest(*, session: Session, settings: Settings, text: str) -> list[ManifestLine]:
    """Check a manifest CSV line by line, without changing anything (the preview). A line's
    carrier is the settings' spelling of it."""
    lines = []
    seen: set[str] = set()
    for number, row in _csv_rows(text, ["reference", "carrier", "tracking_number"]):
        cells = [cell.strip() for cell in row] + ["", "", ""]
        reference, carrier, tracking = cells[0].upper(), cells[1], cells[2]
        problem = ""
        if len(row) != 3:
            problem = f"expected 3 columns (reference, carrier, tracking number), found {len(row)}"
        elif not carrier or not tracking:
            problem = "the carrier and the tracking number are both needed"
        elif unusable := _carrier_problem(settings, carrier, tracking):
            problem = unusable
        elif reference in seen:
            problem = "this parcel is listed twice"
        else:
            try:
                claim, _shipment = find_current_parcel(session=session, reference=reference)
            except (ParcelNotFound, ClaimLocked) as missing:
                problem = missing.message
            else:
                if not CLAIM_LIFECYCLE.allows(ClaimAction.SHIP, claim.status):
                    problem = f"the parcel is {_status(claim)}, not waiting to ship"
        seen.add(reference)
        carrier = settings.carrier_named(carrier) or carrier
        lines.append(ManifestLine(number, reference, carrier, tracking, problem))
    return lines


def _carrier_problem(settings: Settings, carrier: str, tracking_number: str) -> str:
    try:
        checked_carrier(settings, carrier, tracking_number)
    except InvalidShipping as problem:
        return problem.message
    return ""


def apply_manifest(
    *, session: Session, mailer: Mailer, settings: Settings, actor: Actor, text: str
) -> list[ManifestLine]:
    """Ship every good line of a manifest; bad lines are left as they are, with their reason."""
    lines = read_manifest(session=session, settings=settings, text=text)
    for line in lines:
        if not line.problem:
            ship_parcel(
                session=session,
                mailer=mailer,
                settings=settings,
                actor=actor,
                reference=line.reference,
                carrier=line.carrier,
                tracking_number=line.tracking_number,
            )
    return lines


def read_deliveries(*, session: Session, text: str) -> list[DeliveryLine]:
    """Check a delivery file (CSV: reference, delivered_at as ISO 8601, the time optional and
    UTC unless it says otherwise) line by line, without changing anything (the preview)."""
    lines = []
    seen: set[str] = set()
    for number, row in _csv_rows(text, ["reference", "delivered_at"]):
        cells = [cell.strip() for cell in row] + ["", ""]
        reference = cells[0].upper()
        when, problem = None, ""
        if len(row) not in (1, 2):
            problem = f"expected 2 columns (reference, delivered at), found {len(row)}"
        elif reference in seen:
            problem = "this parcel is listed twice"
        else:
            try:
                when = _moment(cells[1]) if cells[1] else utcnow()
                claim, shipment = find_current_parcel(session=session, reference=reference)
            except ValueError:
                problem = f"{cells[1][:40]!r} is not a date such as 2026-11-21 or 2026-11-21T14:05"
            except (ParcelNotFound, ClaimLocked) as missing:
                problem = missing.message
            else:
                problem = _delivery_problem(claim, shipment, when)
        seen.add(reference)
        lines.append(DeliveryLine(number, reference, when, problem))
    return lines


def apply_deliveries(*, session: Session, actor: Actor, text: str) -> list[DeliveryLine]:
    """Record every good line of a delivery file; bad lines are left, with their reason."""
    lines = read_deliveries(session=session, text=text)
    for line in lines:
        if not line.problem:
            record_delivery(
                session=session,
                actor=actor,
                reference=line.reference,
                delivered_at=line.delivered_at,
            )
    return lines


def _moment(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    try:
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError as error:  # 0001-01-01 east of UTC, 9999-12-31 west of it
        raise ValueError("beyond the calendar in UTC") from error

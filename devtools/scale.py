"""`flask --app app seed --scale N`: a large synthetic programme, for load work and report demos.

On top of the demo data it builds what a programme looks like months after opening: N
maintainers (``scale-00001`` …, at ``example.invalid``) spread over the served countries as
PyPI's maintainers are (the US and Germany large, Austria and Belgium so small that the public
page folds them into "Other countries"), each holding a role on a project of the current
critical list; one claim each, replayed move by move through the life of a claim
(``CLAIM_LIFECYCLE``) with timestamps from the programme's opening to now, so every status
occurs — codes issued (some expiring this week), expired and cancelled; parcels waiting,
printed, shipped, delivered, activated with registered Titan keys, returned and re-addressed,
lost (replacements requested, approved or declined) and damaged keys replaced. The stock comes
in a few batches of both models sized to the demand; every move writes what the services write:
ledger rows, the balances, the day-by-day ``stock_day`` history of the burn-down, and about a
hundred audit events per claim (sign-ins, the claim's moves, keys, stock), so the reports,
the audit log and the burn-down meet realistic volumes. A handful of open appeals come from
maintainers of projects just outside the list.

Rows are written with bulk inserts, not through the services one request at a time: 2,000
claims take seconds. Each synthetic person's life depends only on their number, so a second
run with the same N adds nothing and a larger N adds the difference. Afterwards the stock
report reconciles (the tests prove it), and the balances' CHECKs hold.
"""

from __future__ import annotations

import bisect
import gc
import math
import random
import secrets
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, SQLModel, col, select

from accounts.models import (
    KeyOutcome,
    Maintainer,
    SecurityKey,
    Staff,
    StaffRole,
    StaffRoleGrant,
)
from adapters.addresses import ShippingAddress, validate_address
from core.actors import Actor, ActorKind
from core.audit import AuditEvent
from core.db import utcnow
from core.settings import Settings
from distribution.claims import codes
from distribution.claims.services import new_shipment_reference
from distribution.models import (
    CLAIM_LIFECYCLE,
    TOTAL,
    Claim,
    ClaimItem,
    ClaimStatus,
    ExceptionKind,
    KeyModel,
    MovementKind,
    ParcelException,
    Replacement,
    Shipment,
    ShipmentPurpose,
    StockBalance,
    StockDay,
    StockMovement,
)
from eligibility.critical import current_list
from eligibility.models import (
    Appeal,
    CriticalEntry,
    EligibilityNotice,
    Project,
    ProjectRole,
    ProjectRoleKind,
)

# The moves the seed replays, as the action table allows them.
_TRANSITIONS = CLAIM_LIFECYCLE.transitions()
USERNAME = "scale-{:05d}"
APPEAL_USERNAME = "scale-appeal-{:05d}"
EMAIL_DOMAIN = "example.invalid"
AUDIT_EVENTS_PER_CLAIM = 100  # on average: sign-ins make up what the claim's moves do not
TITAN_V2 = "42b4fb4a-2866-43b2-9bf7-6c6669c2e5d3"
YUBIKEY_5 = "cb69481e-8ff7-4039-93ec-0a2729a154a8"
# The history must be long enough for a code to have expired and its keys to have moved on.
MIN_HISTORY_BEYOND_EXPIRY = timedelta(days=30)

# Recipients per country, roughly as PyPI's maintainers are spread; the last two are so small
# that the transparency page folds them into "Other countries".
COUNTRY_WEIGHTS = {
    "US": 0.38,
    "DE": 0.19,
    "GB": 0.12,
    "FR": 0.07,
    "CA": 0.07,
    "JP": 0.06,
    "CH": 0.04,
    "IT": 0.035,
    "ES": 0.03,
    "BE": 0.002,
    "AT": 0.0015,
}

# Street (with {n} for the number), postcode, city, region: real places, invented people.
_STREETS: dict[str, list[tuple[str, str, str, str]]] = {
    "AT": [
        ("Mariahilfer Straße {n}", "1060", "Wien", ""),
        ("Herrengasse {n}", "8010", "Graz", ""),
    ],
    "BE": [
        ("Rue de la Loi {n}", "1000", "Bruxelles", ""),
        ("Meir {n}", "2000", "Antwerpen", ""),
    ],
    "CA": [
        ("{n} Wellington Street", "K1A 0A9", "Ottawa", "Ontario"),
        ("{n} Bremner Blvd", "M5V 3L9", "Toronto", "Ontario"),
        ("{n} Rue Sainte-Catherine", "H3B 1A7", "Montréal", "Quebec"),
    ],
    "FR": [
        ("{n} Rue de Rivoli", "75001", "Paris", ""),
        ("{n} Rue de la République", "69002", "Lyon", ""),
        ("{n} Cours Mirabeau", "13100", "Aix-en-Provence", ""),
    ],
    "DE": [
        ("Unter den Linden {n}", "10117", "Berlin", ""),
        ("Bodestraße {n}", "10178", "Berlin", ""),
        ("Marienplatz {n}", "80331", "München", ""),
        ("Jungfernstieg {n}", "20354", "Hamburg", ""),
    ],
    "IT": [
        ("Via del Corso {n}", "00186", "Roma", "Roma"),
        ("Via Dante {n}", "20121", "Milano", "Milano"),
    ],
    "JP": [
        ("1-9-{n} Marunouchi", "1000005", "Chiyoda-ku", "Tokyo"),
        ("2-{n} Umeda", "5300001", "Kita-ku", "Osaka"),
    ],
    "ES": [
        ("Calle de Alcalá {n}", "28014", "Madrid", "Madrid"),
        ("Passeig de Gràcia {n}", "08007", "Barcelona", "Barcelona"),
    ],
    "CH": [
        ("Bahnhofstrasse {n}", "8001", "Zürich", ""),
        ("Bundesplatz {n}", "3003", "Bern", ""),
    ],
    "GB": [
        ("{n} Great Russell Street", "WC1B 3DG", "London", ""),
        ("{n} Deansgate", "M3 2BW", "Manchester", ""),
        ("{n} Princes Street", "EH2 2ER", "Edinburgh", ""),
    ],
    "US": [
        ("{n} Independence Ave SW", "20560", "Washington", "District of Columbia"),
        ("{n} Market Street", "94103", "San Francisco", "California"),
        ("{n} Broadway", "10006", "New York", "New York"),
        ("{n} Congress Ave", "78701", "Austin", "Texas"),
        ("{n} Pike Street", "98101", "Seattle", "Washington"),
    ],
}
_PHONE_PREFIX = {
    "AT": "+43664",
    "BE": "+32470",
    "CA": "+1613555",
    "FR": "+336",
    "DE": "+49151",
    "IT": "+39347",
    "JP": "+8190",
    "ES": "+34612",
    "CH": "+4179",
    "GB": "+447700",
    "US": "+1202555",
}
_PHONE_DIGITS = {"CA": 4, "US": 4, "GB": 6, "JP": 8, "FR": 8, "DE": 8, "CH": 7}
_GIVEN = {
    "AT": ["Anna", "Lukas", "Lena", "Tobias"],
    "BE": ["Lotte", "Arthur", "Elise", "Louis"],
    "CA": ["Chloé", "Liam", "Olivia", "Noah"],
    "FR": ["Camille", "Hugo", "Léa", "Louis"],
    "DE": ["Grete", "Jonas", "Mia", "Felix", "Hannah", "Paul"],
    "IT": ["Giulia", "Marco", "Sofia", "Luca"],
    "JP": ["Taro", "Hanako", "Yuki", "Haruto"],
    "ES": ["Lucía", "Pablo", "Martina", "Hugo"],
    "CH": ["Nina", "Noah", "Lea", "Luca"],
    "GB": ["Amelia", "Oliver", "Isla", "George"],
    "US": ["Emma", "James", "Ava", "Ethan", "Sofia", "Mason"],
}
_FAMILY = {
    "AT": ["Gruber", "Huber", "Wagner", "Pichler"],
    "BE": ["Peeters", "Janssens", "Maes", "Dubois"],
    "CA": ["Tremblay", "Smith", "Roy", "Wilson"],
    "FR": ["Martin", "Bernard", "Dubois", "Laurent"],
    "DE": ["Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Becker"],
    "IT": ["Rossi", "Russo", "Ferrari", "Bianchi"],
    "JP": ["Yamada", "Sato", "Suzuki", "Takahashi"],
    "ES": ["García", "Fernández", "López", "Martínez"],
    "CH": ["Meier", "Keller", "Brunner", "Baumann"],
    "GB": ["Jones", "Taylor", "Brown", "Evans"],
    "US": ["Johnson", "Williams", "Garcia", "Miller", "Davis", "Lee"],
}
# Japanese addresses carry the name in Japanese script too.
_KANJI = {
    "Taro": "太郎",
    "Hanako": "花子",
    "Yuki": "由紀",
    "Haruto": "陽翔",
    "Yamada": "山田",
    "Sato": "佐藤",
    "Suzuki": "鈴木",
    "Takahashi": "高橋",
}
_RETURN_REASONS = (
    "Address unknown at the destination",
    "Refused by the recipient",
    "Not collected from the depot within 14 days",
)
_LOST_REASONS = (
    "Carrier confirmed the parcel lost in transit",
    "No tracking update for three weeks; carrier investigation closed",
)
_DAMAGE_REASONS = ("USB-C connector bent", "Key not recognised by any computer")

# What becomes of a claim, and how often (the first claims take one of each, in this order,
# so even a small N shows every status).
SCENARIOS: dict[str, float] = {
    "issued": 0.055,
    "issued_expiring": 0.02,
    "expired": 0.08,
    "cancelled_code": 0.025,
    "cancelled_parcel": 0.015,
    "redeemed": 0.05,
    "label_printed": 0.03,
    "shipped": 0.07,
    "delivered": 0.12,
    "activated": 0.43,
    "returned": 0.015,
    "reshipped": 0.015,
    "lost": 0.01,
    "lost_replaced": 0.015,
    "lost_declined": 0.003,
    "damaged_open": 0.007,
    "damaged_replaced": 0.01,
}
# How far a re-sent or replacement parcel got.
_ONWARD = {
    "redeemed": 0.15,
    "label_printed": 0.1,
    "shipped": 0.15,
    "delivered": 0.2,
    "activated": 0.4,
}
_FORWARD_STEPS = {
    "redeemed": (),
    "label_printed": ("print_label",),
    "shipped": ("print_label", "ship"),
    "delivered": ("print_label", "ship", "deliver"),
    "activated": ("print_label", "ship", "deliver", "activate"),
}


@dataclass
class ScaleReport:
    maintainers_added: int = 0
    claims_added: int = 0
    batches_received: int = 0
    keys_received: int = 0
    audit_events_added: int = 0
    appeals_added: int = 0
    history_from: str = ""
    statuses: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# --- the plan of one synthetic person ---------------------------------------------------------


@dataclass(eq=False)
class _Row:
    """Something that becomes a row; its id is known once inserted."""

    id: int | None = field(default=None, init=False)


@dataclass(eq=False)
class _Role(_Row):
    project: str
    role: ProjectRoleKind
    organisation: str | None


@dataclass(eq=False)
class _Person(_Row):
    username: str
    country: str
    given: str
    family: str
    created_at: datetime
    notified_at: datetime
    roles: list[_Role]
    verified_at: datetime | None = None

    @property
    def name(self) -> str:
        return f"{self.given} {self.family}"

    @property
    def local_name(self) -> str:
        """The name in Japanese script, for a Japanese address (else none)."""
        if self.country != "JP":
            return ""
        return f"{_KANJI[self.family]} {_KANJI[self.given]}"


@dataclass(eq=False)
class _Parcel(_Row):
    reference: str
    purpose: ShipmentPurpose
    created_at: datetime
    items: dict[str, int]
    address: ShippingAddress
    name_local: str
    phone: str
    carrier: str = ""
    tracking_number: str = ""
    shipped_at: datetime | None = None
    delivered_at: datetime | None = None


@dataclass(eq=False)
class _Exception(_Row):
    parcel: _Parcel
    kind: ExceptionKind
    reason: str
    reported_at: datetime
    reported_by: str
    replacement: Replacement
    sku: str | None = None
    decided_at: datetime | None = None
    decided_by: str = ""
    decision_note: str = ""
    replacement_parcel: _Parcel | None = None


@dataclass(eq=False)
class _Key(_Row):
    sku: str
    name: str
    created_at: datetime
    outcome: KeyOutcome
    uses: int = 0
    last_used_at: datetime | None = None


@dataclass(eq=False)
class _Movement(_Row):
    at: datetime
    sku: str
    kind: MovementKind
    quantity: int
    reference: str
    actor: Actor
    note: str = ""


@dataclass(frozen=True)
class _Shift:
    """A change of the balances at a moment: on hand and committed, per model and in total."""

    at: datetime
    on_hand: Mapping[str, int]
    committed: Mapping[str, int]


@dataclass(frozen=True)
class _Event:
    """An audit event whose ids are filled in once its rows are written. The subject is the
    claim or the person it belongs to (by name), or a row of its own."""

    at: datetime
    actor: Actor | None  # None: the person themself
    action: str
    subject: str | _Row
    details: Mapping[str, Any]
    person: _Person | None = None
    claim: _Claim | None = None


@dataclass(frozen=True)
class _Staff:
    shipping: Actor
    programme: Actor


@dataclass(eq=False)
class _Claim(_Row):
    """One claim's whole life, replayed with past timestamps through the moves the services
    make: the same transitions, balance shifts, ledger rows and audit events."""

    number: int
    person: _Person
    scenario: str
    keys_per_maintainer: int
    expiry: timedelta
    staff: _Staff
    rng: random.Random
    skus: Sequence[str]
    status: ClaimStatus = ClaimStatus.ISSUED
    code_hint: str = ""
    code_hash: str = ""
    keys_reserved: int = 0
    issued_at: datetime | None = None
    expires_at: datetime | None = None
    redeemed_at: datetime | None = None
    activated_at: datetime | None = None
    closed_at: datetime | None = None
    items: dict[str, int] = field(default_factory=dict)
    parcels: list[_Parcel] = field(default_factory=list)
    exceptions: list[_Exception] = field(default_factory=list)
    keys: list[_Key] = field(default_factory=list)
    movements: list[_Movement] = field(default_factory=list)
    shifts: list[_Shift] = field(default_factory=list)
    events: list[_Event] = field(default_factory=list)

    def moves(self) -> dict[str, Callable[[datetime], None]]:
        return {
            "issue": self.issue,
            "redeem": self.redeem,
            "print_label": self.print_label,
            "ship": self.ship,
            "deliver": self.deliver,
            "activate": self.activate,
            "expire": self.expire,
            "cancel": self.cancel,
            "mark_returned": self.mark_returned,
            "reship": self.reship,
            "mark_lost": self.mark_lost,
            "report_damaged": self.report_damaged,
            "approve": self.approve,
            "decline": self.decline,
        }

    # --- the moves (as distribution.claims, fulfilment, exceptions and activation make them) --

    def issue(self, at: datetime) -> None:
        code = codes.new_code()
        self.code_hash, self.code_hint = codes.code_hash(code), code[-4:]
        self.issued_at, self.expires_at = at, at + self.expiry
        self.keys_reserved = self.keys_per_maintainer
        self.sign_in(at)
        self._shift(at, committed={TOTAL: self.keys_reserved})
        self._event(
            at,
            None,
            "claim.issued",
            "claim",
            keys_reserved=self.keys_reserved,
            expires_at=self.expires_at.isoformat(),
        )

    def redeem(self, at: datetime) -> None:
        self.sign_in(at)
        self.items = self._choose_items()
        parcel = self._new_parcel(at, ShipmentPurpose.FIRST, dict(self.items))
        promised = sum(self.items.values()) - self.keys_reserved
        self._shift(at, committed={TOTAL: promised, **self.items})
        self._move(ClaimStatus.REDEEMED, at, None)
        self.redeemed_at, self.keys_reserved = at, 0
        self._event(
            at,
            None,
            "shipment.created",
            "claim",
            items=parcel.items,
            country=parcel.address.country_code,
            shipment=parcel.reference,
        )

    def print_label(self, at: datetime) -> None:
        self._move(ClaimStatus.LABEL_PRINTED, at, self.staff.shipping)

    def ship(self, at: datetime) -> None:
        parcel = self.parcels[-1]
        self._move(ClaimStatus.SHIPPED, at, self.staff.shipping)
        self._shift(at, committed=_taken(parcel.items))
        for sku, quantity in sorted(parcel.items.items()):
            self._ledger(at, sku, MovementKind.SHIPPED, -quantity, parcel.reference)
        parcel.shipped_at = at
        parcel.carrier, parcel.tracking_number = _tracking(self.rng, parcel.address.country_code)

    def deliver(self, at: datetime) -> None:
        """The carrier's delivery file, imported by the shipping desk."""
        self._move(ClaimStatus.DELIVERED, at, self.staff.shipping)
        self.parcels[-1].delivered_at = at

    def activate(self, at: datetime) -> None:
        """The maintainer registers the Titans the claim holds (a broken one was replaced by a
        key of the same model); registering them proves a delivery the carrier had not told."""
        self.sign_in(at - timedelta(minutes=8))
        have = Counter(key.sku for key in self.keys if key.outcome == KeyOutcome.TITAN)
        for offset, sku in enumerate(sorted((Counter(self.items) - have).elements())):
            self._register(at - timedelta(minutes=5 - offset), sku, KeyOutcome.TITAN)
        if self.rng.random() < 0.03:  # a key of another make too: flagged for programme staff
            self._register(at - timedelta(minutes=2), "", KeyOutcome.OTHER)
        if self.status == ClaimStatus.SHIPPED:
            self._move(ClaimStatus.DELIVERED, at, None)
            self.parcels[-1].delivered_at = at
        self._move(ClaimStatus.ACTIVATED, at, None)

    def expire(self, at: datetime) -> None:
        self._shift(at, committed={TOTAL: -self.keys_reserved})
        self._move(ClaimStatus.EXPIRED, at, Actor.system("expire"))
        self.keys_reserved, self.closed_at = 0, at

    def cancel(self, at: datetime) -> None:
        self.sign_in(at)
        if self.status == ClaimStatus.ISSUED:
            self._shift(at, committed={TOTAL: -self.keys_reserved})
        else:
            self._shift(at, committed=_taken(self.parcels[-1].items))
        self._move(ClaimStatus.CANCELLED, at, None)
        self.keys_reserved, self.closed_at = 0, at

    def mark_returned(self, at: datetime) -> None:
        parcel = self.parcels[-1]
        self._move(ClaimStatus.RETURNED, at, self.staff.shipping)
        for sku, quantity in sorted(parcel.items.items()):
            self._ledger(
                at, sku, MovementKind.RETURNED, quantity, parcel.reference, "Returned to sender"
            )
        self._shift(at, committed={TOTAL: sum(parcel.items.values()), **parcel.items})
        reason = self.rng.choice(_RETURN_REASONS)
        self._exception(at, parcel, ExceptionKind.RETURNED, reason, Replacement.NOT_NEEDED)

    def reship(self, at: datetime) -> None:
        """The maintainer corrected the address: a new parcel with the same keys, queued."""
        self.sign_in(at)
        returned = self.parcels[-1]
        parcel = self._new_parcel(at, ShipmentPurpose.RESHIP, dict(returned.items))
        self._move(ClaimStatus.REDEEMED, at, None)
        self._event(
            at,
            None,
            "shipment.address_changed",
            "claim",
            shipment=parcel.reference,
            before={"country": returned.address.country_code},
            after={"country": parcel.address.country_code},
        )

    def mark_lost(self, at: datetime) -> None:
        self._move(ClaimStatus.LOST, at, self.staff.shipping)
        reason = self.rng.choice(_LOST_REASONS)
        self._exception(at, self.parcels[-1], ExceptionKind.LOST, reason, Replacement.REQUESTED)

    def report_damaged(self, at: datetime) -> None:
        parcel = self.parcels[-1]
        sku = self.rng.choice(sorted(parcel.items))
        reason = self.rng.choice(_DAMAGE_REASONS)
        self._exception(at, parcel, ExceptionKind.DAMAGED, reason, Replacement.REQUESTED, sku=sku)

    def approve(self, at: datetime) -> None:
        """A replacement: new stock allocated, a parcel to the same address in the queue."""
        exception = self.exceptions[-1]
        items = dict(exception.parcel.items)
        if exception.kind == ExceptionKind.DAMAGED and exception.sku:
            items = {exception.sku: 1}
        self._shift(at, committed={TOTAL: sum(items.values()), **items})
        old = exception.parcel
        parcel = self._new_parcel(at, ShipmentPurpose.REPLACEMENT, items, like=old)
        self._move(ClaimStatus.REDEEMED, at, self.staff.programme)
        self._decide(at, exception, Replacement.APPROVED, "")
        exception.replacement_parcel = parcel

    def decline(self, at: datetime) -> None:
        note = "The carrier's claim is still open: we wait for its outcome."
        self._decide(at, self.exceptions[-1], Replacement.DECLINED, note)

    def sign_in(self, at: datetime) -> None:
        """The maintainer signs in just before acting: mostly with a key once they have one,
        else by an emailed link."""
        keys = [key for key in self.keys if key.created_at < at]
        signed_in = at - timedelta(minutes=2)
        if keys and self.rng.random() < 0.7:
            key = self.rng.choice(keys)
            key.uses += 1
            key.last_used_at = max(key.last_used_at or signed_in, signed_in)
            self._event(signed_in, None, "security_key.used", key, ceremony="maintainer.sign_in")
            return
        sent = at - timedelta(minutes=self.rng.uniform(3, 20))
        expires = (sent + timedelta(minutes=30)).isoformat()
        self._event(sent, Actor.anonymous(), "sign_in.link_sent", "maintainer", expires_at=expires)
        self._event(signed_in, None, "sign_in.maintainer", "maintainer", method="email_link")
        if self.person.verified_at is None or signed_in < self.person.verified_at:
            self.person.verified_at = signed_in

    # --- what every move leaves behind --------------------------------------------------------

    def _move(self, to: ClaimStatus, at: datetime, actor: Actor | None) -> None:
        before = self.status
        if to not in _TRANSITIONS[before]:
            raise AssertionError(f"scale claim {self.number}: {before} cannot become {to}")
        if to == ClaimStatus.ACTIVATED and self.activated_at is None:
            self.activated_at = at  # reports time activation from the first one
        self.status = to
        self._event(at, actor, f"claim.{to.value}", "claim", before=before.value, after=to.value)

    def _shift(
        self,
        at: datetime,
        *,
        on_hand: Mapping[str, int] | None = None,
        committed: Mapping[str, int] | None = None,
    ) -> None:
        self.shifts.append(_Shift(at, dict(on_hand or {}), dict(committed or {})))

    def _ledger(
        self,
        at: datetime,
        sku: str,
        kind: MovementKind,
        quantity: int,
        reference: str,
        note: str = "",
    ) -> None:
        movement = _Movement(at, sku, kind, quantity, reference, self.staff.shipping, note)
        self.movements.append(movement)
        self._shift(at, on_hand={sku: quantity, TOTAL: quantity})
        self.events.append(_stock_event(movement))

    def _exception(
        self,
        at: datetime,
        parcel: _Parcel,
        kind: ExceptionKind,
        reason: str,
        replacement: Replacement,
        sku: str | None = None,
    ) -> None:
        staff = self.staff.shipping
        self.exceptions.append(
            _Exception(parcel, kind, reason, at, staff.label, replacement, sku=sku)
        )
        self._event(
            at,
            staff,
            f"parcel.{kind.value}",
            "claim",
            shipment=parcel.reference,
            reason=reason,
            sku=sku,
            replacement=replacement.value,
        )

    def _decide(
        self, at: datetime, exception: _Exception, decision: Replacement, note: str
    ) -> None:
        staff = self.staff.programme
        before = exception.replacement
        exception.replacement, exception.decision_note = decision, note
        exception.decided_at, exception.decided_by = at, staff.label
        self._event(
            at,
            staff,
            f"parcel.replacement_{decision.value}",
            "claim",
            exception=exception,
            kind=exception.kind.value,
            before=before.value,
            after=decision.value,
            note=note,
        )

    def _register(self, at: datetime, sku: str, outcome: KeyOutcome) -> None:
        titan = outcome == KeyOutcome.TITAN
        same = sum(1 for key in self.keys if key.sku == sku) + 1
        name = (
            f"{sku.removeprefix('TITAN-').removesuffix('-NFC')} key {same}" if titan else "Work key"
        )
        key = _Key(sku, name, at, outcome)
        self.keys.append(key)
        self._event(
            at,
            None,
            "security_key.registered",
            key,
            outcome=outcome.value,
            aaguid=TITAN_V2 if titan else YUBIKEY_5,
            model=_key_model_name(titan),
            format="packed",
            trusted=True,
        )

    def _event(
        self, at: datetime, actor: Actor | None, action: str, subject: str | _Row, **details: Any
    ) -> None:
        self.events.append(_Event(at, actor, action, subject, details, self.person, self))

    def _choose_items(self) -> dict[str, int]:
        keys = self.keys_per_maintainer
        if keys > 1 and self.rng.random() < 0.05:
            keys -= 1  # one is enough for some
        weights = [0.55 if "USB-C" in sku else 0.45 for sku in self.skus]
        return dict(sorted(Counter(self.rng.choices(self.skus, weights, k=keys)).items()))

    def _new_parcel(
        self,
        at: datetime,
        purpose: ShipmentPurpose,
        items: dict[str, int],
        *,
        like: _Parcel | None = None,
    ) -> _Parcel:
        parcel = _Parcel(
            reference=new_shipment_reference(),
            purpose=purpose,
            created_at=at,
            items=items,
            address=like.address if like else _address(self.rng, self.person),
            name_local=like.name_local if like else self.person.local_name,
            phone=like.phone if like else _phone(self.rng, self.person.country),
        )
        self.parcels.append(parcel)
        return parcel


def _taken(items: Mapping[str, int]) -> dict[str, int]:
    """The balance shift of keys leaving the promised figures (shipped, or given back)."""
    return {**{sku: -quantity for sku, quantity in items.items()}, TOTAL: -sum(items.values())}


def _stock_event(movement: _Movement) -> _Event:
    return _Event(
        movement.at,
        movement.actor,
        f"stock.{movement.kind.value}",
        movement,
        {
            "sku": movement.sku,
            "quantity": movement.quantity,
            "reference": movement.reference,
            "note": movement.note,
        },
    )


def _key_model_name(titan: bool) -> str:
    return "Google Titan Security Key v2" if titan else "YubiKey 5 Series"


def _address(rng: random.Random, person: _Person) -> ShippingAddress:
    street, postcode, city, area = rng.choice(_STREETS[person.country])
    raw = {
        "country_code": person.country,
        "name": person.name,
        "street_address": street.format(n=rng.randint(1, 60)),
        "postal_code": postcode,
        "city": city,
    }
    if area:
        raw["country_area"] = area
    return validate_address(raw, served=(person.country,))


def _phone(rng: random.Random, country: str) -> str:
    digits = _PHONE_DIGITS.get(country, 7)
    return _PHONE_PREFIX[country] + "".join(str(rng.randint(0, 9)) for _ in range(digits))


def _tracking(rng: random.Random, country: str) -> tuple[str, str]:
    def digits(count: int) -> str:
        return "".join(str(rng.randint(0, 9)) for _ in range(count))

    if country in ("US", "CA") or (country == "JP" and rng.random() < 0.5):
        if country != "JP" and rng.random() < 0.6:
            return "UPS", "1Z" + "".join(
                rng.choice("0123456789ACEFHJKLMNPRTVWXY") for _ in range(16)
            )
        return "FedEx", digits(12)
    return "DHL", "00340434" + digits(12)


# --- when things happen -----------------------------------------------------------------------

Steps = list[tuple[str, timedelta]]


def _days(rng: random.Random, median: float, sigma: float, low: float, high: float) -> timedelta:
    """A log-normal delay in days, clipped: most things take about ``median``, a few far longer."""
    value = math.exp(rng.gauss(math.log(median), sigma))
    return timedelta(days=min(high, max(low, value)))


# How long ago a claim left waiting in a state got there, at most: queues are recent.
_WAITING = {
    "redeemed": timedelta(days=6),
    "label_printed": timedelta(days=2),
    "shipped": timedelta(days=5),
    "delivered": timedelta(days=75),
    "returned": timedelta(days=20),
    "lost": timedelta(days=6),
    "damaged_open": timedelta(days=5),
}


def _steps(claim: _Claim) -> tuple[Steps, timedelta | None]:
    """The claim's moves, each with the delay since the one before, and how long ago the last
    one may be at most (None: any time)."""
    rng, scenario = claim.rng, claim.scenario
    expiry_days = claim.expiry / timedelta(days=1)
    slow = claim.person.country in ("JP", "CA", "US")
    delays: dict[str, Callable[[], timedelta]] = {
        "redeem": lambda: _days(rng, 1.5, 1.0, 0.01, expiry_days - 2),
        "print_label": lambda: _days(rng, 1.2, 0.6, 0.1, 10),
        "ship": lambda: _days(rng, 0.25, 0.7, 0.02, 3),
        "deliver": lambda: _days(rng, 5 if slow else 3, 0.35, 1, 14),
        "activate": lambda: _days(rng, 2.5, 1.1, 0.01, 45),
        "mark_returned": lambda: _days(rng, 10, 0.3, 5, 20),
        "reship": lambda: _days(rng, 3, 0.8, 0.1, 12),
        "mark_lost": lambda: _days(rng, 18, 0.2, 12, 30),
        "report_damaged": lambda: _days(rng, 1, 0.8, 0.05, 5),
        "approve": lambda: _days(rng, 1.5, 0.6, 0.1, 5),
        "decline": lambda: _days(rng, 2, 0.6, 0.2, 6),
    }

    def path(*names: str) -> Steps:
        return [("issue", timedelta())] + [(name, delays[name]()) for name in names]

    def onward(before: Steps) -> tuple[Steps, timedelta | None]:
        """A re-sent or replacement parcel goes through the queue again, this far."""
        stage = rng.choices(list(_ONWARD), list(_ONWARD.values()))[0]
        more = [(name, delays[name]()) for name in _FORWARD_STEPS[stage]]
        return before + more, _WAITING.get(stage)

    parcel = ("redeem", "print_label", "ship")
    if scenario in ("issued", "issued_expiring"):
        return path(), None
    if scenario == "expired":
        return [*path(), ("expire", claim.expiry + timedelta(hours=rng.uniform(0, 6)))], None
    if scenario == "cancelled_code":
        return [*path(), ("cancel", _days(rng, 2, 1, 0.05, expiry_days - 2))], None
    if scenario == "cancelled_parcel":
        return [*path("redeem"), ("cancel", _days(rng, 0.5, 1, 0.02, 3))], None
    if scenario in _FORWARD_STEPS:
        steps = path("redeem", *_FORWARD_STEPS[scenario])
        if scenario == "activated" and rng.random() < 0.3:
            steps = [step for step in steps if step[0] != "deliver"]  # the keys proved it
        return steps, _WAITING.get(scenario)
    if scenario == "returned":
        return path(*parcel, "mark_returned"), _WAITING["returned"]
    if scenario == "reshipped":
        return onward(path(*parcel, "mark_returned", "reship"))
    if scenario == "lost":
        return path(*parcel, "mark_lost"), _WAITING["lost"]
    if scenario == "lost_declined":
        return path(*parcel, "mark_lost", "decline"), None
    if scenario == "lost_replaced":
        return onward(path(*parcel, "mark_lost", "approve"))
    if scenario == "damaged_open":
        return path(*parcel, "deliver", "report_damaged"), _WAITING["damaged_open"]
    return onward(path(*parcel, "deliver", "report_damaged", "approve"))  # damaged_replaced


def _schedule(
    claim: _Claim, steps: Steps, waiting: timedelta | None, *, start: datetime, now: datetime
) -> list[tuple[str, datetime]]:
    """Absolute times for the moves: the chain fits between the opening and now (compressed if
    it must be; an expiry never is), a waiting claim's last move is recent, an open code is
    younger than its lifetime, and first codes crowd the opening weeks as they did in 2022."""
    rng, margin = claim.rng, timedelta(minutes=30)
    if claim.scenario == "issued_expiring":
        return [("issue", now - claim.expiry + timedelta(days=rng.uniform(0.5, 6.5)))]
    if claim.scenario == "issued":
        earliest = max(start, now - claim.expiry + timedelta(days=7.5))
        return [("issue", earliest + (now - margin - earliest) * rng.random())]
    fixed = sum((delay for name, delay in steps if name == "expire"), timedelta())
    total = sum((delay for _name, delay in steps), timedelta())
    room = now - start - 2 * margin
    factor = 1.0 if total <= room else max(0.0, (room - fixed) / (total - fixed))
    delays = [delay if name == "expire" else delay * factor for name, delay in steps]
    latest = now - margin - sum(delays, timedelta())
    if waiting is not None:
        first = max(start + margin, latest - waiting * rng.random())
    else:
        share = rng.uniform(0, 0.08) if rng.random() < 0.35 else rng.random()
        first = start + margin + (latest - start - margin) * share
    times, at = [], first
    for (name, _delay), delay in zip(steps, delays, strict=True):
        at += delay
        times.append((name, at))
    return times


# --- the generator ----------------------------------------------------------------------------


def history_start(*, settings: Settings, now: datetime) -> datetime:
    """The programme's opening, or earlier if it opened too recently for codes to have expired
    and their keys to have moved on (one code lifetime and a month)."""
    longest = timedelta(days=settings.claim_code_expiry_days) + MIN_HISTORY_BEYOND_EXPIRY
    return min(settings.programme_opens_at, now - longest)


def seed_scale(
    *, session: Session, settings: Settings, count: int, now: datetime | None = None
) -> ScaleReport:
    """Add the synthetic maintainers ``scale-00001`` … up to ``count`` that are missing, with
    their claims, the stock they took and the audit trail they left; return what was added."""
    # A million small objects and no cycles worth collecting: the collector's passes over
    # them would take as long as the work itself.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _seed_scale(session=session, settings=settings, count=count, now=now or utcnow())
    finally:
        if collecting:
            gc.enable()


def _seed_scale(*, session: Session, settings: Settings, count: int, now: datetime) -> ScaleReport:
    start = history_start(settings=settings, now=now)
    skus = list(session.exec(select(KeyModel.sku).order_by(col(KeyModel.sku))).all())
    countries = [c for c in COUNTRY_WEIGHTS if c in settings.countries]
    critical = _critical_projects(session)
    if not skus or not countries or not critical:
        raise ValueError(
            "--scale needs the key models, a critical list and one of the countries "
            f"{', '.join(COUNTRY_WEIGHTS)} served"
        )
    existing = _existing_numbers(session)
    staff = _staff_actors(session)
    spread = _spread(countries, count)
    claims = [
        _plan_claim(
            number,
            country=spread[number - 1],
            settings=settings,
            staff=staff,
            skus=skus,
            critical=critical,
            start=start,
            now=now,
        )
        for number in range(1, count + 1)
        if number not in existing
    ]
    receipts = _receipts(claims, skus=skus, start=start, now=now, staff=staff)
    appeal_events = _appeals(session, count=count, settings=settings, start=start, now=now)

    _insert_people(session, [claim.person for claim in claims])
    _insert_claims(session, claims, titan_aaguid=_titan_aaguid(session))
    movements = receipts + [movement for claim in claims for movement in claim.movements]
    _insert_rows(session, StockMovement, movements, _movement_values)
    shifts = [_Shift(m.at, {m.sku: m.quantity, TOTAL: m.quantity}, {}) for m in receipts]
    _apply_shifts(session, shifts + [s for claim in claims for s in claim.shifts], today=now.date())
    events = [_stock_event(m) for m in receipts] + appeal_events
    events += [event for claim in claims for event in claim.events]
    _insert_events(session, events)
    return ScaleReport(
        maintainers_added=len(claims),
        claims_added=len(claims),
        batches_received=len(receipts),
        keys_received=sum(m.quantity for m in receipts),
        audit_events_added=len(events),
        appeals_added=sum(1 for e in appeal_events if e.action == "appeal.filed"),
        history_from=start.date().isoformat(),
        statuses=dict(sorted(Counter(claim.status.value for claim in claims).items())),
    )


def _plan_claim(
    number: int,
    *,
    country: str,
    settings: Settings,
    staff: _Staff,
    skus: Sequence[str],
    critical: Sequence[str],
    start: datetime,
    now: datetime,
) -> _Claim:
    """Person ``number``'s whole story; it depends on the number (and the clock) only."""
    rng = random.Random(f"scale-{number}")  # noqa: S311 - reproducible on purpose
    scenario = (
        list(SCENARIOS)[number - 1]
        if number <= len(SCENARIOS)
        else rng.choices(list(SCENARIOS), list(SCENARIOS.values()))[0]
    )
    person = _Person(
        username=USERNAME.format(number),
        country=country,
        given=rng.choice(_GIVEN[country]),
        family=rng.choice(_FAMILY[country]),
        created_at=start,
        notified_at=start,
        roles=_roles(rng, critical),
    )
    claim = _Claim(
        number=number,
        person=person,
        scenario=scenario,
        keys_per_maintainer=settings.keys_per_maintainer,
        expiry=timedelta(days=settings.claim_code_expiry_days),
        staff=staff,
        rng=rng,
        skus=skus,
    )
    steps, waiting = _steps(claim)
    times = _schedule(claim, steps, waiting, start=start, now=now)
    # Imported with the roles some days before the first code, told soon after.
    issued_at = times[0][1]
    person.created_at = max(
        start - timedelta(days=14), issued_at - timedelta(days=rng.uniform(0.2, 20))
    )
    person.notified_at = person.created_at + (issued_at - person.created_at) * rng.uniform(
        0.05, 0.5
    )
    moves = claim.moves()
    for name, at in times:
        moves[name](at)
    _sign_ins(claim, now=now)
    return claim


def _sign_ins(claim: _Claim, *, now: datetime) -> None:
    """The rest of about a hundred audit events per claim: the person was imported and told,
    and signs in now and then to follow the claim."""
    person, rng = claim.person, claim.rng
    importer = Actor.system("import-roles")
    claim.events += [
        _Event(
            person.created_at,
            importer,
            "maintainer.created",
            "maintainer",
            {"after": {"username": person.username, "country": person.country}},
            person,
            claim,
        ),
        *(
            _Event(
                person.created_at,
                importer,
                "project_role.granted",
                role,
                {
                    "project": role.project,
                    "maintainer": person.username,
                    "before": None,
                    "after": {"role": role.role.value, "organisation": role.organisation},
                },
                person,
                claim,
            )
            for role in person.roles
        ),
        _Event(
            person.notified_at,
            Actor.system("notify"),
            "eligibility.notified",
            "maintainer",
            {"projects": [role.project for role in person.roles]},
            person,
            claim,
        ),
    ]
    target = rng.randint(AUDIT_EVENTS_PER_CLAIM - 30, AUDIT_EVENTS_PER_CLAIM + 30)
    first = person.notified_at + timedelta(minutes=30)  # the link arrives after the notice
    span = now - timedelta(minutes=1) - first
    while len(claim.events) < target:
        claim.sign_in(first + span * rng.random())


def _roles(rng: random.Random, critical: Sequence[str]) -> list[_Role]:
    """One to three roles on critical projects, the popular ones shared by more people."""
    count = min(rng.choices((1, 2, 3), (0.6, 0.3, 0.1))[0], len(critical))
    names: set[str] = set()
    while len(names) < count:
        names.add(critical[int(len(critical) * rng.random() ** 2.5)])  # favour the top
    roles = []
    for name in sorted(names):
        kind = ProjectRoleKind.OWNER if rng.random() < 0.45 else ProjectRoleKind.MAINTAINER
        organisation = f"{name}-org" if rng.random() < 0.15 else None
        roles.append(_Role(name, kind, organisation))
    return roles


def _spread(countries: Sequence[str], count: int) -> list[str]:
    """Countries for people 1 … ``count`` in the proportions of ``COUNTRY_WEIGHTS``, by smooth
    weighted round robin: close at every prefix, so a number always gets the same country."""
    weights = {country: COUNTRY_WEIGHTS[country] for country in countries}
    whole = sum(weights.values())
    current = dict.fromkeys(weights, 0.0)
    spread = []
    for _ in range(count):
        for country, weight in weights.items():
            current[country] += weight
        chosen = max(current, key=lambda country: current[country])
        current[chosen] -= whole
        spread.append(chosen)
    return spread


# --- reading what is there --------------------------------------------------------------------


def _existing_numbers(session: Session) -> set[int]:
    names = session.exec(
        select(Maintainer.username).where(col(Maintainer.username).startswith("scale-"))
    ).all()
    suffixes = (name.removeprefix("scale-") for name in names)
    return {int(suffix) for suffix in suffixes if suffix.isdigit()}


def _critical_projects(session: Session) -> list[str]:
    """The current critical list, best ranked first."""
    critical = current_list(session=session)
    if critical is None:
        return []
    return list(
        session.exec(
            select(CriticalEntry.project_name)
            .where(CriticalEntry.list_id == critical.id)
            .order_by(col(CriticalEntry.rank), col(CriticalEntry.project_name))
        ).all()
    )


def _staff_actors(session: Session) -> _Staff:
    """The demo's shipping and programme staff work the synthetic desk (else the system)."""

    def holder(role: StaffRole) -> Actor:
        staff = session.exec(
            select(Staff)
            .join(StaffRoleGrant, col(StaffRoleGrant.staff_id) == Staff.id)
            .where(StaffRoleGrant.role == role.value, col(Staff.active))
            .order_by(col(Staff.id))
        ).first()
        return Actor(ActorKind.STAFF, staff.id, staff.email) if staff else Actor.system(role)

    return _Staff(shipping=holder(StaffRole.SHIPPING), programme=holder(StaffRole.PROGRAMME))


def _titan_aaguid(session: Session) -> str:
    for aaguids in session.exec(select(KeyModel.aaguids)).all():
        if aaguids:
            return str(aaguids[0])
    return TITAN_V2


# --- stock ------------------------------------------------------------------------------------


# When batches arrive (share of the history) and how much of the whole each brings at least.
_ARRIVALS = ((0.0, 0.5), (0.35, 0.25), (0.65, 0.25))
_SPARE = 1.15


def _receipts(
    claims: Sequence[_Claim], *, skus: Sequence[str], start: datetime, now: datetime, staff: _Staff
) -> list[_Movement]:
    """Batches of each model at the opening and twice since: half the keys first, a quarter
    each later, but always enough that what the new claims take never exceeds what has
    arrived (15% to spare, in fifties)."""
    if not claims:
        return []
    arrivals = [start + (now - start) * when for when, _share in _ARRIVALS]
    # What the claims take of each model at each moment: shipped and not back, plus promised;
    # codes promise keys of no model in particular, so each model covers a share of them.
    taken: Counter[str] = Counter()
    peaks = [Counter[str]() for _ in arrivals]
    for shift in sorted((s for claim in claims for s in claim.shifts), key=lambda s: s.at):
        taken.subtract(shift.on_hand)
        taken.update(shift.committed)
        reserved = taken[TOTAL] - sum(taken[sku] for sku in skus)
        each = math.ceil(max(0, reserved) / len(skus))
        peak = peaks[max(0, bisect.bisect_right(arrivals, shift.at) - 1)]
        for sku in skus:
            peak[sku] = max(peak[sku], taken[sku] + each)
    whole = {sku: max(peak[sku] for peak in peaks) * _SPARE for sku in skus}
    batch = f"SCALE-{claims[0].number:05d}-{claims[-1].number:05d}"
    receipts, arrived, planned = [], Counter[str](), 0.0
    for phase, (at, (_when, share)) in enumerate(zip(arrivals, _ARRIVALS, strict=True)):
        planned += share
        for sku in skus:
            needed = max(peak[sku] for peak in peaks[: phase + 1]) * _SPARE
            quantity = math.ceil(max(needed, whole[sku] * planned) / 50) * 50 - arrived[sku]
            if quantity > 0:
                arrived[sku] += quantity
                receipts.append(
                    _Movement(
                        at,
                        sku,
                        MovementKind.RECEIVED,
                        quantity,
                        f"{batch}-{phase + 1}",
                        staff.programme,
                        "Synthetic batch for load work (seed --scale)",
                    )
                )
    return receipts


def _apply_shifts(session: Session, shifts: Sequence[_Shift], *, today: date) -> None:
    """Move the balances by what the new rows changed, and the burn-down's history with them:
    each day from the first change to today gets its closing figures (a day without a row of
    its own had the day before's, as the burn-down reads it)."""
    on_hand: Counter[str] = Counter()
    committed: Counter[str] = Counter()
    daily: dict[date, Counter[str]] = defaultdict(Counter)
    for shift in shifts:
        on_hand.update(shift.on_hand)
        committed.update(shift.committed)
        figures = daily[shift.at.date()]
        figures["on_hand"] += shift.on_hand.get(TOTAL, 0)
        figures["available"] += shift.on_hand.get(TOTAL, 0) - shift.committed.get(TOTAL, 0)
    for sku in sorted(set(on_hand) | set(committed)):
        session.execute(
            sa.update(StockBalance)
            .where(col(StockBalance.sku) == sku)
            .values(
                on_hand=col(StockBalance.on_hand) + on_hand[sku],
                committed=col(StockBalance.committed) + committed[sku],
            )
        )
    if not daily:
        return
    first = min(daily)
    recorded = {row.day: (row.on_hand, row.available) for row in session.exec(select(StockDay))}
    earlier = [day for day in recorded if day < first]
    carried = recorded[max(earlier)] if earlier else (0, 0)
    moved: Counter[str] = Counter()
    updates: list[dict[str, Any]] = []
    inserts: list[dict[str, Any]] = []
    for offset in range((max(today, *daily) - first).days + 1):
        day = first + timedelta(days=offset)
        moved.update(daily.get(day, {}))
        carried = recorded.get(day, carried)
        row = {
            "day": day,
            "on_hand": carried[0] + moved["on_hand"],
            "available": carried[1] + moved["available"],
        }
        (updates if day in recorded else inserts).append(row)
    if updates:
        session.execute(sa.update(StockDay), updates)
    _insert(session, StockDay, inserts)


# --- appeals ----------------------------------------------------------------------------------


def _appeals(
    session: Session, *, count: int, settings: Settings, start: datetime, now: datetime
) -> list[_Event]:
    """A handful of open appeals (one per 200 claims, at least three) from maintainers of
    projects just below the cut-off; they are few, so they go through the ORM."""
    wanted = max(3, count // 200) if count else 0
    existing = set(
        session.exec(
            select(Maintainer.username).where(col(Maintainer.username).startswith("scale-appeal-"))
        ).all()
    )
    countries = [c for c in ("US", "DE", "FR", "GB") if c in settings.countries]
    events = []
    for number in range(1, wanted + 1):
        username = APPEAL_USERNAME.format(number)
        if username in existing:
            continue
        rng = random.Random(username)  # noqa: S311 - reproducible on purpose
        created = start + (now - start) * rng.uniform(0.1, 0.9)
        filed = created + timedelta(hours=rng.uniform(1, 48))
        name = f"scale-near-miss-{number}"
        project = session.exec(select(Project).where(Project.name == name)).first()
        project = project or Project(name=name, display_name=name)
        maintainer = Maintainer(
            username=username,
            email=f"{username}@{EMAIL_DOMAIN}",
            display_name=f"Appellant {number}",
            country=rng.choice(countries or list(settings.countries)),
            created_at=created,
            email_verified_at=created,
        )
        session.add_all([project, maintainer])
        session.flush()
        appeal = Appeal(
            maintainer_id=maintainer.id,  # type: ignore[arg-type]
            created_at=filed,
            text=(
                f"{name} is a dependency of several critical projects and ranks just below the "
                "cut-off; I ask to be counted as eligible."
            ),
            projects=[name],
        )
        role = ProjectRole(
            project_id=project.id,  # type: ignore[arg-type]
            maintainer_id=maintainer.id,  # type: ignore[arg-type]
            role=ProjectRoleKind.OWNER.value,
        )
        session.add_all([appeal, role])
        session.flush()
        actor = Actor(ActorKind.MAINTAINER, maintainer.id, username)
        events += [
            _Event(
                created,
                actor,
                "sign_in.maintainer",
                _Fixed("maintainer", maintainer.id),
                {"method": "email_link"},
            ),
            _Event(
                filed,
                actor,
                "appeal.filed",
                _Fixed("appeal", appeal.id),
                {"maintainer_id": maintainer.id, "projects": [name]},
            ),
        ]
    return events


@dataclass(eq=False)
class _Fixed(_Row):
    """A subject written already (through the ORM), with its kind."""

    kind: str
    row_id: int | None

    def __post_init__(self) -> None:
        self.id = self.row_id


# --- writing ----------------------------------------------------------------------------------


def _table(model: type[SQLModel]) -> sa.Table:
    return SQLModel.metadata.tables[str(model.__tablename__)]


def _insert(session: Session, model: type[SQLModel], rows: Sequence[Mapping[str, Any]]) -> None:
    """Plain rows in bulk. Core, not the ORM: the ORM leaves out a None and so splits the
    rows into many small statements."""
    for chunk in _chunks(rows, 10_000):
        session.execute(sa.insert(_table(model)), chunk)


def _insert_rows(
    session: Session,
    model: type[SQLModel],
    rows: Sequence[_Row],
    values: Callable[[Any], dict[str, Any]],
) -> None:
    """Insert ``rows`` in bulk and give each its id (RETURNING, in the order given)."""
    if not rows:
        return
    table = _table(model)
    result = session.execute(
        sa.insert(table).returning(table.c.id, sort_by_parameter_order=True),
        [values(row) for row in rows],
    )
    for row, row_id in zip(rows, result.scalars().all(), strict=True):
        row.id = row_id


def _insert_people(session: Session, people: Sequence[_Person]) -> None:
    _insert_rows(
        session,
        Maintainer,
        people,
        lambda person: {
            "username": person.username,
            "email": f"{person.username}@{EMAIL_DOMAIN}",
            "email_verified_at": person.verified_at,
            "display_name": person.name,
            "country": person.country,
            "created_at": person.created_at,
        },
    )
    projects = _project_ids(session, sorted({r.project for p in people for r in p.roles}))
    holder = {id(role): person for person in people for role in person.roles}
    _insert_rows(
        session,
        ProjectRole,
        [role for person in people for role in person.roles],
        lambda role: {
            "project_id": projects[role.project],
            "maintainer_id": holder[id(role)].id,
            "role": role.role.value,
            "organisation": role.organisation,
            "ended_at": None,
        },
    )
    notices = [
        {
            "maintainer_id": person.id,
            "sent_at": person.notified_at,
            "projects": [role.project for role in person.roles],
        }
        for person in people
    ]
    _insert(session, EligibilityNotice, notices)


def _project_ids(session: Session, names: Sequence[str]) -> dict[str, int]:
    """Ids of the named projects, adding those the database does not know yet."""
    found: dict[str, int] = {}
    for chunk in _chunks(names, 500):
        query = sa.select(col(Project.name), col(Project.id)).where(col(Project.name).in_(chunk))
        found.update((name, project_id) for name, project_id in session.execute(query))
    missing = [name for name in names if name not in found]
    if not missing:
        return found
    _insert(session, Project, [{"name": name, "display_name": name} for name in missing])
    return _project_ids(session, names)


def _insert_claims(session: Session, claims: Sequence[_Claim], *, titan_aaguid: str) -> None:
    _insert_rows(session, Claim, claims, _claim_values)
    items = [
        {"claim_id": claim.id, "sku": sku, "quantity": quantity}
        for claim in claims
        for sku, quantity in claim.items.items()
    ]
    _insert(session, ClaimItem, items)
    claim_of = {
        id(row): claim
        for claim in claims
        for row in [*claim.parcels, *claim.exceptions, *claim.keys]
    }
    _insert_rows(
        session,
        Shipment,
        [parcel for claim in claims for parcel in claim.parcels],
        lambda parcel: _parcel_values(claim_of[id(parcel)], parcel),
    )
    _insert_rows(
        session,
        ParcelException,
        [exception for claim in claims for exception in claim.exceptions],
        lambda exception: _exception_values(claim_of[id(exception)], exception),
    )
    _insert_rows(
        session,
        SecurityKey,
        [key for claim in claims for key in claim.keys],
        lambda key: _key_values(claim_of[id(key)], key, titan_aaguid),
    )


def _claim_values(claim: _Claim) -> dict[str, Any]:
    return {
        "maintainer_id": claim.person.id,
        "status": claim.status.value,
        "code_hash": claim.code_hash,
        "code_hint": claim.code_hint,
        "keys_reserved": claim.keys_reserved,
        "issued_at": claim.issued_at,
        "expires_at": claim.expires_at,
        "redeemed_at": claim.redeemed_at,
        "activated_at": claim.activated_at,
        "closed_at": claim.closed_at,
        "label_run_id": None,
    }


def _parcel_values(claim: _Claim, parcel: _Parcel) -> dict[str, Any]:
    return {
        "claim_id": claim.id,
        "reference": parcel.reference,
        "idempotency_key": secrets.token_urlsafe(24),
        "created_at": parcel.created_at,
        "country": parcel.address.country_code,
        "recipient_name": parcel.address.name,
        "recipient_name_local": parcel.name_local,
        "phone": parcel.phone,
        "address": parcel.address.fields,
        "address_lines": list(parcel.address.lines),
        "carrier": parcel.carrier,
        "tracking_number": parcel.tracking_number,
        "shipped_at": parcel.shipped_at,
        "delivered_at": parcel.delivered_at,
        "items": dict(parcel.items),
        "purpose": parcel.purpose.value,
    }


def _exception_values(claim: _Claim, exception: _Exception) -> dict[str, Any]:
    replacement = exception.replacement_parcel
    return {
        "claim_id": claim.id,
        "shipment_id": exception.parcel.id,
        "kind": exception.kind.value,
        "reason": exception.reason,
        "sku": exception.sku,
        "reported_at": exception.reported_at,
        "reported_by": exception.reported_by,
        "replacement": exception.replacement.value,
        "decided_at": exception.decided_at,
        "decided_by": exception.decided_by,
        "decision_note": exception.decision_note,
        "replacement_shipment_id": replacement.id if replacement else None,
    }


def _key_values(claim: _Claim, key: _Key, titan_aaguid: str) -> dict[str, Any]:
    titan = key.outcome == KeyOutcome.TITAN
    return {
        "maintainer_id": claim.person.id,
        "staff_id": None,
        "credential_id": secrets.token_urlsafe(48),
        "public_key": secrets.token_bytes(77),
        "sign_count": key.uses,
        "name": key.name,
        "aaguid": titan_aaguid if titan else YUBIKEY_5,
        "attestation_format": "packed",
        "attestation_object": secrets.token_bytes(64),
        "client_data": b'{"type":"webauthn.create","synthetic":true}',
        "model": _key_model_name(titan),
        "trusted": True,
        "outcome": key.outcome.value,
        "created_at": key.created_at,
        "last_used_at": key.last_used_at,
    }


def _movement_values(movement: _Movement) -> dict[str, Any]:
    return {
        "sku": movement.sku,
        "kind": movement.kind.value,
        "quantity": movement.quantity,
        "occurred_at": movement.at,
        "actor_kind": movement.actor.kind.value,
        "actor_id": movement.actor.id,
        "actor_label": movement.actor.label,
        "reference": movement.reference,
        "note": movement.note,
    }


_SUBJECT_KINDS: dict[type[_Row], str] = {
    _Key: "security_key",
    _Movement: "stock_movement",
    _Role: "project_role",
}


def _insert_events(session: Session, events: Sequence[_Event]) -> None:
    """The audit trail in bulk, oldest first (ids follow time, as in a live log)."""
    rows = [_event_values(event) for event in sorted(events, key=lambda event: event.at)]
    _insert(session, AuditEvent, rows)


def _event_values(event: _Event) -> dict[str, Any]:
    person, claim = event.person, event.claim
    actor = event.actor
    if actor is None:
        assert person is not None  # a person's own events carry them
        actor = Actor(ActorKind.MAINTAINER, person.id, person.username)
    subject = event.subject
    if isinstance(subject, _Fixed):
        kind, subject_id = subject.kind, subject.id
    elif isinstance(subject, _Row):
        kind, subject_id = _SUBJECT_KINDS[type(subject)], subject.id
    elif subject == "claim":
        kind, subject_id = "claim", claim.id if claim else None
    else:
        kind, subject_id = "maintainer", person.id if person else None
    details = dict(event.details)
    if isinstance(details.get("exception"), _Row):
        details["exception"] = details["exception"].id
    if event.action in ("claim.issued", "security_key.registered") and person is not None:
        details["maintainer_id"] = person.id
    return {
        "occurred_at": event.at,
        "actor_kind": actor.kind.value,
        "actor_id": actor.id,
        "actor_label": actor.label[:200],
        "action": event.action,
        "subject_kind": kind,
        "subject_id": "" if subject_id is None else str(subject_id),
        "details": details,
    }


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for begin in range(0, len(items), size):
        yield items[begin : begin + size]

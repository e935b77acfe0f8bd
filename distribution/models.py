"""Tables of the distribution package: key models and the stock ledger."""

from __future__ import annotations

import enum
from datetime import date, datetime, timedelta
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from core.db import JSONType, UTCDateTime
from core.lifecycle import Lifecycle, Move
from distribution.errors import ClaimLocked, CodeUsed, RunNotFound


class MovementKind(enum.StrEnum):
    """Why stock moved; the sign of the quantity follows from it (adjustments go either way)."""

    RECEIVED = "received"
    SHIPPED = "shipped"
    RETURNED = "returned"
    WRITTEN_OFF = "written_off"
    ADJUSTED = "adjusted"


class KeyModel(SQLModel, table=True):
    """A model of security key the programme hands out."""

    __tablename__ = "key_model"

    sku: str = Field(primary_key=True, max_length=40)
    name: str = Field(max_length=100)
    connector: str = Field(max_length=20)
    # The authenticator models (AAGUIDs in the FIDO metadata) that count as this model.
    aaguids: list[str] = Field(default_factory=list, sa_type=JSONType, nullable=False)


class StockMovement(SQLModel, table=True):
    """One row of the ledger; on-hand stock is the sum of quantities, never edited in place."""

    __tablename__ = "stock_movement"
    __table_args__ = (
        sa.CheckConstraint(
            "kind IN ('received', 'shipped', 'returned', 'written_off', 'adjusted')",
            name="known_kind",
        ),
        sa.CheckConstraint(
            "(kind IN ('received', 'returned') AND quantity > 0)"
            " OR (kind IN ('shipped', 'written_off') AND quantity < 0)"
            " OR (kind = 'adjusted' AND quantity <> 0)",
            name="signed_quantity",
        ),
        # A delivery note is received once per model, however often a script is re-run.
        sa.Index(
            "uq_stock_movement_received_reference",
            "sku",
            "reference",
            unique=True,
            sqlite_where=sa.text("kind = 'received'"),
            postgresql_where=sa.text("kind = 'received'"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    sku: str = Field(foreign_key="key_model.sku", index=True, max_length=40)
    kind: str = Field(max_length=20)
    quantity: int
    occurred_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    actor_kind: str = Field(max_length=20)
    actor_id: int | None = None
    actor_label: str = Field(default="", max_length=200)
    reference: str = Field(max_length=100)
    note: str = Field(default="", max_length=1000)


class StockDay(SQLModel, table=True):
    """The programme-wide figures at the end of a day on which stock moved or was promised,
    written in the same transaction as the change: the burn-down's history."""

    __tablename__ = "stock_day"

    day: date = Field(primary_key=True)
    on_hand: int
    available: int


class LowStockAlert(SQLModel, table=True):
    """A low-stock threshold that available keys fell below, and when staff were told; the row
    is removed when received stock lifts availability back above it, re-arming the alert."""

    __tablename__ = "low_stock_alert"

    threshold: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    sent_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    available: int


TOTAL = "*"
"""The stock_balance row that holds the programme-wide figures."""


class StockBalance(SQLModel, table=True):
    """Running figures beside the ledger, so that the database itself refuses to oversell.

    ``on_hand`` mirrors the sum of the ledger (a reconciliation check proves it); ``committed``
    is what is promised: on the total row, keys reserved by outstanding codes plus keys
    allocated to parcels not yet shipped; on a model's row, that model's allocated keys. The
    CHECK constraints are the invariant: nothing can be promised that is not on hand.
    """

    __tablename__ = "stock_balance"
    __table_args__ = (
        sa.CheckConstraint("committed >= 0", name="committed_not_negative"),
        sa.CheckConstraint("committed <= on_hand", name="never_oversold"),
    )

    sku: str = Field(primary_key=True, max_length=40)
    on_hand: int = 0
    committed: int = 0


class ClaimStatus(enum.StrEnum):
    ISSUED = "issued"
    REDEEMED = "redeemed"
    LABEL_PRINTED = "label_printed"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    ACTIVATED = "activated"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    RETURNED = "returned"
    LOST = "lost"


class ClaimAction(enum.StrEnum):
    REDEEM = "redeem"
    EXPIRE = "expire"
    CANCEL = "cancel"
    CHANGE_ADDRESS = "change_address"
    PRINT_LABEL = "print_label"
    REPRINT_LABEL = "reprint_label"
    VOID_LABEL = "void_label"
    SHIP = "ship"
    DELIVER = "deliver"
    MARK_RETURNED = "mark_returned"
    MARK_LOST = "mark_lost"
    REPORT_DAMAGED = "report_damaged"
    SEND_REPLACEMENT = "send_replacement"
    ACTIVATE = "activate"


_S = ClaimStatus
_ON_ITS_WAY = "{subject} is {status}: only a parcel on its way can come back or be lost."
_ONLY_PRINTED = "{subject} is {status}: only a printed label that has not shipped can be "

# The life of a claim (DESIGN.md), written once: every change of status goes through it.
CLAIM_LIFECYCLE: Lifecycle[ClaimStatus, ClaimAction] = Lifecycle(
    ClaimStatus,
    {
        ClaimAction.REDEEM: Move(
            frozenset({_S.ISSUED}),
            _S.REDEEMED,
            "That code was already used.",
            done="{subject} changed a moment ago: its code was used in another window.",
            error=CodeUsed,
        ),
        ClaimAction.EXPIRE: Move(
            frozenset({_S.ISSUED}), _S.EXPIRED, "{subject} is {status}: only a code can expire."
        ),
        ClaimAction.CANCEL: Move(
            frozenset({_S.ISSUED, _S.REDEEMED, _S.LABEL_PRINTED, _S.RETURNED}),
            _S.CANCELLED,
            "The parcel has left, or you received keys from us already: the claim can no "
            "longer be cancelled. Write to us if you no longer need a replacement.",
            done="{subject} was cancelled a moment ago.",
        ),
        # Until the label is printed; after a parcel came back, it goes back to the queue.
        ClaimAction.CHANGE_ADDRESS: Move(
            frozenset({_S.REDEEMED, _S.RETURNED}),
            _S.REDEEMED,
            "The label is printed already, so the address can no longer change. If it is "
            "wrong, write to us at once.",
        ),
        ClaimAction.PRINT_LABEL: Move(
            frozenset({_S.REDEEMED}),
            _S.LABEL_PRINTED,
            "{subject} is {status}: only a parcel waiting for its label can be printed.",
            done="{subject} was printed a moment ago by someone else.",
        ),
        ClaimAction.REPRINT_LABEL: Move(
            frozenset({_S.LABEL_PRINTED}), None, _ONLY_PRINTED + "printed again."
        ),
        ClaimAction.VOID_LABEL: Move(
            frozenset({_S.LABEL_PRINTED}),
            _S.REDEEMED,
            _ONLY_PRINTED + "voided.",
            done="{subject} had its label voided a moment ago by someone else.",
        ),
        ClaimAction.SHIP: Move(
            frozenset({_S.LABEL_PRINTED}),
            _S.SHIPPED,
            "{subject} is {status}: only a parcel with a printed label can be shipped.",
            done="{subject} was shipped a moment ago by someone else.",
        ),
        ClaimAction.DELIVER: Move(
            frozenset({_S.SHIPPED}),
            _S.DELIVERED,
            "{subject}: the parcel is {status}, not on its way.",
            done="{subject} was recorded as delivered a moment ago.",
        ),
        ClaimAction.MARK_RETURNED: Move(
            frozenset({_S.SHIPPED}),
            _S.RETURNED,
            _ON_ITS_WAY,
            done="{subject} was recorded as returned a moment ago by someone else.",
        ),
        ClaimAction.MARK_LOST: Move(
            frozenset({_S.SHIPPED}),
            _S.LOST,
            _ON_ITS_WAY,
            done="{subject} was recorded as lost a moment ago by someone else.",
        ),
        ClaimAction.REPORT_DAMAGED: Move(
            frozenset({_S.DELIVERED, _S.ACTIVATED}),
            None,
            "{subject} is {status}: a damaged key is reported once its newest parcel is "
            "delivered (record the delivery first).",
        ),
        # A replacement approved by programme staff goes through the queue like any parcel.
        ClaimAction.SEND_REPLACEMENT: Move(
            frozenset({_S.LOST, _S.DELIVERED, _S.ACTIVATED}),
            _S.REDEEMED,
            "{subject} is {status}: only a lost parcel or delivered keys can be replaced.",
            done="{subject} had its replacement approved a moment ago by someone else.",
        ),
        # Registering the keys proves they arrived: a shipped parcel is delivered first.
        ClaimAction.ACTIVATE: Move(
            frozenset({_S.DELIVERED}),
            _S.ACTIVATED,
            "{subject} is {status}: only delivered keys can be activated.",
            done="{subject} was activated a moment ago.",
        ),
    },
    refused=ClaimLocked,
)
CLOSED_STATUSES = (ClaimStatus.EXPIRED.value, ClaimStatus.CANCELLED.value)


class Claim(SQLModel, table=True):
    """A maintainer's claim: a code that reserves keys, then the parcel it becomes."""

    __tablename__ = "claim"
    __table_args__ = (
        sa.CheckConstraint(
            "status IN ('issued', 'redeemed', 'label_printed', 'shipped', 'delivered', "
            "'activated', 'expired', 'cancelled', 'returned', 'lost')",
            name="known_status",
        ),
        sa.CheckConstraint("keys_reserved >= 0", name="reserved_not_negative"),
        # One active claim per maintainer: expired and cancelled claims do not count.
        sa.Index(
            "uq_claim_active_per_maintainer",
            "maintainer_id",
            unique=True,
            sqlite_where=sa.text("status NOT IN ('expired', 'cancelled')"),
            postgresql_where=sa.text("status NOT IN ('expired', 'cancelled')"),
        ),
        sa.Index("ix_claim_status_expires", "status", "expires_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    maintainer_id: int = Field(foreign_key="maintainer.id", index=True)
    status: str = Field(default=ClaimStatus.ISSUED.value, max_length=20)
    code_hash: str = Field(max_length=64, unique=True)
    code_hint: str = Field(max_length=8)
    keys_reserved: int
    issued_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    redeemed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # The first time as many Titans were registered as were shipped (reports time activation).
    activated_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    closed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # Set while a label run renders this claim's label: no second run takes it, and its address
    # cannot change under the printer.
    label_run_id: int | None = Field(default=None, foreign_key="label_run.id")


class ClaimItem(SQLModel, table=True):
    """Keys of one model allocated to a redeemed claim."""

    __tablename__ = "claim_item"
    __table_args__ = (sa.CheckConstraint("quantity > 0", name="positive_quantity"),)

    claim_id: int = Field(foreign_key="claim.id", primary_key=True)
    sku: str = Field(foreign_key="key_model.sku", primary_key=True, max_length=40)
    quantity: int


class ShipmentPurpose(enum.StrEnum):
    FIRST = "first"
    RESHIP = "reship"  # after a return, to the address the maintainer corrected
    REPLACEMENT = "replacement"  # for a lost parcel or a damaged key, approved by programme staff


# The longest tracking number a parcel keeps (shipment.tracking_number); carriers' names are
# limited by the settings (CARRIER_NAME_MAX_LENGTH).
TRACKING_NUMBER_MAX_LENGTH = 60


class Shipment(SQLModel, table=True):
    """One parcel of a claim (the newest is the current one). The address is personal data,
    kept only as long as needed."""

    __tablename__ = "shipment"

    id: int | None = Field(default=None, primary_key=True)
    claim_id: int = Field(foreign_key="claim.id", index=True)
    reference: str = Field(max_length=20, unique=True)
    # A redemption form carries a random key, so a double submit finds the first shipment.
    idempotency_key: str = Field(max_length=64, unique=True)
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    country: str = Field(max_length=2)
    recipient_name: str = Field(max_length=100)
    recipient_name_local: str = Field(default="", max_length=200)
    phone: str = Field(max_length=20)
    address: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType, nullable=False)
    address_lines: list[str] = Field(default_factory=list, sa_type=JSONType, nullable=False)
    carrier: str = Field(default="", max_length=40)
    tracking_number: str = Field(default="", max_length=TRACKING_NUMBER_MAX_LENGTH)
    shipped_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    delivered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # What this parcel holds, {sku: quantity}: the claim's keys, or one key replacing a damaged one.
    items: dict[str, int] = Field(default_factory=dict, sa_type=JSONType, nullable=False)
    purpose: str = Field(default=ShipmentPurpose.FIRST.value, max_length=20)
    # When the names, phone, address and tracking number were erased under the retention
    # policy (distribution/personal_data.py); what reports need stays.
    personal_data_erased_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class WaitlistEntry(SQLModel, table=True):
    """A maintainer who asked for keys when none were left; offered freed keys in order."""

    __tablename__ = "waitlist_entry"
    __table_args__ = (
        sa.Index(
            "uq_waitlist_waiting_maintainer",
            "maintainer_id",
            unique=True,
            sqlite_where=sa.text("offered_at IS NULL"),
            postgresql_where=sa.text("offered_at IS NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    maintainer_id: int = Field(foreign_key="maintainer.id", index=True)
    joined_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    offered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    claim_id: int | None = Field(default=None, foreign_key="claim.id")


class LabelRunStatus(enum.StrEnum):
    RENDERING = "rendering"
    DONE = "done"
    FAILED = "failed"


class LabelRunAction(enum.StrEnum):
    FINISH = "finish"
    FAIL = "fail"
    DOWNLOAD = "download"


LABEL_RUN_LIFECYCLE: Lifecycle[LabelRunStatus, LabelRunAction] = Lifecycle(
    LabelRunStatus,
    {
        LabelRunAction.FINISH: Move(
            frozenset({LabelRunStatus.RENDERING}),
            LabelRunStatus.DONE,
            "{subject} is {status}: only a run that is rendering can finish.",
        ),
        LabelRunAction.FAIL: Move(
            frozenset({LabelRunStatus.RENDERING}),
            LabelRunStatus.FAILED,
            "{subject} is {status}: only a run that is rendering can fail.",
        ),
        LabelRunAction.DOWNLOAD: Move(
            frozenset({LabelRunStatus.DONE}),
            None,
            "This run has no PDF: it is still rendering or it failed.",
        ),
    },
    refused=RunNotFound,
)


class LabelRun(SQLModel, table=True):
    """A PDF of labels and packing slips, rendered in the background; staff follow its pages
    and download it when done. A first print moves its claims to label_printed at the end."""

    __tablename__ = "label_run"
    __table_args__ = (
        sa.CheckConstraint(
            "status IN ('rendering', 'done', 'failed')", name="known_label_run_status"
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    reprint: bool = False
    layout: str = Field(max_length=10)
    claim_ids: list[int] = Field(default_factory=list, sa_type=JSONType, nullable=False)
    status: str = Field(default=LabelRunStatus.RENDERING.value, max_length=10)
    pages_done: int = 0
    pages_total: int = 0
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    # Renewed as pages are done: a run whose process died stops holding its claims.
    heartbeat_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    actor_kind: str = Field(max_length=20)
    actor_id: int | None = None
    actor_label: str = Field(default="", max_length=200)
    printed: int = 0
    # References whose claims changed (cancelled, say) while the run rendered: discard them.
    skipped: list[str] = Field(default_factory=list, sa_type=JSONType, nullable=False)
    error: str = Field(default="", max_length=1000)
    pdf: bytes | None = Field(default=None, sa_type=sa.LargeBinary, nullable=True)
    # The PDF holds every parcel's address: it goes under the retention policy like they do.
    pdf_erased_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

    # Far longer than a chunk of pages takes, even on a busy machine.
    STALE_AFTER: ClassVar[timedelta] = timedelta(minutes=2)

    def is_live(self, now: datetime) -> bool:
        """Rendering, in a process that is still alive (its heartbeat is recent)."""
        return (
            LABEL_RUN_LIFECYCLE.allows(LabelRunAction.FINISH, self.status)
            and self.heartbeat_at >= now - self.STALE_AFTER
        )


class ExceptionKind(enum.StrEnum):
    RETURNED = "returned"  # back to sender
    LOST = "lost"  # in transit
    DAMAGED = "damaged"  # one key arrived broken


class Replacement(enum.StrEnum):
    NOT_NEEDED = "not_needed"  # a returned parcel is simply sent again
    REQUESTED = "requested"  # waits for programme staff
    APPROVED = "approved"
    DECLINED = "declined"


class ReplacementAction(enum.StrEnum):
    APPROVE = "approve"
    DECLINE = "decline"


_DECIDED = "This replacement was {status} already."
REPLACEMENT_LIFECYCLE: Lifecycle[Replacement, ReplacementAction] = Lifecycle(
    Replacement,
    {
        ReplacementAction.APPROVE: Move(
            frozenset({Replacement.REQUESTED}), Replacement.APPROVED, _DECIDED
        ),
        ReplacementAction.DECLINE: Move(
            frozenset({Replacement.REQUESTED}), Replacement.DECLINED, _DECIDED
        ),
    },
    refused=ClaimLocked,
)


class ParcelException(SQLModel, table=True):
    """Something went wrong with a shipped parcel, and what the programme decided about it."""

    __tablename__ = "parcel_exception"
    __table_args__ = (
        sa.CheckConstraint("kind IN ('returned', 'lost', 'damaged')", name="known_exception_kind"),
        sa.CheckConstraint(
            "replacement IN ('not_needed', 'requested', 'approved', 'declined')",
            name="known_replacement",
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    claim_id: int = Field(foreign_key="claim.id", index=True)
    shipment_id: int = Field(foreign_key="shipment.id")
    kind: str = Field(max_length=20)
    reason: str = Field(max_length=1000)
    sku: str | None = Field(default=None, foreign_key="key_model.sku", max_length=40)
    reported_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    reported_by: str = Field(max_length=200)
    replacement: str = Field(max_length=20)
    decided_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    decided_by: str = Field(default="", max_length=200)
    decision_note: str = Field(default="", max_length=1000)
    replacement_shipment_id: int | None = Field(default=None, foreign_key="shipment.id")

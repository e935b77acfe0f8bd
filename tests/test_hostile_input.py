"""Hostile input: every form and JSON endpoint, driven by hypothesis with random and boundary
input — huge fields, control characters and NUL, unicode oddities, escaped surrogates, wrong JSON
types, missing and duplicated fields, bodies that are not what they claim to be, odd ids in the
URL — and then single-use tokens replayed and other maintainers' ids tried.

Whatever arrives, the answer is a 2xx/3xx/4xx that tells a person something (a page's message or
a JSON ``message``), never a 500. A refused request leaves every table as it was (the audit
events of refused sign-ins aside); an accepted change leaves an audit event; the stock ledger
always reconciles with the balances. CSRF stays on: forms carry the token of a page.

``TARGETS`` must name every route that takes input (every POST and every ``/api/`` route), and
``OWNED`` every route whose URL names a claim, parcel, label run, parcel exception or key: a new
route without an entry fails, so no route skips being thought about.
"""

from __future__ import annotations

import io
import json
import operator
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import quote, urlencode
from uuid import UUID

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import Session, col, select
from werkzeug.datastructures import MultiDict
from werkzeug.test import TestResponse

from accounts import second_factor
from accounts.access import METADATA_EXTENSION
from accounts.models import Maintainer, SecurityKey, SignInRequest, Staff, StaffRole
from accounts.services import send_sign_in_link
from adapters import webauthn
from app import import_models
from core.db import utcnow
from core.mail import DELIVER_TASK, OutboxMailer, OutboxMessage
from core.settings import Settings
from core.tasks import Task, TaskStatus
from distribution.activation import services as activation
from distribution.claims import services as claims
from distribution.shipping import exceptions
from distribution.stock.services import stock_figures
from eligibility import appeals
from tests import soft_authenticator
from tests.conftest import Mailbox
from tests.factories import (
    ACTOR,
    STAFF_PASSWORD,
    USB_A,
    USB_C,
    csrf_token,
    make_maintainer,
    make_owner,
    make_staff,
    print_labels,
    redeem_parcel,
    ship,
    shipped_parcel,
    stock_famous_project,
)
from tests.soft_authenticator import SoftAuthenticator, TestCA
from web.security import limiter

TITAN = UUID("42b4fb4a-2866-43b2-9bf7-6c6669c2e5d3")
ORIGIN = "http://localhost"
FORM = "application/x-www-form-urlencoded"
# Examples per route, each one request: about 45 routes, so the file takes well under a minute.
# KEYS_HOSTILE_EXAMPLES=500 searches longer, for a run by hand.
EXAMPLES = int(os.environ.get("KEYS_HOSTILE_EXAMPLES", "16"))

# --- the programme every test starts from -----------------------------------------------------


@dataclass
class World:
    """People at every step of a claim, an admin with keys, and the ids of what they own."""

    staff: Staff  # an admin (admins hold every role), with two keys and recovery codes
    people: dict[str, Maintainer]
    values: dict[str, Any]  # what the targets' paths and fields name in {braces}
    keys: dict[str, SoftAuthenticator]
    # The CSRF secret every request of the test carries. Signing in gives a session a new one
    # (and the rolled-back examples take the session's row with them), so it is kept here.
    csrf_secret: str = ""


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA.create()


@pytest.fixture
def metadata(app: Flask, ca: TestCA) -> webauthn.Metadata:
    """The FIDO metadata, with the test CA as the Titan's root: the app trusts it too."""
    trusted = webauthn.Metadata.bundled().with_extra_entry(
        aaguid=TITAN, root_certificate=ca.der, description="Google Titan Security Key v2"
    )
    app.extensions[METADATA_EXTENSION] = trusted
    return trusted


def register_maintainer_key(
    session: Session,
    settings: Settings,
    metadata: webauthn.Metadata,
    person: Maintainer,
    key: SoftAuthenticator,
    *,
    attestation: str = "packed",
) -> SecurityKey:
    options, token = activation.begin_registration(
        session=session, settings=settings, maintainer=person
    )
    return activation.finish_registration(
        session=session,
        settings=settings,
        metadata=metadata,
        actor=ACTOR,
        maintainer=person,
        token=token,
        response=key.register(options, origin=ORIGIN, attestation=attestation),
        name="My key",
    ).key


def register_staff_key(
    session: Session,
    settings: Settings,
    metadata: webauthn.Metadata,
    staff: Staff,
    key: SoftAuthenticator,
) -> tuple[SecurityKey, list[str]]:
    options, token = second_factor.registration_options(
        session=session, settings=settings, staff=staff
    )
    return second_factor.register(
        session=session,
        settings=settings,
        metadata=metadata,
        staff=staff,
        token=token,
        response=key.register(options, origin=ORIGIN, attestation="none"),
        name="Desk key",
    )


def sign_in_token(session: Session, person: Maintainer) -> str:
    """A fresh single-use sign-in link's token, as the email carries it."""
    session.add(request := SignInRequest(email=person.email, created_at=utcnow()))
    session.flush()
    send_sign_in_link(
        session=session,
        mailer=OutboxMailer(),
        request_id=request.id or 0,
        base_url=ORIGIN,
        valid_for=timedelta(minutes=15),
    )
    mail = session.exec(select(OutboxMessage).order_by(col(OutboxMessage.id).desc())).first()
    assert mail is not None
    return str(re.findall(r"/sign-in/link/(\S+)", mail.body)[-1])


HAMBURG = {
    "country_code": "DE",
    "city": "Hamburg",
    "postal_code": "20095",
    "street_address": "Jungfernstieg 7",
    "name": "Bea Privatperson",
}


@pytest.fixture
def world(app, session, settings, metadata, ca, monkeypatch) -> World:
    # Rate limits would turn most examples into 429s; they have tests of their own.
    monkeypatch.setattr(limiter, "enabled", False)
    stock_famous_project(session, {USB_A: 40, USB_C: 40})
    people: dict[str, Maintainer] = {}
    keys: dict[str, SoftAuthenticator] = {}

    # A parcel waiting for its label: its address may change, its claim be cancelled.
    people["redeemer"], waiting = redeem_parcel(session, settings)
    # A code issued, not yet redeemed.
    people["holder"] = make_owner(session, "famous", country="DE")
    issued = claims.issue_claim_code(
        session=session,
        mailer=OutboxMailer(),
        settings=settings,
        actor=ACTOR,
        maintainer=people["holder"],
    )
    assert isinstance(issued, claims.IssuedCode)
    # Eligible, nothing asked for yet.
    people["newcomer"] = make_owner(session, "famous", country="DE")
    # A printed label waiting to ship.
    people["printed"], printed = redeem_parcel(session, settings)
    run = print_labels(session, settings, [printed.claim_id])
    # A parcel on its way, one Titan registered and one key of unknown make (flagged).
    people["receiver"], shipped = shipped_parcel(session, settings, address=HAMBURG)
    keys["receiver"] = SoftAuthenticator(aaguid=TITAN, ca=ca)
    register_maintainer_key(session, settings, metadata, people["receiver"], keys["receiver"])
    flagged = register_maintainer_key(
        session,
        settings,
        metadata,
        people["receiver"],
        SoftAuthenticator(aaguid=TITAN),
        attestation="none",
    )
    # A lost parcel whose replacement waits for programme staff.
    people["loser"], lost = shipped_parcel(session, settings)
    lost_case = exceptions.mark_lost(
        session=session,
        mailer=OutboxMailer(),
        actor=ACTOR,
        reference=lost.reference,
        reason="The carrier says it is lost",
    )
    # Not eligible, appealing.
    people["appellant"] = make_maintainer(session)
    appeal = appeals.file_appeal(
        session=session,
        actor=ACTOR,
        maintainer=people["appellant"],
        text="I maintain the build tooling that every critical project uses.",
        projects=["setuptools"],
    )

    staff = make_staff(session, name="Desk Admin")
    colleague = make_staff(session, roles=[StaffRole.SHIPPING])
    keys["staff"] = SoftAuthenticator(aaguid=TITAN)
    # Recovery codes are keyed with the secret key: the app's own, which checks them.
    app_settings = app.extensions["keys_settings"]
    staff_key, codes = register_staff_key(session, app_settings, metadata, staff, keys["staff"])
    register_staff_key(session, app_settings, metadata, staff, SoftAuthenticator(aaguid=TITAN))
    # A well-formed answer to a challenge nobody will ask again.
    stale = SoftAuthenticator(aaguid=TITAN, ca=ca).register(
        activation.begin_registration(
            session=session, settings=settings, maintainer=people["receiver"]
        )[0],
        origin=ORIGIN,
    )
    # A delivery that failed for good, for an admin to retry.
    failed_task = Task(
        name=DELIVER_TASK,
        subject_id=999_999,  # a message no longer there: the retried task fails again at once
        created_at=utcnow(),
        run_after=utcnow(),
        status=TaskStatus.FAILED.value,
        attempts=8,
        max_attempts=8,
        error="The mail server refused it for good: 550 no such mailbox",
    )
    session.add(failed_task)
    session.flush()
    values: dict[str, Any] = {
        "waiting_claim": waiting.claim_id,
        "printed_claim": printed.claim_id,
        "printed_reference": printed.reference,
        "shipped_reference": shipped.reference,
        "run": run.id,
        "exception": lost_case.id,
        "appeal": appeal.id,
        "flagged_key": flagged.id,
        "staff_key": staff_key.id,
        "failed_task": failed_task.id,
        "colleague": colleague.id,
        "code": issued.code,
        "recovery_code": codes[0],
        "link": sign_in_token(session, people["redeemer"]),
        "receiver_email": people["receiver"].email,
        "staff_email": staff.email,
        "stale_credential": stale,
    }
    return World(staff=staff, people=people, values=values, keys=keys)


# --- who sends what --------------------------------------------------------------------------

ANYONE, PENDING, STAFF = "", "pending staff", "staff"


@dataclass(frozen=True)
class Target:
    """One route taking input: whom it is for, its path and the fields a browser (or the page's
    script) sends, by value. ``{name}`` is filled from the world; ``fuzz_path`` names the path
    parts that hypothesis may replace as well."""

    who: str  # ANYONE, PENDING, STAFF, or a maintainer of the world by role
    path: str
    fields: Mapping[str, str | list[str] | dict[str, Any]] = field(default_factory=dict)
    kind: str = "form"  # form, json, upload (multipart) or query (a GET form)
    fuzz_path: Mapping[str, Sequence[str]] = field(default_factory=dict)  # part → good values


ADDRESS = {
    "country": "DE",
    "recipient_name": "Ada Demo",
    "recipient_name_local": "",
    "phone": "+49 30 1234567",
    "address_street_address": "Unter den Linden 1",
    "address_city": "Berlin",
    "address_postal_code": "10117",
}
REASON = {"reason": "The carrier confirmed it on the phone."}
MANIFEST = "reference,carrier,tracking_number\n{printed_reference},DHL,00340434161234567891\n"
DELIVERIES = "reference,delivered_at\n{shipped_reference},2026-01-02T10:00\n"
CREDENTIAL = {"token": "{token}", "name": "My key", "credential": "{stale_credential}"}
PARCEL_ACTIONS = ["void", "deliver", "returned", "lost", "damaged"]

# (endpoint, method) → the route as a browser or the page script uses it.
TARGETS: dict[tuple[str, str], Target] = {
    # public
    ("accounts.sign_in", "POST"): Target(ANYONE, "/sign-in", {"email": "{receiver_email}"}),
    ("accounts.sign_in_link", "POST"): Target(
        ANYONE, "/sign-in/link/{link}", fuzz_path={"link": ["{link}"]}
    ),
    ("accounts.sign_out", "POST"): Target("redeemer", "/sign-out"),
    ("accounts.staff_sign_in", "POST"): Target(
        ANYONE,
        "/staff/sign-in?next={next}",
        {"email": "{staff_email}", "password": STAFF_PASSWORD},
        fuzz_path={"next": ["/staff/audit"]},
    ),
    ("eligibility.project_lookup", "GET"): Target(
        ANYONE, "/projects", {"name": "famous"}, kind="query"
    ),
    ("eligibility.project_api", "GET"): Target(
        ANYONE, "/api/projects/{name}", kind="query", fuzz_path={"name": ["famous", "x"]}
    ),
    ("activation.sign_in_options", "POST"): Target(
        ANYONE, "/api/sign-in/key/options", {"email": "{receiver_email}"}, kind="json"
    ),
    ("activation.sign_in_with_key", "POST"): Target(
        ANYONE, "/api/sign-in/key", CREDENTIAL, kind="json"
    ),
    # between a staff password and the key
    ("staff_keys.sign_in_options", "POST"): Target(
        PENDING, "/api/staff/sign-in/key/options", kind="json"
    ),
    ("staff_keys.sign_in_with_key", "POST"): Target(
        PENDING, "/api/staff/sign-in/key", CREDENTIAL, kind="json"
    ),
    ("staff_keys.sign_in_with_recovery_code", "POST"): Target(
        PENDING, "/staff/sign-in/recovery", {"code": "{recovery_code}"}
    ),
    # maintainers
    ("claims.set_country", "POST"): Target("redeemer", "/eligibility/country", {"country": "FR"}),
    ("eligibility.appeal", "POST"): Target(
        "newcomer",
        "/eligibility/appeal",
        {"text": "I keep a critical project's release tooling.", "projects": "famous, x"},
    ),
    ("claims.get_code", "POST"): Target("newcomer", "/claim/code"),
    ("claims.redeem", "GET"): Target(
        "holder", "/claim/redeem", {"code": "{code}", "country": "JP"}, kind="query"
    ),
    ("claims.redeem", "POST"): Target(
        "holder",
        "/claim/redeem",
        {
            **ADDRESS,
            "code": "{code}",
            "idempotency_key": "hostile-input-redemption",
            f"quantity_{USB_A}": "1",
            f"quantity_{USB_C}": "1",
        },
    ),
    ("claims.change_address", "POST"): Target(
        "redeemer",
        "/claim/{claim}/address",
        ADDRESS,
        fuzz_path={"claim": ["{waiting_claim}"]},
    ),
    ("claims.cancel", "POST"): Target(
        "redeemer", "/claim/{claim}/cancel", fuzz_path={"claim": ["{waiting_claim}"]}
    ),
    ("personal_data.erase", "POST"): Target("redeemer", "/account/data/erase", {"confirm": "y"}),
    ("accounts.end_session", "POST"): Target(
        "redeemer", "/account/sessions/end", {"which": "others"}
    ),
    ("activation.registration_options", "POST"): Target(
        "receiver", "/api/claim/keys/options", kind="json"
    ),
    ("activation.register_key", "POST"): Target(
        "receiver", "/api/claim/keys", CREDENTIAL, kind="json"
    ),
    ("activation.remove_key", "POST"): Target(
        "receiver", "/claim/keys/{key}/remove", fuzz_path={"key": ["{flagged_key}"]}
    ),
    # staff
    ("accounts.staff_create", "POST"): Target(
        STAFF,
        "/staff/people/new",
        {"email": "new.colleague@example.org", "name": "New Colleague", "roles": ["shipping"]},
    ),
    ("accounts.staff_edit", "POST"): Target(
        STAFF,
        "/staff/people/{staff}",
        {"name": "Renamed Colleague", "roles": ["shipping", "viewer"], "active": "y"},
        fuzz_path={"staff": ["{colleague}"]},
    ),
    ("accounts.staff_reset_password", "POST"): Target(
        STAFF, "/staff/people/{staff}/password", fuzz_path={"staff": ["{colleague}"]}
    ),
    ("accounts.staff_end_sessions", "POST"): Target(
        STAFF, "/staff/people/{staff}/sessions/end", fuzz_path={"staff": ["{colleague}"]}
    ),
    ("accounts.staff_reset_keys", "POST"): Target(
        STAFF, "/staff/people/{staff}/keys/reset", fuzz_path={"staff": ["{colleague}"]}
    ),
    ("accounts.staff_end_session", "POST"): Target(
        STAFF, "/staff/sessions/end", {"which": "others"}
    ),
    ("accounts.audit_log", "GET"): Target(
        STAFF,
        "/staff/audit",
        {
            "action": "claim",
            "actor_kind": "staff",
            "subject_kind": "claim",
            "subject_id": "1",
            "since": "2026-01-01",
            "until": "2026-12-31",
            "before": "1000",
        },
        kind="query",
    ),
    ("claims.appeal_review", "POST"): Target(
        STAFF,
        "/staff/appeals/{appeal_id}",
        {"decision": "grant", "reason": "Build tooling counts."},
        fuzz_path={"appeal_id": ["{appeal}"]},
    ),
    ("eligibility.critical_lists", "POST"): Target(
        STAFF,
        "/staff/critical-lists",
        {"total_projects": "", "percent": "50"},  # the file: STATISTICS below
        kind="upload",
    ),
    ("stock.receive_stock", "POST"): Target(
        STAFF,
        "/staff/stock/receive",
        {"sku": USB_A, "quantity": "10", "reference": "DELIVERY-2026-07"},
    ),
    ("stock.adjust_stock", "POST"): Target(
        STAFF,
        "/staff/stock/adjust",
        {"sku": USB_C, "quantity": "-1", "reason": "Stocktake found one key fewer."},
    ),
    ("shipping.shipping_desk", "GET"): Target(
        STAFF, "/staff/shipping", {"country": "DE", "sku": USB_A, "min_age_days": "1"}, "query"
    ),
    ("shipping.print_labels", "POST"): Target(
        STAFF,
        "/staff/shipping/labels",
        {"claim_ids": ["{waiting_claim}"], "layout": "4x6", "everything": ""},
    ),
    ("shipping.reprint_labels", "POST"): Target(
        STAFF,
        "/staff/shipping/reprint",
        {"reprint-claim_ids": ["{printed_claim}"], "reprint-layout": "a4"},
    ),
    ("shipping.ship_parcel", "POST"): Target(
        STAFF,
        "/staff/shipping/ship",
        {
            "reference": "{printed_reference}",
            "carrier": "DHL",
            "tracking_number": "00340434161234567891",
        },
    ),
    ("shipping.find_parcel", "GET"): Target(
        STAFF, "/staff/shipping/parcel", {"reference": "{shipped_reference}"}, kind="query"
    ),
    ("shipping.manifest_preview", "POST"): Target(
        STAFF, "/staff/shipping/manifest", {"manifest": MANIFEST}
    ),
    ("shipping.manifest_apply", "POST"): Target(
        STAFF, "/staff/shipping/manifest/apply", {"manifest": MANIFEST}
    ),
    ("shipping.deliveries_preview", "POST"): Target(
        STAFF, "/staff/shipping/deliveries", {"deliveries": DELIVERIES}
    ),
    ("shipping.deliveries_apply", "POST"): Target(
        STAFF, "/staff/shipping/deliveries/apply", {"deliveries": DELIVERIES}
    ),
    ("shipping.parcel_action", "POST"): Target(
        STAFF,
        "/staff/shipping/parcels/{reference}/{action}",
        {**REASON, "sku": USB_A},
        fuzz_path={
            "reference": ["{shipped_reference}", "{printed_reference}"],
            "action": PARCEL_ACTIONS,
        },
    ),
    ("shipping.decide_replacement", "POST"): Target(
        STAFF,
        "/staff/replacements/{exception_id}/{decision}",
        REASON,
        fuzz_path={"exception_id": ["{exception}"], "decision": ["approve", "decline"]},
    ),
    ("activation.accept_key", "POST"): Target(
        STAFF,
        "/staff/keys/{key}/accept",
        {"reason": "Seen on a video call: it is a Titan."},
        fuzz_path={"key": ["{flagged_key}"]},
    ),
    ("staff_keys.registration_options", "POST"): Target(
        STAFF, "/api/staff/keys/options", kind="json"
    ),
    ("staff_keys.register_key", "POST"): Target(STAFF, "/api/staff/keys", CREDENTIAL, "json"),
    ("staff_keys.remove_key", "POST"): Target(
        STAFF, "/staff/my-keys/{key}/remove", fuzz_path={"key": ["{staff_key}"]}
    ),
    ("staff_keys.new_recovery_codes", "POST"): Target(STAFF, "/staff/my-keys/recovery-codes"),
    ("jobs.retry_task", "POST"): Target(
        STAFF, "/staff/tasks/{task}/retry", fuzz_path={"task": ["{failed_task}"]}
    ),
}
CHANGES = {"POST", "PUT", "PATCH", "DELETE"}
PEOPLE, STAFF_PAGES = "people", "staff"


def audience(target: Target) -> str:
    return STAFF_PAGES if target.who == STAFF else PEOPLE


def test_every_route_that_takes_input_has_a_target(app: Flask):
    wanted = {
        (rule.endpoint, method)
        for rule in app.url_map.iter_rules()
        for method in rule.methods or ()
        if method in CHANGES
        or (rule.rule.startswith("/api/") and method not in ("HEAD", "OPTIONS"))
    }
    routes = {
        (rule.endpoint, method)
        for rule in app.url_map.iter_rules()
        for method in rule.methods or ()
    }
    assert wanted - TARGETS.keys() == set(), "add the new routes to TARGETS"
    assert TARGETS.keys() - routes == set(), "remove routes that no longer exist"


# --- hostile values ---------------------------------------------------------------------------

ODDITIES = [
    "\x00",
    "a\x00b",
    "\x1b[2J",
    "\r\n\r\nX-Injected: 1",
    "\u202eevil.exe",  # right-to-left override
    "\u2066a\u2069",
    "\u200d\u200b",
    "\ufeff",
    "e\u0301\u0301\u0301",
    "\U0001f511",
    "ＡＢＣ１２３",  # full-width
    "İı",  # noqa: RUF001 - Turkish dotted and dotless i change length when case-folded
    "ß",
    "\u2028",
    "\ufdfa",
    "<script>alert(1)</script>",
    "' OR '1'='1' --",
    "%00%2e%2e%2f",
    "../../etc/passwd",
    "{{7*7}}",
    "-1",
    "0",
    "1e309",
    "NaN",
    "-inf",
    "0x10",
    " 7 ",
    "2147483648",
    "9223372036854775808",
    "99999999999999999999999999",
    "9" * 400,  # past what a float holds
    "-99999999999999999999999999",
    "0001-01-01",
    "9999-12-31",
    "0001-01-01T00:00+01:00",
    "9999-12-31T23:59-01:00",
    "",
    " ",
]
LONG = [41, 61, 101, 201, 321, 1_001, 4_001, 100_001]
hostile_text = st.one_of(
    st.sampled_from(ODDITIES),
    st.text(max_size=40),
    st.text(st.characters(categories=["Cc"]), max_size=20),
    st.builds(
        operator.mul,
        st.sampled_from(["A", "é", "\u202e", "\x00", "9", "@", "\U0001f511"]),
        st.sampled_from(LONG),
    ),
)
not_utf8 = st.sampled_from([b"\xff\xfe", b"\xed\xa0\x80", b"\xc0\xaf", b"a\x80b"]) | st.binary(
    min_size=1, max_size=12
)


def _nested(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([2**31, 2**63, -(2**63) - 1, 10**30])
    | st.floats(allow_nan=False, allow_infinity=False)
    | hostile_text,
    _nested,
    max_leaves=8,
)
RAW_JSON = [
    b'{"email": "a\\ud800@example.org", "token": "\\udc00", "name": "\\ud83d", "code": "\\udfff"}',
    b'{"email": "a\\u0000@example.org", "token": "x\\u0000", "name": "n\\u0000"}',
    b'{"credential": {"id": "\\ud800", "rawId": "\\u0000", "type": "public-key", "response": {}}}',
    b'"\\ud800"',
    b"[" * 100_000,
    b'{"a":' * 30_000 + b"1" + b"}" * 30_000,
    b'{"email": "a@example.org", "email": ["again"]}',
    b"NaN",
    b"1e999999",
    b"",
    b"null",
    b"\xff\xfe{\x00",
    b"{'single': 'quotes'}",
    b'{"token": 1e400, "name": -0}',
    b'{"credential": "' + b"A" * 100_001 + b'"}',
]
MISSING = object()

FormPairs = list[tuple[str, str | bytes]]


def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def field_values(base: str | list[str]) -> st.SearchStrategy[list[str | bytes]]:
    first = as_list(base)[0] if as_list(base) else ""
    return st.one_of(
        st.just([]),  # left out
        hostile_text.map(lambda text: [text]),
        hostile_text.map(lambda text: [first + text]),  # plausible, then something odd
        hostile_text.map(lambda text: [text + first]),
        st.lists(st.just(first) | hostile_text, min_size=2, max_size=3),  # sent twice or more
        not_utf8.map(lambda raw: [raw]),
    )


@st.composite
def hostile_form(draw: st.DrawFn, base: Mapping[str, Any]) -> FormPairs:
    """The fields a browser would send, a few of them replaced, doubled or left out, and maybe
    fields nobody asked for."""
    names = sorted(base)
    changed = draw(st.sets(st.sampled_from(names), max_size=3)) if names else set()
    pairs: FormPairs = []
    for name in names:
        values = draw(field_values(base[name])) if name in changed else as_list(base[name])
        pairs += [(name, value) for value in values]
    pairs += draw(st.lists(st.tuples(hostile_text, hostile_text), max_size=2))
    return pairs


@st.composite
def hostile_json(draw: st.DrawFn, base: Mapping[str, Any]) -> tuple[bytes, str]:
    """A JSON body and its content type: the page script's object with wrong types, missing or
    extra members; another JSON value; or bytes that are not JSON at all."""
    kind = draw(st.sampled_from(["object", "object", "object", "value", "raw", "form"]))
    if kind == "object":
        names = sorted(base)
        changed = draw(st.sets(st.sampled_from(names), max_size=3)) if names else set()
        body: dict[str, Any] = {}
        for name in names:
            value = draw(st.just(MISSING) | json_values) if name in changed else base[name]
            if value is not MISSING:
                body[name] = value
        body.update(draw(st.dictionaries(st.text(max_size=8), json_values, max_size=2)))
        return json.dumps(body).encode(), "application/json"
    if kind == "value":
        return json.dumps(draw(json_values)).encode(), "application/json"
    if kind == "form":
        return urlencode({name: str(value) for name, value in base.items()}).encode(), FORM
    return draw(st.sampled_from(RAW_JSON) | st.binary(max_size=64)), "application/json"


STATISTICS = st.one_of(
    st.just(b"project,downloads\nfamous,90\nx,1\n"),
    st.just(b"rank,project\n1,famous\n2,x\n"),
    st.just(b'{"rows": [{"project": null, "download_count": "many"}]}'),
    st.just(b'{"rows": 5}'),
    st.just(b"[" * 50_000),
    st.just(b"project,downloads\n" + b"p,1\n" * 20_000),
    st.binary(max_size=200),
    hostile_text.map(lambda text: f"project,downloads\n{text},5\nx,1\n".encode()),
    hostile_text.map(lambda text: f"project,downloads\nfamous,{text}\nx,1\n".encode()),
    hostile_text.map(lambda text: f"rank,project\n{text},famous\n".encode()),
)


def path_part(good: Sequence[str]) -> st.SearchStrategy[str]:
    odd_ids = ["0", "-1", "2147483648", "9223372036854775808", "99999999999999999999999", "1e3"]
    return st.one_of(
        st.sampled_from(list(good)),
        st.sampled_from(odd_ids),
        hostile_text.filter(lambda text: text.strip() != ""),
    )


# --- what the database holds ------------------------------------------------------------------

# Tables a request may fill without an audit event: challenges, links, mail, reports' history.
UNAUDITED = {
    "webauthn_challenge",
    "sign_in_link",
    "outbox_message",
    "stock_day",
    "low_stock_alert",
    "eligibility_notice",
}
# Refusals that are audited on purpose (someone tried a password, a code or a cloned key).
AUDITED_REFUSALS = {
    "sign_in.staff_failed",
    "staff.recovery_code_refused",
    "security_key.counter_regression",
    "security_key.refused",
}


@dataclass(frozen=True)
class Snapshot:
    counts: dict[str, int]
    last_event: int
    reconciles: bool


def snapshot(connection: sa.Connection) -> Snapshot:
    """Rows per table, the newest audit event and whether stock balances match the ledger."""
    # Not the sessions: each example starts its browser's session afresh (``become``).
    tables = [t.name for t in import_models().metadata.sorted_tables if t.name != "web_session"]
    counted = (f"SELECT '{name}', COUNT(*) FROM {name}" for name in tables)  # noqa: S608 - ours
    query = " UNION ALL ".join(counted)
    counts = {name: int(count) for name, count in connection.exec_driver_sql(query)}
    with Session(bind=connection, join_transaction_mode="create_savepoint") as reader:
        reconciles = stock_figures(session=reader).reconciles
    return Snapshot(counts, _last_event(connection), reconciles)


def _last_event(connection: sa.Connection) -> int:
    return int(connection.exec_driver_sql("SELECT MAX(id) FROM audit_event").scalar() or 0)


def new_events(connection: sa.Connection, since: int) -> list[str]:
    rows = connection.execute(
        sa.text("SELECT action FROM audit_event WHERE id > :since ORDER BY id"), {"since": since}
    )
    return [str(action) for (action,) in rows]


@contextmanager
def undone(connection: sa.Connection) -> Iterator[None]:
    """Each example starts from the same world: what it changed is rolled back after it."""
    savepoint = connection.begin_nested()
    try:
        yield
    finally:
        savepoint.rollback()


# --- what the person is told ------------------------------------------------------------------

# A refusal on a page: an error beside a field or in a form's summary, a flashed message, or
# the error page (its title and message).
_PAGE_MESSAGE = re.compile(r'class="(field-error|error-summary|error-page|flash flash-\w+)"')
# A sign-in link's problem page says what went wrong under its title, beside a form for a new link.
_LINK_PROBLEM = re.compile(r'<h1>[^<]+</h1>\s*<p class="lede">[^<]+</p>\s*<h2>Ask for a new link')
CSRF_REFUSAL = "forms work only for the page they came from"  # the CSRF error's message


def message_of(response: TestResponse) -> str:
    """What the answer tells a person: a JSON ``message``, a page's error, or where to go."""
    if response.is_json:
        body = response.get_json(silent=True)
        if response.status_code < 400:
            return response.get_data(as_text=True) if body else ""
        return str(body.get("message") or "") if isinstance(body, dict) else ""
    if 300 <= response.status_code < 400:
        return response.headers.get("Location", "")
    page = response.get_data(as_text=True)
    if response.status_code >= 400:
        return page if _PAGE_MESSAGE.search(page) or _LINK_PROBLEM.search(page) else ""
    return page if "<h1" in page else ""


def assert_answered(
    response: TestResponse, before: Snapshot, connection: sa.Connection, what: str
) -> None:
    """Never a 500; always a message; a refusal changed nothing; a change left an audit event;
    the ledger reconciles."""
    after = snapshot(connection)
    events = new_events(connection, before.last_event)
    status = response.status_code
    assert status < 500, f"{what}: {status}"
    assert message_of(response).strip(), f"{what}: {status} without a message"
    assert after.reconciles, f"{what}: the stock ledger no longer reconciles with the balances"
    changed = {
        name
        for name, count in after.counts.items()
        if count != before.counts[name] and name != "audit_event"
    }
    if status >= 400:
        assert changed == set(), f"{what}: refused ({status}) but changed {changed}"
        assert set(events) <= AUDITED_REFUSALS, f"{what}: refused ({status}) but audited {events}"
    elif changed - UNAUDITED:
        assert events, f"{what}: changed {changed} without an audit event"


# --- sending ----------------------------------------------------------------------------------


def fill(value: Any, values: Mapping[str, Any]) -> Any:
    """``value`` with the world's ``{names}`` filled in (a lone ``{name}`` keeps its type)."""
    if isinstance(value, str):
        whole = re.fullmatch(r"\{(\w+)\}", value)
        if whole and whole.group(1) in values:
            return values[whole.group(1)]
        return re.sub(r"\{(\w+)\}", lambda m: str(values.get(m.group(1), m.group(0))), value)
    if isinstance(value, list):
        return [fill(item, values) for item in value]
    if isinstance(value, dict):
        return {key: fill(item, values) for key, item in value.items()}
    return value


def become(client: FlaskClient, world: World, who: str) -> None:
    """Start a request as ``who``, keeping the session's CSRF secret (and so its tokens)."""
    with client.session_transaction() as cookie:
        secret = world.csrf_secret or cookie.get("csrf_token")
        cookie.clear()
        if secret:
            cookie["csrf_token"] = world.csrf_secret = secret
        if who == STAFF:
            cookie["_user_id"], cookie["_fresh"] = world.staff.get_id(), True
        elif who == PENDING:  # past the password, before the key
            cookie["staff_pending"] = {
                "id": world.staff.get_id(),
                "since": utcnow().isoformat(),
                "next": "/staff/",
            }
        elif who:
            cookie["_user_id"], cookie["_fresh"] = world.people[who].get_id(), True


TOKEN_PAGES = {ANYONE: "/sign-in", PENDING: "/staff/sign-in/key", STAFF: "/staff/my-keys"}


def token_for(client: FlaskClient, world: World, who: str) -> str:
    """The CSRF token of a page ``who`` sees (maintainers: My claim)."""
    become(client, world, who)
    return csrf_token(client, TOKEN_PAGES.get(who, "/claim"))


def fresh_challenge(client: FlaskClient, world: World, target: Target) -> str:
    """A just-made WebAuthn challenge's token for the target's ceremony."""
    if target.who == ANYONE:
        options, body = "/api/sign-in/key/options", {"email": world.values["receiver_email"]}
    elif target.who == PENDING:
        options, body = "/api/staff/sign-in/key/options", {}
    elif target.who == STAFF:
        options, body = "/api/staff/keys/options", {}
    else:
        options, body = "/api/claim/keys/options", {}
    csrf = token_for(client, world, target.who)
    answer = client.post(options, json=body, headers={"X-CSRFToken": csrf})
    assert answer.status_code == 200, answer.get_json()
    return str(answer.get_json()["token"])


def build_path(target: Target, parts: Mapping[str, str], values: Mapping[str, Any]) -> str:
    """The target's path with ``parts`` (else the world's values) quoted into it."""

    def part(match: re.Match[str]) -> str:
        name = match.group(1)
        return quote(str(fill(parts.get(name, f"{{{name}}}"), values)), safe="")

    return re.sub(r"\{(\w+)\}", part, target.path)


def send(
    client: FlaskClient, target: Target, path: str, csrf: str | None, payload: Any
) -> TestResponse:
    """One request as the page (or its script) would send it, with ``payload`` as its input."""
    headers = {"X-CSRFToken": csrf} if csrf else {}
    token: FormPairs = [("csrf_token", csrf)] if csrf else []
    if target.kind == "query":
        query = urlencode(payload)
        return client.get(f"{path}{'&' if '?' in path else '?'}{query}" if query else path)
    if target.kind == "json":
        body, content_type = payload
        return client.post(path, data=body, content_type=content_type, headers=headers)
    if target.kind == "upload":
        pairs, content, filename = payload
        upload = ("file", (io.BytesIO(content), filename))
        return client.post(
            path, data=MultiDict([*token, *pairs, upload]), content_type="multipart/form-data"
        )
    return client.post(path, data=urlencode([*token, *payload]).encode("ascii"), content_type=FORM)


def plausible(target: Target, values: Mapping[str, Any]) -> dict[str, Any]:
    """The fields as the page sends them (a form sends text)."""
    base = fill(dict(target.fields), values)
    if target.kind == "json":
        return dict(base)
    return {
        name: [str(item) for item in value] if isinstance(value, list) else str(value)
        for name, value in base.items()
    }


def payloads(target: Target, values: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    base = plausible(target, values)
    if target.kind == "json":
        return hostile_json(base)
    if target.kind == "upload":
        return st.tuples(
            # The test client spools a multipart body past 500 kB to a file it never closes.
            hostile_form(base).filter(lambda pairs: len(urlencode(pairs)) < 300_000),
            STATISTICS,
            st.sampled_from(["stats.csv", "stats.json", "", *ODDITIES]) | st.text(max_size=40),
        )
    return hostile_form(base)


# --- hostile input ------------------------------------------------------------------------------


@pytest.mark.parametrize("group", [PEOPLE, STAFF_PAGES])
def test_hostile_input_is_answered_with_a_message_and_changes_nothing_half_way(
    group, client, connection, world
):
    for (endpoint, method), target in TARGETS.items():
        if audience(target) == group:
            drive(client, connection, world, f"{method} {endpoint}", target)


def drive(
    client: FlaskClient, connection: sa.Connection, world: World, what: str, target: Target
) -> None:
    csrf = token_for(client, world, target.who)
    # Mostly the parts a page links to, so that the fields' checks are reached too.
    parts = {
        name: st.one_of(*[st.sampled_from(good)] * 3, path_part(good))
        for name, good in target.fuzz_path.items()
    }
    needs_challenge = "token" in target.fields
    unchanged = snapshot(connection)  # the world, as every example starts from it

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def attempt(data: st.DataObject) -> None:
        with undone(connection):
            values = dict(world.values)
            before = unchanged
            if needs_challenge:
                values["token"] = fresh_challenge(client, world, target)
                before = snapshot(connection)
            path = build_path(target, data.draw(st.fixed_dictionaries(parts), "path"), values)
            payload = data.draw(payloads(target, values), "input")
            become(client, world, target.who)
            response = send(client, target, path, csrf, payload)
            assert CSRF_REFUSAL not in response.get_data(as_text=True), f"{what}: lost the CSRF"
            assert_answered(response, before, connection, f"{what} {path[:200]}")

    attempt()


def test_forms_refuse_a_missing_or_foreign_csrf_token_and_an_oversized_body(
    app, client, connection, world
):
    stranger = app.test_client()  # another browser: its token is not this session's
    foreign = csrf_token(stranger, "/sign-in")
    largest = app.config["MAX_CONTENT_LENGTH"]
    for (endpoint, method), target in TARGETS.items():
        if target.kind == "query":
            continue
        values = {**world.values, "token": "no-challenge"}
        path = build_path(
            target, {name: good[0] for name, good in target.fuzz_path.items()}, values
        )
        base = plausible(target, values)
        payload: Any = list(base.items()) if target.kind == "form" else None
        if target.kind == "json":
            payload = (json.dumps(base).encode(), "application/json")
        elif target.kind == "upload":
            payload = (list(base.items()), b"project,downloads\nfamous,9\nx,1\n", "stats.csv")
        with undone(connection):
            csrf = token_for(client, world, target.who)
            for token in (None, foreign):
                before = snapshot(connection)
                become(client, world, target.who)
                refused = send(client, target, path, token, payload)
                what = f"{method} {endpoint} with {'a foreign' if token else 'no'} CSRF token"
                assert refused.status_code == 400, what
                assert CSRF_REFUSAL in message_of(refused), what
                assert_answered(refused, before, connection, what)
            if endpoint == "eligibility.critical_lists":
                continue  # takes large uploads, up to KEYS_MAX_UPLOAD_BYTES
            before = snapshot(connection)
            become(client, world, target.who)
            json_body = target.kind == "json"
            oversized = client.post(
                path,
                data=(b'"' if json_body else b"csrf_token=" + csrf.encode() + b"&x=")
                + b"x" * largest,
                content_type="application/json" if json_body else FORM,
                headers={"X-CSRFToken": csrf},
            )
            assert oversized.status_code == 413, f"{method} {endpoint}: {oversized.status_code}"
            assert_answered(oversized, before, connection, f"{method} {endpoint} oversized")


# --- single-use tokens, used twice ------------------------------------------------------------


def test_single_use_tokens_work_once(client, connection, world, mailbox: Mailbox):
    people, values = world.people, world.values

    def twice(who: str, path: str, **request: Any) -> tuple[TestResponse, TestResponse]:
        """The same request sent twice, each time as ``who`` freshly signed in."""
        answers = []
        for _ in range(2):
            become(client, world, who)
            before = snapshot(connection)
            answer = client.post(path, **request)
            assert_answered(answer, before, connection, f"POST {path}")
            answers.append(answer)
        return answers[0], answers[1]

    def api(who: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        become(client, world, who)
        answer = client.post(
            path, json=body, headers={"X-CSRFToken": token_for(client, world, who)}
        )
        assert answer.status_code == 200, answer.get_json()
        result: dict[str, Any] = answer.get_json()
        return result

    # An emailed sign-in link.
    csrf = token_for(client, world, ANYONE)
    client.post("/sign-in", data={"email": people["holder"].email, "csrf_token": csrf})
    link = mailbox.last_link(people["holder"].email).removeprefix(ORIGIN)
    first, again = twice(ANYONE, link, data={"csrf_token": csrf})
    assert first.status_code == 302 and first.headers["Location"] == "/account"
    assert again.status_code == 410 and "already used" in again.get_data(as_text=True)

    # A claim code, redeemed from two forms (two idempotency keys).
    csrf = token_for(client, world, "holder")
    redemption = plausible(TARGETS[("claims.redeem", "POST")], values)
    for number, form in enumerate(("first-form", "second-form")):
        become(client, world, "holder")
        before = snapshot(connection)
        answer = client.post(
            "/claim/redeem", data={**redemption, "idempotency_key": form, "csrf_token": csrf}
        )
        assert_answered(answer, before, connection, f"redemption {number + 1}")
        assert answer.status_code == (302, 409)[number]
    assert "That code was already used" in answer.get_data(as_text=True)

    # A WebAuthn challenge: registering a key, and signing in with one.
    begun = api("receiver", "/api/claim/keys/options", {})
    key = SoftAuthenticator(aaguid=TITAN, ca=world.keys["receiver"].ca)
    body = {
        "token": begun["token"],
        "name": "Spare Titan",
        "credential": key.register(begun["publicKey"], origin=ORIGIN),
    }
    csrf = token_for(client, world, "receiver")
    first, again = twice("receiver", "/api/claim/keys", json=body, headers={"X-CSRFToken": csrf})
    assert first.status_code == 200 and again.status_code == 400
    assert "used already" in again.get_json()["message"]

    begun = api(ANYONE, "/api/sign-in/key/options", {"email": values["receiver_email"]})
    answer = world.keys["receiver"].sign_in(begun["publicKey"], origin=ORIGIN)
    csrf = token_for(client, world, ANYONE)
    first, again = twice(
        ANYONE,
        "/api/sign-in/key",
        json={"token": begun["token"], "credential": answer},
        headers={"X-CSRFToken": csrf},
    )
    assert first.status_code == 200 and again.status_code == 400
    assert "used already" in again.get_json()["message"]

    # A staff member's key after the password, and a recovery code instead of it.
    begun = api(PENDING, "/api/staff/sign-in/key/options", {})
    answer = world.keys["staff"].sign_in(begun["publicKey"], origin=ORIGIN)
    csrf = token_for(client, world, PENDING)
    first, again = twice(
        PENDING,
        "/api/staff/sign-in/key",
        json={"token": begun["token"], "credential": answer},
        headers={"X-CSRFToken": csrf},
    )
    assert first.status_code == 200 and again.status_code == 400

    first, again = twice(
        PENDING,
        "/staff/sign-in/recovery",
        data={"code": values["recovery_code"], "csrf_token": csrf},
    )
    assert first.status_code == 302 and again.status_code == 401
    assert "used already" in again.get_data(as_text=True)


# --- other maintainers' claims, parcels and keys ----------------------------------------------

# What a URL may name that belongs to a maintainer (or, for keys, to a staff member).
OWNED_PARAMETERS = {"claim_id", "reference", "key_id", "run_id", "exception_id"}
# endpoint → the request's fields (as a page sends them) and the path's other parts. (Staff may
# not remove each other's keys either: tests/accounts/test_second_factor.py.)
OWNED: dict[str, tuple[dict[str, str], dict[str, list[str]]]] = {
    "claims.change_address": (ADDRESS, {}),
    "claims.cancel": ({}, {}),
    "shipping.label_run": ({}, {}),
    "shipping.label_run_pdf": ({}, {}),
    "shipping.parcel": ({}, {}),
    "shipping.parcel_action": ({**REASON, "sku": USB_A}, {"action": PARCEL_ACTIONS}),
    "shipping.decide_replacement": (REASON, {"decision": ["approve", "decline"]}),
    "activation.key_detail": ({}, {}),
    "activation.accept_key": (REASON, {}),
    "activation.remove_key": ({}, {}),
    "staff_keys.remove_key": ({}, {}),
}


def test_every_route_that_names_a_claim_parcel_or_key_is_tried_by_a_stranger(app: Flask):
    naming = {
        rule.endpoint for rule in app.url_map.iter_rules() if set(rule.arguments) & OWNED_PARAMETERS
    }
    assert naming - OWNED.keys() == set(), "add the new routes to OWNED"
    assert OWNED.keys() - naming == set(), "remove routes that no longer exist"


def rows_of(connection: sa.Connection, maintainer: Maintainer) -> dict[str, list[tuple[Any, ...]]]:
    """Everything held about ``maintainer``'s claims, parcels, runs, exceptions and keys."""
    queries = {
        "claim": "SELECT * FROM claim WHERE maintainer_id = :id",
        "shipment": "SELECT * FROM shipment WHERE claim_id IN "
        "(SELECT id FROM claim WHERE maintainer_id = :id)",
        "parcel_exception": "SELECT * FROM parcel_exception WHERE claim_id IN "
        "(SELECT id FROM claim WHERE maintainer_id = :id)",
        "security_key": "SELECT * FROM security_key WHERE maintainer_id = :id",
    }
    return {
        table: [tuple(row) for row in connection.execute(sa.text(query), {"id": maintainer.id})]
        for table, query in queries.items()
    }


def test_a_maintainer_cannot_reach_another_maintainers_claim_parcel_or_key(
    app, client, session, settings, metadata, ca, connection, monkeypatch
):
    monkeypatch.setattr(limiter, "enabled", False)
    stock_famous_project(session, {USB_A: 4, USB_C: 4})
    alice, _alices_parcel = shipped_parcel(session, settings)
    bea, beas_parcel = redeem_parcel(session, settings, address=HAMBURG)
    beas_run = print_labels(session, settings, [beas_parcel.claim_id])
    ship(session, settings, beas_parcel.reference)
    alices_key, beas_key = (SoftAuthenticator(aaguid=TITAN, ca=ca) for _ in range(2))
    register_maintainer_key(session, settings, metadata, alice, alices_key)
    beas_key_row = register_maintainer_key(session, settings, metadata, bea, beas_key)
    beas_case = exceptions.mark_lost(
        session=session,
        mailer=OutboxMailer(),
        actor=ACTOR,
        reference=beas_parcel.reference,
        reason="The carrier says it is lost",
    )
    session.flush()
    beas = {
        "claim_id": beas_parcel.claim_id,
        "reference": beas_parcel.reference,
        "key_id": beas_key_row.id,
        "run_id": beas_run.id,
        "exception_id": beas_case.id,
    }
    secrets_of_bea = (HAMBURG["street_address"], HAMBURG["name"])
    held = rows_of(connection, bea)
    world = World(staff=make_staff(session), people={"alice": alice}, values={}, keys={})
    csrf = token_for(client, world, "alice")

    def seen(response: TestResponse, what: str) -> None:
        page = response.get_data(as_text=True)
        assert not any(secret in page for secret in secrets_of_bea), f"{what} shows Bea's address"

    tried = 0
    for rule in app.url_map.iter_rules():
        if rule.endpoint not in OWNED:
            continue
        fields, others = OWNED[rule.endpoint]
        choices = [dict(zip(others, combination, strict=True)) for combination in _product(others)]
        for extra in choices:
            path = rule.build(
                {**{name: beas[name] for name in rule.arguments & beas.keys()}, **extra}
            )
            assert path is not None
            for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
                become(client, world, "alice")
                before = snapshot(connection)
                answer = client.open(
                    path[1],
                    method=method,
                    data={**fields, "csrf_token": csrf} if method == "POST" else None,
                )
                what = f"{method} {path[1]}"
                assert answer.status_code in (403, 404), f"{what}: {answer.status_code}"
                assert_answered(answer, before, connection, what)
                seen(answer, what)
                tried += 1
    assert tried >= len(OWNED)

    # Ids in the body: Bea's key registered again for Alice, and Alice's challenge signed by it.
    begun = client.post("/api/claim/keys/options", headers={"X-CSRFToken": csrf}).get_json()
    beas_credential = next(iter(beas_key.credentials))
    random_bytes = soft_authenticator.os.urandom
    with monkeypatch.context() as patched:  # the authenticator makes Bea's credential once more
        patched.setattr(
            soft_authenticator.os,
            "urandom",
            lambda n: beas_credential if n == len(beas_credential) else random_bytes(n),
        )
        again = beas_key.register(begun["publicKey"], origin=ORIGIN)
    become(client, world, "alice")
    before = snapshot(connection)
    taken = client.post(
        "/api/claim/keys",
        json={"token": begun["token"], "name": "Not mine", "credential": again},
        headers={"X-CSRFToken": csrf},
    )
    assert taken.status_code == 400 and "registered already" in taken.get_json()["message"]
    assert_answered(taken, before, connection, "Bea's key registered by Alice")

    become(client, world, ANYONE)
    begun = client.post(
        "/api/sign-in/key/options", json={"email": alice.email}, headers={"X-CSRFToken": csrf}
    ).get_json()
    signed = beas_key.sign_in(begun["publicKey"], origin=ORIGIN, credential_id=beas_credential)
    before = snapshot(connection)
    impostor = client.post(
        "/api/sign-in/key",
        json={"token": begun["token"], "credential": signed},
        headers={"X-CSRFToken": csrf},
    )
    assert (
        impostor.status_code == 400
        and "not registered to your account" in (impostor.get_json()["message"])
    )
    assert_answered(impostor, before, connection, "Alice's sign-in signed by Bea's key")
    assert client.get("/account").status_code == 302  # nobody signed in

    # Alice's own pages never show Bea's address either.
    for page in ("/claim", "/claim/keys", "/account", "/account/data", "/eligibility"):
        become(client, world, "alice")
        shown = client.get(page)
        assert shown.status_code == 200, page
        seen(shown, page)
    assert rows_of(connection, bea) == held, "Bea's claim, parcel, exception or key changed"


def _product(parts: Mapping[str, Sequence[str]]) -> Iterator[tuple[str, ...]]:
    """Every combination of the path's other parts (one empty combination when there are none)."""
    combinations: list[tuple[str, ...]] = [()]
    for choices in parts.values():
        combinations = [(*done, choice) for done in combinations for choice in choices]
    yield from combinations

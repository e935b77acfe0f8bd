"""Every route of the app, tried by everyone: nobody reaches a page that is not theirs.

The table below must name every endpoint; a new route without an entry fails the test, so no
route can skip being thought about.
"""

from __future__ import annotations

import pytest
from flask import Flask

from accounts.models import StaffRole
from tests.factories import make_maintainer, make_staff, sign_in_as

PUBLIC = "public"
MAINTAINER = "maintainer"
ANY_STAFF = "any staff"
AFTER_PASSWORD = "after a staff password"

# endpoint → who may use it: PUBLIC, MAINTAINER, ANY_STAFF, or a set of staff roles
# (admins may use every staff page).
EXPECTED: dict[str, str | set[StaffRole]] = {
    "static": PUBLIC,
    "health.healthz": PUBLIC,
    "accounts.index": PUBLIC,
    "accounts.sign_in": PUBLIC,
    "accounts.sign_in_sent": PUBLIC,
    "accounts.sign_in_link": PUBLIC,
    "accounts.sign_out": PUBLIC,
    "accounts.staff_sign_in": PUBLIC,
    "accounts.dev_outbox": PUBLIC,  # answers 404 unless the outbox back-end is on
    "accounts.account": MAINTAINER,
    "accounts.end_session": MAINTAINER,
    "accounts.staff_sessions": ANY_STAFF,
    "accounts.staff_end_session": ANY_STAFF,
    "accounts.staff_end_sessions": {StaffRole.ADMIN},
    "accounts.staff_home": ANY_STAFF,
    "accounts.staff_list": {StaffRole.ADMIN},
    "accounts.staff_create": {StaffRole.ADMIN},
    "accounts.staff_edit": {StaffRole.ADMIN},
    "accounts.staff_reset_password": {StaffRole.ADMIN},
    "accounts.staff_reset_keys": {StaffRole.ADMIN},
    "accounts.audit_log": {StaffRole.ADMIN, StaffRole.VIEWER},
    "claims.my_eligibility": MAINTAINER,
    "claims.set_country": MAINTAINER,
    "eligibility.appeal": MAINTAINER,
    "eligibility.project_lookup": PUBLIC,
    "eligibility.project_api": PUBLIC,
    "eligibility.appeal_queue": {StaffRole.PROGRAMME},
    "claims.appeal_review": {StaffRole.PROGRAMME},
    "eligibility.critical_lists": {StaffRole.PROGRAMME},
    "eligibility.critical_list_detail": {StaffRole.PROGRAMME, StaffRole.VIEWER},
    "journey.my_claim": MAINTAINER,
    "claims.get_code": MAINTAINER,
    "claims.redeem": MAINTAINER,
    "claims.change_address": MAINTAINER,
    "claims.cancel": MAINTAINER,
    "stock.stock_desk": {StaffRole.PROGRAMME, StaffRole.VIEWER},
    "stock.receive_stock": {StaffRole.PROGRAMME},
    "stock.adjust_stock": {StaffRole.PROGRAMME},
    "shipping.shipping_desk": {StaffRole.SHIPPING},
    "shipping.print_labels": {StaffRole.SHIPPING},
    "shipping.ship_parcel": {StaffRole.SHIPPING},
    "shipping.manifest_preview": {StaffRole.SHIPPING},
    "shipping.manifest_apply": {StaffRole.SHIPPING},
    "shipping.reprint_labels": {StaffRole.SHIPPING},
    "shipping.label_run": {StaffRole.SHIPPING},
    "shipping.label_run_pdf": {StaffRole.SHIPPING},
    "shipping.find_parcel": {StaffRole.SHIPPING, StaffRole.PROGRAMME},
    "shipping.parcel": {StaffRole.SHIPPING, StaffRole.PROGRAMME},
    "shipping.parcel_action": {StaffRole.SHIPPING},
    "shipping.deliveries_preview": {StaffRole.SHIPPING},
    "shipping.deliveries_apply": {StaffRole.SHIPPING},
    "shipping.replacements": {StaffRole.PROGRAMME},
    "shipping.decide_replacement": {StaffRole.PROGRAMME},
    "personal_data.my_data": MAINTAINER,
    "personal_data.download": MAINTAINER,
    "personal_data.erase": MAINTAINER,
    "personal_data.erasure_requests": {StaffRole.PROGRAMME, StaffRole.VIEWER},
    "reports.staff_reports": ANY_STAFF,
    "reports.report_csv": ANY_STAFF,
    "reports.report_pdf": ANY_STAFF,
    "reports.transparency_page": PUBLIC,
    "reports.transparency_json": PUBLIC,
    "activation.my_keys": MAINTAINER,
    "activation.registration_options": MAINTAINER,
    "activation.register_key": MAINTAINER,
    "activation.remove_key": MAINTAINER,
    "activation.flagged_keys": {StaffRole.PROGRAMME, StaffRole.VIEWER},
    "activation.key_detail": {StaffRole.PROGRAMME, StaffRole.VIEWER},
    "activation.accept_key": {StaffRole.PROGRAMME},
    "activation.sign_in_options": PUBLIC,
    "activation.sign_in_with_key": PUBLIC,
    # Between the password and the key: nobody here has passed a password, so all are refused.
    "staff_keys.second_step": AFTER_PASSWORD,
    # An enrolment link: its token is the key (an unknown one here gets its own 404 page).
    "staff_keys.enrol": PUBLIC,
    "staff_keys.sign_in_options": AFTER_PASSWORD,
    "staff_keys.sign_in_with_key": AFTER_PASSWORD,
    "staff_keys.sign_in_with_recovery_code": AFTER_PASSWORD,
    "staff_keys.registration_options": ANY_STAFF,
    "staff_keys.register_key": ANY_STAFF,
    "staff_keys.recovery_codes": ANY_STAFF,
    "staff_keys.my_keys": ANY_STAFF,
    "staff_keys.remove_key": ANY_STAFF,
    "staff_keys.new_recovery_codes": ANY_STAFF,
    "jobs.staff_tasks": {StaffRole.ADMIN},
    "jobs.retry_task": {StaffRole.ADMIN},
}

SAMPLE_ARGUMENTS = {
    "token": "not-a-real-token-but-long-enough-to-look",
    "filename": "css/app.css",
    "name": "requests",
    "appeal_id": 1,
    "list_id": 1,
    "claim_id": 1,
    "run_id": 1,
    "reference": "SKNOSUCHPARCEL",
    "action": "void",
    "exception_id": 1,
    "decision": "approve",
    "key_id": 1,
    "task_id": 1,
}
VISITORS = ["anonymous", "maintainer", *[role.value for role in StaffRole]]


def test_every_route_has_an_expectation(app: Flask):
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    assert endpoints - EXPECTED.keys() == set(), "add the new routes to EXPECTED"
    assert EXPECTED.keys() - endpoints == set(), "remove routes that no longer exist"


def allowed(expectation: str | set[StaffRole], visitor: str) -> bool:
    if expectation == PUBLIC:
        return True
    if expectation == AFTER_PASSWORD:
        return False
    if expectation == MAINTAINER:
        return visitor == "maintainer"
    if visitor in ("anonymous", "maintainer"):
        return False
    if isinstance(expectation, str):
        return expectation == ANY_STAFF
    return visitor == "admin" or StaffRole(visitor) in expectation


def routes(app: Flask, samples: dict[str, object]):
    for rule in app.url_map.iter_rules():
        arguments = {name: samples[name] for name in rule.arguments}
        built = rule.build(arguments)
        assert built is not None and rule.methods is not None
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule.endpoint, method, built[1]


@pytest.mark.parametrize("visitor", VISITORS)
def test_routes_refuse_everyone_they_are_not_for(app, client, session, visitor):
    app.config["WTF_CSRF_ENABLED"] = False  # authorisation is the question here, not CSRF
    colleague = make_staff(session, email="colleague@example.org")
    samples = {**SAMPLE_ARGUMENTS, "staff_id": colleague.id}
    user = None
    if visitor == "maintainer":
        user = make_maintainer(session)
    elif visitor != "anonymous":
        user = make_staff(session, roles=[StaffRole(visitor)])

    for endpoint, method, path in routes(app, samples):
        if user is not None:
            sign_in_as(client, user)  # again each time: one of the routes signs out
        with client.open(path, method=method) as response:
            status, location = response.status_code, response.headers.get("Location", "")
        refused = status in (401, 403) or (status == 302 and "sign-in" in location)
        expectation = EXPECTED[endpoint]
        if allowed(expectation, visitor):
            assert not refused, f"{visitor} refused at {method} {path}"
            assert status < 500, f"{method} {path} failed"
        else:
            assert refused, f"{visitor} got {status} at {method} {path}"
            # A page sends to sign-in; an API answers 401, since scripts cannot follow.
            signed_out = 401 if path.startswith("/api/") else 302
            if expectation == AFTER_PASSWORD:
                assert status == signed_out
            elif visitor != "anonymous":
                assert status in (403, 401 if path.startswith("/api/") else 403)
            else:
                assert status == signed_out

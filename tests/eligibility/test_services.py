"""Eligibility services against the database: critical lists, roles, decisions, appeals, notices."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from sqlmodel import col, select

from accounts.models import Maintainer
from accounts.services import actor_for
from core.actors import Actor
from core.audit import AuditEvent
from core.db import utcnow
from distribution.claims.decision import ReasonCode, decide
from distribution.stock import services as stock
from eligibility import appeals, critical, notify, roles
from eligibility.errors import AppealClosed, AppealNotAllowed, ImportRejected
from eligibility.models import CriticalEntry, EligibilityNotice, ProjectRole, ProjectRoleKind
from tests.factories import give_role, import_statistics, make_maintainer, make_staff

ACTOR = Actor.system("test")


def members(session, summary):
    return sorted(
        session.exec(
            select(CriticalEntry.project_name).where(
                CriticalEntry.list_id == summary.critical_list.id
            )
        ).all()
    )


# --- critical lists ---------------------------------------------------------------------------


def test_an_import_records_a_versioned_list_with_its_diff(session):
    first = import_statistics(session, "project,downloads\na,40\nb,30\nc,20\nd,10\n")
    assert first.as_dict() == {
        "list_id": first.critical_list.id,
        "total_projects": 4,
        "critical_count": 2,
        "cutoff_rank": 2,
        "cutoff_downloads": 30,
        "added": 0,
        "removed": 0,
        "unchanged": False,
    }
    assert members(session, first) == ["a", "b"]

    second = import_statistics(session, "project,downloads\na,40\nb,5\nc,20\nd,10\n", sticky=False)
    assert members(session, second) == ["a", "c"]
    assert (second.critical_list.added_count, second.critical_list.removed_count) == (1, 1)
    changes = critical.list_changes(session=session, critical_list=second.critical_list)
    assert [(c.change, c.project_name) for c in changes] == [("added", "c"), ("removed", "b")]
    event = session.exec(
        select(AuditEvent)
        .where(AuditEvent.action == "critical_list.imported")
        .order_by(col(AuditEvent.id))
    ).all()[-1]
    assert event.details["added"] == ["c"] and event.details["removed"] == ["b"]


def test_the_same_file_twice_changes_nothing(session):
    text = "project,downloads\na,40\nb,30\n"
    first = import_statistics(session, text, name="monday.csv")
    again = import_statistics(session, text, name="renamed.csv")
    assert again.unchanged and again.critical_list.id == first.critical_list.id
    assert again.as_dict()["added"] == 0
    # Other parameters make it a different computation.
    assert not import_statistics(session, text, percent=100).unchanged


def test_a_project_once_critical_stays_critical(session):
    import_statistics(session, "project,downloads\na,40\nb,30\nc,20\nd,10\n")
    later = import_statistics(session, "project,downloads\na,40\nb,1\nc,20\nd,10\n")
    assert members(session, later) == ["a", "b", "c"]
    standing = critical.look_up_project(session=session, name="B")
    assert standing.critical and standing.sticky_only and standing.rank == 4
    assert later.critical_list.removed_count == 0


def test_a_ranking_needs_the_total_number_of_projects(session):
    with pytest.raises(ImportRejected, match="--total-projects"):
        import_statistics(session, "rank,project\n1,a\n2,b\n")
    summary = import_statistics(session, "rank,project\n1,a\n2,b\n3,c\n", total=200, percent=1)
    assert members(session, summary) == ["a", "b"]
    assert summary.critical_list.cutoff_downloads is None
    with pytest.raises(ImportRejected, match="smaller than the number of projects"):
        import_statistics(session, "project,downloads\na,1\nb,2\n", total=1)
    with pytest.raises(ImportRejected, match="cannot be more than 2,147,483,647"):
        import_statistics(session, "rank,project\n1,a\n", total=2**31)  # was a 500


def test_a_rejected_file_writes_nothing(session):
    before = critical.current_list(session=session)
    with pytest.raises(ImportRejected, match="line 3"):
        import_statistics(session, "project,downloads\na,1\nb,-1\n")
    assert critical.current_list(session=session) == before


def test_lookup_gives_rank_and_cutoff_for_known_projects(session):
    maintainer = make_maintainer(session)
    give_role(session, maintainer, "Deep_Down")
    import_statistics(session, "project,downloads\na,40\nb,30\nc,20\ndeep.down,10\n")
    standing = critical.look_up_project(session=session, name="DEEP-down")
    assert (standing.critical, standing.rank, standing.downloads) == (False, 4, 10)
    assert standing.critical_list.cutoff_rank == 2
    unknown = critical.look_up_project(session=session, name="never-heard-of-it")
    assert (unknown.critical, unknown.rank) == (False, None)


# --- roles ------------------------------------------------------------------------------------


def read_roles(text):
    return roles.read_roles_file(io.BytesIO(text.encode()))


def active_roles(session):
    return sorted(
        (r.project_id, r.maintainer_id, r.role, r.organisation)
        for r in session.exec(select(ProjectRole).where(ProjectRole.ended_at.is_(None))).all()
    )


def test_roles_import_adds_updates_and_ends_roles(session):
    first = roles.import_roles(
        session=session,
        actor=ACTOR,
        rows=read_roles(
            "project,username,email,role,organisation\n"
            "requests,alice,alice@example.org,Owner,\n"
            "requests,bob,bob@example.org,maintainer,\n"
            "packaging,carol,carol@example.org,Maintainer,pypa\n"
        ),
    )
    assert first.as_dict() == {
        "rows": 3,
        "maintainers_added": 3,
        "emails_changed": 0,
        "roles_added": 3,
        "roles_changed": 0,
        "roles_ended": 0,
    }
    second = roles.import_roles(
        session=session,
        actor=ACTOR,
        rows=read_roles(
            "project,username,email,role\n"
            "requests,alice,alice@new.example.org,Owner\n"
            "requests,carol,carol@example.org,Owner\n"
        ),
    )
    assert second.as_dict() == {
        "rows": 2,
        "maintainers_added": 0,
        "emails_changed": 1,
        "roles_added": 1,
        "roles_changed": 0,
        "roles_ended": 1,
    }
    # packaging was not in the second file: its role stays.
    assert len(active_roles(session)) == 3
    bob = session.exec(select(Maintainer).where(Maintainer.username == "bob")).one()
    ended = session.exec(select(ProjectRole).where(ProjectRole.maintainer_id == bob.id)).one()
    assert ended.ended_at is not None
    alice = session.exec(select(Maintainer).where(Maintainer.username == "alice")).one()
    assert alice.email == "alice@new.example.org" and alice.email_verified_at is None


def test_roles_import_is_idempotent(session):
    text = "project,username,email,role\nflask,dana,dana@example.org,Owner\n"
    roles.import_roles(session=session, actor=ACTOR, rows=read_roles(text))
    again = roles.import_roles(session=session, actor=ACTOR, rows=read_roles(text))
    assert (again.roles_added, again.roles_changed, again.roles_ended) == (0, 0, 0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty"),
        ("project,user\nx,y\n", "line 1: the header must be"),
        (
            "project,username,email,role\nx,y,y@example.org,Owner,extra\n",
            "line 2: expected 4 columns",
        ),
        ("project,username,email,role\nx,y,not-an-email,Owner\n", "line 2: 'not-an-email'"),
        ("project,username,email,role\nx,y,y@example.org,Admin\n", "must be Owner or Maintainer"),
        ("project,username,email,role\nbad name,y,y@example.org,Owner\n", "line 2: 'bad name'"),
        (
            "project,username,email,role\na,y,same@example.org,Owner\nb,z,same@example.org,Owner\n",
            "line 3: same@example.org is given for two usernames",
        ),
        (
            '[{"project": "x", "username": "y", "email": "y@example.org", "role": 3}]',
            "row 1: role must be text",
        ),
        ('{"rows": 5}', "a list of rows"),
        ("{not json", "not valid JSON"),
    ],
)
def test_a_bad_roles_file_is_rejected_with_its_line(text, message):
    with pytest.raises(ImportRejected) as rejection:
        read_roles(text)
    assert message in str(rejection.value)


def test_roles_import_refuses_an_email_of_another_maintainer(session):
    make_maintainer(session, username="owner-of-address", email="taken@example.org")
    rows = read_roles("project,username,email,role\nx,newcomer,taken@example.org,Owner\n")
    with pytest.raises(ImportRejected, match="line 2: taken@example.org belongs to"):
        roles.import_roles(session=session, actor=ACTOR, rows=rows)


# --- decisions --------------------------------------------------------------------------------


def codes(decision):
    return [reason.code for reason in decision.reasons]


@pytest.fixture
def with_stock(session):
    stock.receive_stock(
        session=session, actor=ACTOR, sku="TITAN-USB-C-NFC", quantity=10, reference="TEST-BATCH"
    )


@pytest.fixture
def critical_maintainer(session):
    maintainer = make_maintainer(session, country="JP")
    give_role(session, maintainer, "big-project", ProjectRoleKind.MAINTAINER)
    give_role(session, maintainer, "small-project")
    import_statistics(
        session, "project,downloads\nbig-project,100\nother,50\nsmall-project,1\n", percent=34
    )
    return maintainer


def test_a_critical_maintainer_in_a_served_country_is_eligible(
    session, settings, critical_maintainer, with_stock
):
    decision = decide(
        session=session, settings=settings, maintainer=critical_maintainer, country="JP"
    )
    assert decision.eligible and decision.reasons == []
    assert [(p.name, p.critical, p.rank) for p in decision.projects] == [
        ("big-project", True, 1),
        ("small-project", False, 3),
    ]
    assert decision.as_dict()["eligible"] is True


def test_a_role_through_an_organisation_counts(session, settings, with_stock):
    maintainer = make_maintainer(session)
    give_role(session, maintainer, "org-owned", organisation="the-org")
    import_statistics(session, "project,downloads\norg-owned,9\nx,1\n")
    decision = decide(session=session, settings=settings, maintainer=maintainer, country="DE")
    assert decision.eligible
    assert decision.projects[0].organisation == "the-org"


def test_every_failing_reason_is_reported_in_the_programme_order(session, settings):
    nobody = make_maintainer(session)
    import_statistics(session, "project,downloads\nx,1\n")
    closed = settings.replace(
        programme_opens_at=utcnow() + timedelta(days=1),
        programme_closes_at=utcnow() + timedelta(days=9),
    )
    decision = decide(session=session, settings=closed, maintainer=nobody, country="BR")
    assert codes(decision) == [
        ReasonCode.PROGRAMME_NOT_OPEN,
        ReasonCode.NO_KEYS_LEFT,
        ReasonCode.NOT_CRITICAL_MAINTAINER,
        ReasonCode.COUNTRY_NOT_SERVED,
    ]
    messages = " ".join(reason.message for reason in decision.reasons)
    assert "authenticator app (TOTP)" in messages and "Brazil" in messages
    assert "Switzerland, the United Kingdom and the United States" in messages


def test_an_ended_programme_and_a_missing_country(session, settings, critical_maintainer):
    stock.receive_stock(
        session=session, actor=ACTOR, sku="TITAN-USB-A-NFC", quantity=2, reference="T"
    )
    ended = settings.replace(
        programme_opens_at=utcnow() - timedelta(days=9),
        programme_closes_at=utcnow() - timedelta(days=1),
    )
    decision = decide(session=session, settings=ended, maintainer=critical_maintainer, country=None)
    assert codes(decision) == [ReasonCode.PROGRAMME_ENDED, ReasonCode.COUNTRY_MISSING]


def test_the_not_critical_reason_lists_projects_with_rank_and_cutoff(session, settings):
    maintainer = make_maintainer(session)
    give_role(session, maintainer, "tiny")
    import_statistics(session, "project,downloads\na,9\nb,8\ntiny,1\n", percent=34)
    reason = decide(
        session=session, settings=settings, maintainer=maintainer, country="DE"
    ).reasons[-1]
    assert reason.code is ReasonCode.NOT_CRITICAL_MAINTAINER
    assert "tiny (rank 3)" in reason.message and "ranks 1 to 2" in reason.message


def test_without_statistics_nobody_is_critical(session, settings):
    maintainer = make_maintainer(session)
    decision = decide(session=session, settings=settings, maintainer=maintainer, country="DE")
    assert "not been imported yet" in decision.reasons[-1].message


# --- appeals and notices ----------------------------------------------------------------------


def test_a_granted_appeal_overrides_the_critical_check(
    session, mailer, settings, mailbox, with_stock
):
    maintainer = make_maintainer(session, email="appealing@example.org")
    import_statistics(session, "project,downloads\nx,1\n")
    appeal = appeals.file_appeal(
        session=session,
        actor=ACTOR,
        maintainer=maintainer,
        text="I maintain the C extension of x.",
        projects=["x"],
    )
    with pytest.raises(AppealNotAllowed, match="under review"):
        appeals.file_appeal(
            session=session,
            actor=ACTOR,
            maintainer=maintainer,
            text="Again and again and again.",
            projects=[],
        )
    staff = make_staff(session)
    appeals.decide_appeal(
        session=session,
        mailer=mailer,
        actor=actor_for(staff),
        appeal_id=appeal.id,
        grant=True,
        reason="Confirmed with PyPI.",
        base_url=settings.base_url,
    )
    session.commit()  # mail leaves once the transaction commits
    decision = decide(session=session, settings=settings, maintainer=maintainer, country="DE")
    assert decision.eligible and decision.override.id == appeal.id
    assert "granted" in mailbox.to("appealing@example.org")[-1]["Subject"]
    with pytest.raises(AppealClosed):
        appeals.decide_appeal(
            session=session,
            mailer=mailer,
            actor=ACTOR,
            appeal_id=appeal.id,
            grant=False,
            reason="Changed my mind",
            base_url=settings.base_url,
        )
    actions = [e.action for e in session.exec(select(AuditEvent)).all()]
    assert "appeal.filed" in actions and "appeal.granted" in actions


def test_notices_go_once_to_newly_eligible_maintainers(session, mailer, settings, mailbox):
    eligible = make_maintainer(session, username="newly", email="newly@example.org", country="CA")
    elsewhere = make_maintainer(session, username="abroad", country="BR")
    unknown_country = make_maintainer(session, username="unplaced", country=None)
    for person in (eligible, elsewhere, unknown_country):
        give_role(session, person, "famous")
    import_statistics(session, "project,downloads\nfamous,10\nobscure,1\n")

    pending = notify.newly_eligible(session=session, settings=settings)
    assert [(n.maintainer.username, n.projects) for n in pending] == [
        ("newly", ["famous"]),
        ("unplaced", ["famous"]),
    ]
    notify.send_notices(session=session, mailer=mailer, settings=settings, notices=pending)
    session.commit()
    body = mailbox.to("newly@example.org")[0].get_content()
    assert "famous" in body and "/sign-in" in body
    assert notify.newly_eligible(session=session, settings=settings) == []
    assert len(session.exec(select(EligibilityNotice)).all()) == 2

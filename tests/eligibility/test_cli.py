"""`flask --app app eligibility …` with --json, as operators' scripts call it."""

from __future__ import annotations

import json

import pytest

from tests.factories import make_maintainer

STATS = "project,downloads\nbig,100\nmiddle,50\nsmall,1\n"
ROLES = (
    "project,username,email,role\n"
    "big,cli-owner,cli-owner@example.org,Owner\n"
    "small,cli-small,cli-small@example.org,Maintainer\n"
)


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def run_json(runner, *args):
    result = runner.invoke(args=[*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_import_downloads_prints_the_summary(runner, tmp_path):
    path = write(tmp_path, "stats.csv", STATS)
    first = run_json(runner, "eligibility", "import-downloads", path, "--percent", "34")
    assert {
        k: first[k] for k in ("total_projects", "critical_count", "cutoff_rank", "added", "removed")
    } == {"total_projects": 3, "critical_count": 2, "cutoff_rank": 2, "added": 0, "removed": 0}
    again = run_json(runner, "eligibility", "import-downloads", path, "--percent", "34")
    assert again["unchanged"] is True and again["list_id"] == first["list_id"]


def test_import_downloads_with_a_ranking_and_a_total(runner, tmp_path):
    path = write(tmp_path, "ranks.csv", "rank,project\n1,a\n2,b\n3,c\n")
    report = run_json(runner, "eligibility", "import-downloads", path, "--total-projects", "150")
    assert (report["total_projects"], report["critical_count"], report["cutoff_rank"]) == (
        150,
        2,
        2,
    )


def test_import_downloads_rejects_a_bad_file_with_its_line(runner, tmp_path):
    path = write(tmp_path, "bad.csv", "project,downloads\na,1\nb,many\n")
    result = runner.invoke(args=["eligibility", "import-downloads", path, "--json"])
    assert result.exit_code == 1
    assert "line 3: 'many' is not a download count" in result.output


def test_import_roles_then_check_and_notify(runner, tmp_path, session, mailbox):
    run_json(
        runner,
        "eligibility",
        "import-downloads",
        write(tmp_path, "s.csv", STATS),
        "--percent",
        "34",
    )
    roles = run_json(runner, "eligibility", "import-roles", write(tmp_path, "r.csv", ROLES))
    assert roles["maintainers_added"] == 2 and roles["roles_added"] == 2

    verdict = run_json(runner, "eligibility", "check", "CLI-owner", "--country", "uk")
    assert verdict["reasons"] == [
        {"code": "no_keys_left", "message": verdict["reasons"][0]["message"]}
    ]  # the test database holds no stock
    assert verdict["country"] == "UK"
    small = run_json(runner, "eligibility", "check", "cli-small", "--country", "US")
    assert [r["code"] for r in small["reasons"]] == ["no_keys_left", "not_critical_maintainer"]

    dry = run_json(runner, "eligibility", "notify", "--dry-run")
    assert dry == {"dry_run": True, "notified": [{"username": "cli-owner", "projects": ["big"]}]}
    assert mailbox.messages == []
    sent = run_json(runner, "eligibility", "notify")
    assert sent["notified"] == dry["notified"]
    assert [m["To"] for m in mailbox.messages] == ["cli-owner@example.org"]
    assert run_json(runner, "eligibility", "notify")["notified"] == []


def test_check_explains_unknown_people_and_countries(runner, session):
    make_maintainer(session, username="someone")
    unknown = runner.invoke(args=["eligibility", "check", "nobody", "--country", "DE"])
    assert unknown.exit_code == 1 and "No maintainer is called 'nobody'" in unknown.output
    bad = runner.invoke(args=["eligibility", "check", "someone", "--country", "XX"])
    assert bad.exit_code == 1 and "'XX' is not a country code" in bad.output

"""`flask --app app shipping validate-address`, as operators' scripts call it."""

from __future__ import annotations

import json

import pytest

BRITISH_MUSEUM = {
    "country_code": "UK",
    "name": "Joe Bloggs",
    "street_address": "Great Russell Street",
    "city": "London",
    "postal_code": "wc1b3dg",
}


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def validate(runner, text, *options):
    return runner.invoke(args=["shipping", "validate-address", *options], input=text)


@pytest.mark.parametrize("options", [(), ("--json",)])
def test_a_valid_address_prints_it_normalised_with_its_label(runner, options):
    result = validate(runner, json.dumps(BRITISH_MUSEUM), *options)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "valid": True,
        "errors": {},
        "address": {
            "country_code": "GB",
            "name": "Joe Bloggs",
            "company_name": "",
            "street_address": "Great Russell Street",
            "city_area": "",
            "city": "LONDON",
            "country_area": "",
            "postal_code": "WC1B 3DG",
            "sorting_code": "",
        },
        "lines": ["Joe Bloggs", "Great Russell Street", "LONDON", "WC1B 3DG", "UNITED KINGDOM"],
    }


def test_a_japanese_address_keeps_its_city(runner):
    tokyo_station = {
        "country_code": "JP",
        "name": "Yamada Taro",
        "street_address": "1-9-1 Marunouchi",
        "city": "Chiyoda-ku",
        "country_area": "東京都",
        "postal_code": "1000005",
    }
    result = validate(runner, json.dumps(tokyo_station))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["address"]["city"] == "Chiyoda-ku"
    assert report["lines"] == [
        "Yamada Taro",
        "1-9-1 Marunouchi",
        "Chiyoda-ku, TOKYO 100-0005",
        "JAPAN",
    ]


@pytest.mark.parametrize(
    ("changes", "errors"),
    [
        (
            {"postal_code": "WC1B 3DGX", "city": None},
            {"city": "required", "postal_code": "invalid"},
        ),
        ({"country_code": "BR"}, {"country_code": "not_served"}),
        ({"country_code": "XX"}, {"country_code": "invalid"}),
        ({"country_area": "Kent"}, {"country_area": "forbidden"}),
    ],
)
def test_an_invalid_address_prints_the_errors_and_exits_1(runner, changes, errors):
    raw = {k: v for k, v in {**BRITISH_MUSEUM, **changes}.items() if v is not None}
    result = validate(runner, json.dumps(raw))
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {
        "valid": False,
        "errors": errors,
        "address": {},
        "lines": [],
    }
    assert result.stderr.strip()  # and says why, for a person at the terminal


def test_the_served_countries_come_from_the_settings(app_factory):
    runner = app_factory(countries=("FR",)).test_cli_runner()
    result = validate(runner, json.dumps(BRITISH_MUSEUM))
    assert result.exit_code == 1
    assert json.loads(result.stdout)["errors"] == {"country_code": "not_served"}
    assert "Keys can be shipped to France." in result.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"country_code": "UK",', "The input is not JSON"),
        ("", "The input is not JSON"),
        ('["UK"]', "must be one JSON object"),
        ('{"country_code": "IT", "postal_code": 184}', "'postal_code' must be a string"),
    ],
)
def test_input_that_is_not_an_address_document_exits_2(runner, text, message):
    result = validate(runner, text)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert message in result.stderr


def test_stock_receive_and_report(app):
    runner = app.test_cli_runner()
    received = runner.invoke(
        args=[
            "stock",
            "receive",
            "--model",
            "TITAN-USB-C-NFC",
            "--quantity",
            "25",
            "--reference",
            "DN-7",
            "--json",
        ]
    )
    assert received.exit_code == 0, received.output
    assert json.loads(received.output)["quantity"] == 25
    again = runner.invoke(
        args=[
            "stock",
            "receive",
            "--model",
            "TITAN-USB-C-NFC",
            "--quantity",
            "25",
            "--reference",
            "DN-7",
        ]
    )
    assert again.exit_code == 1 and "received already" in again.output
    unknown = runner.invoke(
        args=["stock", "receive", "--model", "NOPE", "--quantity", "1", "--reference", "X"]
    )
    assert unknown.exit_code == 1 and "no key model 'NOPE'" in unknown.output

    report = json.loads(runner.invoke(args=["stock", "report", "--json"]).output)
    assert (report["on_hand"], report["available"], report["reconciles"]) == (25, 25, True)
    assert [m["on_hand"] for m in report["models"]] == [0, 25]
    assert report["figures"]["received"] == {
        "TITAN-USB-A-NFC": 0,
        "TITAN-USB-C-NFC": 25,
        "total": 25,
    }
    assert report["figures"]["reserved"]["total"] == 0
    assert report["checks"] and all(c["expected"] == c["found"] for c in report["checks"])
    text = runner.invoke(args=["stock", "report"]).output
    assert "Received" in text and "Written off" in text
    assert "The figures reconcile" in text


def test_claims_expire_is_safe_to_repeat(app):
    runner = app.test_cli_runner()
    for _ in range(2):
        result = runner.invoke(args=["claims", "expire", "--json"])
        assert result.exit_code == 0 and json.loads(result.output) == {"expired": 0}


def test_a_label_run_from_the_command_line(app, session, tmp_path):
    from pypdf import PdfReader
    from sqlmodel import select

    from distribution.models import Claim, LabelRun
    from tests.factories import BERLIN, USB_A, USB_C, redeem_parcel, stock_famous_project

    settings = app.extensions["keys_settings"]
    stock_famous_project(session, {USB_A: 4, USB_C: 4})
    washington = {
        "country_code": "US",
        "street_address": "1600 Pennsylvania Ave NW",
        "city": "Washington",
        "country_area": "DC",
        "postal_code": "20500",
        "name": "Person 2",
    }
    references = [
        redeem_parcel(session, settings, address=address)[1].reference
        for address in (BERLIN, washington)
    ]
    session.commit()
    out = tmp_path / "run.pdf"

    result = app.test_cli_runner().invoke(
        args=["shipping", "labels", "--status", "redeemed", "--out", str(out), "--json"]
    )

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # progress lines go to stderr
    assert report == {
        "parcels": 2,
        "out": str(out),
        "run": report["run"],
        "label_printed": 2,
        "skipped": [],
    }
    run = session.get(LabelRun, report["run"])
    assert (run.status, run.printed, run.pages_done, run.pages_total) == ("done", 2, 4, 4)
    pages = PdfReader(out).pages
    assert len(pages) == 4  # a label and a packing slip per parcel
    text = "\n".join(page.extract_text() for page in pages)
    assert all(reference in text for reference in references)
    assert {c.status for c in session.exec(select(Claim)).all()} == {"label_printed"}
    assert not (tmp_path / "run.pdf.partial").exists()
    again = app.test_cli_runner().invoke(
        args=["shipping", "labels", "--out", str(tmp_path / "none.pdf"), "--json"]
    )
    assert json.loads(again.stdout) == {
        "parcels": 0,
        "out": None,
        "run": None,
        "label_printed": 0,
        "skipped": [],
    }
    assert not (tmp_path / "none.pdf").exists() and not (tmp_path / "none.pdf.partial").exists()


def waiting_parcels(session, settings, count=2):
    from tests.factories import USB_A, USB_C, redeem_parcel, stock_famous_project

    stock_famous_project(session, {USB_A: 4, USB_C: 4})
    parcels = [redeem_parcel(session, settings)[1] for _ in range(count)]
    session.commit()
    return parcels


def statuses(session):
    from sqlmodel import select

    from distribution.models import Claim

    session.expire_all()
    return {claim.status for claim in session.exec(select(Claim)).all()}


@pytest.mark.parametrize("where", ["missing/run.pdf", "a-file/run.pdf"])
def test_a_label_run_to_a_path_that_cannot_be_written_is_refused_first(
    app, session, tmp_path, where
):
    # The claims were label_printed already when writing the file died with a traceback.
    from sqlmodel import select

    from distribution.models import LabelRun

    waiting_parcels(session, app.extensions["keys_settings"])
    (tmp_path / "a-file").write_text("not a directory")
    out = tmp_path / where

    result = app.test_cli_runner().invoke(args=["shipping", "labels", "--out", str(out), "--json"])

    assert result.exit_code == 2
    assert f"Invalid value for '--out': {out} cannot be written: " in result.stderr
    assert result.stdout == ""
    assert session.exec(select(LabelRun)).all() == [] and statuses(session) == {"redeemed"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_a_label_file_that_fails_after_the_run_points_to_the_stored_pdf(app, session, tmp_path):
    import os
    import shutil
    import threading
    import time

    from distribution.models import LabelRun

    waiting_parcels(session, app.extensions["keys_settings"], count=4)
    folder = tmp_path / "printer-share"
    folder.mkdir()
    os.utime(folder, ns=(0, 0))  # a file made or removed in it moves its time on
    out = folder / "run.pdf"

    def unmount_the_share():
        # The share goes away once the command tried it (made and removed a file there), while
        # the run renders.
        deadline = time.monotonic() + 60
        tried = folder / "run.pdf.partial"
        while (folder.stat().st_mtime_ns == 0 or tried.exists()) and time.monotonic() < deadline:
            time.sleep(0.001)
        shutil.rmtree(folder)

    vanishing = threading.Thread(target=unmount_the_share)
    vanishing.start()
    result = app.test_cli_runner().invoke(args=["shipping", "labels", "--out", str(out), "--json"])
    vanishing.join()

    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    page = f"http://localhost/staff/shipping/runs/{report['run']}"
    assert report == {
        "parcels": 4,
        "out": None,
        "run": report["run"],
        "label_printed": 4,
        "skipped": [],
        "page": page,
    }
    assert (
        f"Error: {out} could not be written (No such file or directory). The PDF of run "
        f"{report['run']} is complete and stored, and its 4 parcel(s) count as printed: "
        f"download it from {page}"
    ) in " ".join(result.stderr.split())
    assert "Traceback" not in result.output
    run = session.get(LabelRun, report["run"])
    assert run.status == "done" and run.pdf.startswith(b"%PDF")
    assert statuses(session) == {"label_printed"}


def test_a_piped_label_run_shows_its_progress_on_stderr(app, session, tmp_path):
    parcels = waiting_parcels(session, app.extensions["keys_settings"], count=3)
    out = tmp_path / "run.pdf"

    result = app.test_cli_runner().invoke(args=["shipping", "labels", "--out", str(out), "--json"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["parcels"] == len(parcels)  # stdout: the report only
    assert result.stderr.splitlines() == ["labels: 0/6 pages", "labels: 6/6 pages"]
    assert out.read_bytes().startswith(b"%PDF")
    assert not (tmp_path / "run.pdf.partial").exists()


def test_a_label_run_without_a_layout_takes_the_settings_one(app_factory, session, tmp_path):
    from distribution.models import LabelRun

    app = app_factory(label_layout="a4")
    waiting_parcels(session, app.extensions["keys_settings"])

    result = app.test_cli_runner().invoke(
        args=["shipping", "labels", "--out", str(tmp_path / "run.pdf"), "--json"]
    )

    assert result.exit_code == 0, result.output
    run = session.get(LabelRun, json.loads(result.stdout)["run"])
    assert (run.layout, run.pages_total) == ("a4", 2)  # two parcels' labels and slips, 2 sheets


def test_inspect_attestation_tells_support_what_a_key_sent(app):
    from uuid import UUID

    from adapters import webauthn
    from tests.soft_authenticator import SoftAuthenticator, TestCA

    options, _challenge = webauthn.registration_options(
        rp=webauthn.RelyingParty.from_base_url("https://keys.example.org", name="Keys"),
        user_id=b"maintainer:1",
        user_name="ada@example.org",
        display_name="Ada",
    )
    titan = UUID("42b4fb4a-2866-43b2-9bf7-6c6669c2e5d3")
    sent = SoftAuthenticator(aaguid=titan, ca=TestCA.create()).register(
        options, origin="https://keys.example.org"
    )["response"]
    runner = app.test_cli_runner()

    def inspect(attestation: str, client_data: str) -> dict[str, object]:
        result = runner.invoke(
            args=[
                "keys",
                "inspect-attestation",
                "--attestation-object",
                attestation,
                "--client-data",
                client_data,
                "--json",
            ]
        )
        assert result.exit_code == 0, result.output
        report: dict[str, object] = json.loads(result.output)
        return report

    forged = inspect(sent["attestationObject"], sent["clientDataJSON"])
    garbage = inspect("not-cbor", sent["clientDataJSON"])

    assert forged["format"] == "packed" and forged["aaguid"] == str(titan)
    assert forged["model"] == "Google Titan Security Key v2"  # what it claims to be…
    assert (forged["trusted"], forged["titan"]) == (False, False)  # …but cannot prove
    assert forged["problem"]
    assert garbage["format"] is None and "not base64url CBOR" in str(garbage["problem"])

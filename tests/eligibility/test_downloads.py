"""Reading statistics files and ranking projects: normalisation, merging, ties, rejections;
and hostile files refused early, through the service, the staff upload and the CLI alike."""

from __future__ import annotations

import io
import json
import os
import resource
import subprocess
import sys

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from markupsafe import escape

from accounts.models import StaffRole
from app import import_models
from core.actors import Actor
from core.db import create_db_engine
from eligibility import critical
from eligibility.downloads import critical_count, rank_projects, read_download_file
from eligibility.errors import ImportRejected
from eligibility.names import normalize_names, normalize_project_name
from tests.factories import csrf_token, make_staff, sign_in_as


def read(text: str | bytes):
    data = text.encode() if isinstance(text, str) else text
    return read_download_file(io.BytesIO(data))


def top_names(table, total=None, percent=50.0):
    ranking = rank_projects(table, total_projects=total or len(table.values), percent=percent)
    return [(p.name, p.rank, p.downloads) for p in ranking.top]


@pytest.mark.parametrize(
    ("name", "normalized"),
    [
        ("Requests", "requests"),
        ("zope.interface", "zope-interface"),
        ("Foo__Bar-.-baz", "foo-bar-baz"),
        ("  spaced_out ", "spaced-out"),
        ("A", "a"),
    ],
)
def test_names_are_normalised_as_pep_503_says(name, normalized):
    assert normalize_project_name(name) == normalized
    assert normalize_names([name], first=2) == [normalized]


@given(
    st.lists(
        st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,20}[A-Za-z0-9])?", fullmatch=True),
        min_size=1,
        max_size=30,
    )
)
def test_bulk_normalisation_matches_the_one_name_rule(names):
    assert normalize_names(names, first=2) == [normalize_project_name(n) for n in names]


def test_duplicates_after_normalisation_are_summed():
    table = read("project,downloads\nFoo_Bar,10\nfoo-bar,5\nFOO.BAR,1\nother,12\n")
    assert table.values == {"foo-bar": 16, "other": 12}
    assert table.rows == 4
    assert table.source_format == "csv-counts"


@pytest.mark.parametrize("block", [4, 7, 1 << 17])
def test_duplicates_across_chunks_are_summed(monkeypatch, block):
    monkeypatch.setattr("eligibility.downloads.BLOCK_CHARACTERS", block)
    monkeypatch.setattr("eligibility.downloads.CHUNK_ROWS", 2)
    table = read("project,downloads\na,1\nb,2\nc,3\nA,4\nb,5\nlast,6")
    assert table.values == {"a": 5, "b": 7, "c": 3, "last": 6}
    assert table.rows == 6
    as_json = {
        "rows": [
            {"project": p, "download_count": n} for p, n in [("a", 1), ("b", 2), ("A", 4), ("b", 5)]
        ]
    }
    assert read(json.dumps(as_json)).values == {"a": 5, "b": 7}


def test_quoted_cells_and_windows_line_ends_are_read():
    table = read(b'project,downloads\r\n"requests",5\r\n"zope.interface"," 7 "\r\n')
    assert table.values == {"requests": 5, "zope-interface": 7}


def test_ties_at_the_cutoff_are_broken_by_name():
    table = read("project,downloads\nzeta,50\nbeta,50\nalpha,50\ntop,100\nlow,1\n")
    # 5 projects at 60% → ceil(3.0) = 3 critical: top, then the tied 50s by name.
    assert top_names(table, percent=60) == [("top", 1, 100), ("alpha", 2, 50), ("beta", 3, 50)]


def test_the_cutoff_is_computed_exactly():
    assert critical_count(750_000, 1) == 7_500  # not 7,501 from 750000 * 0.01
    assert critical_count(350_001, 1) == 3_501
    assert critical_count(3, 0.5) == 1


def test_ranks_of_projects_below_the_cutoff():
    table = read("project,downloads\na,100\nb,90\nc,80\nd,80\ne,10\n")
    ranking = rank_projects(table, total_projects=5, percent=20, wanted=["d", "e", "a", "zz"])
    assert [p.name for p in ranking.top] == ["a"]
    assert ranking.cutoff_downloads == 100
    assert {name: p.rank for name, p in ranking.others.items()} == {"d": 4, "e": 5}


def test_json_rows_in_the_shape_of_pypi_rankings():
    document = {
        "rows": [{"project": "Boto3", "download_count": 9}, {"project": "pip", "download_count": 7}]
    }
    table = read(json.dumps(document))
    assert table.values == {"boto3": 9, "pip": 7}
    assert table.source_format == "json-counts"


def test_a_ranking_file_keeps_its_ranks_and_best_duplicate():
    table = read("rank,project\n1,boto3\n2,urllib3\n4,Boto_3\n5,certifi\n3,URLLIB3\n")
    assert table.values == {"boto3": 1, "urllib3": 2, "boto-3": 4, "certifi": 5}
    ranking = rank_projects(table, total_projects=400, percent=1, wanted=["certifi"])
    assert [(p.name, p.rank) for p in ranking.top] == [("boto3", 1), ("urllib3", 2), ("boto-3", 4)]
    assert ranking.others["certifi"].rank == 5
    assert ranking.cutoff_downloads is None


def test_a_byte_order_mark_is_ignored():
    assert read("\ufeffproject,downloads\nx,1\n".encode()).values == {"x": 1}


def test_the_same_content_has_the_same_fingerprint():
    assert read("project,downloads\nx,1\n").sha256 == read("project,downloads\nx,1\n").sha256
    assert read("project,downloads\nx,1\n").sha256 != read("project,downloads\nx,2\n").sha256


NOT_A_COUNT = "is not a download count (a whole number below 1,000,000,000,000,000)"
BAD_JSON_COUNT = "download_count must be a whole number below 1,000,000,000,000,000"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"project,downloads\n", "the file holds no projects"),
        (b"name,count\nx,1\n", "line 1: the header must be"),
        (b"project,downloads\nx,1\n,5\n", "line 3: the project name is missing"),
        (b"project,downloads\nx,1\ny,-4\n", "line 3: a download count cannot be -4"),
        (b"project,downloads\nx,1\ny,lots\n", "line 3: 'lots' is not a download count"),
        (b"project,downloads\nx,1\ny,1.5\n", "line 3: '1.5' is not a download count"),
        (b"project,downloads\nx,1\ny,2,3\n", "line 3: expected 2 columns, found 3"),
        (b"project,downloads\nx,1\n\ny,2\n", "line 3: expected 2 columns, found 0"),
        (b'project,downloads\nx,1\n"y,2\n', "line 3: expected 2 columns, found 1"),
        (b"project,downloads\nx,1\nbad name,2\n", "line 3: 'bad name' is not a valid"),
        (b"project,downloads\nx,1\n\xff\xfe,2\n", "not UTF-8 text"),
        (b"rank,project\n0,x\n", "line 2: a rank cannot be 0"),
        (b'{"rows": [{"project": "x", "download_count": 1}, ', "not valid JSON"),
        (b'{"rows": [{"project": "x", "download_count": -1}]}', "row 1: a download count"),
        (b'{"rows": [{"project": "x", "download_count": 1.5}]}', "row 1: download_count must"),
        (b'{"rows": [{"project": "", "download_count": 1}]}', "row 1: the project name is"),
        (b'{"rows": [{"download_count": 1}]}', "row 1: the project name is missing"),
        (b'{"rows": [{"project": "a b", "download_count": 1}]}', "row 1: 'a b' is not"),
        (b'{"rows": [7]}', "row 1: each row must be an object"),
        (b'{"rows": [{"project": "x", "download_count": 1}, [1]]}', "row 2: each row must be"),
        # Beyond what a row may hold (counts below 10**15, ranks the INTEGER column's).
        (b"project,downloads\nx,1000000000000000\n", f"line 2: '1000000000000000' {NOT_A_COUNT}"),
        (b"project,downloads\nx,9223372036854775808\n", "line 2: '9223372036854775808' is not"),
        (b'{"rows": [{"project": "x", "download_count": 1e15}]}', f"row 1: {BAD_JSON_COUNT}"),
        (b'{"rows": [{"project": "x", "download_count": 1e400}]}', f"row 1: {BAD_JSON_COUNT}"),
        (b'{"rows": [{"project": "x", "download_count": -1e400}]}', f"row 1: {BAD_JSON_COUNT}"),
        (
            b"rank,project\n2147483648,x\n",
            "line 2: '2147483648' is not a rank (a whole number from",
        ),
        # Numbers the parser could not hold as an int or a Decimal (more digits than an int may
        # have, a larger exponent than a Decimal's) were 500s.
        (b'{"rows": [{"project": "x", "download_count": ' + b"9" * 5000 + b"}]}", BAD_JSON_COUNT),
        (b'{"rows": [{"project": "x", "download_count": 1e9999999999999999999}]}', BAD_JSON_COUNT),
        (b'{"rows": [{"project": "x", "download_count": 12x}]}', "not valid JSON"),
        (b'{"rows": [{"project": "x", "download_count": ', "not valid JSON"),
        (b"project,downloads\nx,1\n" + b"a" * 201 + b",2\n", f"line 3: '{'a' * 40}'… is longer"),
        (b'{"rows": [{"project": "' + b"a" * 201 + b'", "download_count": 1}]}', "longer than 200"),
    ],
)
def test_a_malformed_file_is_rejected_whole_with_its_line(content, message):
    with pytest.raises(ImportRejected) as rejection:
        read(content)
    assert message in str(rejection.value)


def test_the_line_number_is_right_deep_inside_a_large_file():
    rows = "".join(f"p{n},{n}\n" for n in range(12_345))
    with pytest.raises(ImportRejected, match="line 12347: 'oops' is not a download count"):
        read(f"project,downloads\n{rows}q,oops\n")


def test_progress_is_reported_in_bytes():
    seen: list[int] = []
    data = ("project,downloads\n" + "".join(f"p{n},{n}\n" for n in range(50_000))).encode()
    read_download_file(io.BytesIO(data), on_progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == len(data)


def test_counts_up_to_the_limit_are_read():
    table = read("project,downloads\nx,999999999999999\ny,  " + " " * 40 + "7\n")
    assert table.values == {"x": 999_999_999_999_999, "y": 7}
    rows = [{"project": "x", "download_count": 999_999_999_999_999}]
    rows += [{"project": "y", "download_count": 1e2}, {"project": "z", "download_count": -0}]
    assert read(json.dumps({"rows": rows})).values == {"x": 999_999_999_999_999, "y": 100, "z": 0}


def test_a_name_whose_rows_sum_past_the_column_is_rejected():
    # Each row is below the limit; 9,224 of them under one name are not.
    rows = "x,999999999999999\n" * 9_224
    with pytest.raises(ImportRejected, match="'x' has a download count larger than 9,223,372,"):
        read("project,downloads\n" + rows)


def test_other_keys_of_the_document_are_skipped():
    document = {
        "last_update": "2024-11-01 07:15:32",
        "query": {"bytes_billed": 1, "cached": False},
        "rows": [{"download_count": 9, "project": "boto3"}],
    }
    assert read(json.dumps(document)).values == {"boto3": 9}


# --- hostile files ----------------------------------------------------------------------------

# Small files that kept a worker busy for half a minute or more (issue 16), the first two as they
# were reported, and their kin. Whichever way one arrives, it is refused with its reason and
# nothing is written. Each is below the 500 KB from which the test client would spool its
# request body to a temporary file.
HOSTILE = [
    pytest.param(
        b'{"rows":[{"project":"a","download_count":1e1000000}]}',
        f"row 1: {BAD_JSON_COUNT}",
        id="json-1e1000000",
    ),
    pytest.param(
        b'{"rows":' + b"[" * 200_000 + b"]" * 200_000 + b"}",
        "row 1: each row must be an object",
        id="json-nested-arrays",
    ),
    pytest.param(
        b'{"rows":[{"project":' + b"[" * 200_000 + b"]" * 200_000 + b"}]}",
        "row 1: the file nests deeper than its rows allow",
        id="json-nested-in-a-row",
    ),
    pytest.param(
        b'{"query":' + b'{"q":' * 60_000 + b"1" + b"}" * 60_000 + b',"rows":[]}',
        "the file nests deeper than its rows allow",
        id="json-nested-beside-the-rows",
    ),
    pytest.param(
        b"project,downloads\na,1e1000000\n",
        f"line 2: '1e1000000' {NOT_A_COUNT}",
        id="csv-1e1000000",
    ),
    pytest.param(
        b"project,downloads\na," + b"9" * 100_000 + b"\n",
        f"line 2: '{'9' * 40}' {NOT_A_COUNT}",
        id="csv-100000-digits",
    ),
]


def rows_per_table(connection: sa.Connection) -> dict[str, int]:
    """Rows in each of the app's tables (the browser sessions aside)."""
    tables = [t for t in import_models().metadata.sorted_tables if t.name != "web_session"]
    count = sa.func.count()
    return {
        t.name: connection.execute(sa.select(count).select_from(t)).scalar_one() for t in tables
    }


@pytest.mark.parametrize(("content", "message"), HOSTILE)
def test_a_hostile_file_is_refused_by_the_import(session, connection, content, message):
    before = rows_per_table(connection)
    with pytest.raises(ImportRejected) as rejection:
        critical.import_download_statistics(
            session=session,
            actor=Actor.system("test"),
            stream=io.BytesIO(content),
            source_name="hostile",
            percent=1,
            sticky=True,
        )
    assert message in str(rejection.value)
    assert rows_per_table(connection) == before


@pytest.mark.parametrize(("content", "message"), HOSTILE)
def test_a_hostile_file_is_refused_by_the_staff_upload(
    client, session, connection, content, message
):
    sign_in_as(client, make_staff(session, roles=[StaffRole.PROGRAMME]))
    token = csrf_token(client, "/staff/critical-lists")
    before = rows_per_table(connection)
    refused = client.post(
        "/staff/critical-lists",
        data={"file": (io.BytesIO(content), "stats"), "csrf_token": token},
        content_type="multipart/form-data",
    )
    assert refused.status_code == 422
    assert escape(message) in refused.get_data(as_text=True)
    assert rows_per_table(connection) == before


def _at_most_ten_cpu_seconds() -> None:
    # Not a timing assertion: a regression (the first file once took 87 s of CPU here) is
    # killed instead of holding up the run, and its test fails.
    resource.setrlimit(resource.RLIMIT_CPU, (10, 10))


@pytest.mark.parametrize(("content", "message"), HOSTILE)
def test_a_hostile_file_is_refused_by_the_cli(databases, tmp_path, content, message):
    url = databases.create("hostile_cli")
    engine = create_db_engine(url)
    with engine.connect() as connection:
        before = rows_per_table(connection)
    path = tmp_path / "stats"
    path.write_bytes(content)
    env = {
        **os.environ,
        "KEYS_ENV": "development",
        "KEYS_DATABASE_URL": url,
        "KEYS_INSTANCE_PATH": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "eligibility", "import-downloads", path],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        preexec_fn=_at_most_ten_cpu_seconds,
    )
    assert done.returncode == 1, done.stderr
    assert f"Error: {message}" in done.stderr
    with engine.connect() as connection:
        assert rows_per_table(connection) == before
    engine.dispose()

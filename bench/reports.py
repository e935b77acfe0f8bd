"""Benchmark: the reports over a programme of 2,000 claims, on SQLite and PostgreSQL.

For each database it builds a fresh one (an SQLite file in a temporary directory; a throw-away
PostgreSQL cluster from ``scripts/pg-cluster.sh``, skipped with a note if the machine has none),
runs ``flask --app app db upgrade`` and ``flask --app app seed --scale 2000`` as an operator
would (development settings, a programme opened six months ago) and times the seed. Then, in
one process with the app, it times each of these ``REPEATS`` times after one warm-up call and
reports the median:

- the floor: ``SELECT count(*) FROM claim`` in a fresh session;
- ``reports.stock_report`` and ``reports.programme_report``, each in a fresh session;
- the public figures of ``/transparency.json`` (the service: the endpoint caches them);
- the staff report page ``GET /staff/reports`` and its PDF ``GET /staff/reports.pdf``, signed in
  as the demo's viewer (a session made as a completed sign-in leaves it).

Goals: each report and page ≤ 300 ms, the PDF ≤ 3 s; a miss is reported with a profile of one
call (the functions that took the most time), not failed. The last line printed is a JSON
object of the SQLite figures, with the PostgreSQL ones under ``postgresql``.
"""

from __future__ import annotations

import cProfile
import io
import json
import logging
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from servers import flask, postgresql

if TYPE_CHECKING:
    from flask import Flask

ROOT = Path(__file__).resolve().parent.parent
SCALE = 2_000
REPEATS = 7
PDF_REPEATS = 3
GOAL_MS = 300.0
PDF_GOAL_MS = 3_000.0
VIEWER = "viewer@example.org"  # a demo staff member who reads reports


@dataclass(frozen=True)
class Timing:
    name: str
    what: str
    median_ms: float
    first_ms: float  # the warm-up call: templates compiled, caches cold
    goal_ms: float | None
    profile: str = ""

    @property
    def met(self) -> bool:
        return self.goal_ms is None or self.median_ms <= self.goal_ms


@dataclass(frozen=True)
class Run:
    database: str
    claims: int
    audit_events: int
    seed_seconds: float
    scale_seconds: float
    timings: list[Timing]

    def figure(self, name: str) -> float:
        return next(t.median_ms for t in self.timings if t.name == name)

    def as_dict(self) -> dict[str, object]:
        return {
            "claims": self.claims,
            "audit_events": self.audit_events,
            **{f"{t.name}_ms": round(t.median_ms, 1) for t in self.timings},
            "seed_seconds": round(self.seed_seconds, 1),
            "scale_seconds": round(self.scale_seconds, 1),
            "goals_met": all(t.met for t in self.timings),
        }


# --- the database -----------------------------------------------------------------------------


def environment(database_url: str, instance: Path) -> dict[str, str]:
    """Development settings (the seed runs only there or in demo mode) and a programme that
    opened six months ago, so the synthetic history needs no stretching."""
    now = datetime.now(UTC)
    return {
        "KEYS_ENV": "development",
        "KEYS_DEMO_MODE": "1",
        "KEYS_DATABASE_URL": database_url,
        "KEYS_INSTANCE_PATH": str(instance),
        "KEYS_PROGRAMME_OPENS": (now - timedelta(days=180)).isoformat(timespec="seconds"),
        "KEYS_PROGRAMME_CLOSES": (now + timedelta(days=185)).isoformat(timespec="seconds"),
    }


def build(env: dict[str, str]) -> tuple[float, float]:
    """Migrate and seed; the seconds the seed took (the whole command, and its scale part)."""
    flask(env, "db", "upgrade", bench="reports")
    started = time.perf_counter()
    output = flask(env, "seed", "--scale", str(SCALE), "--json", bench="reports")
    seconds = time.perf_counter() - started
    summary = json.loads(output.strip().splitlines()[-1])
    return seconds, float(summary["scale"]["seconds"])


# --- the measurements -------------------------------------------------------------------------


def median_ms(call: Callable[[], object], repeats: int) -> tuple[float, float]:
    """The warm-up call's time and the median of ``repeats`` more, in milliseconds."""
    samples = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples[1:]), samples[0]


def profile_of(call: Callable[[], object], lines: int = 12) -> str:
    """Where one call spends its time: the project's functions by cumulative time, then every
    function by its own time (what the library calls cost)."""
    profiler = cProfile.Profile()
    profiler.runcall(call)
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).sort_stats("cumulative")
    stats.print_stats(f"^{ROOT}/(?!\\.venv)", lines)
    stats.sort_stats("tottime").print_stats(lines)
    kept = [line for line in out.getvalue().splitlines() if line.strip()[:1].isdigit()]
    return "\n".join(line.replace(f"{ROOT}/", "") for line in kept)


def measure(app: Flask) -> tuple[int, int, list[Timing]]:
    import sqlalchemy as sa
    from sqlmodel import Session

    from accounts.services import find_staff_by_email
    from core.db import get_database
    from distribution.reports import services as reports
    from distribution.reports import transparency

    database = get_database(app)
    client = app.test_client()
    with app.app_context(), database.session() as session:
        claims = session.execute(sa.text("SELECT count(*) FROM claim")).scalar_one()
        events = session.execute(sa.text("SELECT count(*) FROM audit_event")).scalar_one()
        viewer = find_staff_by_email(session=session, email=VIEWER)
        assert viewer is not None, "the demo seed adds the viewer"
        with client.session_transaction() as browser:
            browser["_user_id"] = viewer.get_id()
            browser["_fresh"] = True

    def in_session(read: Callable[..., object]) -> Callable[[], object]:
        def call() -> object:
            with app.app_context(), database.session() as session:
                return read(session=session)

        return call

    def floor(session: Session) -> object:
        return session.execute(sa.text("SELECT count(*) FROM claim")).scalar_one()

    def get(path: str, kind: str) -> Callable[[], object]:
        def call() -> object:
            response = client.get(path)
            assert response.status_code == 200, (path, response.status_code)
            assert response.mimetype == kind, (path, response.mimetype)
            return response.data

        return call

    plan: list[tuple[str, str, Callable[[], object], float | None, int]] = [
        ("floor", "SELECT count(*) FROM claim", in_session(floor), None, REPEATS * 3),
        ("stock", "reports.stock_report", in_session(reports.stock_report), GOAL_MS, REPEATS),
        (
            "programme",
            "reports.programme_report",
            in_session(reports.programme_report),
            GOAL_MS,
            REPEATS,
        ),
        # The service, not GET /transparency.json: the page keeps its figures for ten seconds,
        # so repeated requests would time the cache.
        (
            "transparency",
            "transparency.transparency",
            in_session(transparency.transparency),
            GOAL_MS,
            REPEATS,
        ),
        ("page", "GET /staff/reports", get("/staff/reports", "text/html"), GOAL_MS, REPEATS),
        (
            "pdf",
            "GET /staff/reports.pdf",
            get("/staff/reports.pdf", "application/pdf"),
            PDF_GOAL_MS,
            PDF_REPEATS,
        ),
    ]
    timings = []
    for name, what, call, goal, repeats in plan:
        median, first = median_ms(call, repeats)
        timing = Timing(name, what, median, first, goal)
        if not timing.met:
            timing = Timing(name, what, median, first, goal, profile_of(call))
        timings.append(timing)
    return claims, events, timings


def run(database: str, url: str, directory: Path) -> Run:
    from app import create_app
    from core.db import get_database
    from core.settings import Settings

    env = environment(url, directory / "instance")
    print(f"reports: {database}: migrating and seeding --scale {SCALE}…", file=sys.stderr)
    seed_seconds, scale_seconds = build(env)
    app = create_app(Settings.from_env(env))
    # A log line per request would bury the figures; the timings are the bench's own.
    logging.getLogger("keys").setLevel(logging.WARNING)
    try:
        claims, events, timings = measure(app)
    finally:
        get_database(app).engine.dispose()
    return Run(database, claims, events, seed_seconds, scale_seconds, timings)


def measure_all() -> tuple[Run, Run | None]:
    with tempfile.TemporaryDirectory(prefix="bench-reports-") as tmp:
        directory = Path(tmp)
        sqlite = run("SQLite", f"sqlite:///{directory / 'keys.sqlite3'}", directory / "sqlite")
        # Its own directory: the server's user must reach it (the script removes it).
        cluster = Path(tempfile.mkdtemp(prefix="bench-reports-pg-"))
        try:
            with postgresql(cluster) as url:
                return sqlite, run("PostgreSQL", url, directory / "postgresql")
        except subprocess.CalledProcessError as problem:
            print(f"reports: no PostgreSQL cluster ({problem}); SQLite only", file=sys.stderr)
            return sqlite, None


# --- the report -------------------------------------------------------------------------------


def report(result: Run) -> None:
    floor = result.figure("floor")
    print(
        f"reports on {result.database}: {result.claims:,} claims, {result.audit_events:,} audit "
        f"events; seed --scale {SCALE} took {result.seed_seconds:.1f} s (the scale part "
        f"{result.scale_seconds:.1f} s); median of {REPEATS} calls ({PDF_REPEATS} for the PDF) "
        "after a warm-up"
    )
    for t in result.timings:
        ratio = f"×{t.median_ms / floor:,.0f}" if floor and t.name != "floor" else ""
        goal = f"goal ≤ {t.goal_ms:,.0f} ms  {'PASS' if t.met else 'MISS'}" if t.goal_ms else ""
        print(
            f"  {t.name:<13} {t.what:<28} {t.median_ms:9.1f} ms {ratio:>8}   "
            f"(first {t.first_ms:8.1f} ms)   {goal}"
        )
        if t.profile:
            print(f"    one call of {t.name}: ncalls tottime percall cumtime percall function")
            print("\n".join(f"    {line}" for line in t.profile.splitlines()))


def main() -> int:
    sys.path.insert(0, str(ROOT))  # measure this working tree, however the file is started
    sqlite, pg = measure_all()
    report(sqlite)
    if pg is not None:
        report(pg)
    summary = {
        "bench": Path(__file__).stem,
        **sqlite.as_dict(),
        "postgresql": pg.as_dict() if pg else None,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

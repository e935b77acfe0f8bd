"""Benchmark: importing download counts for 750,000 projects into a new critical list.

It writes a ``project,downloads`` CSV to a temporary directory, using a fixed seed. The counts
follow a long-tailed Pareto distribution, from millions down to a handful, with many ties among
the small counts. The names are messy: mixed case, runs of ``-_.`` separators and surrounding
spaces, and 1% of the rows are another spelling of a project listed elsewhere in the file. Rows
are sorted by downloads, most first (ties in random order), as PyPI's exports are. It measures:

- the floor: reading the same file with ``csv.reader`` and doing nothing else;
- ``import_download_statistics`` into a fresh, migrated SQLite database, committed. This is what
  ``flask eligibility import-downloads`` does, minus app start-up;
- its pure part alone (``read_download_file`` + ``rank_projects``), so the database's share shows;
- the peak RSS of each of these, each in a fresh child process (its VmHWM: see _peak_rss_mib).

Each timing is the best of three interleaved rounds. Goals: import ≤ 3 s, import/floor ≤ 3,
peak ≤ 200 MiB; missing one is reported, not failed. The last line printed is a JSON object of
the figures. ``--profile`` also prints a cProfile of the pure part.
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import gc
import io
import json
import os
import pstats
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar, get_args

if TYPE_CHECKING:
    import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
ROWS = 750_000
DUPLICATE_SHARE = 0.01
SEED = 20_241_122
PERCENT = 1.0
REPEATS = 3
GOAL_SECONDS = 3.0
GOAL_RATIO = 3.0
GOAL_PEAK_MIB = 200.0

# Pareto counts: the minimum is 2, the median 4, the largest of 750,000 about ten million.
_PARETO_SCALE = 2
_PARETO_ALPHA = 0.85
_CONSONANTS = "bcdfghjklmnprstvwxz"
_VOWELS = "aeiouy"
_SEPARATORS = ("-", "-", "-", "_", "_", ".", "__", "--", "_-", "._", "-.-")
_PADDINGS = (("", ""), (" ", ""), ("", " "), ("  ", " "), (" ", "  "))

T = TypeVar("T")
PeakKind = Literal["floor", "pure", "import"]


@dataclass(frozen=True)
class Dataset:
    path: Path
    rows: int
    distinct: int
    respellings: int
    size_bytes: int


@dataclass(frozen=True)
class ImportFigures:
    ranked_projects: int
    critical_count: int
    cutoff_rank: int
    cutoff_downloads: int | None


@dataclass(frozen=True)
class Timings:
    """Every run's seconds, and what the last import recorded."""

    floor: list[float]
    pure: list[float]
    imported: list[float]
    figures: ImportFigures


@dataclass(frozen=True)
class Peak:
    """A child's peak RSS after its imports only, and after its work."""

    baseline_mib: float
    peak_mib: float


@dataclass(frozen=True)
class Measurements:
    data: Dataset
    timings: Timings
    peaks: dict[PeakKind, Peak]
    profile: str


# --- the data ---------------------------------------------------------------------------------


def _word(rng: random.Random) -> str:
    syllables = rng.choice((1, 2, 2, 3, 3, 4))
    word = "".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(syllables))
    return word + str(rng.randrange(10)) if rng.random() < 0.1 else word


def _canonical_names(rng: random.Random, count: int) -> list[str]:
    """``count`` distinct names, already normalised (lower case, ``-`` between words)."""
    names: set[str] = set()
    while len(names) < count:
        names.add("-".join(_word(rng) for _ in range(rng.choice((1, 1, 2, 2, 2, 3, 4)))))
    return sorted(names)


def _messy(canonical: str, rng: random.Random) -> str:
    """A spelling of ``canonical`` that normalises back to it."""
    words = canonical.split("-")
    text = words[0] + "".join(rng.choice(_SEPARATORS) + word for word in words[1:])
    style = rng.random()
    if style < 0.35:
        text = text.title()
    elif style < 0.45:
        text = text.upper()
    elif style < 0.55:
        text = "".join(c.upper() if rng.random() < 0.5 else c for c in text)
    before, after = rng.choice(_PADDINGS) if rng.random() < 0.05 else ("", "")
    return before + text + after


def _downloads(rng: random.Random) -> int:
    return int(_PARETO_SCALE * rng.paretovariate(_PARETO_ALPHA))


def write_dataset(directory: Path) -> Dataset:
    rng = random.Random(SEED)
    respellings = round(ROWS * DUPLICATE_SHARE)
    canonical = _canonical_names(rng, ROWS - respellings)
    spelled = [_messy(name, rng) for name in canonical]
    spelled += [_messy(name, rng) for name in rng.sample(canonical, respellings)]
    rng.shuffle(spelled)
    rows = sorted(((name, _downloads(rng)) for name in spelled), key=lambda row: -row[1])
    path = directory / "downloads.csv"
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(("project", "downloads"))
        writer.writerows(rows)
    return Dataset(path, len(rows), len(canonical), respellings, path.stat().st_size)


# --- what is measured -------------------------------------------------------------------------


def run_floor(path: Path) -> None:
    with path.open(encoding="utf-8", newline="") as file:
        for _row in csv.reader(file):
            pass


def run_pure(path: Path) -> ImportFigures:
    from eligibility.downloads import rank_projects, read_download_file

    with path.open("rb") as stream:
        table = read_download_file(stream)
    ranking = rank_projects(table, total_projects=len(table.values), percent=PERCENT)
    return ImportFigures(
        len(table.values), len(ranking.top), ranking.cutoff_rank, ranking.cutoff_downloads
    )


def run_import(engine: sa.Engine, path: Path) -> ImportFigures:
    from sqlmodel import Session

    from core.actors import Actor
    from eligibility.critical import import_download_statistics

    with path.open("rb") as stream, Session(engine, expire_on_commit=False) as session:
        summary = import_download_statistics(
            session=session,
            actor=Actor.system("bench"),
            stream=stream,
            source_name=path.name,
            percent=PERCENT,
            sticky=True,
        )
        session.commit()
    critical = summary.critical_list
    return ImportFigures(
        critical.ranked_projects,
        critical.critical_count,
        critical.cutoff_rank,
        critical.cutoff_downloads,
    )


def fresh_database(directory: Path, name: str) -> str:
    """The URL of a new, migrated SQLite database."""
    from core.db import upgrade_database

    url = f"sqlite:///{directory / f'{name}.sqlite3'}"
    upgrade_database(url)
    return url


# --- timing and memory ------------------------------------------------------------------------


def _timed(run: Callable[[], T]) -> tuple[float, T]:
    gc.collect()
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def time_rounds(directory: Path, path: Path) -> Timings:
    """``REPEATS`` rounds of floor, pure part and import, interleaved so that a slow spell of a
    shared machine hits all three alike. Each import gets a fresh database, migrated and
    connected to before the clock starts (that is app start-up)."""
    from core.db import create_db_engine

    floor: list[float] = []
    pure: list[float] = []
    imported: list[float] = []
    figures: ImportFigures | None = None
    for attempt in range(REPEATS):
        floor.append(_timed(partial(run_floor, path))[0])
        pure.append(_timed(partial(run_pure, path))[0])
        engine = create_db_engine(fresh_database(directory, f"timed-{attempt}"))
        try:
            with engine.connect():
                pass
            seconds, figures = _timed(partial(run_import, engine, path))
            imported.append(seconds)
        finally:
            engine.dispose()
    assert figures is not None
    return Timings(floor, pure, imported, figures)


def _peak_rss_mib() -> float:
    """This process's peak RSS. Linux carries ``ru_maxrss`` across ``exec``, so a child would
    report this (large) parent's peak: read the address space's own high-water mark instead."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure_peak(kind: PeakKind, path: Path, url: str = "") -> Peak:
    """Run one measurement in a fresh child process (this file with ``--peak``)."""
    command = [sys.executable, __file__, "--peak", kind, "--csv", str(path), "--db", url]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return Peak(figures["baseline_mib"], figures["peak_mib"])


def child_peak(kind: PeakKind, path: Path, url: str) -> None:
    """In the child: import what ``kind`` needs, note the RSS, do the work, print the peak."""
    work: Callable[[], object]
    if kind == "floor":
        work = partial(run_floor, path)
    elif kind == "pure":
        import eligibility.downloads  # noqa: F401

        work = partial(run_pure, path)
    else:
        import eligibility.critical  # noqa: F401
        from core import db

        work = partial(run_import, db.create_db_engine(url), path)
    baseline = _peak_rss_mib()
    work()
    print(json.dumps({"baseline_mib": baseline, "peak_mib": _peak_rss_mib()}))


def profile_pure(path: Path) -> str:
    profiler = cProfile.Profile()
    profiler.runcall(run_pure, path)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(12)
    return out.getvalue()


def measure(profile: bool) -> Measurements:
    print("critical_list: generating the file, then measuring (about 30 s)…", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bench-critical-") as tmp:
        directory = Path(tmp)
        data = write_dataset(directory)
        gc.collect()
        timings = time_rounds(directory, data.path)
        peaks: dict[PeakKind, Peak] = {
            "floor": measure_peak("floor", data.path),
            "pure": measure_peak("pure", data.path),
            "import": measure_peak("import", data.path, fresh_database(directory, "peak")),
        }
        return Measurements(data, timings, peaks, profile_pure(data.path) if profile else "")


# --- the report -------------------------------------------------------------------------------


def _goal(label: str, value: str, met: bool) -> str:
    return f"  goal {label:<28} {value:>12}   {'PASS' if met else 'MISS'}"


def report(m: Measurements) -> dict[str, object]:
    """Print the figures; return the JSON summary."""
    data, timings, import_peak = m.data, m.timings, m.peaks["import"]
    floor, pure, seconds = min(timings.floor), min(timings.pure), min(timings.imported)
    ratio = seconds / floor
    print(
        f"critical_list: {data.rows:,} rows, {data.distinct:,} distinct projects "
        f"({data.respellings:,} rows respell one), {data.size_bytes / 2**20:.1f} MiB CSV, "
        f"seed {SEED}, top {PERCENT:g}%; load average {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} CPUs"
    )
    print(
        f"  seconds: best of {REPEATS} interleaved rounds (every run in brackets); "
        "peak: VmHWM of a fresh child process each"
    )
    for label, runs, peak in (
        ("floor   csv.reader, nothing else", timings.floor, m.peaks["floor"]),
        ("pure    read_download_file + rank_projects", timings.pure, m.peaks["pure"]),
        ("import  import_download_statistics + commit", timings.imported, import_peak),
    ):
        print(
            f"  {label:<44} {min(runs):6.3f} s [{' '.join(f'{run:.3f}' for run in runs)}]  "
            f"{data.rows / min(runs):>9,.0f} rows/s  "
            f"peak {peak.peak_mib:5.1f} MiB (after imports {peak.baseline_mib:4.1f})"
        )
    share = seconds - pure
    print(
        f"  import minus pure part (the database's share): {share:+.3f} s"
        + (" (below the run-to-run noise)" if share < 0 else f" ({share / seconds:.0%})")
        + f"; ratio import/floor {ratio:.2f}"
    )
    figures = timings.figures
    print(
        f"  critical: {figures.critical_count:,} projects, cutoff rank {figures.cutoff_rank:,}, "
        f"cutoff downloads {figures.cutoff_downloads}"
    )
    merged = figures.ranked_projects < data.rows
    print(
        f"  duplicates merged: {'yes' if merged else 'NO'} ({figures.ranked_projects:,} distinct "
        f"projects ranked from {data.rows:,} rows; {data.distinct:,} expected)"
    )
    print(_goal("import + compute <= 3 s", f"{seconds:.3f} s", seconds <= GOAL_SECONDS))
    print(_goal("ratio import/floor <= 3", f"{ratio:.2f}", ratio <= GOAL_RATIO))
    peak_mib = import_peak.peak_mib
    print(_goal("peak memory <= 200 MiB", f"{peak_mib:.1f} MiB", peak_mib <= GOAL_PEAK_MIB))
    if m.profile:
        print("cProfile of read_download_file + rank_projects, top 12 by tottime:")
        print(m.profile.rstrip())
    return {
        "bench": Path(__file__).stem,
        "seconds": round(seconds, 3),
        "floor_seconds": round(floor, 3),
        "ratio": round(ratio, 2),
        "peak_mib": round(peak_mib, 1),
        "rows": data.rows,
        "pure_seconds": round(pure, 3),
        "critical_count": figures.critical_count,
        "cutoff_rank": figures.cutoff_rank,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--profile", action="store_true", help="also print a cProfile")
    parser.add_argument("--peak", choices=get_args(PeakKind), help=argparse.SUPPRESS)
    parser.add_argument("--csv", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--db", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))  # measure this working tree, however the file is started
    if args.peak:
        child_peak(args.peak, args.csv, args.db)
        return 0
    print(json.dumps(report(measure(args.profile))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

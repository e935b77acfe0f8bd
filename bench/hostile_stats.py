"""Benchmark: refusing hostile download-statistics files, against importing normal ones.

Small files once kept a worker busy for half a minute or more (issue 16): a JSON count written
``1e1000000`` (53 bytes) and 200,000 nested JSON arrays (400 KB). For each of them and their
kin (the same tricks in CSV, a 5,000-digit JSON integer, nesting inside a row), it measures the
CPU time (``time.process_time``) of ``import_download_statistics`` refusing the file, and as the
baseline of the same run, of importing a normal file of the same size and format (rows
``p1,1``…; rolled back, so every run starts alike). Each file is measured in a fresh child
process whose CPU time is capped at 30 s, so that a regression is reported as killed instead of
holding the run up. After one warm-up, each import is repeated until a batch has used 0.2 s of
CPU (this clock may advance in milliseconds); the figure is the best of three batches' mean.

Goal: refusing a hostile file costs no more CPU than importing a normal file of its size; a miss
is reported, not failed. The last line printed is a JSON object of the figures.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from critical_list import fresh_database

ROOT = Path(__file__).resolve().parent.parent
REPEATS = 3
BATCH_CPU_SECONDS = 0.2
CPU_CAP_SECONDS = 30
Which = Literal["hostile", "normal"]

HOSTILE: dict[str, bytes] = {
    "json-1e1000000": b'{"rows":[{"project":"a","download_count":1e1000000}]}',
    "json-nested-arrays": b'{"rows":' + b"[" * 200_000 + b"]" * 200_000 + b"}",
    "json-nested-in-a-row": b'{"rows":[{"project":' + b"[" * 200_000 + b"]" * 200_000 + b"}]}",
    "json-5000-digits": b'{"rows":[{"project":"a","download_count":' + b"9" * 5_000 + b"}]}",
    "csv-1e1000000": b"project,downloads\na,1e1000000\n",
    "csv-100000-digits": b"project,downloads\na," + b"9" * 100_000 + b"\n",
}


@dataclass(frozen=True)
class Outcome:
    """One file's best CPU time, and what the import said (or that the child was killed)."""

    seconds: float | None
    said: str


def normal_like(content: bytes) -> bytes:
    """A well-formed file of the same format (rows ``p1,1``…), at least as large as ``content``."""
    if content.startswith(b"{"):
        head, row, tail = b'{"rows":[', b'{"project":"p%d","download_count":%d},', b"]}"
    else:
        head, row, tail = b"project,downloads\n", b"p%d,%d\n", b""
    parts, size, n = [head], len(head) + len(tail), 0
    while size < len(content) or n == 0:
        n += 1
        parts.append(row % (n, n))
        size += len(parts[-1])
    return b"".join(parts).removesuffix(b",") + tail


# --- in the child -----------------------------------------------------------------------------


def child(name: str, which: Which, url: str) -> None:
    """Import the file again and again; print the CPU seconds of one import."""
    from sqlmodel import Session

    from core.actors import Actor
    from core.db import create_db_engine
    from eligibility.critical import import_download_statistics
    from eligibility.errors import ImportRejected

    content = HOSTILE[name] if which == "hostile" else normal_like(HOSTILE[name])
    engine = create_db_engine(url)
    said = ""
    with Session(engine) as session:

        def import_once() -> None:
            nonlocal said
            try:
                summary = import_download_statistics(
                    session=session,
                    actor=Actor.system("bench"),
                    stream=io.BytesIO(content),
                    source_name=name,
                    percent=1.0,
                    sticky=True,
                )
                said = f"imported {summary.critical_list.ranked_projects:,} projects"
            except ImportRejected as rejection:
                said = f"refused: {rejection.message}"
            session.rollback()

        import_once()  # warm-up: first queries, lazy imports
        seconds = min(_cpu_per_run(import_once) for _ in range(REPEATS))
    engine.dispose()
    print(json.dumps({"seconds": seconds, "said": said}))


def _cpu_per_run(run: Callable[[], None]) -> float:
    """CPU seconds of one run, from a batch of runs lasting at least ``BATCH_CPU_SECONDS``: the
    process clock may advance in steps of milliseconds, longer than a refusal takes."""
    runs, start = 0, time.process_time()
    while (spent := time.process_time() - start) < BATCH_CPU_SECONDS:
        run()
        runs += 1
    return spent / runs


# --- in the parent ----------------------------------------------------------------------------


def _capped() -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_CAP_SECONDS, CPU_CAP_SECONDS))


def measure(name: str, which: Which, url: str) -> Outcome:
    command = [sys.executable, __file__, "--child", name, "--which", which, "--db", url]
    done = subprocess.run(
        command, stdout=subprocess.PIPE, text=True, check=False, preexec_fn=_capped
    )
    if -done.returncode in (signal.SIGKILL, signal.SIGXCPU):
        return Outcome(None, f"killed at the {CPU_CAP_SECONDS} s CPU cap")
    if done.returncode != 0:
        return Outcome(None, f"the child failed (exit status {done.returncode})")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return Outcome(figures["seconds"], figures["said"])


def _seconds(outcome: Outcome) -> str:
    return f"{outcome.seconds:.6f} s" if outcome.seconds is not None else "killed"


def _rounded(seconds: float | None) -> float | None:
    return round(seconds, 6) if seconds is not None else None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--child", choices=sorted(HOSTILE), help=argparse.SUPPRESS)
    parser.add_argument("--which", choices=("hostile", "normal"), help=argparse.SUPPRESS)
    parser.add_argument("--db", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))  # measure this working tree, however the file is started
    if args.child:
        child(args.child, args.which, args.db)
        return 0

    print("hostile_stats: measuring each file in a child process (about 20 s)…", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
        url = fresh_database(Path(tmp), "hostile")
        results = {
            name: (measure(name, "hostile", url), measure(name, "normal", url)) for name in HOSTILE
        }
    print(
        "hostile_stats: CPU seconds of one import_download_statistics (best of "
        f"{REPEATS} batches' mean, in a fresh child capped at {CPU_CAP_SECONDS} s of CPU); "
        "baseline: a normal file of the same size"
    )
    summary: dict[str, object] = {"bench": Path(__file__).stem}
    for name, (hostile, normal) in results.items():
        size = len(HOSTILE[name])
        met = (
            hostile.seconds is not None
            and normal.seconds is not None
            and hostile.seconds <= normal.seconds
        )
        print(
            f"  {name:<22} {size:>9,} B  refuse {_seconds(hostile):>11}  "
            f"normal {_seconds(normal):>11}  {'PASS' if met else 'MISS'}"
        )
        print(f"    {hostile.said[:110]}")
        summary[name] = {
            "bytes": size,
            "refuse_seconds": _rounded(hostile.seconds),
            "normal_seconds": _rounded(normal.seconds),
            "met": met,
        }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

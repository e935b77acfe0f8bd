"""Benchmark: a label run of 2,000 parcels (2,000 labels + 2,000 packing slips = 4,000 pages).

The parcels are made up with a fixed seed and go to all eleven served countries, so about half
carry a CN22 customs block (from Germany), and the Japanese ones carry the recipient's name in
Japanese script as well. It measures, each in a fresh child process:

- the run: ``render_run`` on 4×6 with slips, in chunks of at most 100 pages over a process pool
  of two, joined into one PDF; from the import of ``distribution.shipping.labels`` to the PDF's
  bytes (the pool and its forkserver start inside the clock, as they do on a cold server);
- the floor: WeasyPrint rendering the same number of plain 4×6 pages that hold only the
  recipient's address text, as one document in one process; and, once, the same pages in
  documents of 100 pages (not joined), because one document's cost per page grows with it;
- the peak RSS: the highest VmHWM of any one process of the run (the parent, or a worker; a
  sampler thread reads the workers' /proc status), and the highest sum of the proportional set
  sizes (PSS: a page shared by n processes counts 1/n in each, so the forkserver's libraries
  are counted once) of all of them at one moment (sampled every 250 ms: reading a process's
  memory map is not free, and sampling every 50 ms slowed the run it measured by some 10%).

Each timing is the best of ``REPEATS`` interleaved rounds. Goals: run ≤ 40 s, run/floor ≤ 1.5,
peak ≤ 300 MiB; missing one is reported, not failed. The last line printed is a JSON object of
the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    from distribution.shipping.labels import ParcelLabel

ROOT = Path(__file__).resolve().parent.parent
PARCELS = 2_000
SEED = 20_261_122
REPEATS = 2
GOAL_SECONDS = 40.0
GOAL_RATIO = 1.5
GOAL_PEAK_MIB = 300.0
SAMPLE_SECONDS = 0.25

Kind = Literal["run", "floor", "floor_chunked"]
FLOOR_CHUNK_PAGES = 100

_ADDRESSES = {
    "AT": ["Mariahilfer Straße 1", "1060 WIEN", "AUSTRIA"],
    "BE": ["Rue de la Loi 16", "1000 BRUXELLES", "BELGIUM"],
    "CA": ["111 Wellington Street", "OTTAWA ON K1A 0A9", "CANADA"],
    "FR": ["1 Rue de Rivoli", "75001 PARIS", "FRANCE"],
    "DE": ["Unter den Linden 5", "10117 BERLIN", "GERMANY"],
    "IT": ["Via del Corso 10", "00186 ROMA RM", "ITALY"],
    "JP": ["1-1 Chiyoda", "Chiyoda-ku, Tokyo 100-8111", "JAPAN"],
    "ES": ["Calle de Alcalá 1", "28014 MADRID", "SPAIN"],
    "CH": ["Bundesplatz 3", "3003 BERN", "SWITZERLAND"],
    "GB": ["10 Downing Street", "LONDON", "SW1A 2AA", "UNITED KINGDOM"],
    "US": ["1600 Pennsylvania Ave NW", "WASHINGTON DC 20500", "UNITED STATES"],
}
_PHONES = {
    "AT": "+43", "BE": "+32", "CA": "+1", "FR": "+33", "DE": "+49", "IT": "+39", "JP": "+81",
    "ES": "+34", "CH": "+41", "GB": "+44", "US": "+1",
}  # fmt: skip
_GIVEN = ("Ada", "Grace", "Guido", "Linus", "Barbara", "Ken", "Margaret", "Dennis", "Frances")
_FAMILY = ("Lovelace", "Hopper", "van Rossum", "Torvalds", "Liskov", "Thompson", "Hamilton")
_JAPANESE = (
    ("Kenji Tanaka", "田中健二"),
    ("Sakura Yamamoto", "山本さくら"),
    ("Hiroshi Suzuki", "鈴木博"),
    ("Yui Takahashi", "高橋結衣"),
)
_MODELS = ("Titan USB-A/NFC", "Titan USB-C/NFC")
_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def make_parcels(count: int = PARCELS) -> list[ParcelLabel]:
    from distribution.shipping.labels import ParcelLabel

    rng = random.Random(SEED)
    countries = sorted(_ADDRESSES)
    parcels = []
    for _number in range(count):
        country = rng.choice(countries)
        local = ""
        if country == "JP":
            name, local = rng.choice(_JAPANESE)
        else:
            name = f"{rng.choice(_GIVEN)} {rng.choice(_FAMILY)}"
        models = rng.choice(((_MODELS[0], 2), (_MODELS[1], 2), (_MODELS[0], 1)))
        items = [models] if models[1] == 2 else [(_MODELS[0], 1), (_MODELS[1], 1)]
        claim = "".join(rng.choice(_ALPHABET) for _ in range(10))
        parcels.append(
            ParcelLabel(
                reference="SK" + "".join(rng.choice(_ALPHABET) for _ in range(10)),
                claim_reference=f"CLM-{claim}",
                recipient_lines=[name, *_ADDRESSES[country]],
                recipient_local=local,
                phone=f"{_PHONES[country]}{rng.randrange(10**8, 10**9)}",
                country=country,
                items=items,
                # What fulfilment prints on every slip: the activation page, one URL for all.
                activation_url="https://keys.example.org/claim/keys",
            )
        )
    return parcels


# --- what is measured (in a child) ------------------------------------------------------------


def run_labels(parcels: list[ParcelLabel]) -> int:
    from distribution.shipping.labels import LabelSettings, render_run

    settings = LabelSettings(
        return_address=("Security Key Giveaway", "Example Str. 1", "10115 Berlin", "GERMANY")
    )
    reported: list[tuple[int, int]] = []
    pdf = render_run(
        parcels, settings=settings, on_progress=lambda done, total: reported.append((done, total))
    )
    assert reported[-1][0] == reported[-1][1] == 2 * len(parcels), reported[-1]
    return len(pdf)


def run_floor(parcels: list[ParcelLabel], *, chunk_pages: int | None = None) -> int:
    """Plain pages of address text: one document, or ``chunk_pages`` per document (not joined)."""
    import html

    import weasyprint

    pages = [
        '<div class="page">'
        + "<br>".join(html.escape(line) for line in parcel.recipient_lines)
        + "</div>"
        for parcel in parcels
        for _panel in ("label", "slip")
    ]
    size = chunk_pages or len(pages)
    written = 0
    for start in range(0, len(pages), size):
        document = (
            "<!doctype html><html><head><meta charset='utf-8'><style>@page { size: 4in 6in }"
            " .page { break-after: page }</style></head><body>"
            + "".join(pages[start : start + size])
            + "</body></html>"
        )
        pdf: bytes = weasyprint.HTML(string=document).write_pdf()
        written += len(pdf)
    return written


def _status_mib(pid: int, field: str) -> float:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return 0.0


def _pss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return 0.0


def _descendants(root: int) -> list[int]:
    """``root`` and every process below it (the forkserver and the pool's workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry))
    found, queue = [], [root]
    while queue:
        pid = queue.pop()
        found.append(pid)
        queue.extend(children.get(pid, []))
    return found


class MemorySampler(threading.Thread):
    """Polls the resident memory of this process and its descendants until stopped."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stopped = threading.Event()
        self.hwm: dict[int, float] = {}
        self.total_peak = 0.0

    def sample(self) -> None:
        total = 0.0
        for pid in _descendants(os.getpid()):
            self.hwm[pid] = max(self.hwm.get(pid, 0.0), _status_mib(pid, "VmHWM"))
            total += _pss_mib(pid)
        self.total_peak = max(self.total_peak, total)

    def run(self) -> None:
        while not self.stopped.wait(SAMPLE_SECONDS):
            self.sample()


def child(kind: Kind) -> None:
    """In the child: make the parcels, start the clock, import and render, print figures."""
    sys.path.insert(0, str(ROOT))
    parcels = make_parcels()
    sampler = MemorySampler()
    sampler.start()
    start = time.perf_counter()
    if kind == "run":
        size = run_labels(parcels)
    elif kind == "floor":
        size = run_floor(parcels)
    else:
        size = run_floor(parcels, chunk_pages=FLOOR_CHUNK_PAGES)
    seconds = time.perf_counter() - start
    sampler.stopped.set()
    sampler.join()
    sampler.hwm[os.getpid()] = _status_mib(os.getpid(), "VmHWM")
    print(
        json.dumps(
            {
                "seconds": seconds,
                "bytes": size,
                "peak_mib": max(sampler.hwm.values()),
                "parent_peak_mib": sampler.hwm[os.getpid()],
                "processes": len(sampler.hwm),
                "total_peak_mib": sampler.total_peak,
            }
        )
    )


@dataclass(frozen=True)
class Figures:
    seconds: float
    bytes: int
    peak_mib: float
    parent_peak_mib: float
    processes: int
    total_peak_mib: float


def measure(kind: Kind) -> Figures:
    command = [sys.executable, __file__, "--child", kind]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
    return Figures(**json.loads(done.stdout.strip().splitlines()[-1]))


# --- the report -------------------------------------------------------------------------------


def _goal(label: str, value: str, met: bool) -> str:
    return f"  goal {label:<28} {value:>12}   {'PASS' if met else 'MISS'}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--child", choices=get_args(Kind), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child)
        return 0
    print(f"labels: {PARCELS:,} parcels, {2 * PARCELS:,} pages, ~1 min per round…", file=sys.stderr)
    runs: list[Figures] = []
    floors: list[Figures] = []
    for _round in range(REPEATS):
        floors.append(measure("floor"))
        runs.append(measure("run"))
    chunked = measure("floor_chunked")
    run = min(runs, key=lambda figures: figures.seconds)
    floor = min(floors, key=lambda figures: figures.seconds)
    pages = 2 * PARCELS
    ratio = run.seconds / floor.seconds
    peak = max(figures.peak_mib for figures in runs)
    print(
        f"labels: {PARCELS:,} parcels to 11 countries (seed {SEED}), {pages:,} pages of 4×6; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(f"  seconds: best of {REPEATS} interleaved rounds, each in a fresh child process")
    for label, best, every in (
        ("run    render_run, chunks of 100 over 2 workers", run, runs),
        ("floor  plain address pages, one document", floor, floors),
        ("       the same in documents of 100 pages", chunked, [chunked]),
    ):
        print(
            f"  {label:<48} {best.seconds:6.2f} s "
            f"[{' '.join(f'{figures.seconds:.2f}' for figures in every)}]  "
            f"{pages / best.seconds:6.1f} pages/s  PDF {best.bytes / 2**20:5.1f} MiB  "
            f"peak {max(figures.peak_mib for figures in every):5.1f} MiB"
        )
    print(
        f"  run memory: largest process {peak:.1f} MiB (parent "
        f"{max(figures.parent_peak_mib for figures in runs):.1f} MiB), all "
        f"{run.processes} processes together (PSS) at most "
        f"{max(figures.total_peak_mib for figures in runs):.1f} MiB"
    )
    print(
        f"  run/floor {ratio:.2f}; against the floor in documents of 100 pages "
        f"{run.seconds / chunked.seconds:.2f} (one WeasyPrint document grows slower per page "
        "as it grows, so the one-document floor is not the fastest single-process way)"
    )
    print(_goal("run <= 40 s", f"{run.seconds:.2f} s", run.seconds <= GOAL_SECONDS))
    print(_goal("ratio run/floor <= 1.5", f"{ratio:.2f}", ratio <= GOAL_RATIO))
    print(_goal("peak memory <= 300 MiB", f"{peak:.1f} MiB", peak <= GOAL_PEAK_MIB))
    print(
        json.dumps(
            {
                "bench": Path(__file__).stem,
                "seconds": round(run.seconds, 2),
                "floor_seconds": round(floor.seconds, 2),
                "ratio": round(ratio, 2),
                "peak_mib": round(peak, 1),
                "pages_per_second": round(pages / run.seconds, 1),
                "pages": pages,
                "floor_peak_mib": round(max(figures.peak_mib for figures in floors), 1),
                "floor_chunked_seconds": round(chunked.seconds, 2),
                "total_peak_mib": round(max(figures.total_peak_mib for figures in runs), 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

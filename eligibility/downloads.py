"""Reading download statistics and ranking projects: pure functions, no database.

Three shapes are read, all streamed: CSV ``project,downloads``, JSON
``{"rows": [{"project": …, "download_count": …}]}`` (PyPI's public rankings) and CSV
``rank,project`` (a ranking without counts). Rows are processed in chunks with the heavy work
done by C-implemented built-ins, so memory grows with the number of distinct projects and not
with the file, and a million rows take about a second. Any malformed row rejects the whole file
with its line number: nothing is written before the file has been read to the end.

Ranking rule: projects are ordered by downloads, most first; equal counts are ordered by
normalised name, A to Z. The critical projects are the first ``ceil(total × percent / 100)``
(never more than were ranked). A ranking file keeps its own ranks (a name listed twice keeps
its best one) and its critical projects are those ranked at or above that cutoff.
"""

from __future__ import annotations

import bisect
import csv
import gc
import hashlib
import heapq
import io
import math
import operator
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from itertools import islice
from typing import IO, Any, Literal

import ijson

from eligibility.errors import ImportRejected
from eligibility.names import normalize_names

# Small chunks stay in the CPU cache; 5,000 rows was the fastest size measured.
CHUNK_ROWS = 5_000
_FIRST = operator.itemgetter(0)
_SECOND = operator.itemgetter(1)
_COUNT_HEADERS = (("project", "downloads"), ("project", "download_count"))
_RANK_HEADER = ("rank", "project")

Progress = Callable[[int], None]
"""Called now and then with the number of bytes read so far."""

SourceFormat = Literal["csv-counts", "json-counts", "csv-ranks"]


@dataclass(frozen=True)
class DownloadTable:
    """A file's statistics: normalised project name → downloads (or → rank, for rankings)."""

    source_format: SourceFormat
    values: dict[str, int]
    sha256: str
    rows: int

    @property
    def has_counts(self) -> bool:
        return self.source_format != "csv-ranks"


@dataclass(frozen=True)
class RankedProject:
    name: str
    rank: int
    downloads: int | None


@dataclass(frozen=True)
class Ranking:
    """The top of a table and the ranks of the projects asked about."""

    total_projects: int
    ranked_projects: int
    cutoff_rank: int
    cutoff_downloads: int | None
    top: list[RankedProject]
    others: dict[str, RankedProject]


def read_download_file(stream: IO[bytes], *, on_progress: Progress | None = None) -> DownloadTable:
    """Read and validate a whole statistics file; raise ImportRejected on the first bad row."""
    source = _HashingReader(stream, on_progress)
    buffered = io.BufferedReader(source, buffer_size=1 << 16)
    source_format: SourceFormat
    with _no_cyclic_gc():
        if buffered.peek(64).lstrip()[:1] == b"{":
            (values, rows), source_format = _read_json(buffered), "json-counts"
        else:
            values, rows, source_format = _read_csv(buffered)
    if not values:
        raise ImportRejected("the file holds no projects")
    return DownloadTable(source_format, values, source.digest.hexdigest(), rows)


def critical_count(total_projects: int, percent: float) -> int:
    """``ceil(total × percent / 100)``, computed exactly (1% of 750,000 is 7,500, not 7,501)."""
    return math.ceil(Fraction(total_projects) * Fraction(str(percent)) / 100)


def rank_projects(
    table: DownloadTable, *, total_projects: int, percent: float, wanted: Iterable[str] = ()
) -> Ranking:
    """The critical top of ``table`` and the ranks of the ``wanted`` projects outside it."""
    values = table.values
    cutoff = min(critical_count(total_projects, percent), len(values))
    wanted_set = set(wanted) & values.keys()
    if table.has_counts:
        top = _top_by_count(values, cutoff)
        others = _ranks_by_count(values, wanted_set.difference(p.name for p in top))
        cutoff_downloads = top[-1].downloads if top else None
    else:
        # A ranking keeps the file's own ranks; the critical projects are those ranked at or
        # above the cutoff.
        top = sorted(
            (RankedProject(name, rank, None) for name, rank in values.items() if rank <= cutoff),
            key=lambda project: (project.rank, project.name),
        )
        others = {
            name: RankedProject(name, values[name], None)
            for name in wanted_set
            if values[name] > cutoff
        }
        cutoff_downloads = None
    return Ranking(
        total_projects=total_projects,
        ranked_projects=len(values),
        cutoff_rank=cutoff,
        cutoff_downloads=cutoff_downloads,
        top=top,
        others=others,
    )


# --- ranking ----------------------------------------------------------------------------------


def _top_by_count(values: dict[str, int], cutoff: int) -> list[RankedProject]:
    if cutoff == 0:
        return []
    threshold = heapq.nlargest(cutoff, values.values())[-1]
    above = [name for name, count in values.items() if count > threshold]
    tied = sorted(name for name, count in values.items() if count == threshold)
    chosen = above + tied[: cutoff - len(above)]
    chosen.sort(key=lambda name: (-values[name], name))
    return [RankedProject(name, rank, values[name]) for rank, name in enumerate(chosen, start=1)]


def _ranks_by_count(values: dict[str, int], names: set[str]) -> dict[str, RankedProject]:
    """Exact ranks (count, then name) for a few projects, without sorting every name."""
    if not names:
        return {}
    counts = sorted(values.values())
    wanted_counts = {values[name] for name in names}
    tied: dict[int, list[str]] = {}
    for name, count in values.items():
        if count in wanted_counts:
            tied.setdefault(count, []).append(name)
    ranks = {}
    for name in names:
        count = values[name]
        higher = len(counts) - bisect.bisect_right(counts, count)
        before_in_tie = sum(1 for other in tied[count] if other < name)
        ranks[name] = RankedProject(name, higher + before_in_tie + 1, count)
    return ranks


# --- reading ----------------------------------------------------------------------------------


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Pause the cycle collector: reading creates millions of short-lived rows and no cycles,
    and collections triggered by them would scan the growing table again and again."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class _HashingReader(io.RawIOBase):
    """Passes bytes through while hashing them and reporting progress."""

    def __init__(self, raw: IO[bytes], on_progress: Progress | None) -> None:
        self._raw = raw
        self._on_progress = on_progress
        self.digest = hashlib.sha256()
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        size = len(data)
        buffer[:size] = data
        self.digest.update(data)
        self.bytes_read += size
        if self._on_progress is not None and size:
            self._on_progress(self.bytes_read)
        return size


def _read_csv(
    buffered: io.BufferedReader[_HashingReader],
) -> tuple[dict[str, int], int, SourceFormat]:
    # Plain utf-8 has a fast decoder (utf-8-sig's is pure Python): a BOM is stripped by hand.
    text = io.TextIOWrapper(buffered, encoding="utf-8", newline="")
    reader = csv.reader(text)
    try:
        header = tuple(cell.strip("\ufeff \t").lower() for cell in next(reader, []))
        if not header:
            raise ImportRejected("the file is empty")
        if header in _COUNT_HEADERS:
            values, rows = _merge_chunks(_chunks(reader), ranks=False)
            return values, rows, "csv-counts"
        if header == _RANK_HEADER:
            values, rows = _merge_chunks(_chunks(reader), ranks=True)
            return values, rows, "csv-ranks"
    except UnicodeDecodeError:
        raise ImportRejected("the file is not UTF-8 text", line=reader.line_num + 1) from None
    except csv.Error as error:
        raise ImportRejected(f"the CSV is malformed ({error})", line=reader.line_num) from None
    raise ImportRejected(
        "the header must be 'project,downloads' (counts) or 'rank,project' (a ranking), "
        f"not {','.join(header)[:80]!r}",
        line=1,
    )


def _chunks(reader: Iterator[list[str]]) -> Iterator[tuple[int, list[list[str]]]]:
    """(line number of the chunk's first row, rows) — one row per line, after the header."""
    line = 2
    while chunk := list(islice(reader, CHUNK_ROWS)):
        yield line, chunk
        line += len(chunk)


def _merge_chunks(
    chunks: Iterable[tuple[int, list[list[str]]]], *, ranks: bool
) -> tuple[dict[str, int], int]:
    combine = min if ranks else operator.add
    parts: list[dict[str, int]] = []
    rows = 0
    for first_line, chunk in chunks:
        rows += len(chunk)
        if set(map(len, chunk)) != {2}:
            index = next(i for i, row in enumerate(chunk) if len(row) != 2)
            raise ImportRejected(
                f"expected 2 columns, found {len(chunk[index])}", line=first_line + index
            )
        names = map(_SECOND if ranks else _FIRST, chunk)
        numbers = list(map(_FIRST if ranks else _SECOND, chunk))
        counts = _parse_counts(numbers, first_line, minimum=1 if ranks else 0)
        parts.append(_combine(normalize_names(names, first_line), counts, combine))
    return _combine_parts(parts, combine), rows


def _combine(
    keys: list[str], counts: list[int], combine: Callable[[int, int], int]
) -> dict[str, int]:
    """One chunk as a dict; a name repeated inside it is combined (summed, or its best rank)."""
    part = dict(zip(keys, counts, strict=True))
    if len(part) != len(keys):
        part = {}
        for key, count in zip(keys, counts, strict=True):
            part[key] = combine(part[key], count) if key in part else count
    return part


def _combine_parts(
    parts: list[dict[str, int]], combine: Callable[[int, int], int]
) -> dict[str, int]:
    """Merge the chunks' dicts. Names repeated across chunks are rare, so merge fast first and
    redo it name by name only when the sizes show a repeat."""
    values: dict[str, int] = {}
    for part in parts:
        values.update(part)
    if len(values) == sum(map(len, parts)):
        return values
    values = {}
    for part in parts:
        for key, count in part.items():
            values[key] = combine(values[key], count) if key in values else count
    return values


def _parse_counts(cells: Iterable[str], first_line: int, *, minimum: int) -> list[int]:
    cells = list(cells)
    try:
        counts = list(map(int, cells))
    except ValueError:
        counts = []
    if len(counts) == len(cells) and (not counts or min(counts) >= minimum):
        return counts
    for index, cell in enumerate(cells):
        what = "a rank" if minimum else "a download count"
        try:
            number = int(cell)
        except ValueError:
            raise ImportRejected(
                f"{cell.strip()[:40]!r} is not {what} (a whole number)", line=first_line + index
            ) from None
        if number < minimum:
            raise ImportRejected(f"{what} cannot be {number}", line=first_line + index)
    raise AssertionError("unreachable: a bad cell was found above")


def _read_json(buffered: io.BufferedReader[_HashingReader]) -> tuple[dict[str, int], int]:
    parts: list[dict[str, int]] = []
    batch_names: list[str] = []
    batch_counts: list[int] = []
    row = 0

    def flush() -> None:
        first = row - len(batch_names) + 1
        keys = normalize_names(batch_names, first, unit="row")
        parts.append(_combine(keys, list(batch_counts), operator.add))
        batch_names.clear()
        batch_counts.clear()

    try:
        for item in ijson.items(buffered, "rows.item"):
            row += 1
            name, count = _json_row(item, row)
            batch_names.append(name)
            batch_counts.append(count)
            if len(batch_names) == CHUNK_ROWS:
                flush()
    except ijson.JSONError as error:
        raise ImportRejected(f"the file is not valid JSON ({error})") from None
    except UnicodeDecodeError:
        raise ImportRejected("the file is not UTF-8 text") from None
    if batch_names:
        flush()
    return _combine_parts(parts, operator.add), row


def _json_row(item: Any, row: int) -> tuple[str, int]:
    if not isinstance(item, dict):
        raise ImportRejected(f"row {row}: each row must be an object")
    name, count = item.get("project"), item.get("download_count")
    if not isinstance(name, str) or not name.strip():
        raise ImportRejected(f"row {row}: the project name is missing")
    if isinstance(count, bool) or not isinstance(count, int | Decimal) or count != int(count):
        raise ImportRejected(f"row {row}: download_count must be a whole number")
    if count < 0:
        raise ImportRejected(f"row {row}: a download count cannot be {count}")
    return name, int(count)

"""Reading download statistics and ranking projects: pure functions, no database.

Three shapes are read, all streamed: CSV ``project,downloads``, JSON
``{"rows": [{"project": …, "download_count": …}]}`` (PyPI's public rankings) and CSV
``rank,project`` (a ranking without counts). Rows are processed in blocks of about 5,000 with the
heavy work done by whole-string and whole-dict built-ins, so memory grows with the number of
distinct projects and not with the file (750,000 rows: about 1 s and 115 MiB, see
``bench/critical_list.py``). Any malformed row rejects the whole file with its line number:
nothing is written before the file has been read to the end. A hostile file is refused as soon
as its shape gives it away, for less than reading a normal file of its size costs: a number's
size is checked before the number is converted, and JSON nested deeper than the format is
refused at its first extra level (``bench/hostile_stats.py``).

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
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from fractions import Fraction
from typing import IO, Any, Literal

import ijson

from eligibility.errors import ImportRejected
from eligibility.names import normalize_names

# Small chunks stay in the CPU cache: about 5,000 rows of a typical file.
BLOCK_CHARACTERS = 1 << 17
CHUNK_ROWS = 5_000  # rows of a JSON file handled at once
_FIRST = operator.itemgetter(0)
_SECOND = operator.itemgetter(1)
_COUNT_HEADERS = (("project", "downloads"), ("project", "download_count"))
_RANK_HEADER = ("rank", "project")

Progress = Callable[[int], None]
"""Called now and then with the number of bytes read so far."""

SourceFormat = Literal["csv-counts", "json-counts", "csv-ranks"]

# The largest numbers the tables keep: download counts are BIGINT, ranks and totals INTEGER.
MAX_DOWNLOADS = 2**63 - 1
MAX_RANK = 2**31 - 1
# Each row's count is below this: PyPI's most downloaded project has a few billion downloads a
# month, so the limit is tens of thousands of years of it. It is checked before anything costly
# is done with a number, every count below it is exact as a float (below 2**53), and a name
# would have to fill 9,224 rows for its sum to overflow MAX_DOWNLOADS.
DOWNLOAD_COUNT_LIMIT = 10**15
# The deepest a statistics document nests: the document, its "rows" array, one row.
JSON_DEPTH = 3
# Counts and ranks have at most 15 digits: a CSV cell longer than this (spaces aside) is refused
# before int() sees it, whose cost grows with the square of the length.
_NUMBER_CHARACTERS = 32


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
class _NumberRule:
    """What a column's numbers may be: ``lowest <= n < limit``; ``rule`` says so to a person."""

    what: str
    lowest: int
    limit: int
    rule: str


_COUNT = _NumberRule(
    "a download count", 0, DOWNLOAD_COUNT_LIMIT, f"a whole number below {DOWNLOAD_COUNT_LIMIT:,}"
)
_RANK = _NumberRule("a rank", 1, MAX_RANK + 1, f"a whole number from 1 to {MAX_RANK:,}")


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
    if source_format != "csv-ranks":
        _check_sums_fit(values)
    return DownloadTable(source_format, values, source.digest.hexdigest(), rows)


def _check_sums_fit(values: dict[str, int]) -> None:
    """Each row's count is below DOWNLOAD_COUNT_LIMIT, but a name listed in thousands of rows
    sums them: the total must still fit the column that keeps it."""
    name, largest = max(values.items(), key=_SECOND)
    if largest > MAX_DOWNLOADS:
        raise ImportRejected(
            f"{name!r} has a download count larger than {MAX_DOWNLOADS:,}: no project has that many"
        )


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
    blocks = _LineBlocks(text)
    try:
        header = tuple(
            cell.strip("\ufeff \t").lower() for cell in next(csv.reader([blocks.header()]), [])
        )
        if not header:
            raise ImportRejected("the file is empty")
        if header in _COUNT_HEADERS:
            return _fold_blocks(blocks, ranks=False), blocks.rows, "csv-counts"
        if header == _RANK_HEADER:
            return _fold_blocks(blocks, ranks=True), blocks.rows, "csv-ranks"
    except UnicodeDecodeError:
        raise ImportRejected("the file is not UTF-8 text", line=blocks.next_line) from None
    raise ImportRejected(
        "the header must be 'project,downloads' (counts) or 'rank,project' (a ranking), "
        f"not {','.join(header)[:80]!r}",
        line=1,
    )


class _LineBlocks:
    """Cuts the text after the header into blocks of whole lines and splits each into its two
    columns. A block without quotes and with one comma per line is split by two string
    operations; anything else goes through the csv module, which also explains bad rows."""

    def __init__(self, text: io.TextIOWrapper) -> None:
        self._text = text
        self.next_line = 1
        self.rows = 0

    def header(self) -> str:
        line = self._text.readline().rstrip("\r\n")
        self.next_line = 2
        return line

    def __iter__(self) -> Iterator[tuple[int, list[str], list[str]]]:
        """(line of the block's first row, first column, second column)."""
        rest = ""
        while True:
            data = self._text.read(BLOCK_CHARACTERS)
            if not data:
                if rest:
                    yield self._split(rest)
                return
            data = rest + data
            cut = data.rfind("\n")
            if cut < 0:
                rest = data
                continue
            rest = data[cut + 1 :]
            yield self._split(data[:cut])

    def _split(self, block: str) -> tuple[int, list[str], list[str]]:
        if "\r" in block:
            block = block.replace("\r\n", "\n").removesuffix("\r")
        first_line = self.next_line
        lines = block.count("\n") + 1
        self.next_line += lines
        self.rows += lines
        if '"' not in block and "\r" not in block and block.count(",") == lines:
            cells = block.replace(",", "\n").split("\n")
            return first_line, cells[0::2], cells[1::2]
        return first_line, *self._split_carefully(block, first_line)

    @staticmethod
    def _split_carefully(block: str, first_line: int) -> tuple[list[str], list[str]]:
        reader = csv.reader(block.split("\n"))
        try:
            rows = list(reader)
        except csv.Error as error:
            raise ImportRejected(
                f"the CSV is malformed ({error})", line=first_line + reader.line_num - 1
            ) from None
        for index, row in enumerate(rows):
            if len(row) != 2:
                raise ImportRejected(
                    f"expected 2 columns, found {len(row)}", line=first_line + index
                )
        return list(map(_FIRST, rows)), list(map(_SECOND, rows))


def _fold_blocks(blocks: _LineBlocks, *, ranks: bool) -> dict[str, int]:
    values: dict[str, int] = {}
    combine = min if ranks else operator.add
    rule = _RANK if ranks else _COUNT
    for first_line, first, second in blocks:
        names, numbers = (second, first) if ranks else (first, second)
        counts = _parse_counts(numbers, first_line, rule)
        _fold(values, normalize_names(names, first_line), counts, combine)
    return values


def _fold(
    values: dict[str, int],
    keys: list[str],
    counts: list[int],
    combine: Callable[[int, int], int],
) -> None:
    """Add one chunk to ``values``; a name seen before is combined (summed, or its best rank).
    Whole-dict operations do the work; only names actually repeated are handled one by one."""
    part = dict(zip(keys, counts, strict=True))
    if len(part) != len(keys):
        part = {}
        for key, count in zip(keys, counts, strict=True):
            part[key] = combine(part[key], count) if key in part else count
    for key in values.keys() & part.keys():
        part[key] = combine(values[key], part[key])
    values.update(part)


def _parse_counts(cells: list[str], first_line: int, rule: _NumberRule) -> list[int]:
    """One block's numbers; a cell that is not one in the rule's range rejects the file."""
    if max(map(len, cells), default=0) <= _NUMBER_CHARACTERS:
        try:
            numbers = list(map(int, cells))
        except ValueError:
            pass
        else:
            if not numbers or (min(numbers) >= rule.lowest and max(numbers) < rule.limit):
                return numbers
    # Cell by cell: finds the bad one, or reads long cells made long by spaces.
    return [_parse_cell(cell, first_line + index, rule) for index, cell in enumerate(cells)]


def _parse_cell(cell: str, line: int, rule: _NumberRule) -> int:
    text = cell.strip()
    number = None
    if len(text) <= _NUMBER_CHARACTERS:
        with suppress(ValueError):
            number = int(text)
    if number is None or number >= rule.limit:
        raise ImportRejected(f"{text[:40]!r} is not {rule.what} ({rule.rule})", line=line)
    if number < rule.lowest:
        raise ImportRejected(f"{rule.what} cannot be {number}", line=line)
    return number


def _read_json(buffered: io.BufferedReader[_HashingReader]) -> tuple[dict[str, int], int]:
    values: dict[str, int] = {}
    batch_names: list[str] = []
    batch_counts: list[int] = []
    row = 0

    def flush() -> None:
        first = row - len(batch_names) + 1
        _fold(values, normalize_names(batch_names, first, unit="row"), batch_counts, operator.add)
        batch_names.clear()
        batch_counts.clear()

    for row, fields in enumerate(_json_rows(buffered), start=1):
        name, count = _json_row(fields, row)
        batch_names.append(name)
        batch_counts.append(count)
        if len(batch_names) == CHUNK_ROWS:
            flush()
    if batch_names:
        flush()
    return values, row


def _json_rows(stream: IO[bytes]) -> Iterator[dict[str, Any]]:
    """The rows of ``{"rows": [{…}, …]}``, each a dict of its fields; the document's other keys
    are skipped. Built here from the parser's events rather than by ``ijson.items``, whose
    time grows with the square of the depth: anything nested deeper than a row's fields is
    refused as soon as it opens. Numbers are read as floats (and as ints up to 2**63) by the
    parser itself, which refuses larger ones as it reads their digits; read as a Decimal,
    ``1e1000000`` kept a worker busy for half a minute once converted to int."""
    depth = 0
    in_rows = False  # in the document's "rows" array, or in one of its rows
    key = ""  # the key whose value comes next
    row = 0
    fields: dict[str, Any] = {}
    try:
        for event, value in ijson.basic_parse(stream, use_float=True):
            if event == "map_key":
                key = value
            elif event == "start_map" or event == "start_array":
                depth += 1
                if depth > JSON_DEPTH:
                    raise ImportRejected(
                        f"{f'row {row}: ' if in_rows else ''}the file nests deeper than its rows "
                        "allow: a row's fields hold a name and a number, not lists or objects"
                    )
                if depth == 2:
                    in_rows = key == "rows" and event == "start_array"
                elif depth == 3 and in_rows:
                    row += 1
                    if event == "start_array":
                        raise ImportRejected(f"row {row}: each row must be an object")
                    fields = {}
            elif event == "end_map" or event == "end_array":
                depth -= 1
                if depth == 2 and in_rows:
                    yield fields
            elif in_rows and depth == 3:
                fields[key] = value
                key = ""
            elif in_rows and depth == 2:
                raise ImportRejected(f"row {row + 1}: each row must be an object")
    except ijson.JSONError as error:
        # yajl (ijson's yajl2_c backend) refuses a number beyond an int64 or a double as it
        # reads its digits.
        if in_rows and depth == 3 and key == "download_count" and "overflow" in str(error):
            raise ImportRejected(f"row {row}: download_count must be {_COUNT.rule}") from None
        raise ImportRejected(f"the file is not valid JSON ({error})") from None
    except UnicodeDecodeError:
        raise ImportRejected("the file is not UTF-8 text") from None


def _json_row(fields: dict[str, Any], row: int) -> tuple[str, int]:
    name, count = fields.get("project"), fields.get("download_count")
    if not isinstance(name, str) or not name.strip():
        raise ImportRejected(f"row {row}: the project name is missing")
    # Compared with the limit before int() is asked for anything.
    if (
        isinstance(count, bool)
        or not isinstance(count, int | float)
        or not -_COUNT.limit < count < _COUNT.limit
        or count != int(count)
    ):
        raise ImportRejected(f"row {row}: download_count must be {_COUNT.rule}")
    if count < _COUNT.lowest:
        raise ImportRejected(f"row {row}: a download count cannot be {int(count)}")
    return name, int(count)

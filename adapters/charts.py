"""Report charts as SVG, drawn by matplotlib: the one module that imports it.

Charts must read on a black-and-white printout and to people who do not tell colours apart, so
nothing depends on colour: every bar carries a hatch pattern and its value, lines are labelled
where they end, the projection is dashed and thresholds are dotted and named. Text stays text
in the SVG (not outlines), so it is sharp at any size, searchable and read back by the tests.
The charts are returned as ``data:`` URIs: the web page and the PDF embed the same images,
and the page's Content-Security-Policy needs no exception for their inline styles.

Inputs are plain tuples so that a chart of unchanged figures is drawn once per process.
"""

from __future__ import annotations

import base64
import io
from datetime import date, timedelta
from functools import lru_cache

import matplotlib
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

matplotlib.rcParams.update(
    {
        "svg.fonttype": "none",  # text as <text>, not paths
        "svg.hashsalt": "keys-report",  # stable element ids: the same figures give the same SVG
        "font.family": "DejaVu Sans",
        "font.size": 9,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "hatch.linewidth": 0.6,
    }
)

INK = "#1d2b36"
PAPER = "#ffffff"
FILLS = ("#9fb3c8", "#d9e2ec", "#bcccdc", "#f0f4f8", "#829ab1", "#e3e8ee", "#627d98")
# Line hatches only: dots and circles make thousands of path points, slow to print.
HATCHES = ("//", "\\\\", "xx", "--", "||", "++", "/")
_WIDTH_IN = 7.0


@lru_cache(maxsize=64)
def bar_chart(title: str, bars: tuple[tuple[str, int, str], ...]) -> str:
    """Horizontal bars, top to bottom: (label, value, text written after the bar)."""
    figure = Figure(figsize=(_WIDTH_IN, 0.45 * len(bars) + 0.9))
    axes = figure.add_subplot()
    labels = [label for label, _value, _text in bars]
    values = [value for _label, value, _text in bars]
    positions = list(range(len(bars)))[::-1]
    drawn = axes.barh(
        positions,
        values,
        color=[FILLS[i % len(FILLS)] for i in range(len(bars))],
        edgecolor=INK,
        linewidth=0.8,
        height=0.62,
    )
    for index, bar in enumerate(drawn):
        bar.set_hatch(HATCHES[index % len(HATCHES)])
    axes.bar_label(drawn, labels=[text for _l, _v, text in bars], padding=4, color=INK)
    axes.set_yticks(positions, labels=labels)
    axes.set_xlim(0, max([*values, 1]) * 1.25)
    axes.xaxis.set_visible(False)
    axes.spines["bottom"].set_visible(False)
    axes.set_title(title, loc="left", fontweight="bold", color=INK)
    return _data_uri(figure)


@lru_cache(maxsize=16)
def burn_down_chart(
    days: tuple[date, ...],
    available: tuple[int | None, ...],
    projection: tuple[tuple[date, int], ...],
    projection_label: str,
    thresholds: tuple[int, ...],
) -> str:
    """Available keys per day (a solid step line), the projection (a dashed line, its end
    named by ``projection_label``) and the low-stock thresholds (dotted, named)."""
    figure = Figure(figsize=(_WIDTH_IN, 3.2))
    axes = figure.add_subplot()
    known = [(day, value) for day, value in zip(days, available, strict=True) if value is not None]
    if known:
        xs, ys = zip(*known, strict=True)
        axes.step(xs, ys, where="post", color=INK, linewidth=1.8, label="Available")
        axes.annotate(
            f"{ys[-1]:,} available today",
            (xs[-1], ys[-1]),
            xytext=(6, 6),
            textcoords="offset points",
            color=INK,
        )
    if projection:
        px, py = zip(*projection, strict=True)
        axes.plot(px, py, color=INK, linestyle=(0, (5, 3)), linewidth=1.2)
        axes.annotate(
            projection_label,
            (px[-1], py[-1]),
            xytext=(0.98, 0.92),
            textcoords="axes fraction",
            ha="right",
            color=INK,
            arrowprops={"arrowstyle": "->", "color": INK, "linewidth": 0.8},
        )
    for threshold in thresholds:
        axes.axhline(threshold, color=INK, linestyle=":", linewidth=0.9)
        axes.annotate(
            f"alert below {threshold:,}",
            (0, threshold),
            xycoords=("axes fraction", "data"),
            xytext=(2, 2),
            textcoords="offset points",
            fontsize=8,
            color=INK,
        )
    # The whole programme so far, to the projected day; at least a few days wide.
    start = days[0] if days else date.today()
    end = max([start + timedelta(days=7), *days, *(day for day, _ in projection)])
    axes.set_xlim(start, end)  # type: ignore[arg-type]
    locator = AutoDateLocator(maxticks=8)  # type: ignore[no-untyped-call]
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    # Head-room above the highest point for the annotations.
    highest = max([1, *(v for v in available if v is not None), *thresholds])
    axes.set_ylim(0, highest * 1.2)
    axes.set_ylabel("Keys available")
    axes.grid(axis="y", linewidth=0.4, color="#bcccdc")
    axes.set_title("Keys available per day", loc="left", fontweight="bold", color=INK)
    return _data_uri(figure)


def _data_uri(figure: Figure) -> str:
    figure.patch.set_facecolor(PAPER)
    out = io.BytesIO()
    figure.savefig(out, format="svg", bbox_inches="tight", metadata={"Date": None})
    return "data:image/svg+xml;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def svg_of(data_uri: str) -> str:
    """The SVG text of a chart (for tests and for anyone saving a chart)."""
    return base64.b64decode(data_uri.partition(",")[2]).decode("utf-8")

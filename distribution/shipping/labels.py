"""Shipping labels and packing slips as print-ready PDF, drawn by ``adapters.pdf`` (WeasyPrint).

A run is a sequence of ``ParcelLabel``s; each becomes a 4×6 in label (return address,
recipient in Latin script with the country last, phone, contents, a CN22 customs block when the
parcel leaves the EU, the shipment reference as a vector Code128 and in text) followed by its
packing slip (claim reference, items, activation instructions with a QR code). On A4 and US
Letter two 4×6 panels share a landscape sheet. WeasyPrint's memory grows with the pages of a
document, so a run is rendered in chunks of at most ``CHUNK_PAGES`` pages (in a process pool
when there is more than one) and the chunks are joined with pypdf. Nothing is ever fetched: the
adapter's URL fetcher refuses ``file:`` and remote URLs (its ``PdfError`` becomes a
``LabelError`` here), the CSS is read from this package's templates, fonts come from fontconfig
and images are data: URIs.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import gc
import io
import multiprocessing
import signal
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args
from xml.sax.saxutils import quoteattr

import jinja2
import segno
from barcode.codex import Code128
from pypdf import PdfReader, PdfWriter

from adapters.pdf import PdfError, render_pdf
from distribution.errors import DistributionError

if TYPE_CHECKING:
    from core.settings import Settings

Layout = Literal["4x6", "a4", "letter"]
LAYOUTS: tuple[Layout, ...] = get_args(Layout)

# WeasyPrint's memory grows with the pages of one document; ~100 keeps a worker near 100 MiB.
CHUNK_PAGES = 100
# One worker per core, and no more than two: the machines that print labels are small.
MAX_WORKERS = 2

# European Union member states (ISO 3166-1 alpha-2). Parcels between them need no customs
# declaration; everything else does (the UK since 2021, Switzerland never joined).
EU_COUNTRIES = frozenset(
    {
        "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE",
        "IT", "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",
    }
)  # fmt: skip

_TEMPLATES = Path(__file__).resolve().parents[2] / "templates" / "labels"
_PAGE_SIZES: dict[Layout, str] = {
    "4x6": "4in 6in",
    "a4": "A4 landscape",
    "letter": "letter landscape",
}
_PANELS_PER_PAGE: dict[Layout, int] = {"4x6": 1, "a4": 2, "letter": 2}
# Code128: quiet zone of ten modules each side (ISO/IEC 15417 asks for at least ten).
_QUIET_MODULES = 10
_BARCODE_HEIGHT = 40  # in modules; the CSS sets the printed size

# The language of a local-script name, so that shared Han characters get Japanese glyphs.
_LOCAL_LANGUAGES = {"JP": "ja"}


class LabelError(DistributionError):
    """A label run could not be rendered (bad input, or a resource it must not fetch)."""

    status_code = 422
    title = "The labels could not be printed"


@dataclass(frozen=True)
class ParcelLabel:
    """What goes on one parcel's label and packing slip."""

    reference: str  # the shipment reference: Code128 and text
    claim_reference: str  # shown on the packing slip
    recipient_lines: list[str]  # Latin lines, the country in capitals last
    recipient_local: str  # the name in local script, or ""
    phone: str  # E.164
    country: str  # ISO alpha-2 destination
    items: list[tuple[str, int]]  # (model name, quantity)
    activation_url: str  # the QR code on the packing slip

    @property
    def key_count(self) -> int:
        return sum(quantity for _model, quantity in self.items)


@dataclass(frozen=True, kw_only=True)
class LabelSettings:
    """The deployment's label settings: layout, sender and customs declaration."""

    layout: Layout = "4x6"
    return_address: tuple[str, ...]
    origin_country: str = "DE"
    goods_origin: str = "DE"  # where the keys were made, for the CN22
    customs_category: str = "Gift"
    customs_description: str = "Security key (USB authenticator)"
    customs_weight_grams: int = 30  # per key
    customs_value: str = "25.00"  # per key
    customs_currency: str = "EUR"
    hs_code: str = "8471.80"

    @classmethod
    def from_settings(cls, settings: Settings) -> LabelSettings:
        return cls(
            layout=_layout(settings.label_layout),
            return_address=settings.return_address,
            origin_country=settings.origin_country,
            goods_origin=settings.customs_goods_origin or settings.origin_country,
            customs_category=settings.customs_category,
            customs_description=settings.customs_description,
            customs_weight_grams=settings.customs_weight_grams,
            customs_value=settings.customs_value,
            customs_currency=settings.customs_currency,
            hs_code=settings.hs_code,
        )


def needs_customs(*, origin: str, destination: str) -> bool:
    """Whether a parcel from ``origin`` to ``destination`` needs a CN22: it leaves the country
    and does not stay inside the EU."""
    origin, destination = origin.upper(), destination.upper()
    if origin == destination:
        return False
    return not (origin in EU_COUNTRIES and destination in EU_COUNTRIES)


def code128_svg(value: str) -> str:
    """``value`` as a Code128 barcode: one SVG ``<path>`` in a viewBox of modules, quiet zones
    included, to be sized by CSS. Module widths come from python-barcode's encoder."""
    if not value or not value.isascii() or not value.isprintable():
        raise LabelError(f"A Code128 barcode needs printable ASCII, not {value!r}.")
    modules = Code128(value).build()[0]
    commands = []
    x = 0
    while x < len(modules):
        if modules[x] == "1":
            end = modules.index("0", x) if "0" in modules[x:] else len(modules)
            # No closing "z": a fill closes each bar, and every command costs WeasyPrint time.
            commands.append(f"M{x + _QUIET_MODULES} 0h{end - x}v{_BARCODE_HEIGHT}h-{end - x}")
            x = end
        else:
            x += 1
    width = len(modules) + 2 * _QUIET_MODULES
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {_BARCODE_HEIGHT}" '
        f'preserveAspectRatio="none" shape-rendering="crispEdges">'
        f'<path fill="#000" d="{"".join(commands)}"/></svg>'
    )


def render_run(
    parcels: Sequence[ParcelLabel],
    *,
    settings: LabelSettings,
    layout: Layout | None = None,
    with_slips: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
    chunk_pages: int = CHUNK_PAGES,
) -> bytes:
    """One PDF of every parcel's label, each followed by its packing slip unless
    ``with_slips`` is false. ``layout`` overrides the settings' default. Chunks of at most
    ``chunk_pages`` pages are rendered by up to ``workers`` processes (default: one per core,
    at most two) and joined; ``on_progress(pages_done, total_pages)`` follows them."""
    chosen = _layout(layout or settings.layout)
    kinds: tuple[_Kind, ...] = ("label", "slip") if with_slips else ("label",)
    return _render(parcels, settings, chosen, kinds, on_progress, workers, chunk_pages)


def render_slips(
    parcels: Sequence[ParcelLabel],
    *,
    settings: LabelSettings,
    layout: Layout | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
    chunk_pages: int = CHUNK_PAGES,
) -> bytes:
    """The packing slips alone, as a separate PDF (for runs printed on a label printer)."""
    chosen = _layout(layout or settings.layout)
    return _render(parcels, settings, chosen, ("slip",), on_progress, workers, chunk_pages)


def page_count(*, parcels: int, layout: Layout, panels_per_parcel: int) -> int:
    """Pages of a run: one per panel on 4×6, two panels per A4 or Letter sheet."""
    per_page = _PANELS_PER_PAGE[layout]
    return -(-parcels * panels_per_parcel // per_page)


def write_pdf(html: str, *, layout: Layout = "4x6") -> bytes:
    """Render one HTML document with the label CSS; callers normally want ``render_run``."""
    with _label_errors():
        return render_pdf(html, css=_label_css(layout))


@contextmanager
def _label_errors() -> Iterator[None]:
    """The adapter's ``PdfError`` (a refused fetch) as the labels' own ``LabelError``."""
    try:
        yield
    except PdfError as error:
        raise LabelError(error.message) from error


# --- chunks -----------------------------------------------------------------------------------

_Kind = Literal["label", "slip"]


@dataclass(frozen=True)
class _Chunk:
    parcels: tuple[ParcelLabel, ...]
    settings: LabelSettings
    layout: Layout
    kinds: tuple[_Kind, ...]

    @property
    def pages(self) -> int:
        return page_count(
            parcels=len(self.parcels), layout=self.layout, panels_per_parcel=len(self.kinds)
        )


def _render(
    parcels: Sequence[ParcelLabel],
    settings: LabelSettings,
    layout: Layout,
    kinds: tuple[_Kind, ...],
    on_progress: Callable[[int, int], None] | None,
    workers: int | None,
    chunk_pages: int,
) -> bytes:
    if not parcels:
        raise LabelError("A label run needs at least one parcel.")
    if chunk_pages < 1 or (workers is not None and workers < 1):
        raise LabelError("Chunks need at least one page and one worker.")
    # A chunk holds whole sheets: a parcel's label and slip share one on A4 and Letter.
    panels_per_page = _PANELS_PER_PAGE[layout]
    parcels_per_chunk = max(1, chunk_pages * panels_per_page // len(kinds))
    chunks = [
        _Chunk(tuple(parcels[start : start + parcels_per_chunk]), settings, layout, kinds)
        for start in range(0, len(parcels), parcels_per_chunk)
    ]
    total = sum(chunk.pages for chunk in chunks)
    progress = on_progress or (lambda _done, _total: None)
    progress(0, total)
    if len(chunks) == 1:
        pdf = _render_chunk(chunks[0])
        progress(total, total)
        return pdf

    done = 0
    joined = PdfWriter()
    processes = min(workers or min(MAX_WORKERS, multiprocessing.cpu_count()), len(chunks))
    # forkserver, not fork: the caller may be a threaded web server, and forking threads is
    # unsafe; the server imports this module once and forks cheap workers from it.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__, f"{__package__}.forkserver_guard"])
    try:
        with ProcessPoolExecutor(
            max_workers=processes, mp_context=context, initializer=die_with_parent
        ) as pool:
            futures: list[Future[bytes]] = [pool.submit(_render_in_worker, c) for c in chunks]
            # In order, joining each chunk while the workers render the next ones; a chunk's
            # pages count as done when it and all before it are.
            for chunk, future in zip(chunks, futures, strict=True):
                joined.append(PdfReader(io.BytesIO(future.result())))
                done += chunk.pages
                progress(done, total)
    except BrokenProcessPool as error:
        raise LabelError("A label worker died; the run was not printed.") from error
    out = io.BytesIO()
    joined.write(out)
    return out.getvalue()


def die_with_parent() -> None:
    """This process gets SIGKILL when its parent dies, instead of living on reparented to
    PID 1 (Linux's prctl): label workers follow the forkserver, the forkserver its starter."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_PR_SET_PDEATHSIG = 1


def _render_chunk(chunk: _Chunk) -> bytes:
    return write_pdf(_chunk_html(chunk), layout=chunk.layout)


def _render_in_worker(chunk: _Chunk) -> bytes:
    """A chunk in a pool worker, with Python's cycle collector paused: it walked WeasyPrint's
    millions of short-lived objects for some 15% of a chunk's time, while reference counting
    frees nearly all of them anyway (peak memory unchanged). The rest goes once, at the end."""
    gc.disable()
    try:
        return _render_chunk(chunk)
    finally:
        gc.enable()
        gc.collect()


def _chunk_html(chunk: _Chunk) -> str:
    environment = _environment()
    label, slip = (
        environment.get_template("label.html"),
        environment.get_template("packing_slip.html"),
    )
    panels: list[str] = []
    for parcel in chunk.parcels:
        for kind in chunk.kinds:
            if kind == "label":
                panels.append(label.render(_label_context(parcel, chunk.settings)))
            else:
                panels.append(slip.render(_slip_context(parcel)))
    per_page = _PANELS_PER_PAGE[chunk.layout]
    pages = panels  # a 4×6 panel is its page
    if per_page > 1:  # a sheet holds two panels side by side
        pages = [
            '<div class="sheet">' + "".join(panels[start : start + per_page]) + "</div>"
            for start in range(0, len(panels), per_page)
        ]
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Labels</title></head><body class={quoteattr('layout-' + chunk.layout)}>"
        + "".join(pages)
        + "</body></html>"
    )


def _label_context(parcel: ParcelLabel, settings: LabelSettings) -> dict[str, object]:
    customs = None
    if needs_customs(origin=settings.origin_country, destination=parcel.country):
        keys = parcel.key_count
        cents = round(float(settings.customs_value) * 100)
        customs = {
            "category": settings.customs_category,
            "description": settings.customs_description,
            "quantity": keys,
            "weight_kg": f"{keys * settings.customs_weight_grams / 1000:.3f}",
            "value": f"{keys * cents // 100}.{keys * cents % 100:02d}",
            "currency": settings.customs_currency,
            "hs_code": settings.hs_code,
            "origin": settings.goods_origin,
        }
    name, *rest = parcel.recipient_lines or [""]
    return {
        "parcel": parcel,
        "return_address": settings.return_address,
        "recipient_name": name,
        "local_lang": _LOCAL_LANGUAGES.get(parcel.country, ""),
        "recipient_rest": rest,
        "barcode": _svg_data_uri(code128_svg(parcel.reference)),
        "customs": customs,
    }


def _slip_context(parcel: ParcelLabel) -> dict[str, object]:
    return {"parcel": parcel, "qr": _qr_data_uri(parcel.activation_url)}


def _svg_data_uri(svg: str) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("ascii")).decode("ascii")


@lru_cache(maxsize=64)
def _qr_data_uri(url: str) -> str:
    """The QR code of ``url`` as a PNG of one pixel per module, drawn unsmoothed: as sharp as
    SVG when printed, and much cheaper for WeasyPrint than a path of a few hundred runs. Most
    slips of a run share their URL, so each is encoded once per process."""
    return str(segno.make(url, error="m", micro=False).png_data_uri(scale=1, border=4))


def _layout(value: str) -> Layout:
    for layout in LAYOUTS:
        if value == layout:
            return layout
    raise LabelError(f"Unknown label layout {value!r}: use one of {', '.join(LAYOUTS)}.")


# --- per-process caches: templates and CSS read once, not per chunk ---------------------------


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


@cache
def _label_css(layout: Layout) -> str:
    """The label CSS with the layout's page size: one string per layout and process, the key
    under which the adapter keeps the parsed stylesheet."""
    css = (_TEMPLATES / "labels.css").read_text(encoding="utf-8")
    return css + f"\n@page {{ size: {_PAGE_SIZES[layout]}; margin: 0 }}\n"

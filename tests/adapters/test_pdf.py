"""HTML to PDF through the adapter, read back with pypdf; nothing but data: URIs is fetched."""

from __future__ import annotations

import base64
import io

import pytest
from pypdf import PdfReader

from adapters.pdf import DataURIFetcher, PdfError, render_pdf

CSS = "@page { size: A6; margin: 1cm } body { font-family: 'DejaVu Sans'; font-size: 12pt }"
# A 1×1 black PNG.
PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg=="
)


def text_of(document: bytes) -> str:
    """The words of every page, spaces left out (pypdf reads kerning as spaces: "T wo")."""
    pages = PdfReader(io.BytesIO(document)).pages
    return "".join("".join(page.extract_text().split()) for page in pages)


def test_html_becomes_a_pdf_with_its_text() -> None:
    document = render_pdf("<h1>Hello, printer</h1><p>Two keys, one parcel.</p>", css=CSS)

    assert document.startswith(b"%PDF-")
    reader = PdfReader(io.BytesIO(document))
    assert len(reader.pages) == 1
    text = text_of(document)
    assert "Hello,printer" in text and "Twokeys,oneparcel." in text


def test_the_stylesheet_sets_the_page() -> None:
    document = render_pdf("<p>A6</p>", css=CSS)
    box = PdfReader(io.BytesIO(document)).pages[0].mediabox
    assert (round(float(box.width)), round(float(box.height))) == (298, 420)  # 105×148 mm


def test_data_uris_are_fetched() -> None:
    uri = "data:image/png;base64," + base64.b64encode(PIXEL).decode("ascii")
    document = render_pdf(f'<p>Pixel</p><img src="{uri}" style="width: 1cm">', css=CSS)
    assert "Pixel" in text_of(document)
    assert DataURIFetcher().fetch("data:text/plain,hello").read() == b"hello"


@pytest.mark.parametrize(
    "html",
    [
        '<img src="file:///etc/passwd">',
        '<img src="http://example.org/pixel.png">',
        '<link rel="stylesheet" href="http://example.org/print.css">',
        '<link rel="stylesheet" href="https://example.org/print.css">',
        "<style>body { background: url(file:///etc/passwd) }</style>",
    ],
)
def test_files_and_the_network_are_refused(html: str) -> None:
    with pytest.raises(PdfError, match="fetches nothing; refused"):
        render_pdf(f"<p>Label</p>{html}", css=CSS)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "http://example.org/", "HTTPS://x.test/"])
def test_the_fetcher_refuses_anything_but_data_uris(url: str) -> None:
    with pytest.raises(PdfError, match="refused"):
        DataURIFetcher().fetch(url)


def test_the_stylesheet_itself_fetches_nothing() -> None:
    with pytest.raises(PdfError, match="refused"):
        render_pdf("<p>Label</p>", css="@import url(file:///etc/passwd); " + CSS)
    with pytest.raises(PdfError, match="refused"):
        render_pdf("<p>Label</p>", css="body { background: url(http://example.org/x.png) }")

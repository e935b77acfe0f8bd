"""HTML to PDF, drawn by WeasyPrint: the one module that imports it.

WeasyPrint's sharp edges are filed down here. By default it fetches whatever a document names
(``file:`` paths on the server, any remote URL); here the URL fetcher allows ``data:`` URIs
only, and anything else stops the render with ``PdfError``: a PDF must never read the server's
files or reach the network, so images come as ``data:`` URIs and fonts from fontconfig. Its
refusals arrive wrapped in its own ``FatalURLFetchingError`` (which is not even an
``Exception``); here they are ``PdfError``, a domain error. And parsing the stylesheet and
setting up the fonts for every document (every chunk of a label run) was measured to be costly,
so both are done once per process: the parsed CSS is cached by its text, which callers
therefore read once and pass unchanged.
"""

from __future__ import annotations

from functools import cache, lru_cache
from typing import TypeAlias

import weasyprint
from weasyprint.text.fonts import FontConfiguration
from weasyprint.urls import FatalURLFetchingError, URLFetcher, URLFetcherResponse

from core.errors import DomainError

# What a fetch returns: a response with ``read()`` (WeasyPrint's own type).
FetchedResource: TypeAlias = URLFetcherResponse


class PdfError(DomainError):
    """A PDF could not be rendered: the document or its CSS named something it must not fetch."""

    status_code = 422
    title = "The PDF could not be rendered"


def render_pdf(html: str, *, css: str) -> bytes:
    """``html`` as a PDF, styled by ``css`` (its ``@page`` rules set the paper). Nothing but
    ``data:`` URIs is fetched, for the document or its stylesheet; ``PdfError`` otherwise."""
    try:
        document = weasyprint.HTML(string=html, url_fetcher=DataURIFetcher())
        pdf: bytes = document.write_pdf(stylesheets=[_stylesheet(css)], font_config=_fonts())
    except FatalURLFetchingError as error:
        cause = error.__cause__
        raise cause if isinstance(cause, PdfError) else PdfError(str(error)) from error
    return pdf


class DataURIFetcher(URLFetcher):  # type: ignore[misc]  # WeasyPrint ships no types
    """Fetches ``data:`` URIs only; anything else (``file:``, ``http:``…) raises ``PdfError``,
    which stops the render."""

    def __init__(self) -> None:
        super().__init__(allowed_protocols=("data",), allow_redirects=False, fail_on_errors=True)

    def fetch(self, url: str, headers: dict[str, str] | None = None) -> FetchedResource:
        if not url.lower().startswith("data:"):
            raise PdfError(f"A PDF fetches nothing; refused {url[:80]!r}.")
        response: FetchedResource = super().fetch(url, headers)
        return response


# --- per-process caches: parsing the CSS and loading fonts once, not per document -------------


@cache
def _fonts() -> FontConfiguration:
    return FontConfiguration()


@lru_cache(maxsize=16)  # a few stylesheets per process (one per label layout, the reports')
def _stylesheet(css: str) -> weasyprint.CSS:
    return weasyprint.CSS(string=css, font_config=_fonts(), url_fetcher=DataURIFetcher())

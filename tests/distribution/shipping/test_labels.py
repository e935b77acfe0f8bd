"""Label runs, read back as a person or a scanner would: text with pypdf, page images with
pdftoppm, barcodes with zxing-cpp."""

from __future__ import annotations

import io
import multiprocessing
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import zxingcpp
from PIL import Image, ImageChops
from pypdf import PdfReader

from core.settings import Settings, SettingsError
from distribution.shipping.labels import (
    LabelError,
    LabelSettings,
    ParcelLabel,
    code128_svg,
    needs_customs,
    render_run,
    render_slips,
    write_pdf,
)

ROOT = Path(__file__).resolve().parents[3]
SETTINGS = LabelSettings(
    return_address=("Security Key Giveaway", "Example Str. 1", "10115 Berlin", "GERMANY"),
)
ADDRESSES = {
    "JP": ["Kenji Tanaka", "1-2-3 Marunouchi", "Chiyoda-ku, Tokyo 100-0005", "JAPAN"],
    "US": ["Grace Hopper", "1600 Pennsylvania Ave NW", "WASHINGTON DC 20500", "UNITED STATES"],
    "GB": ["Ada Lovelace", "10 Downing Street", "LONDON", "SW1A 2AA", "UNITED KINGDOM"],
    "CH": ["Niklaus Wirth", "Bundesplatz 3", "3003 BERN", "SWITZERLAND"],
    "CA": ["Brian Kernighan", "111 Wellington Street", "OTTAWA ON K1A 0A9", "CANADA"],
    "FR": ["Marie Curie", "1 Rue de Rivoli", "75001 PARIS", "FRANCE"],
    "AT": ["Lise Meitner", "Mariahilfer Straße 1", "1060 WIEN", "AUSTRIA"],
    "BE": ["Georges Lemaître", "Rue de la Loi 16", "1000 BRUXELLES", "BELGIUM"],
    "IT": ["Enrico Fermi", "Via del Corso 10", "00186 ROMA RM", "ITALY"],
    "ES": ["Margarita Salas", "Calle de Alcalá 1", "28014 MADRID", "SPAIN"],
    "DE": ["Konrad Zuse", "Unter den Linden 5", "10117 BERLIN", "GERMANY"],
}
CROSS_BORDER = ("JP", "US", "GB", "CH", "CA")
INSIDE_EU = ("FR", "AT", "BE", "IT", "ES", "DE")
JAPANESE_NAME = "田中健二"


def parcel(country: str, number: int = 1, *, local: str = "") -> ParcelLabel:
    return ParcelLabel(
        reference=f"SK{country}{number:08d}",
        claim_reference=f"CLM-{country}-{number:04d}",
        recipient_lines=ADDRESSES[country],
        recipient_local=local or (JAPANESE_NAME if country == "JP" else ""),
        phone="+81312345678" if country == "JP" else "+4930123456",
        country=country,
        items=[("Titan USB-A/NFC", 1), ("Titan USB-C/NFC", 1)],
        activation_url=f"https://keys.example.org/activate/CLM-{country}-{number:04d}",
    )


def page_texts(pdf: bytes) -> list[str]:
    return [page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages]


def page_images(pdf: bytes, tmp_path: Path, *, dpi: int = 300) -> Iterator[Image.Image]:
    source = tmp_path / "run.pdf"
    source.write_bytes(pdf)
    subprocess.run(
        ["pdftoppm", "-r", str(dpi), "-png", str(source), str(tmp_path / "page")], check=True
    )
    for image in sorted(tmp_path.glob("page-*.png")):
        yield Image.open(image)


@pytest.fixture(scope="module")
def every_country() -> bytes:
    """One run of a parcel to each served country, 4×6 with slips."""
    return render_run([parcel(country) for country in ADDRESSES], settings=SETTINGS)


# --- customs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("destination", CROSS_BORDER)
def test_parcels_leaving_the_eu_need_customs(destination: str) -> None:
    assert needs_customs(origin="DE", destination=destination)


@pytest.mark.parametrize("destination", INSIDE_EU)
def test_parcels_inside_the_eu_need_no_customs(destination: str) -> None:
    assert not needs_customs(origin="DE", destination=destination)


def test_customs_depend_on_the_origin() -> None:
    assert needs_customs(origin="CH", destination="DE")
    assert not needs_customs(origin="US", destination="us")
    assert needs_customs(origin="GB", destination="FR")


# --- the run read back ------------------------------------------------------------------------


def test_each_parcel_has_a_label_then_its_slip(every_country: bytes) -> None:
    texts = page_texts(every_country)
    assert len(texts) == 2 * len(ADDRESSES)
    for index, country in enumerate(ADDRESSES):
        label, slip = texts[2 * index], texts[2 * index + 1]
        lines = label.splitlines()
        # The return address on one line (wrapped as it needs), then the recipient's lines in
        # order (the local name under the first), the country last, then the phone.
        name_at = lines.index(ADDRESSES[country][0])
        assert " ".join(lines[:name_at]) == "From: " + " · ".join(SETTINGS.return_address)
        recipient = [line for line in lines[name_at:] if line != JAPANESE_NAME]
        assert recipient[: len(ADDRESSES[country]) + 1] == [
            *ADDRESSES[country],
            f"Tel. {parcel(country).phone}",
        ]
        assert f"SK{country}00000001" in lines
        assert "1 × Titan USB-A/NFC; 1 × Titan USB-C/NFC" in label
        assert f"CLM-{country}-0001" in slip
        assert "both" in slip and f"https://keys.example.org/activate/CLM-{country}-0001" in slip
        assert "CN22" not in slip


@pytest.mark.parametrize("country", CROSS_BORDER + INSIDE_EU)
def test_customs_block_exactly_on_cross_border_labels(every_country: bytes, country: str) -> None:
    label = page_texts(every_country)[2 * list(ADDRESSES).index(country)]
    if country in CROSS_BORDER:
        assert "CUSTOMS DECLARATION CN22" in label
        assert "[X] Gift" in label
        assert "2 × Security key (USB authenticator) · 0.060 kg · 50.00 EUR" in label
        assert "HS tariff no. 8471.80" in label and "origin of goods: DE" in label
    else:
        assert "CN22" not in label and "8471.80" not in label


def test_customs_figures_come_from_the_settings() -> None:
    settings = replace(
        SETTINGS,
        origin_country="CH",
        goods_origin="CN",
        customs_weight_grams=25,
        customs_value="19.90",
        customs_currency="CHF",
        hs_code="8523.52",
        customs_category="Commercial sample",
        customs_description="FIDO2 authenticator",
    )
    [label] = page_texts(render_run([parcel("DE")], settings=settings, with_slips=False))
    assert "Category: [X] Commercial sample" in label
    assert "2 × FIDO2 authenticator · 0.050 kg · 39.80 CHF" in label
    assert "HS tariff no. 8523.52" in label and "origin of goods: CN" in label


def test_a_slip_for_one_key_asks_for_that_key_and_the_other() -> None:
    one = replace(parcel("DE"), items=[("Titan USB-C/NFC", 1)])
    _label, slip = page_texts(render_run([one], settings=SETTINGS))
    assert "Activate this key today" in slip and "Register this key." in slip
    assert "Register your other key from us too" in slip
    assert "both" not in slip.lower()
    _label, slip = page_texts(render_run([parcel("DE")], settings=SETTINGS))
    assert "Activate both keys today" in slip and "Register BOTH keys" in slip


def test_text_is_escaped() -> None:
    hostile = replace(parcel("FR"), recipient_lines=["<b>Eve</b> & co", "75001 PARIS", "FRANCE"])
    [label] = page_texts(render_run([hostile], settings=SETTINGS, with_slips=False))
    assert "<b>Eve</b> & co" in label


# --- layouts ----------------------------------------------------------------------------------

A4 = (842, 595)  # landscape, in points
LETTER = (792, 612)


@pytest.mark.parametrize(
    ("layout", "with_slips", "parcels", "pages", "size"),
    [
        ("4x6", True, 3, 6, (288, 432)),
        ("4x6", False, 3, 3, (288, 432)),
        ("a4", True, 3, 3, A4),
        ("a4", False, 3, 2, A4),
        ("letter", True, 2, 2, LETTER),
        ("letter", False, 4, 2, LETTER),
    ],
)
def test_page_counts_and_sizes(
    layout: str, with_slips: bool, parcels: int, pages: int, size: tuple[int, int]
) -> None:
    run = [parcel("FR", number) for number in range(parcels)]
    pdf = render_run(run, settings=SETTINGS, layout=layout, with_slips=with_slips)  # type: ignore[arg-type]
    reader = PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) == pages
    box = reader.pages[0].mediabox
    assert (round(float(box.width)), round(float(box.height))) == size
    text = "\n".join(page_texts(pdf))
    for number in range(parcels):
        assert text.count(f"SKFR{number:08d}") == (2 if with_slips else 1)


def test_two_labels_share_a_sheet() -> None:
    pdf = render_run(
        [parcel("FR", 1), parcel("US", 2)], settings=SETTINGS, layout="letter", with_slips=False
    )
    [sheet] = page_texts(pdf)
    assert "SKFR00000001" in sheet and "SKUS00000002" in sheet


def test_the_settings_pick_the_default_layout_and_the_run_overrides_it() -> None:
    a4 = replace(SETTINGS, layout="a4")
    pages = PdfReader(io.BytesIO(render_run([parcel("FR")], settings=a4))).pages
    assert round(float(pages[0].mediabox.width)) == A4[0]
    pages = PdfReader(io.BytesIO(render_run([parcel("FR")], settings=a4, layout="4x6"))).pages
    assert round(float(pages[0].mediabox.width)) == 288


def test_unknown_layout_and_empty_run_are_refused() -> None:
    with pytest.raises(LabelError):
        render_run([parcel("FR")], settings=SETTINGS, layout="a5")  # type: ignore[arg-type]
    with pytest.raises(LabelError):
        render_run([], settings=SETTINGS)


def test_slips_alone() -> None:
    texts = page_texts(render_slips([parcel("JP"), parcel("FR")], settings=SETTINGS))
    assert len(texts) == 2
    assert "CLM-JP-0001" in texts[0] and "CLM-FR-0001" in texts[1]
    assert not any("CN22" in text or "Tel." in text for text in texts)


# --- barcodes ---------------------------------------------------------------------------------


def test_code128_is_one_path_with_a_viewbox() -> None:
    svg = code128_svg("SK7K3QM9XA2F")
    assert svg.count("<path") == 1 and "<rect" not in svg
    assert re.search(r'viewBox="0 0 \d+ \d+"', svg)
    with pytest.raises(LabelError):
        code128_svg("SK-田中")


def test_barcode_and_qr_scan(tmp_path: Path) -> None:
    jp = parcel("JP", 7)
    label, slip = page_images(render_run([jp], settings=SETTINGS), tmp_path)
    assert [(r.format, r.text) for r in zxingcpp.read_barcodes(label)] == [
        (zxingcpp.BarcodeFormat.Code128, "SKJP00000007")
    ]
    assert [(r.format, r.text) for r in zxingcpp.read_barcodes(slip)] == [
        (zxingcpp.BarcodeFormat.QRCode, jp.activation_url)
    ]


def test_barcode_scans_on_a_sheet(tmp_path: Path) -> None:
    run = [parcel("US", 1), parcel("CA", 2)]
    [sheet] = page_images(
        render_run(run, settings=SETTINGS, layout="a4", with_slips=False), tmp_path
    )
    found = {
        r.text for r in zxingcpp.read_barcodes(sheet) if r.format == zxingcpp.BarcodeFormat.Code128
    }
    assert found == {"SKUS00000001", "SKCA00000002"}


# --- Japanese script --------------------------------------------------------------------------


def test_japanese_name_is_set_in_a_cjk_font(every_country: bytes) -> None:
    reader = PdfReader(io.BytesIO(every_country))
    label = reader.pages[2 * list(ADDRESSES).index("JP")]
    lines = label.extract_text().splitlines()
    assert lines[lines.index("Kenji Tanaka") + 1] == JAPANESE_NAME  # under the Latin name
    resources: Any = label["/Resources"]
    fonts = {str(font.get_object()["/BaseFont"]) for font in resources["/Font"].values()}
    # Subset names look like "/JRLKGN+Noto-Sans-CJK-JP".
    assert any(font.endswith("+Noto-Sans-CJK-JP") for font in fonts), fonts


# Rendered in a child process so that its fontconfig can be limited to DejaVu, as on a fresh
# machine: prints whether the Japanese name's pixels differ from missing-glyph boxes.
_GLYPH_CHECK = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    from tests.distribution.shipping.test_labels import name_differs_from_boxes
    print(name_differs_from_boxes({tmp!r}))
    """
)


def name_differs_from_boxes(tmp: str) -> bool:
    """Whether the Japanese name on a label renders differently from four characters that no
    font has (which render as missing-glyph boxes), at 150 dpi."""
    images = []
    for index, local in enumerate((JAPANESE_NAME, "\U000f0000" * len(JAPANESE_NAME))):
        pdf = render_run([parcel("JP", local=local)], settings=SETTINGS, with_slips=False)
        directory = Path(tmp) / str(index)
        directory.mkdir()
        [image] = page_images(pdf, directory, dpi=150)
        images.append(image.convert("L"))
    return ImageChops.difference(*images).getbbox() is not None


def _check_glyphs_in_child(tmp_path: Path, environ: dict[str, str]) -> bool:
    script = _GLYPH_CHECK.format(root=str(ROOT), tmp=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-c", script], env=environ, capture_output=True, text=True, check=True
    )
    return done.stdout.strip().splitlines()[-1] == "True"


def test_japanese_name_renders_real_glyphs(tmp_path: Path) -> None:
    assert name_differs_from_boxes(str(tmp_path))


def test_the_glyph_check_fails_without_a_cjk_font(tmp_path: Path) -> None:
    """The check above can fail: with only DejaVu (a fresh machine) the name is boxes."""
    config = tmp_path / "fonts.conf"
    config.write_text(
        '<?xml version="1.0"?><!DOCTYPE fontconfig SYSTEM "fonts.dtd"><fontconfig>'
        "<dir>/usr/share/fonts/truetype/dejavu</dir>"
        f"<cachedir>{tmp_path / 'cache'}</cachedir></fontconfig>"
    )
    environ = {**os.environ, "FONTCONFIG_FILE": str(config)}
    assert not _check_glyphs_in_child(tmp_path, environ)


# --- nothing is fetched -----------------------------------------------------------------------


@pytest.mark.parametrize("url", ["file:///etc/passwd", "http://example.org/", "https://x.test/"])
def test_a_label_refuses_files_and_the_network(url: str) -> None:
    # The fetcher itself is tested with the adapter (tests/adapters/test_pdf.py).
    with pytest.raises(LabelError, match="refused"):
        write_pdf(f'<img src="{url}"><link rel="stylesheet" href="{url}">')


# --- chunks and progress ----------------------------------------------------------------------


def test_chunks_give_the_same_run_as_one_document() -> None:
    run = [parcel(country, number) for number, country in enumerate(2 * list(ADDRESSES))]
    steps: list[tuple[int, int]] = []
    workers: set[int] = set()

    def follow(done: int, total: int) -> None:
        steps.append((done, total))
        workers.update(process.ident or 0 for process in multiprocessing.active_children())

    chunked = render_run(run, settings=SETTINGS, chunk_pages=10, workers=2, on_progress=follow)
    whole = render_run(run, settings=SETTINGS)
    assert page_texts(chunked) == page_texts(whole)
    assert len(page_texts(chunked)) == 2 * len(run) == 44
    assert steps[0] == (0, 44) and steps[-1] == (44, 44)
    assert len(steps) == 1 + 5  # four chunks of 10 pages and one of 4, after the start
    assert [done for done, _total in steps] == sorted(done for done, _total in steps)
    assert len(workers) == 2  # both cores: two worker processes rendered the chunks


def test_sheets_are_not_split_across_chunks() -> None:
    run = [parcel("FR", number) for number in range(5)]
    pdf = render_run(run, settings=SETTINGS, layout="a4", with_slips=False, chunk_pages=1)
    assert len(page_texts(pdf)) == 3


# --- settings ---------------------------------------------------------------------------------


def test_label_settings_from_the_environment() -> None:
    environ = {
        "KEYS_ENV": "development",
        "KEYS_LABEL_LAYOUT": "Letter",
        "KEYS_RETURN_ADDRESS": "Keys | 1 Main St | Springfield IL 62701 | UNITED STATES",
        "KEYS_ORIGIN_COUNTRY": "us",
        "KEYS_CUSTOMS_VALUE": "30.00",
        "KEYS_CUSTOMS_CURRENCY": "usd",
        "KEYS_CUSTOMS_CATEGORY": "commercial sample",
        "KEYS_CUSTOMS_DESCRIPTION": "FIDO2 security key",
    }
    settings = LabelSettings.from_settings(Settings.from_env(environ))
    assert settings.layout == "letter"
    assert settings.return_address == ("Keys", "1 Main St", "Springfield IL 62701", "UNITED STATES")
    assert (settings.origin_country, settings.goods_origin) == ("US", "US")
    assert (settings.customs_value, settings.customs_currency) == ("30.00", "USD")
    assert (settings.customs_weight_grams, settings.hs_code) == (30, "8471.80")
    assert (settings.customs_category, settings.customs_description) == (
        "Commercial sample",
        "FIDO2 security key",
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KEYS_LABEL_LAYOUT", "a5"),
        ("KEYS_RETURN_ADDRESS", "Keys||Berlin"),
        ("KEYS_ORIGIN_COUNTRY", "XX"),
        ("KEYS_CUSTOMS_WEIGHT_GRAMS", "0"),
        ("KEYS_CUSTOMS_VALUE", "25"),
        ("KEYS_CUSTOMS_CURRENCY", "EURO"),
        ("KEYS_HS_CODE", "84x71"),
        ("KEYS_CUSTOMS_CATEGORY", "Present"),
        ("KEYS_CUSTOMS_DESCRIPTION", "x" * 61),
    ],
)
def test_label_settings_are_validated(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({"KEYS_ENV": "development", name: value})

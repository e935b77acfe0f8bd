"""Claim codes: enough randomness, readable groups, a check symbol that catches typos."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from distribution.claims import codes


def test_a_code_has_80_random_bits_in_readable_groups():
    code = codes.new_code()
    groups = code.split("-")
    assert [len(g) for g in groups] == [4, 4, 4, 4, 1]
    assert set(code.replace("-", "")) <= set(codes.ALPHABET)
    assert len(codes.ALPHABET) ** codes.BODY_LENGTH >= 2**80
    assert len({codes.new_code() for _ in range(1000)}) == 1000


def test_typing_is_forgiving_about_case_dashes_and_look_alikes():
    code = codes.new_code()
    sloppy = code.lower().replace("-", " ").replace("0", "o").replace("1", "l")
    assert codes.normalize(sloppy) == code.replace("-", "")
    assert codes.code_hash(sloppy) == codes.code_hash(code)


@given(st.integers(min_value=0, max_value=15), st.sampled_from(codes.ALPHABET))
def test_any_single_mistyped_symbol_is_caught(position, replacement):
    body = "7K3QM9XA2FHRWD5P"
    code = body + codes.check_symbol(body)
    typo = code[:position] + replacement + code[position + 1 :]
    if typo != code:
        with pytest.raises(codes.MalformedCode, match="mistyped"):
            codes.normalize(typo)


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("ABC", "has 17 letters and digits; this has 3"),
        ("7K3QM9XA2FHRWD5P!", "has no !"),
        ("7K3QM9XA2FHRWD5PU", "has no U"),
    ],
)
def test_malformed_codes_say_what_is_wrong(typed, message):
    with pytest.raises(codes.MalformedCode, match=message):
        codes.normalize(typed)

"""Claim codes: 80 random bits in Crockford's base32, easy to read aloud and to type.

A code is 16 symbols (5 bits each) and a check symbol, shown in groups: ``7K3Q-M9XA-2FHR-
WD5P-N``. The check symbol (Luhn mod 32) catches any single mistyped symbol and most swapped
neighbours before the database is asked. Typing is forgiving: case, spaces and dashes do not
matter, and O, I and L are read as 0, 1 and 1. Only a SHA-256 of the code is stored.
"""

from __future__ import annotations

import hashlib
import secrets

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_VALUE = {symbol: value for value, symbol in enumerate(ALPHABET)}
_READ_AS = str.maketrans({"O": "0", "I": "1", "L": "1", "-": None, " ": None})
BODY_LENGTH = 16  # 80 bits
GROUP = 4


class MalformedCode(ValueError):
    """The typed text cannot be a claim code; the message says why."""


def new_code() -> str:
    """A fresh code, grouped for display."""
    body = "".join(secrets.choice(ALPHABET) for _ in range(BODY_LENGTH))
    return display(body + check_symbol(body))


def check_symbol(body: str) -> str:
    """Luhn mod 32 over the body's symbols."""
    factor, total = 2, 0
    for symbol in reversed(body):
        addend = factor * _VALUE[symbol]
        total += addend // 32 + addend % 32
        factor = 1 if factor == 2 else 2
    return ALPHABET[(32 - total % 32) % 32]


def normalize(typed: str) -> str:
    """The code's 17 symbols from what someone typed, or MalformedCode saying what is wrong."""
    code = typed.upper().translate(_READ_AS)
    if len(code) != BODY_LENGTH + 1:
        raise MalformedCode(
            f"A claim code has {BODY_LENGTH + 1} letters and digits; this has {len(code)}."
        )
    strange = sorted({c for c in code if c not in _VALUE})
    if strange:
        raise MalformedCode(f"A claim code has no {', '.join(strange)}.")
    if check_symbol(code[:-1]) != code[-1]:
        raise MalformedCode("One of the characters is mistyped: please check the code again.")
    return code


def display(code: str) -> str:
    body, check = code[:-1], code[-1]
    groups = [body[i : i + GROUP] for i in range(0, len(body), GROUP)]
    return "-".join([*groups, check])


def code_hash(code: str) -> str:
    """What is stored: the SHA-256 of the normalised code."""
    return hashlib.sha256(normalize(code).encode()).hexdigest()

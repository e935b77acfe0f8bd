"""Project names compared the way PyPI compares them (PEP 503), one at a time or in bulk."""

from __future__ import annotations

import re
from collections.abc import Iterable

from eligibility.errors import ImportRejected

# A PEP 508 project name; blanks around it are forgiven, anything else is not.
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_ONE_NAME = re.compile(_NAME)
_SEPARATORS = re.compile(r"[-_.]+")
# For bulk work: a chunk of names joined by newlines is valid when it holds only name
# characters and, once separators are folded to "-", no name is empty or starts or ends with one.
_NAME_CHARACTERS = re.compile(r"[A-Za-z0-9._\n-]*")
# The columns keep 200 characters; PyPI's longest names are far shorter.
MAX_NAME_LENGTH = 200


def normalize_project_name(name: str) -> str:
    """``Foo.Bar__baz`` → ``foo-bar-baz``: lower case, runs of ``-_.`` become one ``-``."""
    return _SEPARATORS.sub("-", name.strip()).lower()


def is_valid_project_name(name: str) -> bool:
    name = name.strip()
    return len(name) <= MAX_NAME_LENGTH and _ONE_NAME.fullmatch(name) is not None


def normalize_names(names: Iterable[str], first: int, unit: str = "line") -> list[str]:
    """Normalise a chunk of names with a few whole-string operations (C speed, no per-name
    Python); the first invalid name is reported by position (``first`` is the line, or row,
    of the first name)."""
    stripped = list(map(str.strip, names))
    joined = "\n".join(stripped)
    folded = joined.lower().replace("_", "-").replace(".", "-")
    while "--" in folded:
        folded = folded.replace("--", "-")
    if (
        joined.count("\n") != len(stripped) - 1
        or not _NAME_CHARACTERS.fullmatch(joined)
        or _has_bad_edge(folded)
        or max(map(len, stripped), default=0) > MAX_NAME_LENGTH
    ):
        for index, name in enumerate(stripped):
            if not is_valid_project_name(name):
                if not name:
                    reason = "the project name is missing"
                elif len(name) > MAX_NAME_LENGTH:
                    reason = f"{name[:40]!r}… is longer than {MAX_NAME_LENGTH} characters"
                else:
                    reason = f"{name[:80]!r} is not a valid project name"
                raise ImportRejected(reason, where=f"{unit} {first + index}")
    return folded.split("\n")


def _has_bad_edge(folded: str) -> bool:
    return (
        not folded
        or folded.startswith(("-", "\n"))
        or folded.endswith(("-", "\n"))
        or "\n-" in folded
        or "-\n" in folded
        or "\n\n" in folded
    )

"""Project names compared the way PyPI compares them (PEP 503)."""

import re

_SEPARATORS = re.compile(r"[-_.]+")


def normalize_project_name(name: str) -> str:
    """``Foo.Bar__baz`` → ``foo-bar-baz``: lower case, runs of ``-_.`` become one ``-``."""
    return _SEPARATORS.sub("-", name.strip()).lower()

"""The base of every domain error: a message for the person and the HTTP status it maps to.

Each package raises its own subclasses from its ``errors.py``; ``app.py`` turns them into
responses in one place, so no domain error ever becomes a 500.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import click


class DomainError(Exception):
    """Something the person can understand and act on."""

    status_code = 400
    title = "That did not work"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@contextmanager
def reported_as_cli_error() -> Iterator[None]:
    """Turn a domain error into a clean command-line error instead of a traceback."""
    try:
        yield
    except DomainError as error:
        raise click.ClickException(error.message) from error

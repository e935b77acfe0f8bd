"""Errors of the eligibility package."""

from core.errors import DomainError


class EligibilityError(DomainError):
    """Base of the eligibility errors."""


class ImportRejected(EligibilityError):
    """A statistics or roles file was refused whole; the message names the line and reason."""

    status_code = 422
    title = "The file was not imported"

    def __init__(self, message: str, *, line: int | None = None, where: str = "") -> None:
        where = where or (f"line {line}" if line is not None else "")
        super().__init__(f"{where}: {message}" if where else message)
        self.where = where


class UnknownMaintainer(EligibilityError):
    status_code = 404
    title = "No such maintainer"


class NoCriticalList(EligibilityError):
    status_code = 409
    title = "No download statistics yet"


class AppealNotAllowed(EligibilityError):
    status_code = 409
    title = "That appeal cannot be filed"


class AppealNotFound(EligibilityError):
    status_code = 404
    title = "No such appeal"


class AppealClosed(EligibilityError):
    status_code = 409
    title = "That appeal was already decided"


class InvalidProjectName(EligibilityError):
    title = "That is not a project name"


class CriticalListNotFound(EligibilityError):
    status_code = 404
    title = "No such critical list"

"""Errors of the accounts package."""

from core.errors import DomainError


class AccountsError(DomainError):
    """Base of the accounts errors."""


class SignInLinkInvalid(AccountsError):
    status_code = 404
    title = "This sign-in link is not valid"


class SignInLinkExpired(AccountsError):
    status_code = 410
    title = "This sign-in link has expired"


class SignInLinkUsed(AccountsError):
    status_code = 410
    title = "This sign-in link was already used"


class InvalidCredentials(AccountsError):
    status_code = 401
    title = "Sign-in failed"


class StaffNotFound(AccountsError):
    status_code = 404
    title = "No such staff member"


class StaffEmailTaken(AccountsError):
    status_code = 409
    title = "That address is taken"


class MaintainerExists(AccountsError):
    status_code = 409
    title = "That maintainer exists"


class LastAdmin(AccountsError):
    status_code = 409
    title = "The last administrator must stay"


class WeakPassword(AccountsError):
    title = "Choose a longer password"


class EnrolmentLinkInvalid(AccountsError):
    status_code = 404
    title = "This enrolment link is not valid"


class EnrolmentLinkExpired(AccountsError):
    status_code = 410
    title = "This enrolment link has expired"


class EnrolmentLinkUsed(AccountsError):
    status_code = 410
    title = "This enrolment link was already used"


class EnrolmentLinkReplaced(AccountsError):
    status_code = 410
    title = "This enrolment link was replaced by a newer one"

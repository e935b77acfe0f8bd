"""Errors of the distribution package."""

from core.errors import DomainError


class DistributionError(DomainError):
    """Base of the distribution errors."""


class UnknownKeyModel(DistributionError):
    status_code = 404
    title = "Unknown key model"


class InvalidMovement(DistributionError):
    title = "That stock movement is not possible"


class NoKeysLeft(DistributionError):
    status_code = 409
    title = "No keys left"


class NotEligible(DistributionError):
    status_code = 409
    title = "Not eligible"


class AlreadyClaimed(DistributionError):
    status_code = 409
    title = "You have a claim already"


class CodeTypo(DistributionError):
    title = "That code has a typo"


class CodeUnknown(DistributionError):
    status_code = 404
    title = "That code is not valid"


class CodeExpired(DistributionError):
    status_code = 410
    title = "That code has expired"


class CodeUsed(DistributionError):
    status_code = 409
    title = "That code was already used"


class InvalidChoice(DistributionError):
    title = "Check the keys you chose"


class FormSentBefore(DistributionError):
    """A redemption form sent again whose first answer no longer holds for the code it names
    now: its idempotency key is spent, so the page shows it again as a fresh form."""

    status_code = 409
    title = "This form was sent already"


class ClaimNotFound(DistributionError):
    status_code = 404
    title = "No such claim"


class ClaimLocked(DistributionError):
    status_code = 409
    title = "That cannot be changed any more"


class ParcelNotFound(DistributionError):
    status_code = 404
    title = "No such parcel"


class InvalidShipping(DistributionError):
    title = "Check the shipping details"


class RunNotFound(DistributionError):
    status_code = 404
    title = "No such label run"


class PersonalDataErased(DistributionError):
    status_code = 410
    title = "Erased under the retention policy"

"""Errors of the distribution package."""

from errors import DomainError


class DistributionError(DomainError):
    """Base of the distribution errors."""


class UnknownKeyModel(DistributionError):
    status_code = 404
    title = "Unknown key model"


class InvalidMovement(DistributionError):
    title = "That stock movement is not possible"

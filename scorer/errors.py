"""Domain errors raised to callers; the gRPC layer maps each class to one status code, once."""

from __future__ import annotations


class ScorerError(Exception):
    """Base of errors a caller caused or can act on; the message is safe to return."""


class InvalidArgumentError(ScorerError):
    pass


class NotFoundError(ScorerError):
    pass


class AlreadyExistsError(ScorerError):
    pass


class FailedPreconditionError(ScorerError):
    pass


class PermissionDeniedError(ScorerError):
    pass


class ResourceExhaustedError(ScorerError):
    pass

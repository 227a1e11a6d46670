"""The product's exception tree, shared by gateway, workers and export.

Each class corresponds to one gRPC status; the single exception -> status table lives in
`genserve.services.errors`. Messages say what was wrong and what is allowed.
Workers send failures back as (code, message) pairs, rebuilt here with `from_code`.
"""

from __future__ import annotations


class GenserveError(Exception):
    """Base of every error genserve raises on purpose."""

    code = "INTERNAL"


class InvalidArgumentError(GenserveError):
    code = "INVALID_ARGUMENT"


class ModelNotFoundError(GenserveError):
    code = "NOT_FOUND"


class JobNotFoundError(GenserveError):
    code = "NOT_FOUND"


class QueueFullError(GenserveError):
    code = "RESOURCE_EXHAUSTED"


class DeadlineExceededError(GenserveError):
    code = "DEADLINE_EXCEEDED"


class BrokerUnavailableError(GenserveError):
    code = "UNAVAILABLE"


class ModelNotReadyError(GenserveError):
    code = "UNAVAILABLE"


class FailedPreconditionError(GenserveError):
    """The request is valid but the system is not in a state to carry it out (an administrative
    change to a version that is not ready, a repository the gateway cannot write)."""

    code = "FAILED_PRECONDITION"


class NotImplementedYetError(GenserveError):
    code = "UNIMPLEMENTED"


class InternalError(GenserveError):
    code = "INTERNAL"


_BY_CODE = {
    "INVALID_ARGUMENT": InvalidArgumentError,
    "NOT_FOUND": ModelNotFoundError,
    "RESOURCE_EXHAUSTED": QueueFullError,
    "DEADLINE_EXCEEDED": DeadlineExceededError,
    "UNAVAILABLE": ModelNotReadyError,
    "FAILED_PRECONDITION": FailedPreconditionError,
    "UNIMPLEMENTED": NotImplementedYetError,
}


def from_code(code: str, message: str) -> GenserveError:
    """Rebuild an error a worker reported as (code, message)."""
    return _BY_CODE.get(code, InternalError)(message)

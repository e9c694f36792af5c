"""Domain errors: each carries a status code and a machine-readable reason.

The API layer maps them, in one place, to a `google.rpc.Status` with an
`ErrorInfo(reason, domain="dtq")` (and `BadRequest` field violations). Clients
and tests assert the code and reason, never the message.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Code(enum.Enum):
    """The gRPC status codes the domain uses (same names)."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"


@dataclass(frozen=True)
class Violation:
    """One bad field: its path (`requests[2].type`) and what is wrong."""

    field: str
    description: str


@dataclass
class DtqError(Exception):
    """An expected failure, answered with `code` and `reason`."""

    code: Code
    reason: str
    message: str
    violations: list[Violation] = field(default_factory=list)
    retry_after: float | None = None

    def __str__(self) -> str:
        return f"{self.code.value} {self.reason}: {self.message}"

    @classmethod
    def invalid(cls, field_path: str, description: str, reason: str = "INVALID_FIELD") -> DtqError:
        return cls(
            Code.INVALID_ARGUMENT,
            reason,
            f"{field_path}: {description}",
            [Violation(field_path, description)],
        )

    @classmethod
    def not_found(cls, what: str, ident: str) -> DtqError:
        return cls(Code.NOT_FOUND, f"{what.upper()}_NOT_FOUND", f"no {what} with id {ident}")

    @classmethod
    def failed_precondition(cls, reason: str, message: str) -> DtqError:
        return cls(Code.FAILED_PRECONDITION, reason, message)

    @classmethod
    def unavailable(cls, dependency: str, message: str, retry_after: float = 1.0) -> DtqError:
        return cls(
            Code.UNAVAILABLE,
            f"{dependency.upper()}_UNAVAILABLE",
            message,
            retry_after=retry_after,
        )

    def prefixed(self, prefix: str) -> DtqError:
        """The same error with every field path under `prefix` (batch items)."""
        violations = [Violation(f"{prefix}.{v.field}", v.description) for v in self.violations]
        message = f"{prefix}.{self.message}" if self.violations else self.message
        return DtqError(self.code, self.reason, message, violations, self.retry_after)


STALE_LEASE = "STALE_LEASE"


class OutcomeUnknown(DtqError):
    """The connection failed after a write was sent: it may have committed.
    Callers must not undo what depends on it; they leave it to a later check."""

    @classmethod
    def lost(cls, dependency: str, message: str) -> OutcomeUnknown:
        return cls(Code.UNAVAILABLE, f"{dependency.upper()}_UNAVAILABLE", message, retry_after=1.0)

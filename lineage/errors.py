"""The root error and the core's own error types."""

from __future__ import annotations

from collections.abc import Mapping


class LineageError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(LineageError):
    """Configuration is missing or inconsistent."""


class SchemaViolation(LineageError):
    """A record does not satisfy its Avro schema or a model invariant."""


class DecodeError(LineageError):
    """Bytes could not be decoded into a record; ``code`` is the quarantine reason code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class IntegrityError(LineageError):
    """Something that must hold for evidence does not."""


class CheckFailure(LineageError):
    """A verification check failed; ``kind`` names the verifier's failure kind, with where it
    failed and what was expected and found (all plain strings, for reports)."""

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        where: Mapping[str, str | int] | None = None,
        expected: object = "",
        found: object = "",
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.where: dict[str, str | int] = dict(where or {})
        self.expected = str(expected)
        self.found = str(found)

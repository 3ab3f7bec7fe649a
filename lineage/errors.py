"""The root error and the core's own error types."""

from __future__ import annotations


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

"""Errors raised to the services using the SDK."""

from __future__ import annotations

from lineage.errors import LineageError


class EmitterError(LineageError):
    """The emitter cannot do what was asked."""


class BackpressureTimeout(EmitterError):
    """The local queue stayed full for longer than the caller allowed; nothing was dropped."""


class EmitterClosed(EmitterError):
    """The emitter was used after close()."""


class DeliveryFailed(EmitterError):
    """Records could not be delivered to the broker within the timeout."""

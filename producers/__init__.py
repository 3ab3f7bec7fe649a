"""The emitter SDK services use to publish sealed execution events and ask for authorization."""

from producers.emitter import Emitter, FlushReport

__all__ = ["Emitter", "FlushReport"]

"""Decode stage: raw Kafka records to typed events and seals, or a quarantine reason."""

from __future__ import annotations

from dataclasses import dataclass

from lineage import codec, hashing
from lineage.errors import DecodeError, SchemaViolation
from lineage.model import ExecutionEvent, Seal
from stream_processors.records import DecodedSeal, PendingEvent, RawRecord


@dataclass(frozen=True)
class Limits:
    max_record_bytes: int = 256 * 1024
    max_attributes: int = 64
    max_attribute_bytes: int = 16 * 1024


class Decoder:
    """Checks framing, size and invariants; raises DecodeError with a quarantine reason code."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._event = codec.load("execution_event")
        self._seal = codec.load("seal")
        self._event_header = self._event.header
        self._seal_header = self._seal.header

    def decode(self, raw: RawRecord) -> PendingEvent | DecodedSeal:
        value = raw.value
        if value is None:
            raise DecodeError("NULL_VALUE", "expected a record value, found none (tombstone)")
        if len(value) > self.limits.max_record_bytes:
            raise DecodeError(
                "OVERSIZED",
                f"record is {len(value)} bytes, limit is {self.limits.max_record_bytes}",
            )
        if raw.key is None:
            raise DecodeError(
                "NULL_KEY", "expected a key (workflow id or seal:<emitter>), found none"
            )
        header = value[: codec.HEADER_LEN]
        if header == self._event_header:
            return self._decode_event(raw, value)
        if header == self._seal_header:
            return self._decode_seal(raw, value)
        schema = codec.read_header(value)  # raises for unknown fingerprints
        raise DecodeError(
            "WRONG_RECORD_TYPE",
            f"expected an ExecutionEvent or Seal, found a {schema.name} record",
        )

    def _decode_event(self, raw: RawRecord, value: bytes) -> PendingEvent:
        record = self._event.decode_body(value)
        try:
            event = ExecutionEvent.from_record(record)
        except SchemaViolation as exc:
            raise DecodeError("MISSING_FIELD", str(exc)) from exc
        except (ValueError, TypeError) as exc:
            raise DecodeError("MALFORMED_AVRO", f"event does not build: {exc}") from exc
        if len(event.attributes) > self.limits.max_attributes:
            raise DecodeError(
                "OVERSIZED_ATTRIBUTES",
                f"{len(event.attributes)} attributes, limit is {self.limits.max_attributes}",
            )
        attr_bytes = sum(len(k.encode()) + len(v.encode()) for k, v in event.attributes.items())
        if attr_bytes > self.limits.max_attribute_bytes:
            raise DecodeError(
                "OVERSIZED_ATTRIBUTES",
                f"attributes hold {attr_bytes} bytes, limit is {self.limits.max_attribute_bytes}",
            )
        if event.topic != raw.topic or event.partition != raw.partition:
            raise DecodeError(
                "WRONG_TOPIC",
                f"event was written for {event.topic}[{event.partition}], found on {raw.topic}[{raw.partition}]",
            )
        if raw.key != event.workflow_id.encode():
            raise DecodeError(
                "KEY_MISMATCH", f"expected key {event.workflow_id!r}, found {raw.key!r}"
            )
        return PendingEvent(raw.offset, value, hashing.event_digest(value), event)

    def _decode_seal(self, raw: RawRecord, value: bytes) -> DecodedSeal:
        try:
            seal = Seal.from_record(self._seal.decode_body(value))
        except SchemaViolation as exc:
            raise DecodeError("MISSING_FIELD", str(exc)) from exc
        if seal.topic != raw.topic or seal.partition != raw.partition:
            raise DecodeError(
                "WRONG_TOPIC",
                f"seal was written for {seal.topic}[{seal.partition}], found on {raw.topic}[{raw.partition}]",
            )
        expected_key = f"seal:{seal.emitter_id}".encode()
        if raw.key != expected_key:
            raise DecodeError("KEY_MISMATCH", f"expected key {expected_key!r}, found {raw.key!r}")
        return DecodedSeal(raw.offset, value, seal)

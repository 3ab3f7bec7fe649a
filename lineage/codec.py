"""Avro single-object encoding (C3 01 + CRC-64-AVRO fingerprint + body) for the schemas in ``schemas/``."""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.validation import validate

from lineage.errors import DecodeError, SchemaViolation
from lineage.model import Authorization, Decision, EventKind, ExecutionEvent, Runtime

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
MAGIC = b"\xc3\x01"
HEADER_LEN = 10

_EMPTY = 0xC15D213AA4D7A795


def _rabin_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY & -(fp & 1))
        table.append(fp)
    return table


_TABLE = _rabin_table()


def crc64_avro(data: bytes) -> int:
    """The Avro spec's 64-bit Rabin fingerprint (CRC-64-AVRO) of ``data``."""
    fp = _EMPTY
    for byte in data:
        fp = (fp >> 8) ^ _TABLE[(fp ^ byte) & 0xFF]
    return fp


@dataclass(frozen=True)
class Schema:
    """One parsed .avsc with its single-object header."""

    name: str
    parsed: Any
    canonical: str
    fingerprint: int

    @property
    def header(self) -> bytes:
        return MAGIC + struct.pack("<Q", self.fingerprint)

    def encode(self, record: Mapping[str, Any], *, check: bool = True) -> bytes:
        """Encode ``record`` as a single-object encoded message; raise SchemaViolation if invalid."""
        # The quiet check is ~8x cheaper; only a failing record pays for the detailed error.
        if check and not validate(record, self.parsed, raise_errors=False):
            try:
                validate(record, self.parsed, raise_errors=True)
            except Exception as exc:  # fastavro raises ValidationError and others
                raise SchemaViolation(f"{self.name}: record does not match schema: {exc}") from exc
        buf = io.BytesIO()
        buf.write(self.header)
        try:
            fastavro.schemaless_writer(buf, self.parsed, record)
        except UnicodeEncodeError as exc:  # a lone surrogate passes validation, not encoding
            raise SchemaViolation(f"{self.name}: string is not encodable as UTF-8: {exc}") from exc
        return buf.getvalue()

    def decode_body(self, data: bytes | memoryview, start: int = HEADER_LEN) -> dict[str, Any]:
        """Decode the Avro body starting at ``start``; every byte must be consumed."""
        buf = io.BytesIO(data)
        buf.seek(start)
        try:
            record = fastavro.schemaless_reader(buf, self.parsed, None)
        except UnicodeDecodeError as exc:
            raise DecodeError("BAD_UTF8", f"{self.name}: string is not UTF-8: {exc}") from exc
        except (EOFError, IndexError, struct.error) as exc:
            # fastavro raises IndexError both for a varint cut short by the end of the data and
            # for an enum symbol or union branch index out of range: only the first is truncation.
            if buf.tell() < len(data):
                raise DecodeError(
                    "MALFORMED_AVRO", f"{self.name}: malformed body at byte {buf.tell()}: {exc!r}"
                ) from exc
            raise DecodeError("TRUNCATED_AVRO", f"{self.name}: body ends early: {exc!r}") from exc
        except Exception as exc:
            raise DecodeError(
                "MALFORMED_AVRO", f"{self.name}: cannot decode body: {exc!r}"
            ) from exc
        if buf.tell() != len(data):
            raise DecodeError(
                "TRAILING_BYTES",
                f"{self.name}: expected {buf.tell()} bytes, found {len(data)}",
            )
        if not isinstance(record, dict):
            raise DecodeError("MALFORMED_AVRO", f"{self.name}: expected a record")
        # Avro's binary encoding has malleable spellings that fastavro reads without complaint:
        # over-long varints, a negative union index (read as Python's index -1, the last branch),
        # booleans other than 0/1, arrays and maps split into several blocks. Hashes and signatures
        # cover the exact bytes, and every verifier must agree on which bytes are an event, so only
        # the one canonical spelling is accepted: re-encoding the decoded record gives the body back.
        out = io.BytesIO()
        fastavro.schemaless_writer(out, self.parsed, record)
        if out.getbuffer() != memoryview(data)[start:]:
            raise DecodeError(
                "MALFORMED_AVRO",
                f"{self.name}: not the canonical Avro binary encoding of the record it decodes to",
            )
        return record


def _strip_logical(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_logical(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_strip_logical(v) for v in node]
    return node


@cache
def load(name: str) -> Schema:
    """Load ``schemas/<name>.avsc``."""
    path = SCHEMA_DIR / f"{name}.avsc"
    raw = json.loads(path.read_text())
    # Timestamps stay integer microseconds in memory: hashing and ordering use them as numbers.
    parsed = fastavro.parse_schema(_strip_logical(raw))
    canonical = fastavro.schema.to_parsing_canonical_form(raw)
    return Schema(name, parsed, canonical, crc64_avro(canonical.encode()))


SCHEMA_NAMES = (
    "execution_event",
    "seal",
    "sealed_batch",
    "chain_entry",
    "violation",
    "checkpoint",
    "quarantine",
    "containment",
)


@cache
def by_fingerprint() -> dict[bytes, Schema]:
    """Every known schema keyed by its 10-byte single-object header."""
    return {load(n).header: load(n) for n in SCHEMA_NAMES}


def read_header(data: bytes) -> Schema:
    """Resolve the writer's schema from a single-object header; raise DecodeError if unknown."""
    if len(data) < HEADER_LEN:
        raise DecodeError(
            "TRUNCATED_AVRO", f"expected at least {HEADER_LEN} bytes, found {len(data)}"
        )
    if data[:2] != MAGIC:
        raise DecodeError("NOT_SINGLE_OBJECT", f"expected magic c301, found {data[:2].hex()}")
    schema = by_fingerprint().get(bytes(data[:HEADER_LEN]))
    if schema is None:
        raise DecodeError(
            "UNKNOWN_FINGERPRINT", f"no schema in schemas/ has fingerprint {data[2:10].hex()}"
        )
    return schema


def decode(data: bytes) -> tuple[Schema, dict[str, Any]]:
    """Decode any single-object encoded record of a known schema."""
    schema = read_header(data)
    return schema, schema.decode_body(data)


# -- the SDK's event writer --------------------------------------------------------------------
#
# fastavro validates a record in one pass and writes it in another, trying every branch of every
# union on the way (about 50 µs per event, most of the SDK's CPU). ``EventWriter`` writes the one
# schema the SDK emits directly, checking each value's type as it goes. It produces the bytes of
# the canonical Avro binary encoding, byte for byte what ``Schema.encode`` writes (a property test,
# tests/unit/lineage/test_event_writer.py, holds it to that); any value it does not handle itself
# (a subclass of int or dict, a string that is not UTF-8, a number out of range, a missing field)
# sends the whole event to ``Schema.encode``, which raises the schema violation, or encodes it.


class _Slow(Exception):
    """A value the direct writer leaves to the reference encoder."""


_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1
_INT_MIN, _INT_MAX = -(1 << 31), (1 << 31) - 1


def _varint(n: int) -> bytes:
    """Avro's variable-length encoding of a non-negative (already zig-zagged) integer."""
    if n < 0x80:
        return _BYTE[n]
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_BYTE = tuple(bytes((i,)) for i in range(0x80))
_LEN_TABLE = 1024
_LEN = tuple(_varint(n << 1) for n in range(_LEN_TABLE))  # zig-zag varint of a length


def _long(n: Any) -> bytes:
    if type(n) is not int or not _LONG_MIN <= n <= _LONG_MAX:
        raise _Slow
    return _varint((n << 1) ^ (n >> 63))


def _int(n: Any) -> bytes:
    if type(n) is not int or not _INT_MIN <= n <= _INT_MAX:
        raise _Slow
    return _varint((n << 1) ^ (n >> 31))


def _string(s: Any) -> bytes:
    if type(s) is not str:
        raise _Slow
    b = s.encode()  # UnicodeEncodeError (a lone surrogate) -> the reference encoder's error
    n = len(b)
    return (_LEN[n] if n < _LEN_TABLE else _varint(n << 1)) + b


def _optional(s: Any) -> bytes:
    """A ``["null", "string"]`` union: branch 0 for None, else branch 1 and the string."""
    if s is None:
        return b"\x00"
    return b"\x02" + _string(s)


_NULL = b"\x00"
# Keyed by the members' identities: a plain string equal to a member's value is not a member
# (the model's checks compare kinds by identity), so it goes to the reference encoder.
_KIND = {id(k): _varint(i << 1) for i, k in enumerate(EventKind)}
_DECISION = {id(d): _varint(i << 1) for i, d in enumerate(Decision)}
_CACHE_ENTRIES = 4096
_CACHE_MAX_CHARS = 256


class EventWriter:
    """Single-object bytes of an ``ExecutionEvent``, written without fastavro (same bytes).

    Strings that repeat (workflow, principal, action, attribute keys and values, the emitter's
    own id and topic) are kept encoded in a bounded cache; the last ``Runtime`` seen is kept
    encoded too (it is frozen, so the same object always encodes the same). One writer per
    thread, or under a lock: the caches are plain dicts.
    """

    def __init__(self) -> None:
        self.schema = load("execution_event")
        self._header = self.schema.header
        self._strings: dict[str, bytes] = {}
        self._optionals: dict[str, bytes] = {}
        self._runtime: Runtime | None = None
        self._runtime_bytes = _NULL
        self._time_high = -1
        self._time_high_bytes = b""
        # Checked against the schema once: the writer below hard-codes its field order.
        names = [f["name"] for f in self.schema.parsed["fields"]]
        if names != list(_EVENT_FIELD_ORDER):
            raise SchemaViolation(
                f"execution_event: EventWriter expects fields {_EVENT_FIELD_ORDER}, found {names}"
            )

    def encode(self, event: ExecutionEvent) -> bytes:
        """The event's single-object encoding; SchemaViolation if it does not fit the schema."""
        try:
            return self._write(event)
        except Exception:  # anything unusual: the reference encoder decides
            return self.reference(event)

    def reference(self, event: ExecutionEvent) -> bytes:
        """fastavro's validation and encoding of the same event (the slow path, and the oracle)."""
        try:
            record = event.to_record()
        except (AttributeError, TypeError) as exc:  # e.g. a plain string where an enum belongs
            raise SchemaViolation(
                f"{self.schema.name}: record does not match schema: {exc}"
            ) from exc
        return self.schema.encode(record)

    def _cached(self, s: Any) -> bytes:
        return self._strings.get(s) or self._miss(s)

    def _cached_optional(self, s: Any) -> bytes:
        if s is None:
            return _NULL
        return self._optionals.get(s) or self._miss_optional(s)

    def _time(self, n: Any) -> bytes:
        """A timestamp: its low 14 bits change every event, the rest every few milliseconds."""
        if type(n) is not int or not _LONG_MIN <= n <= _LONG_MAX:
            raise _Slow
        z = (n << 1) ^ (n >> 63)
        if z < 0x4000:
            return _varint(z)
        high = z >> 14
        if high != self._time_high:
            self._time_high_bytes = _varint(high)
            self._time_high = high
        low = (z & 0x7F) | ((z << 1) & 0x7F00) | 0x8080
        return low.to_bytes(2, "little") + self._time_high_bytes

    def _runtime_of(self, rt: Any) -> bytes:
        if rt is None:
            return _NULL
        if rt is self._runtime:
            return self._runtime_bytes
        if type(rt) is not Runtime:
            raise _Slow
        b = b"".join(
            (
                b"\x02",
                self._cached(rt.host),
                self._cached_optional(rt.image_digest),
                self._cached_optional(rt.attestation_type),
                self._cached_optional(rt.measurement),
            )
        )
        self._runtime, self._runtime_bytes = rt, b
        return b

    def _authorization(self, a: Any) -> bytes:
        if a is None:
            return _NULL
        if type(a) is not Authorization:
            raise _Slow
        policies: Any = a.determining_policies  # a tuple, or a list from a caller
        if type(policies) is not tuple and type(policies) is not list:
            raise _Slow
        cached = self._cached
        parts = [b"\x02", _DECISION[id(a.decision)], cached(a.policy_id), cached(a.policy_digest)]
        if policies:
            parts.append(_varint(len(policies) << 1))
            parts.extend(cached(p) for p in policies)
        parts.append(_NULL)
        parts.append(_string(a.input_digest))
        parts.append(self._time(a.expires_at))
        parts.append(cached(a.authorized_action))
        parts.append(self._cached_optional(a.authorized_resource))
        return b"".join(parts)

    def _attributes(self, m: Any) -> bytes:
        if type(m) is not dict:
            raise _Slow
        if not m:
            return _NULL
        cached = self._cached
        parts = [_varint(len(m) << 1)]
        for k, v in m.items():
            parts.append(cached(k))
            parts.append(cached(v))
        parts.append(_NULL)
        return b"".join(parts)

    def _miss(self, s: Any) -> bytes:
        """A string not in the cache: written, and kept if short."""
        b = _string(s)
        if len(s) <= _CACHE_MAX_CHARS:
            if len(self._strings) >= _CACHE_ENTRIES:
                self._strings.clear()
            self._strings[s] = b
        return b

    def _miss_optional(self, s: Any) -> bytes:
        b = b"\x02" + _string(s)
        if len(s) <= _CACHE_MAX_CHARS:
            if len(self._optionals) >= _CACHE_ENTRIES:
                self._optionals.clear()
            self._optionals[s] = b
        return b

    def _write(self, e: ExecutionEvent) -> bytes:
        # Inline on purpose (this is most of the SDK's CPU per event): a None, a cached string
        # or the last Runtime costs no call. A cached value is never empty, so ``or`` is safe.
        get = self._strings.get
        get_optional = self._optionals.get
        miss = self._miss
        miss_optional = self._miss_optional
        v: Any
        return b"".join(
            (
                self._header,
                _string(e.event_id),
                get(v := e.workflow_id) or miss(v),
                _NULL if (v := e.parent_event_id) is None else b"\x02" + _string(v),
                _NULL if (v := e.parent_workflow_id) is None else b"\x02" + _string(v),
                _NULL if (v := e.trace_id) is None else b"\x02" + _string(v),
                _NULL if (v := e.span_id) is None else b"\x02" + _string(v),
                _KIND[id(e.kind)],
                self._time(e.event_time),
                get(v := e.principal) or miss(v),
                _NULL if (v := e.agent_id) is None else get_optional(v) or miss_optional(v),
                _NULL if (v := e.model_id) is None else get_optional(v) or miss_optional(v),
                _NULL if (v := e.model_version) is None else get_optional(v) or miss_optional(v),
                get(v := e.action) or miss(v),
                _NULL if (v := e.resource) is None else get_optional(v) or miss_optional(v),
                _NULL if (v := e.authorization_id) is None else b"\x02" + _string(v),
                _NULL if (v := e.authorization) is None else self._authorization(v),
                self._runtime_bytes if (v := e.runtime) is self._runtime else self._runtime_of(v),
                _NULL if (v := e.input_digest) is None else b"\x02" + _string(v),
                _NULL if (v := e.output_digest) is None else b"\x02" + _string(v),
                self._attributes(e.attributes),
                get(v := e.emitter_id) or miss(v),
                _long(e.emitter_seq),
                get(v := e.topic) or miss(v),
                _int(e.partition),
            )
        )


def _bytes(b: bytes) -> bytes:
    n = len(b)
    return (_LEN[n] if n < _LEN_TABLE else _varint(n << 1)) + b


def write_sealed_batch(version: int, seal: bytes, events: list[bytes]) -> bytes:
    """The single-object bytes of a SealedBatch record (schemas/sealed_batch.avsc), written
    directly: fastavro spends ~5,600 instructions per event on this record, this ~300. The same
    bytes as ``load("sealed_batch").encode(...)`` (tested); the caller passes valid values."""
    if (
        type(version) is not int
        or not _INT_MIN <= version <= _INT_MAX
        or type(seal) is not bytes
        or type(events) is not list
    ):
        raise SchemaViolation(
            f"sealed_batch: expected an int version, seal bytes and a list of event bytes, "
            f"found {version!r}, {type(seal).__name__}, {type(events).__name__}"
        )
    parts = [load("sealed_batch").header, _int(version), _bytes(seal)]
    if events:
        parts.append(_varint(len(events) << 1))
        for e in events:
            if type(e) is not bytes:
                raise SchemaViolation(
                    f"sealed_batch: events: expected bytes, found {type(e).__name__}"
                )
            n = len(e)
            parts.append(_LEN[n] if n < _LEN_TABLE else _varint(n << 1))
            parts.append(e)
    parts.append(_NULL)
    return b"".join(parts)


_EVENT_FIELD_ORDER = (
    "event_id",
    "workflow_id",
    "parent_event_id",
    "parent_workflow_id",
    "trace_id",
    "span_id",
    "kind",
    "event_time",
    "principal",
    "agent_id",
    "model_id",
    "model_version",
    "action",
    "resource",
    "authorization_id",
    "authorization",
    "runtime",
    "input_digest",
    "output_digest",
    "attributes",
    "emitter_id",
    "emitter_seq",
    "topic",
    "partition",
)

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
        fastavro.schemaless_writer(buf, self.parsed, record)
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

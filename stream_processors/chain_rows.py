"""Chain output as ``lineage_entries`` rows in an Avro object container ClickHouse reads natively.

The processor has decoded every event already, so it computes every column here (derived ones
included) and the sink forwards the bytes to ``INSERT … FORMAT Avro`` without decoding a row.
The container carries its own schema; any Avro library reads it. Format ``entry-rows/1``:

- one container per (batch, partition), Kafka value of a ``lineage.chain`` record;
- metadata ``lineage.format`` = ``entry-rows/1``; null codec;
- a fixed sync marker, so a replayed batch is byte-identical and containers written by any
  processor share one header: the sink concatenates their blocks behind a single header.

The previous framing (one ``ChainEntry`` single-object record per entry) is still read by the sink.
"""

from __future__ import annotations

import datetime
import io
from collections.abc import Iterable
from typing import Any

import fastavro

from lineage.model import ChainEntry, ExecutionEvent

FORMAT = "entry-rows/1"
FORMAT_KEY = "lineage.format"
MAGIC = b"Obj\x01"
SYNC_MARKER = b"lineage-rows/v1\x00"  # 16 bytes, fixed on purpose (see the module docstring)
CONTAINED_FLAG = "CONTAINED"
VERIFIED = "VERIFIED"

_TS = {"type": "long", "logicalType": "timestamp-micros"}
_STR = "string"
_COLUMNS: tuple[tuple[str, Any], ...] = (
    ("workflow_id", _STR),
    ("chain_seq", "long"),
    ("event_id", _STR),
    ("entry_hash", "bytes"),
    ("prev_hash", "bytes"),
    ("event_digest", "bytes"),
    ("policy_digest", "bytes"),
    ("event_bytes", "bytes"),
    ("kind", _STR),
    ("event_time", _TS),
    ("principal", _STR),
    ("agent_id", _STR),
    ("model_id", _STR),
    ("model_version", _STR),
    ("action", _STR),
    ("resource", _STR),
    ("authorization_id", _STR),
    ("decision", _STR),
    ("auth_policy_id", _STR),
    ("auth_policy_digest", _STR),
    ("determining_policies", {"type": "array", "items": _STR}),
    ("expires_at", ["null", _TS]),
    ("attestation_type", _STR),
    ("measurement", _STR),
    ("host", _STR),
    ("image_digest", _STR),
    ("parent_event_id", _STR),
    ("parent_workflow_id", _STR),
    ("trace_id", _STR),
    ("span_id", _STR),
    ("emitter_id", _STR),
    ("emitter_seq", "long"),
    ("source_partition", "int"),
    ("source_offset", "long"),
    ("log_index", "long"),
    ("seal_bytes", "bytes"),
    ("seal_index", "int"),
    ("seal_path", {"type": "array", "items": "bytes"}),
    ("flags", {"type": "array", "items": _STR}),
    ("verification", _STR),
    ("attributes", {"type": "map", "values": _STR}),
)

COLUMNS: tuple[str, ...] = tuple(name for name, _ in _COLUMNS)
SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "EntryRow",
    "namespace": "lineage.v1",
    "doc": "One lineage_entries row (docs/clickhouse.md); container format entry-rows/1",
    "fields": [{"name": name, "type": t} for name, t in _COLUMNS],
}
_PARSED = fastavro.parse_schema(SCHEMA)


def entry_record(entry: ChainEntry, event: ExecutionEvent) -> dict[str, Any]:
    """Every column of ``entry``'s row, from the event the processor decoded."""
    auth = event.authorization
    rt = event.runtime
    flags = list(entry.flags)
    return {
        "workflow_id": entry.workflow_id,
        "chain_seq": entry.chain_seq,
        "event_id": entry.event_id,
        "entry_hash": entry.entry_hash,
        "prev_hash": entry.prev_hash,
        "event_digest": entry.event_digest,
        "policy_digest": entry.policy_digest,
        "event_bytes": entry.event_bytes,
        "kind": event.kind.value,
        "event_time": event.event_time,
        "principal": event.principal,
        "agent_id": event.agent_id or "",
        "model_id": event.model_id or "",
        "model_version": event.model_version or "",
        "action": event.action,
        "resource": event.resource or "",
        "authorization_id": event.authorization_id or "",
        "decision": auth.decision.value if auth else "",
        "auth_policy_id": auth.policy_id if auth else "",
        "auth_policy_digest": auth.policy_digest if auth else "",
        "determining_policies": list(auth.determining_policies) if auth else [],
        "expires_at": auth.expires_at if auth else None,
        "attestation_type": (rt.attestation_type or "") if rt else "",
        "measurement": (rt.measurement or "") if rt else "",
        "host": rt.host if rt else "",
        "image_digest": (rt.image_digest or "") if rt else "",
        "parent_event_id": event.parent_event_id or "",
        "parent_workflow_id": event.parent_workflow_id or "",
        "trace_id": event.trace_id or "",
        "span_id": event.span_id or "",
        "emitter_id": event.emitter_id,
        "emitter_seq": event.emitter_seq,
        "source_partition": entry.source_partition,
        "source_offset": entry.source_offset,
        "log_index": entry.log_index,
        "seal_bytes": entry.seal_bytes,
        "seal_index": entry.seal_index,
        "seal_path": list(entry.seal_path),
        "flags": flags,
        "verification": CONTAINED_FLAG if CONTAINED_FLAG in flags else VERIFIED,
        "attributes": event.attributes,
    }


def row_size(row: dict[str, Any]) -> int:
    """An upper estimate of a row's encoded size (its variable parts plus the fixed ones)."""
    return (
        len(row["event_bytes"])
        + len(row["seal_bytes"])
        + 33 * len(row["seal_path"])
        + sum(len(k) + len(v) + 2 for k, v in row["attributes"].items())
        + 1024
    )


def split(rows: list[dict[str, Any]], max_bytes: int) -> list[list[dict[str, Any]]]:
    """``rows`` in consecutive groups whose containers stay under ``max_bytes`` (at least one
    row per group)."""
    groups: list[list[dict[str, Any]]] = [[]]
    size = 0
    for row in rows:
        n = row_size(row)
        if groups[-1] and size + n > max_bytes:
            groups.append([])
            size = 0
        groups[-1].append(row)
        size += n
    return groups if groups[0] else []


def _encode_fastavro(records: Iterable[dict[str, Any]]) -> bytes:
    buf = io.BytesIO()
    fastavro.writer(
        buf,
        _PARSED,
        records,
        sync_interval=1 << 30,
        metadata={FORMAT_KEY: FORMAT},
        sync_marker=SYNC_MARKER,
    )
    return buf.getvalue()


def _zigzag(n: int) -> bytes:
    """Avro's long: zig-zag, then a little-endian base-128 varint."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = tuple(_zigzag(i) for i in range(1024))


def _long(n: int) -> bytes:
    return _SMALL[n] if 0 <= n < 1024 else _zigzag(n)


_BYTES_1 = ("entry_hash", "prev_hash", "event_digest", "policy_digest", "event_bytes")
_STRINGS_1 = (
    "principal",
    "agent_id",
    "model_id",
    "model_version",
    "action",
    "resource",
    "authorization_id",
    "decision",
    "auth_policy_id",
    "auth_policy_digest",
)
_STRINGS_2 = (
    "attestation_type",
    "measurement",
    "host",
    "image_digest",
    "parent_event_id",
    "parent_workflow_id",
    "trace_id",
    "span_id",
    "emitter_id",
)
_LONGS = ("emitter_seq", "source_partition", "source_offset", "log_index")
_FAST_ORDER = (
    *("workflow_id", "chain_seq", "event_id", *_BYTES_1, "kind", "event_time", *_STRINGS_1),
    *("determining_policies", "expires_at", *_STRINGS_2, *_LONGS),
    *("seal_bytes", "seal_index", "seal_path", "flags", "verification", "attributes"),
)
if _FAST_ORDER != COLUMNS:  # the hand-written encoder below follows SCHEMA field by field
    raise RuntimeError("chain_rows: the row encoder's field order differs from SCHEMA")


def _row_parts(r: dict[str, Any], ap: Any) -> None:
    """Append the Avro binary encoding of one row (``SCHEMA``'s field order) to ``ap``'s list.

    Written out field by field: fastavro's writer costs about twice as much per row, and the
    result is byte-identical (tests/unit/stream_processors/test_chain_rows.py checks both).
    """
    lng, sm, zz = _long, _SMALL, _zigzag
    b = r["workflow_id"].encode()
    n = len(b)
    ap(sm[n] if n < 1024 else zz(n))
    ap(b)
    ap(lng(r["chain_seq"]))
    b = r["event_id"].encode()
    n = len(b)
    ap(sm[n] if n < 1024 else zz(n))
    ap(b)
    for name in _BYTES_1:
        b = r[name]
        n = len(b)
        ap(sm[n] if n < 1024 else zz(n))
        ap(b)
    b = r["kind"].encode()
    n = len(b)
    ap(sm[n] if n < 1024 else zz(n))
    ap(b)
    ap(lng(r["event_time"]))
    for name in _STRINGS_1:
        b = r[name].encode()
        n = len(b)
        ap(sm[n] if n < 1024 else zz(n))
        ap(b)
    items = r["determining_policies"]
    if items:
        n = len(items)
        ap(sm[n] if n < 1024 else zz(n))
        for x in items:
            b = x.encode()
            n = len(b)
            ap(sm[n] if n < 1024 else zz(n))
            ap(b)
    ap(b"\x00")
    v = r["expires_at"]
    if v is None:
        ap(b"\x00")
    else:
        ap(b"\x02")
        ap(lng(v))
    for name in _STRINGS_2:
        b = r[name].encode()
        n = len(b)
        ap(sm[n] if n < 1024 else zz(n))
        ap(b)
    for name in _LONGS:
        ap(lng(r[name]))
    b = r["seal_bytes"]
    n = len(b)
    ap(sm[n] if n < 1024 else zz(n))
    ap(b)
    ap(lng(r["seal_index"]))
    items = r["seal_path"]
    if items:
        n = len(items)
        ap(sm[n] if n < 1024 else zz(n))
        for b in items:
            n = len(b)
            ap(sm[n] if n < 1024 else zz(n))
            ap(b)
    ap(b"\x00")
    items = r["flags"]
    if items:
        n = len(items)
        ap(sm[n] if n < 1024 else zz(n))
        for x in items:
            b = x.encode()
            n = len(b)
            ap(sm[n] if n < 1024 else zz(n))
            ap(b)
    ap(b"\x00")
    b = r["verification"].encode()
    n = len(b)
    ap(sm[n] if n < 1024 else zz(n))
    ap(b)
    attrs = r["attributes"]
    if attrs:
        n = len(attrs)
        ap(sm[n] if n < 1024 else zz(n))
        for k, x in attrs.items():
            b = k.encode()
            n = len(b)
            ap(sm[n] if n < 1024 else zz(n))
            ap(b)
            b = x.encode()
            n = len(b)
            ap(sm[n] if n < 1024 else zz(n))
            ap(b)
    ap(b"\x00")


def encode(records: Iterable[dict[str, Any]]) -> bytes:
    """An object container of ``records`` (one block), deterministic for the same records.

    The bytes are exactly what ``fastavro.writer`` writes for the same records (the header is
    fixed: one schema, one metadata key, the fixed sync marker; then one block: count, size,
    rows, marker). A record the fast path cannot encode (a wrong type) goes through fastavro,
    which raises its own error.
    """
    rows = list(records)
    if not rows:
        return HEADER
    parts: list[bytes] = []
    try:
        for r in rows:
            _row_parts(r, parts.append)
    except (AttributeError, TypeError, KeyError):
        return _encode_fastavro(rows)
    body = b"".join(parts)
    return b"".join((HEADER, _long(len(rows)), _long(len(body)), body, SYNC_MARKER))


HEADER = _encode_fastavro([])


def is_rows(value: bytes) -> bool:
    return value[:4] == MAGIC


def merge(containers: Iterable[bytes]) -> bytes:
    """Containers written by ``encode`` as one: the shared header, then every block.

    Raises ValueError for a container with another header (another format or version).
    """
    out = [HEADER]
    for c in containers:
        if not c.startswith(HEADER):
            raise ValueError(
                f"expected an {FORMAT} container header ({len(HEADER)} bytes), found another one"
            )
        out.append(c[len(HEADER) :])
    return b"".join(out)


def row_count(value: bytes) -> int:
    """Rows in a container written by ``encode`` (block counts only; no row is decoded)."""
    if not value.startswith(HEADER):
        return len(decode(value))
    count, pos = 0, len(HEADER)
    while pos < len(value):
        n, pos = _read_long(value, pos)
        size, pos = _read_long(value, pos)
        count += n
        pos += size + len(SYNC_MARKER)
    return count


def _read_long(data: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_TIMESTAMPS = ("event_time", "expires_at")


def _micros(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        return (value - _EPOCH) // datetime.timedelta(microseconds=1)
    return value


def decode(value: bytes) -> list[dict[str, Any]]:
    """The rows of a container (for tests, the bench's observer and other readers); timestamps
    come back as integer microseconds, like everywhere else in the models."""
    out = []
    for row in fastavro.reader(io.BytesIO(value)):
        if isinstance(row, dict):
            for name in _TIMESTAMPS:
                row[name] = _micros(row[name])
            out.append(row)
    return out

"""The hand-written row encoder writes exactly the bytes fastavro's writer writes."""

from __future__ import annotations

from typing import Any

import pytest

from stream_processors import chain_rows
from tests.support.events import SimEmitter, batched, make_pipeline, registry_for, run, to_records


def _rows() -> list[dict[str, Any]]:
    em = SimEmitter(seal_every=7)
    msgs = [m for i in range(5) for m in em.chain(f"wf-{i}", 6)]
    rows = run(make_pipeline(registry_for(em)), to_records(batched(msgs))).outputs.rows
    assert len(rows) >= 20, len(rows)
    return rows


def _variants(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Real rows, and copies reaching every branch: unions both ways, non-empty arrays and
    maps, multi-byte varints (negative, 64-bit), non-ASCII text, empty strings."""
    out = [dict(r) for r in rows]
    a = dict(rows[0])
    a.update(
        expires_at=1_700_000_000_000_000,
        determining_policies=["p1", "pölicy-2", ""],
        flags=["CONTAINED"],
        verification="CONTAINED",
        attributes={"k": "v", "ключ": "значение", "": ""},
        chain_seq=2**63 - 1,
        event_time=-1,
        source_offset=1023,
        log_index=1024,
        seal_index=64,
        seal_path=[b"\x00" * 32, b"\xff" * 32],
        principal="",
        host="h" * 300,
    )
    b = dict(rows[1])
    b.update(expires_at=None, determining_policies=[], attributes={}, seal_path=[], event_time=0)
    c = dict(rows[2])
    c.update(event_bytes=b"x" * 70_000, chain_seq=-(2**63), emitter_seq=127, source_partition=128)
    return [*out, a, b, c]


def test_fast_encoder_is_byte_identical_to_fastavro() -> None:
    rows = _variants(_rows())
    for i in range(len(rows)):
        for group in (rows[i : i + 1], rows[i:], rows[: i + 1]):
            assert chain_rows.encode(group) == chain_rows._encode_fastavro(group)
    assert chain_rows.encode([]) == chain_rows.HEADER == chain_rows._encode_fastavro([])
    decoded = chain_rows.decode(chain_rows.encode(rows))
    assert [r["attributes"] for r in decoded] == [r["attributes"] for r in rows]


def test_a_row_of_the_wrong_type_gets_fastavros_error() -> None:
    row = dict(_rows()[0])
    row["chain_seq"] = "seven"
    with pytest.raises((TypeError, ValueError)):
        chain_rows.encode([row])

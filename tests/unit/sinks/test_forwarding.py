"""The sink forwards the processor's row containers as bytes; outages are retried, bad data quarantined."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from clickhouse_connect.driver import exceptions as chx

from lineage import codec
from lineage.model import ExecutionEvent
from sinks import rows, schema
from sinks.clickhouse import REJECTED, Inserter, Part, is_outage
from sinks.errors import ClickHouseUnavailable
from stream_processors import chain_rows
from tests.support.events import SimEmitter, batched, make_pipeline, registry_for, run, to_records


@dataclass
class _Msg:
    """The part of a confluent-kafka Message the sink reads."""

    _value: bytes
    _offset: int
    _topic: str = "lineage.chain"
    _partition: int = 0

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes:
        return b"rows:0"

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset


@pytest.fixture
def db(chdb_client: Any, ch_database: str) -> Iterator[tuple[Any, str]]:
    schema.migrate(chdb_client, ch_database)
    yield chdb_client, ch_database


def _rows(workflows: int = 6) -> list[dict[str, Any]]:
    em = SimEmitter(seal_every=10)
    msgs = [m for i in range(workflows) for m in em.chain(f"wf-{i}", 5)]
    out = run(make_pipeline(registry_for(em)), to_records(batched(msgs))).outputs
    return out.rows


def _count(client: Any, database: str, sql: str) -> int:
    return int(client.query(sql.format(db=database)).result_rows[0][0])


def test_the_processor_computes_exactly_the_row_the_python_row_builder_would() -> None:
    em = SimEmitter(seal_every=5)
    msgs = [m for m in em.chain("wf-1", 5)]
    out = run(make_pipeline(registry_for(em)), to_records(batched(msgs))).outputs
    schema_ = codec.load("execution_event")
    for entry, row in zip(out.entries, out.rows, strict=True):
        assert tuple(row[c] for c in chain_rows.COLUMNS) == tuple(
            list(x) if isinstance(x, tuple) else x for x in rows.entry_row(entry)
        )
        event = ExecutionEvent.from_record(schema_.decode_body(entry.event_bytes))
        assert chain_rows.entry_record(entry, event) == row
    assert chain_rows.COLUMNS == rows.ENTRY_COLUMNS


def test_containers_are_deterministic_merge_and_count_without_decoding() -> None:
    data = _rows()
    a, b = chain_rows.encode(data[:10]), chain_rows.encode(data[10:])
    assert chain_rows.encode(data[:10]) == a, "a replayed batch must be byte-identical"
    assert chain_rows.row_count(a) == 10 and chain_rows.row_count(b) == len(data) - 10
    merged = chain_rows.merge([a, b])
    assert chain_rows.decode(merged) == chain_rows.decode(a) + chain_rows.decode(b)
    assert chain_rows.decode(a)[0]["event_time"] == data[0]["event_time"], "integer µs back"
    with pytest.raises(ValueError, match="container header"):
        chain_rows.merge([b"Obj\x01" + b"\x00" * 40])


def test_forwarded_containers_land_and_replays_collapse(db: tuple[Any, str]) -> None:
    client, database = db
    data = _rows()
    parts = [
        Part(_Msg(c, i), "lineage_entries", container=c)
        for i, c in enumerate([chain_rows.encode(data[:12]), chain_rows.encode(data[12:])])
    ]
    ins = Inserter(client, database, threading.Lock())
    assert ins.insert(parts) == []
    assert ins.insert(parts) == []  # redelivered after a lost acknowledgement
    assert _count(client, database, "SELECT count() FROM {db}.lineage_entries FINAL") == len(data)


def test_bad_data_is_quarantined_with_its_reason_and_the_rest_still_lands(
    db: tuple[Any, str],
) -> None:
    client, database = db
    data = _rows()
    bad_rows = [dict(r) for r in data[:3]]
    bad_rows[1]["entry_hash"] = b"\x01" * 33  # FixedString(32) refuses 33 bytes
    good = chain_rows.encode(data[3:])
    bad = chain_rows.encode(bad_rows)
    parts = [
        Part(_Msg(good, 10), "lineage_entries", container=good),
        Part(_Msg(bad, 11), "lineage_entries", container=bad),
    ]
    refused = Inserter(client, database, threading.Lock()).insert(parts)
    assert [(q.reason_code, q.source_offset, q.raw_value) for q in refused] == [(REJECTED, 11, bad)]
    assert "FixedString" in refused[0].reason or "too large" in refused[0].reason.lower(), refused[
        0
    ].reason
    assert _count(client, database, "SELECT count() FROM {db}.lineage_entries") == len(data) - 3
    got = client.query(
        f"SELECT reason_code, source_offset FROM {database}.quarantine FINAL"
    ).result_rows
    assert got == [(REJECTED, 11)]


class _Down:
    """A client whose inserts fail as an outage."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc
        self.calls = 0

    def raw_insert(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        raise self.exc

    insert = raw_insert


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionError("connection refused"),
        TimeoutError("read timed out"),
        chx.OperationalError("HTTPDriver for http://ch:8123 received ClickHouse error"),
        chx.DatabaseError("Code: 241. DB::Exception: Memory limit exceeded"),
        chx.DatabaseError("no code at all"),
    ],
)
def test_an_outage_is_raised_for_retry_and_nothing_is_quarantined(exc: Exception) -> None:
    down = _Down(exc)
    c = chain_rows.encode(_rows(1))
    with pytest.raises(ClickHouseUnavailable):
        Inserter(down, "db", threading.Lock()).insert(
            [Part(_Msg(c, 0), "lineage_entries", container=c)]
        )
    assert down.calls == 1, "an outage is retried whole by the caller, not split record by record"
    assert is_outage(exc)


@pytest.mark.parametrize(
    "exc",
    [
        chx.DatabaseError("Code: 131. DB::Exception: Too large value for FixedString(32)"),
        chx.DatabaseError("Code: 27. DB::Exception: Cannot parse input"),
        TypeError("bad row"),
    ],
)
def test_refused_data_is_not_an_outage(exc: Exception) -> None:
    assert not is_outage(exc)


def test_an_undecodable_record_goes_to_quarantine_not_lost(
    db: tuple[Any, str], tmp_path: Any
) -> None:
    from lineage.config import Settings
    from sinks.clickhouse import UNDECODABLE, ClickHouseSink

    client, database = db
    settings = Settings(data_dir=tmp_path)
    sink = ClickHouseSink(settings, "127.0.0.1:9", client, database=database, group="g-unit")
    try:
        msg = _Msg(b"\xc3\x01 not a violation", 42, settings.topics.violations, 2)
        part, n = sink._part(msg)
        assert (part.table, n) == ("quarantine", 0)
        refused = sink.inserter.insert([part])
        assert refused == []
        got = client.query(
            f"SELECT reason_code, source_topic, source_partition, source_offset FROM {database}.quarantine"
        ).result_rows
        assert got == [(UNDECODABLE, settings.topics.violations, 2, 42)]
    finally:
        sink.close()


def test_containers_are_split_to_stay_under_the_message_size() -> None:
    data = _rows(20)
    groups = chain_rows.split(data, 20_000)
    assert [r for g in groups for r in g] == data and len(groups) > 1
    assert all(len(chain_rows.encode(g)) <= 20_000 for g in groups)
    assert chain_rows.split([], 1000) == []

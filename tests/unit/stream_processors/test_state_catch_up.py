"""Seeking back to a skipped offset: records fetched before the seek must not hide the re-fetched ones.

The crash suite stalled on this: after a restart the worker sought partitions back to the state's
next offset, faust's fetch loop delivered records it had fetched before the seek, raised its read
offset past the target and dropped the re-fetched records as already read; every retry 5 s later
met the same race, so the partitions never got their records back ("offset gap, seeking back to
20" every 5 s for a whole worker lifetime).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from stream_processors.app import CatchUp, Partitions
from stream_processors.records import RawRecord
from stream_processors.transport import SeekTargets, _Consumer


def _records(offsets: list[int]) -> list[RawRecord]:
    return [RawRecord("ev", 0, o, b"k", b"v", 0) for o in offsets]


class _Pipeline:
    meta = SimpleNamespace(next_offset=20)


def _catch_up() -> CatchUp:
    parts = Partitions("ev", lambda p: _Pipeline())  # type: ignore[arg-type,return-value]
    parts.assigned([SimpleNamespace(topic="ev", partition=0)])
    return CatchUp(SimpleNamespace(), "ev", parts)  # type: ignore[arg-type]


def test_after_a_seek_only_the_record_at_the_target_reopens_the_partition() -> None:
    targets = SeekTargets()
    targets.set("tp0", 20)
    fetched = [41, 42, 43, 20, 21, 44]  # 41..43 were fetched before the seek
    assert [o for o in fetched if targets.admit("tp0", o)] == [20, 21, 44]
    assert targets.admit("tp1", 7), "other partitions are not held back"


def test_the_transport_drops_what_was_fetched_before_the_seek(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tp = TP("ev", 0)

    async def fetched(self: Any, timeout: float) -> Any:
        for o in (41, 42, 20, 21):
            yield tp, SimpleNamespace(offset=o)

    monkeypatch.setattr(faust_aiokafka.Consumer, "getmany", fetched)
    consumer = object.__new__(_Consumer)  # getmany's filter only, no faust service around it
    consumer._read_offset = {tp: 42}  # a record fetched before the seek was delivered after it
    consumer.seek_targets.set(tp, 20)
    read_offsets: list[int | None] = []

    async def offsets() -> list[int]:
        got = []
        async for _, m in consumer.getmany(1.0):
            read_offsets.append(consumer._read_offset[tp])  # what faust's fetch loop compares
            got.append(m.offset)
        return got

    # A thread of its own: in the full suite an earlier test can leave this thread marked as
    # running an event loop, and asyncio.run() refuses to start inside one.
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(asyncio.run, offsets()).result(timeout=10) == [20, 21]
    assert read_offsets[0] == 20, "expected faust's read offset back at the target"


def test_catch_up_takes_the_re_fetched_records_even_behind_stale_ones_in_one_batch() -> None:
    cu = _catch_up()
    cu.seeking[0] = (20, 0.0)
    records, retry = cu.admit(0, _records([41, 42, 20, 21, 22]))
    assert [r.offset for r in records] == [20, 21, 22] and not retry
    assert 0 not in cu.seeking


def test_catch_up_waits_for_the_target_and_asks_again_after_a_while() -> None:
    cu = _catch_up()
    cu.seeking[0] = (20, 0.0)  # sought long ago (monotonic 0)
    records, retry = cu.admit(0, _records([41, 42]))
    assert records == [] and retry, "expected the seek repeated when the target never came"
    assert cu.seeking[0][0] == 20


def test_the_seek_runs_in_the_consumer_thread() -> None:
    """faust calls aiokafka's seek from the agent loop's thread while the consumer thread may be
    inside ``fetched_records``; both delete the partition's fetched records and the second
    delete crashed the restarted worker (KeyError in aiokafka's fetcher, CI run of stop 15)."""
    calls: list[tuple[str, Any, int]] = []

    class _Thread:
        inside = False

        async def call_thread(self, fn: Any) -> Any:
            self.inside = True
            try:
                return await fn()
            finally:
                self.inside = False

        def seek(self, tp: Any, offset: int) -> None:
            calls.append(("in consumer thread" if self.inside else "in caller thread", tp, offset))

    consumer = object.__new__(_Consumer)
    consumer._thread = _Thread()
    tp = TP("ev", 3)
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, consumer._seek(tp, 20)).result(timeout=10)
    assert calls == [("in consumer thread", tp, 20)]

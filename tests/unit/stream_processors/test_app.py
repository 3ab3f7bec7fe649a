"""The faust app's small parts, without a broker: settings wiring, state writing and acknowledgement."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from lineage.config import Settings
from stream_processors.app import Partitions, StateWriter, pipeline_config


def test_every_pipeline_limit_comes_from_the_settings(tmp_path: Any) -> None:
    s = Settings(
        data_dir=tmp_path,
        max_record_bytes=1000,
        max_attributes=3,
        max_attribute_bytes=77,
        max_unsealed_per_emitter=5,
        window_offsets=123,
    )
    c = pipeline_config(s)
    assert (c.limits.max_record_bytes, c.limits.max_attributes, c.limits.max_attribute_bytes) == (
        1000,
        3,
        77,
    )
    assert (c.max_unsealed_per_emitter, c.window_offsets) == (5, 123)


@dataclass
class _Pipeline:
    writes: int = 0
    meta: Any = field(default_factory=lambda: SimpleNamespace(next_offset=0))

    def dirty_state(self) -> list[tuple[str, bytes]]:
        self.writes += 1
        return []


@dataclass
class _Event:
    acked: bool = False

    def ack(self) -> None:
        self.acked = True


def _tp(partition: int) -> Any:
    return SimpleNamespace(topic="ev", partition=partition)


def test_input_is_acknowledged_only_after_the_state_covering_it_is_written() -> None:
    parts = Partitions("ev", lambda p: _Pipeline())  # type: ignore[arg-type,return-value]
    parts.assigned([_tp(0)])
    pl: Any = parts.get(0)
    writer = StateWriter(parts, flush_s=3600)
    writer.save([0])  # first write of a partition is never deferred
    ev = _Event()
    writer.hold(0, [ev])
    writer.save([0])
    assert not ev.acked and pl.writes == 1, "deferred: neither state written nor input acked"
    writer.save([0], force=True)
    assert ev.acked and pl.writes == 2


def test_a_revoked_partition_forgets_what_it_held_unacknowledged() -> None:
    parts = Partitions("ev", lambda p: _Pipeline())  # type: ignore[arg-type,return-value]
    parts.assigned([_tp(0), _tp(1)])
    writer = StateWriter(parts, flush_s=3600)
    ev = _Event()
    parts.get(1)
    writer.hold(1, [ev])
    parts.revoked([_tp(1)])
    assert parts.owned == {0} and 1 not in parts.pipelines and 1 not in writer.held
    assert parts.resume_offset(_tp(1)) is None and parts.resume_offset(_tp(0)) == 0
    assert not ev.acked, "the next owner replays it"

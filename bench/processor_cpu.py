"""The processor's CPU per event in the live worker's regime, without a broker or faust.

``lineage bench`` measures the faust worker's CPU per event end to end; ``python -m bench.stages``
measures each stage over one big batch. This sits in between: the worker's own code path per
faust batch — ``PartitionPipeline.process`` per partition, the outputs encoded as
``Publisher.publish`` encodes them, then the state written through ``TableStore`` (the undo-log
records faust's ``send_changelog`` would carry) — with the small seals and small faust batches the
live worker sees at ~1,000 events/s (a seal every T = 50 ms covers a few events per emitter and
partition). Only the broker round trips and faust's own per-record cost are left out.

``python -m bench.processor_cpu`` prints µs of CPU per event, by part; ``--profile`` adds a
cProfile table of the worker's code path.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import pstats
import time
from dataclasses import dataclass
from typing import Any

from bench._offline import OfflineWorld
from lineage import codec
from stream_processors import chain_rows
from stream_processors.pipeline import PartitionPipeline
from stream_processors.publisher import MAX_CONTAINER_BYTES
from stream_processors.records import Outputs, RawRecord
from stream_processors.state import TableStore


class FakeTable:
    """What ``TableStore`` uses of a faust table: ``data`` and ``send_changelog``."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.records = 0
        self.bytes = 0

    def send_changelog(self, partition: int, key: bytes, value: bytes | None) -> None:
        self.records += 1
        self.bytes += len(key) + len(
            value or b""
        )  # None: a tombstone (a chunk that left the window)


class Encoder:
    """Encodes outputs exactly as ``Publisher.publish`` does, without producing them."""

    def __init__(self) -> None:
        self._violation = codec.load("violation")
        self._quarantine = codec.load("quarantine")
        self._checkpoint = codec.load("checkpoint")
        self._containment = codec.load("containment")
        self.records = 0

    def encode(self, out: Outputs) -> int:
        n = 0
        by_partition: dict[int, list[dict[str, Any]]] = {}
        for row in out.rows:
            by_partition.setdefault(row["source_partition"], []).append(row)
        for rows in by_partition.values():
            for part in chain_rows.split(rows, MAX_CONTAINER_BYTES):
                chain_rows.encode(part)
                n += 1
        for v in out.violations:
            self._violation.encode(v.to_record(), check=False)
        for q in out.quarantine:
            self._quarantine.encode(q.to_record(), check=False)
        for k in out.containments:
            self._containment.encode(k.to_record(), check=False)
        for c in out.checkpoints:
            self._checkpoint.encode(c.to_record(), check=False)
        n += len(out.violations) + len(out.quarantine) + len(out.containments)
        self.records += n + len(out.checkpoints)
        return n


@dataclass
class Run:
    events: int
    records: int
    faust_batches: int
    us_total: float
    us_process: float
    us_encode: float
    us_state: float
    changelog_records: int
    changelog_bytes: int
    output_records: int

    def as_dict(self) -> dict[str, Any]:
        e = self.events
        return {
            "events": e,
            "input_records": self.records,
            "events_per_record": round(e / self.records, 1),
            "faust_batches": self.faust_batches,
            "us_per_event": round(self.us_total / e, 1),
            "process_us_per_event": round(self.us_process / e, 1),
            "encode_us_per_event": round(self.us_encode / e, 1),
            "state_us_per_event": round(self.us_state / e, 1),
            "changelog_records_per_event": round(self.changelog_records / e, 3),
            "changelog_bytes_per_event": round(self.changelog_bytes / e),
            "output_records_per_event": round(self.output_records / e, 3),
        }


def build(events: int, seal_every: int, partitions: int) -> tuple[OfflineWorld, list[RawRecord]]:
    w = OfflineWorld(seal_every=seal_every, partitions=partitions, topic="bench.events")
    return w, w.workflows(events)


def run(
    w: OfflineWorld,
    recs: list[RawRecord],
    partitions: int,
    records_per_batch: int,
    profile: cProfile.Profile | None = None,
) -> Run:
    """Drive one pipeline per partition as ``BatchProcessor.process`` does."""
    tables = [FakeTable() for _ in range(partitions)]
    pipelines = [
        PartitionPipeline(
            topic=w.log.topic,
            partition=p,
            store=TableStore(tables[p], p),
            registry=w.registry,
            policy=w.policy,
            checkpoint_signer=w.signers["lineage-processor"],
        )
        for p in range(partitions)
    ]
    enc = Encoder()
    events = 0
    t_process = t_encode = t_state = 0
    batches = 0
    gc.collect()
    if profile is not None:
        profile.enable()
    t0 = time.thread_time_ns()
    for i in range(0, len(recs), records_per_batch):
        batches += 1
        by_partition: dict[int, list[RawRecord]] = {}
        for r in recs[i : i + records_per_batch]:
            by_partition.setdefault(r.partition, []).append(r)
        a = time.thread_time_ns()
        out = Outputs()
        for p, rs in by_partition.items():
            res, seek = pipelines[p].process(rs)
            if seek is not None:
                raise RuntimeError(f"unexpected offset gap at {seek}")
            out.extend(res)
        b = time.thread_time_ns()
        enc.encode(out)
        c = time.thread_time_ns()
        for p in by_partition:
            pipelines[p].dirty_state()
        d = time.thread_time_ns()
        events += len(out.entries)
        t_process += b - a
        t_encode += c - b
        t_state += d - c
    total = time.thread_time_ns() - t0
    if profile is not None:
        profile.disable()
    return Run(
        events=events,
        records=len(recs),
        faust_batches=batches,
        us_total=total / 1000,
        us_process=t_process / 1000,
        us_encode=t_encode / 1000,
        us_state=t_state / 1000,
        changelog_records=sum(t.records for t in tables),
        changelog_bytes=sum(t.bytes for t in tables),
        output_records=enc.records,
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument(
        "--seal-every",
        type=int,
        default=5,
        help="events per seal (live at ~1,000 events/s: a few; the N = 100 default fills only "
        "above ~2,000 events/s per emitter and partition)",
    )
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument(
        "--records-per-batch", type=int, default=8, help="input records per faust batch"
    )
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="print a cProfile table (one run)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    w, recs = build(args.events, args.seal_every, args.partitions)
    if args.profile:
        prof = cProfile.Profile()
        r = run(w, recs, args.partitions, args.records_per_batch, prof)
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(45)
        print(s.getvalue())
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(35)
        print(s.getvalue())
        print(json.dumps(r.as_dict()))
        return
    best: Run | None = None
    for _ in range(args.repeat):
        r = run(w, recs, args.partitions, args.records_per_batch)
        if best is None or r.us_total < best.us_total:
            best = r
    assert best is not None
    result = {
        "seal_every": args.seal_every,
        "partitions": args.partitions,
        "records_per_batch": args.records_per_batch,
        **best.as_dict(),
    }
    if args.json:
        print(json.dumps(result))
        return
    for k, v in result.items():
        print(f"{k:32} {v}")


if __name__ == "__main__":
    main()

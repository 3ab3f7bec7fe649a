"""Observer subprocess of ``lineage bench``: times chain entries and violations as a consumer sees them.

A plain confluent-kafka consumer (no group: partitions assigned from the beginning) reads
``lineage.chain`` and ``lineage.violations``. The produce time of an event is its ``event_time``
(µs, stamped by the SDK in ``emit()`` right before ``produce()``); the arrival time is this
process's wall clock when the record is returned by ``consume()``. Every violation and one
chain entry in ``--sample`` are decoded. Stops on EOF or ``stop`` on stdin and writes
``--out`` as JSON: ``[event_time_us, latency_ms]`` pairs per topic, plus counts.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import threading
import time
from typing import Any, cast

import fastavro
from confluent_kafka import Consumer, KafkaError, TopicPartition

from lineage import codec
from stream_processors import chain_rows

OFFSET_BEGINNING = -2


def _reader(name: str) -> Any:
    return fastavro.parse_schema(codec.load(name).parsed)


def _read(data: bytes, schema: Any) -> dict[str, Any]:
    """Decode a single-object encoded record body (header skipped, not re-checked)."""
    buf = io.BytesIO(data)
    buf.seek(codec.HEADER_LEN)
    return cast(dict[str, Any], fastavro.schemaless_reader(buf, schema, None))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.observer", description=__doc__)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--chain-topic", required=True)
    ap.add_argument("--violations-topic", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--sample", type=int, default=4, help="decode one chain entry in this many")
    args = ap.parse_args(argv)

    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": "bench-observer",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
            "fetch.min.bytes": 1,
        }
    )
    parts: list[TopicPartition] = []
    for topic in (args.chain_topic, args.violations_topic):
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        parts += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions]
    consumer.assign(parts)
    stop = threading.Event()

    def read_stdin() -> None:
        for line in sys.stdin:
            if line.strip() == "stop":
                break
        stop.set()

    threading.Thread(target=read_stdin, name="control", daemon=True).start()
    entry_schema, event_schema, violation_schema = (
        _reader("chain_entry"),
        _reader("execution_event"),
        _reader("violation"),
    )
    chain: list[tuple[int, float]] = []
    violations: list[tuple[int, float, str]] = []
    seen = {"chain": 0, "violations": 0}
    sys.stdout.write(json.dumps({"event": "ready"}) + "\n")
    sys.stdout.flush()
    while not stop.is_set():
        msgs = consumer.consume(2000, 0.05)
        now_us = time.time_ns() // 1000
        for m in msgs:
            err, value = m.error(), m.value()
            if err is not None or value is None:
                if err is not None and err.code() != KafkaError._PARTITION_EOF:
                    print(f"observer: {err}", file=sys.stderr)
                continue
            if m.topic() == args.chain_topic and chain_rows.is_rows(value):
                for row in chain_rows.decode(value):
                    seen["chain"] += 1
                    if seen["chain"] % args.sample == 0:
                        t = int(row["event_time"])
                        chain.append((t, (now_us - t) / 1000))
            elif m.topic() == args.chain_topic:
                seen["chain"] += 1
                if seen["chain"] % args.sample:
                    continue
                t = int(
                    _read(_read(value, entry_schema)["event_bytes"], event_schema)["event_time"]
                )
                chain.append((t, (now_us - t) / 1000))
            else:
                seen["violations"] += 1
                v = _read(value, violation_schema)
                t = int(v["event_time"])
                violations.append((t, (now_us - t) / 1000, str(v["violation_type"])))
    consumer.close()
    with open(args.out, "w") as f:
        json.dump(
            {"seen": seen, "sample": args.sample, "chain": chain, "violations": violations}, f
        )


if __name__ == "__main__":
    main()

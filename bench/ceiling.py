"""The raw-Kafka ceiling phase: the same records, the Emitter's producer settings, a plain consumer."""

from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Any

import psutil

from bench.measure import Child, Watched, peak_rss_mb
from infra.embedded import (
    Stack,
    create_topics,
    start_broker,
)
from lineage.config import Settings

# -- ceiling -------------------------------------------------------------------


def run_ceiling(settings: Settings, log_dir: Path, duration: float) -> dict[str, Any]:
    """Same event mix and producer settings, read back by a plain consumer: the broker's ceiling.

    On the embedded stack the ceiling gets a Tansu of its own (same binary and storage), so the
    records it pumps through do not stay in the pipeline broker's memory.
    """
    from confluent_kafka import Consumer, TopicPartition

    broker = start_broker(log_dir / "broker-ceiling.log") if settings.embedded_broker else None
    bootstrap = broker.bootstrap if broker else str(settings.kafka_bootstrap)
    with Stack(settings, bootstrap, broker) as stack:
        topic = f"{settings.topic_prefix}-ceiling.events"
        create_topics(bootstrap, [topic], settings.partitions)
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "bench-ceiling",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
            }
        )
        consumer.assign([TopicPartition(topic, p, -2) for p in range(settings.partitions)])
        gen = Child(
            [
                "-m",
                "bench.loadgen",
                "ceiling",
                "--bootstrap",
                bootstrap,
                "--topic",
                topic,
                "--duration",
                str(duration),
                "--partitions",
                str(settings.partitions),
                "--seal-every",
                str(settings.seal_every_events),
            ],
            log_dir / "loadgen-ceiling.log",
        )
        stack.add(gen.proc)
        watched = [Watched("broker", broker.proc.pid)] if broker else []
        watched += [Watched("producer", gen.proc.pid), Watched("consumer", psutil.Process().pid)]
        gen.expect("ready", 120)
        cpu0 = [w.cpu_s() for w in watched]
        consumed, last, done = 0, time.time(), None
        while True:
            msgs = consumer.consume(5000, 0.1)
            n = sum(1 for m in msgs if not m.error())
            if n:
                consumed += n
                last = time.time()
            if done is None:
                done = gen.poll_line("done")
                if done is None and gen.proc.poll() is not None:
                    done = gen.expect("done", 5)
            elif consumed >= done["records"] or time.time() - last > 10:
                break
        cpu = {w.name: w.cpu_s() - c for w, c in zip(watched, cpu0, strict=True)}
        peak = peak_rss_mb(broker.proc.pid) if broker else None
        gen.close()
        consumer.close()
    events = consumed * done["event_share"]
    span = last - done["start"]
    return {
        "records": consumed,
        "events": round(events),
        "produced": done["records"],
        "events_per_s": events / span if span > 0 else 0.0,
        "produce_events_per_s": done["records"]
        * done["event_share"]
        / (done["end"] - done["start"]),
        "cpu_s_per_1000_events": {
            name: round(c / events * 1000, 4) if events else None for name, c in cpu.items()
        },
        "broker_peak_rss_mb": None if peak is None else round(peak, 1),
    }


# -- verification ----------------------------------------------------------------


def _children_cpu() -> float:
    """CPU seconds of this process's finished children (the verifier's worker processes)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def verify_throughput(client: Any, settings: Settings) -> dict[str, Any]:
    """Run the offline verifier over the run's ClickHouse data (``lineage verify --clickhouse``).

    Entries/s are given per second of wall time (chDB query included) and per CPU second of
    this process and its verifier worker processes; the processor and sink are stopped by then,
    so the verifier has the machine.
    """
    try:
        from lineage.keys import KeyRegistry
        from lineage_cli.evidence import verify_clickhouse
    except ImportError as exc:
        return {
            "entries_per_s": None,
            "note": f"no ClickHouse verifier to call ({exc}): not measured",
        }
    registry = KeyRegistry.load(settings.resolved_keys_file)
    cpu0, t0, children0 = time.process_time(), time.perf_counter(), _children_cpu()
    try:
        report = verify_clickhouse(client, settings.clickhouse_database, registry=registry)
    except Exception as exc:
        return {"entries_per_s": None, "note": f"verify_clickhouse raised {exc!r}: not measured"}
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    cpu += _children_cpu() - children0  # the verifier's worker processes (--jobs)
    entries = int(report.proven.log_entries)
    doc: dict[str, Any] = {
        "ok": report.ok,
        "entries": entries,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "entries_per_s": round(entries / wall) if wall > 0 else None,
        "entries_per_cpu_s": round(entries / cpu) if cpu > 0 else None,
        "jobs": report.jobs,
        "note": f"verify_clickhouse over {entries:,} stored entries of this run, query included",
    }
    if not report.ok and report.failure is not None:
        doc["failure"] = report.failure.to_json()
        doc["note"] += f"; verification FAILED: {report.failure.kind}"
    return doc

"""One pipeline (processor workers, sink, observer) on the bench's broker, run phase by phase."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.measure import (
    Child,
    TimedClient,
    TopicMeter,
    Watched,
    machine_busy_s,
    peak_rss_mb,
    percentiles,
    thread_cpu_s,
)
from infra.demo import SinkThread
from infra.embedded import (
    Stack,
    child_env,
    create_topics,
    spawn,
    stop_process,
)
from lineage.config import Settings

# -- one pipeline on the broker ---------------------------------------------------


@dataclass
class BenchOptions:
    duration: float = 60.0
    rate: float | None = None
    violations: float = 0.02
    workflows: int = 0
    workflow_events: int = 25
    data_dir: Path | None = None
    scaling: bool = False
    partitions: int = 4
    max_in_flight: int = 10_000
    ceiling_s: float = 8.0


@dataclass
class Phase:
    """One load phase and what it measured."""

    name: str
    rate: float | None
    duration: float
    start: float = 0.0
    end: float = 0.0
    drained: float = 0.0
    trusted: int = 0
    forged: int = 0
    workflows: int = 0
    injected: dict[str, int] = field(default_factory=dict)
    rows: int = 0
    cpu_s: dict[str, float] = field(default_factory=dict)
    sink_thread_cpu_s: float = 0.0  # the sink's own work, the bench's latency sampling excluded
    bookkeeping_cpu_s: float = 0.0  # sink-thread CPU the bench spent decoding rows for latencies
    rss_samples: list[tuple[float, float]] = field(default_factory=list)  # (monotonic s, MB)

    def memory_trend(self) -> dict[str, Any]:
        """Processor RSS over the phase: first and last samples and the growth over its second
        half (MB per minute); "flat" when the second half grows by less than 5 %."""
        xs = self.rss_samples
        if len(xs) < 4:
            return {"samples": len(xs)}
        half = xs[len(xs) // 2 :]
        minutes = (half[-1][0] - half[0][0]) / 60 or 1.0
        growth = half[-1][1] - half[0][1]
        return {
            "samples": len(xs),
            "first_mb": round(xs[0][1], 1),
            "mid_mb": round(half[0][1], 1),
            "last_mb": round(xs[-1][1], 1),
            "second_half_growth_mb_per_min": round(growth / minutes, 2),
            "flat": growth < 0.05 * half[0][1],
        }

    chained_ms: dict[str, float | None] = field(default_factory=dict)
    queryable_ms: dict[str, float | None] = field(default_factory=dict)
    violation_ms: dict[str, float | None] = field(default_factory=dict)
    violations_seen: int = 0
    excluded_violations: int = 0
    complete: bool = True
    machine_busy_s: float = 0.0
    cpu_span_s: float = 0.0
    measured_until: float = 0.0
    emitter_peak_rss_mb: float | None = None
    changelog_records: int = 0
    excluded_violation_types: dict[str, int] = field(default_factory=dict)

    @property
    def events_per_s(self) -> float:
        """Rows of this phase's events queryable, over first emit → last row queryable."""
        span = self.drained - self.start
        return self.rows / span if span > 0 else 0.0

    @property
    def offered_per_s(self) -> float:
        span = self.end - self.start
        return self.trusted / span if span > 0 else 0.0

    def per_1000(self, name: str) -> float | None:
        cpu = self.cpu_s.get(name)
        return None if cpu is None or not self.rows else round(cpu / self.rows * 1000, 3)


class PipelineRun:
    """A pipeline with its own topics, consumer groups and database on the shared broker."""

    def __init__(
        self,
        stack: Stack,
        base: Settings,
        client: TimedClient,
        *,
        tag: str,
        partitions: int,
        workers: int,
        observe: bool,
        log_dir: Path,
    ) -> None:
        self.stack = stack
        self.settings = base.model_copy(
            update={
                "topic_prefix": f"bench-{tag}",
                "partitions": partitions,
                "processor_group": f"bench-proc-{tag}",
                "sink_group": f"bench-sink-{tag}",
                "clickhouse_database": f"bench_{tag}",
            }
        )
        self.client = client
        self.log_dir = log_dir
        self.tag = tag
        self.n_workers = workers
        self.observe = observe
        self.workers: list[subprocess.Popen[bytes]] = []
        self.sink: SinkThread | None = None
        self.observer: Child | None = None
        self.observer_out = log_dir / f"observer-{tag}.json"
        self.observer_peak_rss_mb = float("nan")
        self.meter: TopicMeter | None = None
        self.watched: dict[str, Watched] = {}
        self.base_rows = client.entry_rows
        self.phases: list[Phase] = []

    @property
    def rows(self) -> int:
        return self.client.entry_rows - self.base_rows

    def start(self) -> None:
        s = self.settings
        create_topics(self.stack.bootstrap, s.topics.all(), s.partitions)
        for i in range(self.n_workers):
            env = child_env(
                s,
                LINEAGE_KAFKA_BOOTSTRAP=self.stack.bootstrap,
                LINEAGE_PROCESSOR_GROUP=s.processor_group,
            )
            proc = self.stack.add(
                spawn(
                    [sys.executable, "-m", "lineage_cli", "process", "--worker-id", f"w{i}"],
                    self.log_dir / f"processor-{self.tag}-w{i}.log",
                    env=env,
                )
            )
            self.workers.append(proc)
            self.watched[f"processor w{i}" if self.n_workers > 1 else "processor"] = Watched(
                f"processor w{i}", proc.pid, "faust worker"
            )
        self.sink = SinkThread(s, self.stack.bootstrap, self.client)
        if self.stack.broker:
            self.watched["broker"] = Watched(
                "broker", self.stack.broker.proc.pid, "Tansu, memory storage"
            )
        self.watched["sink"] = Watched(
            "sink",
            psutil.Process().pid,
            "bench process: sink thread + chDB engine + bench bookkeeping",
        )
        if self.observe:
            self.observer = Child(
                [
                    "-m",
                    "bench.observer",
                    "--bootstrap",
                    self.stack.bootstrap,
                    "--chain-topic",
                    s.topics.chain,
                    "--violations-topic",
                    s.topics.violations,
                    "--out",
                    str(self.observer_out),
                ],
                self.log_dir / f"observer-{self.tag}.log",
            )
            self.stack.add(self.observer.proc)
            self.observer.expect("ready", 30)
            self.watched["observer"] = Watched(
                "observer", self.observer.proc.pid, "measurement only"
            )

    def _check_alive(self) -> None:
        for w in self.workers:
            if w.poll() is not None:
                raise RuntimeError(
                    f"processor worker exited with code {w.returncode}; see {self.log_dir}"
                )
        if self.sink and self.sink.error:
            raise RuntimeError(f"sink failed: {self.sink.error}")

    def loadgen(
        self,
        *,
        duration: float,
        rate: float | None,
        max_in_flight: int,
        violations: float,
        workflow_events: int,
        max_workflows: int,
        seed: int,
        name: str,
    ) -> Child:
        s = self.settings
        args = [
            "-m",
            "bench.loadgen",
            "scenario",
            "--bootstrap",
            self.stack.bootstrap,
            "--topic",
            s.topics.events,
            "--data-dir",
            str(s.data_dir),
            "--duration",
            str(duration),
            "--rate",
            str(rate or 0),
            "--max-in-flight",
            str(max_in_flight),
            "--violations",
            str(violations),
            "--workflow-events",
            str(workflow_events),
            "--max-workflows",
            str(max_workflows),
            "--seal-every",
            str(s.seal_every_events),
            "--seal-ms",
            str(s.seal_every_ms),
            "--seed",
            str(seed),
        ]
        child = Child(args, self.log_dir / f"loadgen-{self.tag}-{name}.log")
        self.stack.add(child.proc)
        return child

    def warm_up(self, timeout: float = 90.0) -> None:
        """A few workflows through every stage, so startup and group joins are not measured."""
        base = self.rows
        gen = self.loadgen(
            duration=30,
            rate=None,
            max_in_flight=0,
            violations=0.0,
            workflow_events=12,
            max_workflows=4 * self.settings.partitions,
            seed=1,
            name="warmup",
        )
        gen.expect("ready", 60)
        done = gen.expect("done", 60)
        gen.close()
        self._wait_rows(base + done["trusted"], timeout, "warm-up")

    def _wait_rows(self, target: int, timeout: float, what: str) -> bool:
        deadline = time.monotonic() + timeout
        while self.rows < target:
            self._check_alive()
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def phase(
        self,
        phase: Phase,
        opts: BenchOptions,
        *,
        max_in_flight: int,
        seed: int,
        drain_timeout: float,
        spot_checks: list[bool],
    ) -> Phase:
        """Offer load for ``phase.duration`` s, wait until its rows are queryable, collect figures."""
        base_rows = self.rows
        gen = self.loadgen(
            duration=phase.duration,
            rate=phase.rate,
            max_in_flight=max_in_flight,
            violations=opts.violations,
            workflow_events=opts.workflow_events,
            max_workflows=opts.workflows,
            seed=seed,
            name=phase.name,
        )
        self.watched["emitter"] = Watched("emitter", gen.proc.pid, "scenario + SDK (bench.loadgen)")
        gen.expect("ready", 60)
        meter = self.changelog_meter()
        changelog0 = meter.records() if meter else 0
        cpu0 = {n: w.cpu_s() for n, w in self.watched.items()}
        busy0, t_cpu0 = machine_busy_s(), time.monotonic()
        sink_thread = self.sink.thread.native_id if self.sink else None
        sink0 = thread_cpu_s(sink_thread)
        book0 = self.client.bookkeeping_cpu_s
        done: dict[str, Any] | None = None
        next_check = time.monotonic() + 1.0
        while done is None:
            self._check_alive()
            gen.send(f"visible {self.rows - base_rows}")
            done = gen.poll_line("done")
            if gen.proc.poll() is not None and done is None:
                done = gen.expect("done", 5)
            if time.monotonic() > next_check:
                spot_checks.append(self.spot_check())
                next_check = time.monotonic() + 1.0
                self._sample_memory(phase)
            time.sleep(0.05)
        phase.start, phase.end = done["start"], done["end"]
        phase.trusted, phase.forged = done["trusted"], done["forged"]
        phase.workflows, phase.injected = done["workflows"], done["injected"]
        phase.complete = self._wait_rows(base_rows + phase.trusted, drain_timeout, phase.name)
        phase.drained = time.time()
        phase.cpu_s = {n: w.cpu_s() - cpu0.get(n, 0.0) for n, w in self.watched.items()}
        phase.bookkeeping_cpu_s = self.client.bookkeeping_cpu_s - book0
        phase.sink_thread_cpu_s = thread_cpu_s(sink_thread) - sink0 - phase.bookkeeping_cpu_s
        phase.machine_busy_s = machine_busy_s() - busy0
        phase.cpu_span_s = time.monotonic() - t_cpu0
        phase.measured_until = time.time()
        phase.changelog_records = (meter.records() - changelog0) if meter else 0
        phase.emitter_peak_rss_mb = peak_rss_mb(gen.proc.pid)
        gen.close()
        self._latencies(phase)
        self.phases.append(phase)
        return phase

    MEMORY_EVERY_S = 5.0

    def _sample_memory(self, phase: Phase) -> None:
        """Processor RSS every MEMORY_EVERY_S s of the phase (the soak's flat-memory check)."""
        w = self.watched.get("processor")
        now = time.monotonic()
        if w is None or (
            phase.rss_samples and now - phase.rss_samples[-1][0] < self.MEMORY_EVERY_S
        ):
            return
        phase.rss_samples.append((now, w.rss_mb()))

    def changelog_meter(self) -> TopicMeter | None:
        """The processor's state changelog topic (faust: ``<app id>-<table>-changelog``)."""
        if self.meter is None:
            from confluent_kafka.admin import AdminClient

            topics = (
                AdminClient({"bootstrap.servers": self.stack.bootstrap})
                .list_topics(timeout=10)
                .topics
            )
            names = [
                t
                for t in topics
                if t.startswith(self.settings.processor_group) and t.endswith("changelog")
            ]
            if names:
                self.meter = TopicMeter(self.stack.bootstrap, names[0])
        return self.meter

    def changelog_mean_bytes(self) -> float | None:
        return self.meter.mean_bytes() if self.meter else None

    def spot_check(self) -> bool:
        """The last inserted event id must be found by a plain SELECT right after its insert returned."""
        ids = list(self.client.recent_ids)
        if not ids or self.sink is None:
            return True
        with self.sink.sink.lock:
            n = self.client.query(
                f"SELECT count() FROM {self.settings.clickhouse_database}.lineage_entries "
                "WHERE event_id = {id:String}",
                parameters={"id": ids[0]},
            ).result_rows[0][0]
        return int(n) >= 1

    def _latencies(self, phase: Phase) -> None:
        lo, hi = int(phase.start * 1e6), int(phase.end * 1e6)
        rows = [(t, v) for t, v in self.client.visible if lo <= t <= hi]
        phase.rows = len(rows)
        if rows:
            phase.drained = max(v for _, v in rows) / 1e6
        phase.queryable_ms = percentiles([(v - t) / 1000 for t, v in rows])

    def finish_observer(self) -> None:
        """Stop the observer and split its samples by phase."""
        if self.observer is None:
            return
        self.observer_peak_rss_mb = peak_rss_mb(self.observer.proc.pid)
        self.observer.close()
        doc = json.loads(self.observer_out.read_text())
        for phase in self.phases:
            lo, hi = int(phase.start * 1e6), int(phase.end * 1e6)
            phase.chained_ms = percentiles([ms for t, ms in doc["chain"] if lo <= t <= hi])
            # A violation belongs to the phase it arrived in; its latency counts only when its
            # event_time is a real produce time (the "expired" misbehaviour stamps a future one).
            arrived = [
                (t, ms, kind)
                for t, ms, kind in doc["violations"]
                if phase.start <= t / 1e6 + ms / 1000 <= phase.measured_until
            ]
            timed = [ms for t, ms, _ in arrived if lo <= t <= hi]
            phase.violations_seen = len(arrived)
            phase.excluded_violations = len(arrived) - len(timed)
            phase.excluded_violation_types = dict(
                Counter(kind for t, _, kind in arrived if not lo <= t <= hi)
            )
            phase.violation_ms = percentiles(timed)

    def peak_rss(self) -> dict[str, float | None]:
        """Peak RSS per process; the emitter's is the largest over the phases."""
        out: dict[str, float | None] = {}
        for n, w in self.watched.items():
            peak = peak_rss_mb(w.pid)
            out[n] = None if math.isnan(peak) else round(peak, 1)
        emitters = [p.emitter_peak_rss_mb for p in self.phases if p.emitter_peak_rss_mb is not None]
        out["emitter"] = round(max(emitters), 1) if emitters else None
        if self.observer is not None:
            out["observer"] = round(self.observer_peak_rss_mb, 1)
        return out

    def stop(self) -> None:
        if self.meter:
            self.meter.close()
        for w in self.workers:
            stop_process(w)
        if self.sink:
            self.sink.close()
        if self.observer and self.observer.proc.poll() is None:
            self.observer.close()


def phase_doc(p: Phase) -> dict[str, Any]:
    span = max(p.cpu_span_s, 1e-9)
    return {
        "rate_asked": p.rate,
        "duration_s": p.duration,
        "offered_events_per_s": round(p.offered_per_s),
        "events_per_s": round(p.events_per_s),
        "trusted_events": p.trusted,
        "forged_events": p.forged,
        "rows_queryable": p.rows,
        "complete": p.complete,
        "workflows": p.workflows,
        "injected": p.injected,
        "drain_s": round(p.drained - p.end, 2),
        "chained_ms": p.chained_ms,
        "queryable_ms": p.queryable_ms,
        "violation_ms": p.violation_ms,
        "violations_seen": p.violations_seen,
        "violations_without_wall_clock_time": p.excluded_violations,
        "violation_types_without_wall_clock_time": p.excluded_violation_types,
        "cpu_s": {n: round(c, 2) for n, c in p.cpu_s.items()},
        "cpu_s_per_1000_events": {n: p.per_1000(n) for n in p.cpu_s},
        "sink_thread_cpu_s": round(p.sink_thread_cpu_s, 2),
        "bench_bookkeeping_cpu_s": round(p.bookkeeping_cpu_s, 2),
        "processor_memory": p.memory_trend(),
        "cpu_utilisation": {n: round(c / span, 2) for n, c in p.cpu_s.items()},
        "machine_cores_busy": round(p.machine_busy_s / span, 2),
        "other_processes_cores": round((p.machine_busy_s - sum(p.cpu_s.values())) / span, 2),
    }

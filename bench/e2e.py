"""End-to-end benchmark on the embedded stack: raw broker ceiling, then the whole pipeline under load.

Processes: the load generator (``bench.loadgen``, the scenario through the real SDK), Tansu,
one or two faust processor workers, the ClickHouse sink as a thread of this process (chDB
allows one process per data directory, so the sink and the ClickHouse engine share this
process), and an observer (``bench.observer``) that times chain entries and violations.

Produce → queryable is timed by wrapping the sink's ClickHouse client: a row is queryable
once the synchronous insert that carries it has returned (spot-checked with SELECTs). The
produce time of every event is its ``event_time``, stamped by the SDK just before
``produce()``; all processes share this machine's clock.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

from infra.demo import SinkThread, demo_signers
from infra.embedded import (
    Stack,
    child_env,
    create_topics,
    open_stack,
    spawn,
    start_broker,
    stop_process,
    terminate_on_signals,
)
from lineage.config import Settings
from sinks.rows import ENTRY_COLUMNS
from stream_processors import chain_rows

ENTRY_EVENT_TIME = ENTRY_COLUMNS.index("event_time")
ENTRY_EVENT_ID = ENTRY_COLUMNS.index("event_id")
MB = 2**20


# -- processes ---------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the bench dies, so nothing is orphaned."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Child:
    """A bench subprocess speaking JSON lines on stdout and reading commands on stdin."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        with open(log, "ab") as err:
            self.proc: subprocess.Popen[bytes] = subprocess.Popen(
                [sys.executable, *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                preexec_fn=_die_with_parent,
            )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.lines.put(json.loads(raw))

    def expect(self, event: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                doc = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    tail = self.log.read_text(errors="replace")[-2000:]
                    raise RuntimeError(
                        f"{self.proc.args!r} exited with {self.proc.returncode}: {tail}"
                    ) from None
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"no {event!r} from {self.proc.args!r} after {timeout:.0f} s"
                    ) from None
                continue
            if doc.get("event") == event:
                return doc

    def poll_line(self, event: str) -> dict[str, Any] | None:
        try:
            doc = self.lines.get_nowait()
        except queue.Empty:
            return None
        return doc if doc.get("event") == event else None

    def send(self, line: str) -> None:
        stdin: IO[bytes] | None = self.proc.stdin
        with contextlib.suppress(BrokenPipeError, OSError, ValueError):
            assert stdin is not None
            stdin.write(line.encode() + b"\n")
            stdin.flush()

    def close(self, timeout: float = 30.0) -> None:
        self.send("stop")
        with contextlib.suppress(BrokenPipeError, OSError):
            if self.proc.stdin:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            stop_process(self.proc)


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the most resident memory the process ever had."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Watched:
    """CPU seconds and memory of one process, sampled at phase boundaries."""

    name: str
    pid: int
    note: str = ""
    proc: psutil.Process = field(init=False)

    def __post_init__(self) -> None:
        self.proc = psutil.Process(self.pid)

    def cpu_s(self) -> float:
        try:
            t = self.proc.cpu_times()
            return float(t.user + t.system)
        except psutil.Error:
            return float("nan")

    def rss_mb(self) -> float:
        try:
            return float(self.proc.memory_info().rss) / MB
        except psutil.Error:
            return float("nan")


def machine_busy_s() -> float:
    """CPU seconds every process on the machine has used (all cores): total minus idle and iowait."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def thread_cpu_s(native_id: int | None) -> float:
    """CPU seconds of one thread of this process (Linux reports per-thread times)."""
    for t in psutil.Process().threads():
        if t.id == native_id:
            return float(t.user_time + t.system_time)
    return 0.0


class TopicMeter:
    """Records in a topic (sum of high watermarks), and the mean size of its latest records."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from confluent_kafka import Consumer

        self.topic = topic
        self.consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": "bench-meter", "enable.auto.commit": False}
        )

    def _partitions(self) -> list[int]:
        meta = self.consumer.list_topics(self.topic, timeout=10).topics.get(self.topic)
        return sorted(meta.partitions) if meta is not None and meta.error is None else []

    def records(self) -> int:
        from confluent_kafka import TopicPartition

        total = 0
        for p in self._partitions():
            _, high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)
            total += max(high, 0)
        return total

    def mean_bytes(self, last: int = 100) -> float | None:
        """Mean value size of the last ``last`` records of every partition."""
        from confluent_kafka import TopicPartition

        sizes: list[int] = []
        for p in self._partitions():
            low, high = self.consumer.get_watermark_offsets(
                TopicPartition(self.topic, p), timeout=10
            )
            start = max(low, high - last)
            if high <= start:
                continue
            self.consumer.assign([TopicPartition(self.topic, p, start)])
            deadline = time.monotonic() + 10
            got = 0
            while got < high - start and time.monotonic() < deadline:
                for m in self.consumer.consume(500, 0.5):
                    value = m.value()
                    if m.error() is None and value is not None:
                        sizes.append(len(value))
                        got += 1
        self.consumer.unassign()
        return sum(sizes) / len(sizes) if sizes else None

    def close(self) -> None:
        self.consumer.close()


# -- the sink's client, timed ------------------------------------------------


class TimedClient:
    """The sink's clickhouse-connect client, recording when each entry row became queryable."""

    SAMPLE = 1  # decode every forwarded container (latency samples); see raw_insert

    def __init__(self, client: Any) -> None:
        self._client = client
        self.entry_rows = 0
        self.visible: list[tuple[int, int]] = []  # (event_time µs, queryable µs)
        self.recent_ids: list[str] = []
        self.bookkeeping_cpu_s = 0.0  # sink-thread CPU spent on the bench's own measurements
        self._raw_inserts = 0

    def insert(self, table: str, data: list[Any], **kw: Any) -> Any:
        result = self._client.insert(table, data, **kw)
        if table == "lineage_entries":
            now = time.time_ns() // 1000
            self.visible += [(row[ENTRY_EVENT_TIME], now) for row in data]
            self.entry_rows += len(data)
            self.recent_ids = [data[-1][ENTRY_EVENT_ID], data[0][ENTRY_EVENT_ID]]
        return result

    def raw_insert(self, table: str, column_names: Any, insert_block: bytes, **kw: Any) -> Any:
        """Row containers forwarded by the sink: rows counted from block headers, and one
        container in ``SAMPLE`` decoded for latencies (its CPU is kept as bench bookkeeping)."""
        result = self._client.raw_insert(table, column_names, insert_block, **kw)
        if table.endswith("lineage_entries"):
            now = time.time_ns() // 1000
            t0 = time.thread_time()
            self.entry_rows += chain_rows.row_count(insert_block)
            self._raw_inserts += 1
            if self._raw_inserts % self.SAMPLE == 1 or self.SAMPLE == 1:
                rows = chain_rows.decode(insert_block)
                self.visible += [(r["event_time"], now) for r in rows]
                if rows:
                    self.recent_ids = [rows[-1]["event_id"], rows[0]["event_id"]]
            self.bookkeeping_cpu_s += time.thread_time() - t0
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


# -- statistics ----------------------------------------------------------------


def pct(values: list[float], q: float) -> float | None:
    """The q-quantile (nearest rank) of ``values``, or None when empty."""
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * len(s)) - 1))]


def percentiles(values: list[float]) -> dict[str, float | None]:
    return {f"p{int(q * 100)}": _r(pct(values, q)) for q in (0.5, 0.95, 0.99)} | {"n": len(values)}


def _r(x: float | None, nd: int = 1) -> float | None:
    return None if x is None else round(x, nd)


# -- one pipeline on the broker ---------------------------------------------------


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


def verify_throughput(client: Any, settings: Settings) -> dict[str, Any]:
    """Run the offline verifier over the run's ClickHouse data (``lineage verify --clickhouse``).

    Entries/s are given per second of wall time (chDB query included) and per CPU second of
    this process; the processor and sink are stopped by then, so the verifier has the machine.
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
    cpu0, t0 = time.process_time(), time.perf_counter()
    try:
        report = verify_clickhouse(client, settings.clickhouse_database, registry=registry)
    except Exception as exc:
        return {"entries_per_s": None, "note": f"verify_clickhouse raised {exc!r}: not measured"}
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    entries = int(report.proven.log_entries)
    doc: dict[str, Any] = {
        "ok": report.ok,
        "entries": entries,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "entries_per_s": round(entries / wall) if wall > 0 else None,
        "entries_per_cpu_s": round(entries / cpu) if cpu > 0 else None,
        "note": f"verify_clickhouse over {entries:,} stored entries of this run, query included",
    }
    if not report.ok and report.failure is not None:
        doc["failure"] = report.failure.to_json()
        doc["note"] += f"; verification FAILED: {report.failure.kind}"
    return doc


# -- the whole run ---------------------------------------------------------------


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


@contextlib.contextmanager
def bench_stack(opts: BenchOptions) -> Iterator[tuple[Stack, Settings, TimedClient, Path]]:
    from sinks.clickhouse import open_client

    root = Settings(data_dir=opts.data_dir) if opts.data_dir else Settings()
    settings = root.model_copy(
        update={
            "data_dir": root.data_dir / "bench",
            "partitions": opts.partitions,
            "topic_prefix": "bench",
        }
    )
    if settings.chdb_path.exists():
        shutil.rmtree(settings.chdb_path)
    log_dir = settings.data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    demo_signers(settings)
    with terminate_on_signals(), open_stack(settings, create=False) as stack:
        yield stack, settings, TimedClient(open_client(settings)), log_dir


def run_bench(opts: BenchOptions, progress: Any) -> dict[str, Any]:
    """Run the benchmark; ``progress(text)`` reports what it is doing. Returns every figure."""
    t_start = time.monotonic()
    with bench_stack(opts) as (stack, settings, client, log_dir):
        progress(
            f"ceiling run ({opts.ceiling_s:.0f} s, raw produce → consume on a broker of its own)"
        )
        ceiling = run_ceiling(settings, log_dir, opts.ceiling_s)
        if opts.scaling:
            result = run_scaling(stack, settings, client, log_dir, opts, progress)
        else:
            result = run_pipeline(stack, settings, client, log_dir, opts, progress)
        result["ceiling"] = ceiling
        result["ceiling_events_per_s"] = round(ceiling["events_per_s"])
        if result.get("events_per_s"):
            result["ratio_to_ceiling"] = round(result["events_per_s"] / ceiling["events_per_s"], 4)
    result["wall_s"] = round(time.monotonic() - t_start, 1)
    result["code"] = code_version()
    result["machine"] = {
        "cpus": psutil.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
    }
    return result


def code_version() -> dict[str, Any]:
    """The commit measured, and which tracked files differed from it (read-only git calls)."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout if done.returncode == 0 else ""

    changed = [
        line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()
    ]
    return {
        "commit": git("rev-parse", "--short", "HEAD").strip() or None,
        "uncommitted_changes": changed,
    }


def run_pipeline(
    stack: Stack,
    settings: Settings,
    client: TimedClient,
    log_dir: Path,
    opts: BenchOptions,
    progress: Any,
) -> dict[str, Any]:
    run = PipelineRun(
        stack,
        settings,
        client,
        tag="main",
        partitions=opts.partitions,
        workers=1,
        observe=True,
        log_dir=log_dir,
    )
    spot: list[bool] = []
    try:
        progress("starting the processor, the sink and the observer; warm-up")
        run.start()
        run.warm_up()
        if opts.rate:
            progress(f"load phase: {opts.rate:,.0f} events/s for {opts.duration:.0f} s")
            main = run.phase(
                Phase("steady", opts.rate, opts.duration),
                opts,
                max_in_flight=0,
                seed=11,
                drain_timeout=120.0,
                spot_checks=spot,
            )
            latency = main
        else:
            progress(
                f"throughput phase: as fast as the pipeline takes it (at most {opts.max_in_flight:,} events "
                f"in flight) for {opts.duration:.0f} s"
            )
            main = run.phase(
                Phase("throughput", None, opts.duration),
                opts,
                max_in_flight=opts.max_in_flight,
                seed=11,
                drain_timeout=120.0,
                spot_checks=spot,
            )
            half = max(main.events_per_s / 2, 10.0)
            progress(
                f"latency phase: half that load, {half:,.0f} events/s for {opts.duration:.0f} s"
            )
            latency = run.phase(
                Phase("half-load", half, opts.duration),
                opts,
                max_in_flight=0,
                seed=13,
                drain_timeout=120.0,
                spot_checks=spot,
            )
        run.finish_observer()
        peaks = run.peak_rss()
        changelog_bytes = run.changelog_mean_bytes()
    finally:
        run.stop()
    progress("offline verification of everything the run stored (lineage verify --clickhouse)")
    verify = verify_throughput(client, run.settings)
    out: dict[str, Any] = {
        "events_per_s": round(main.events_per_s),
        "offered_events_per_s": round(main.offered_per_s),
        "latency_phase": latency.name,
        "latency_load_events_per_s": round(latency.events_per_s),
        "verify_entries_per_s": verify["entries_per_s"],
        "verify": verify,
        "processor_peak_rss_mb": peaks.get("processor"),
        "peak_rss_mb": peaks,
        "queryable_spot_checks": {"ok": sum(spot), "of": len(spot)},
        "config": {
            "partitions": opts.partitions,
            "workers": 1,
            "duration_s": opts.duration,
            "rate": opts.rate,
            "violations_share": opts.violations,
            "workflow_events": opts.workflow_events,
            "seal_every": settings.seal_every_events,
            "max_in_flight": opts.max_in_flight,
        },
        "phases": {p.name: phase_doc(p) for p in run.phases},
        "changelog_mean_record_bytes": None if changelog_bytes is None else round(changelog_bytes),
    }
    for p in run.phases:
        per_event = p.changelog_records / p.rows if p.rows else None
        doc = out["phases"][p.name]
        doc["changelog_records_per_event"] = None if per_event is None else round(per_event, 3)
        doc["changelog_bytes_per_event"] = (
            None
            if per_event is None or changelog_bytes is None
            else round(per_event * changelog_bytes)
        )
    for kind in ("chained", "queryable", "violation"):
        figures: dict[str, float | None] = getattr(latency, f"{kind}_ms")
        for q in ("p50", "p95", "p99"):
            out[f"{q}_{kind}_ms"] = figures.get(q)
    out["cpu_s_per_1000_events"] = {n: main.per_1000(n) for n in main.cpu_s}
    return out


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


SCALING = ((1, 4), (2, 4), (1, 16), (2, 16))


def run_scaling(
    stack: Stack,
    settings: Settings,
    client: TimedClient,
    log_dir: Path,
    opts: BenchOptions,
    progress: Any,
) -> dict[str, Any]:
    """Short closed-loop runs: 1 vs 2 processor workers, 4 vs 16 partitions."""
    duration = min(opts.duration, 20.0)
    rows: list[dict[str, Any]] = []
    for workers, partitions in SCALING:
        tag = f"w{workers}p{partitions}"
        progress(f"scaling: {workers} worker(s), {partitions} partitions, {duration:.0f} s")
        run = PipelineRun(
            stack,
            settings,
            client,
            tag=tag,
            partitions=partitions,
            workers=workers,
            observe=False,
            log_dir=log_dir,
        )
        try:
            run.start()
            run.warm_up()
            p = run.phase(
                Phase(tag, None, duration),
                opts,
                max_in_flight=opts.max_in_flight,
                seed=17,
                drain_timeout=60.0,
                spot_checks=[],
            )
            peaks = run.peak_rss()
        finally:
            run.stop()
        rows.append(
            {
                "workers": workers,
                "partitions": partitions,
                "events_per_s": round(p.events_per_s),
                "queryable_ms": p.queryable_ms,
                "complete": p.complete,
                "cpu_s_per_1000_events": {n: p.per_1000(n) for n in p.cpu_s},
                "peak_rss_mb": peaks,
                "cpu_utilisation": phase_doc(p)["cpu_utilisation"],
                "other_processes_cores": phase_doc(p)["other_processes_cores"],
            }
        )
    base = rows[0]["events_per_s"] or 1
    for r in rows:
        r["ratio"] = round(r["events_per_s"] / base, 3)
    return {"scaling": rows, "events_per_s": rows[0]["events_per_s"]}

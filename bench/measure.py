"""Measuring instruments of the end-to-end bench: child processes, CPU and memory per process,
topic meters, the timed ClickHouse client, percentiles."""

from __future__ import annotations

import contextlib
import ctypes
import json
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

from infra.embedded import (
    stop_process,
)
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

"""What the fault tests share: a paced workload, topic offsets, end-state checks, a fault-free replay."""

from __future__ import annotations

import importlib
import inspect
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from lineage import codec, hashing, merkle
from lineage.keys import KeyRegistry
from lineage.model import Decision, EventKind, Runtime
from lineage.policy import evaluate
from producers.emitter import Emitter, FlushReport
from producers.partitioner import partition_for
from stream_processors import chain_rows
from stream_processors.decode import Limits
from stream_processors.main import load_processor_signer
from stream_processors.order import OrderLimits
from stream_processors.pipeline import PartitionPipeline, PipelineConfig
from stream_processors.records import Outputs, RawRecord
from stream_processors.state import DictStore
from tests.integration.conftest import Pipeline, wait_for

PRINCIPAL = "agent:planner"
ACTION = "tool.call:search"
RESOURCE = "web:search"
RUNTIME = Runtime(
    host="host-1",
    image_digest="sha256:" + "ab" * 32,
    attestation_type="tpm",
    measurement="pcr0:" + "cd" * 16,
)
INJECTED = "UNAUTHORIZED_EXECUTION"


def wait(
    predicate: Callable[[], bool], timeout: float, what: str, explain: Callable[[], str] = str
) -> None:
    """wait_for, with ``explain()`` (evaluated only on failure) appended to the message."""
    try:
        wait_for(predicate, timeout, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {explain()}") from None


# -- the workload ----------------------------------------------------------


@dataclass
class Workload:
    """Workflows that follow the policy, emitted round-robin so hundreds are open at once.

    Each workflow: WORKFLOW_STARTED and an ALLOW decision (orchestrator, an authorizer key), then
    ``execs`` executions (STARTED with a runtime measurement, RESOURCE_ACCESS, COMPLETED — all
    under that decision, alternating between the two emitters), then WORKFLOW_COMPLETED. Every
    ``unauthorized_every``-th workflow also has one RESOURCE_ACCESS without an authorization: the
    one violation injected on purpose, so the violations table must hold exactly those.
    """

    workflows: int
    execs: int
    unauthorized_every: int = 10
    prefix: str = "wf"

    @property
    def per_workflow(self) -> int:
        return 3 + 3 * self.execs

    @property
    def injected(self) -> int:
        return len(range(0, self.workflows, self.unauthorized_every))

    @property
    def total(self) -> int:
        return self.workflows * self.per_workflow + self.injected

    def steps(self) -> Iterator[tuple[int, int]]:
        """(workflow index, step index) in emission order."""
        longest = self.per_workflow + 1
        for s in range(longest):
            for w in range(self.workflows):
                if s < self.per_workflow or w % self.unauthorized_every == 0:
                    yield w, s


class WorkloadThread:
    """Emits a Workload from a background thread at a steady rate through two emitters."""

    def __init__(
        self, p: Pipeline, workload: Workload, *, rate: float, seal_every: int = 50
    ) -> None:
        self.p = p
        self.workload = workload
        self.rate = rate
        self.seal_every = seal_every
        self.emitted = 0
        self.events: dict[str, tuple[str, str | None]] = {}  # event_id -> (workflow_id, parent)
        self.order: dict[str, list[str]] = {}
        self.kinds: dict[str, str] = {}
        self.reports: list[FlushReport] = []
        self.error: BaseException | None = None
        self.started_at = 0.0
        self.finished_at = 0.0
        self.held_s = 0.0
        self._hold_at: int | None = None
        self._gate = threading.Condition()
        decision = evaluate(
            p.policy, principal=PRINCIPAL, action=ACTION, resource=RESOURCE, context={}
        )
        assert decision.decision is Decision.ALLOW, (
            f"expected the workload's request allowed, found {decision}"
        )
        self.decision = decision
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="workload", daemon=True)

    def start(self) -> WorkloadThread:
        self._thread.start()
        return self

    def wait_emitted(self, n: int, timeout: float) -> int:
        wait_for(lambda: self.emitted >= n or self._done.is_set(), timeout, f"{n} events emitted")
        self.check()
        return self.emitted

    def hold_at(self, n: int | None) -> None:
        """Pause before emitting event ``n`` until the next ``hold_at`` (None: never pause).

        A fault test sets the next fault's point before it waits for recovery: on a slow machine
        the stream would otherwise run to its end while the test waits, and the next fault would
        hit an idle pipeline. The pause shifts the pacing, so the stream resumes at its rate.
        """
        with self._gate:
            self._hold_at = n
            self._gate.notify_all()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the workload did not finish within {timeout:.0f} s"
        self.check()
        for r in self.reports:
            assert r.ok, f"expected every record delivered, found {r}"

    def per_partition(self) -> dict[int, int]:
        """How many events went to each partition."""
        n = self.p.settings.partitions
        return dict(Counter(partition_for(wid.encode(), n) for wid, _ in self.events.values()))

    def check(self) -> None:
        if self.error is not None:
            raise AssertionError(f"the workload thread failed: {self.error!r}") from self.error

    def _run(self) -> None:
        try:
            with (
                self.p.emitter("orchestrator", seal_every=self.seal_every) as a,
                self.p.emitter("tool-runner", seal_every=self.seal_every) as b,
            ):
                self.started_at = time.monotonic()
                self._emit_all(a, b)
                self.reports = [a.flush(60), b.flush(60)]
            self.finished_at = time.monotonic()
        except BaseException as exc:
            self.error = exc
        finally:
            self._done.set()

    def _emit_all(self, a: Emitter, b: Emitter) -> None:
        wl = self.workload
        state: dict[int, dict[str, str]] = {}
        expires = a.clock() + 3_600_000_000
        auth = self.decision.to_authorization(expires_at=expires)
        last = wl.per_workflow - 1
        for w, s in wl.steps():
            self._maybe_hold()
            wid = f"{wl.prefix}-{w:04d}"
            st = state.setdefault(w, {})
            common: dict[str, Any] = {"workflow_id": wid, "principal": PRINCIPAL}
            if s == 0:
                ev = a.emit(kind=EventKind.WORKFLOW_STARTED, action="start", **common)
                st["start"] = ev.event_id
            elif s == 1:
                ev = a.emit(
                    kind=EventKind.AUTHORIZATION_DECISION,
                    action=ACTION,
                    resource=RESOURCE,
                    parent_event_id=st["start"],
                    authorization=auth,
                    **common,
                )
                st["auth"] = ev.event_id
            elif s < last:
                j, phase = divmod(s - 2, 3)
                em = a if j % 2 else b
                scoped = {
                    "action": ACTION,
                    "resource": RESOURCE,
                    "authorization_id": st["auth"],
                    **common,
                }
                if phase == 0:
                    ev = em.emit(
                        kind=EventKind.EXECUTION_STARTED,
                        parent_event_id=st["auth"],
                        runtime=RUNTIME,
                        **scoped,
                    )
                    st["exec"] = ev.event_id
                elif phase == 1:
                    ev = em.emit(
                        kind=EventKind.RESOURCE_ACCESS, parent_event_id=st["exec"], **scoped
                    )
                else:
                    ev = em.emit(
                        kind=EventKind.EXECUTION_COMPLETED, parent_event_id=st["exec"], **scoped
                    )
            elif s == last:
                ev = a.emit(
                    kind=EventKind.WORKFLOW_COMPLETED,
                    action="complete",
                    parent_event_id=st["start"],
                    **common,
                )
            else:
                ev = b.emit(
                    kind=EventKind.RESOURCE_ACCESS,
                    action=ACTION,
                    resource=RESOURCE,
                    parent_event_id=st["start"],
                    **common,
                )
            self.events[ev.event_id] = (wid, ev.parent_event_id)
            self.kinds[ev.event_id] = f"{ev.kind.value}/{ev.emitter_id.split('#')[0]}"
            self.order.setdefault(wid, []).append(ev.event_id)
            self.emitted += 1
            behind = self.started_at + self.emitted / self.rate - time.monotonic()
            if behind > 0:
                time.sleep(behind)  # pacing a steady stream, not waiting for a condition

    def _maybe_hold(self) -> None:
        with self._gate:
            if self._hold_at is None or self.emitted < self._hold_at:
                return
            since = time.monotonic()
            while self._hold_at is not None and self.emitted >= self._hold_at:
                if not self._gate.wait(timeout=300):
                    raise TimeoutError(f"held at {self.emitted} events for 300 s")
            held = time.monotonic() - since
            self.held_s += held
            self.started_at += held  # keep the steady rate instead of bursting to catch up


# -- topic offsets -----------------------------------------------------------


class Offsets:
    """End offsets of a topic's partitions (one consumer, no group)."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "faults-offsets",
                "enable.auto.commit": False,
            }
        )
        self.tps = [TopicPartition(topic, p) for p in range(partitions)]

    def end(self) -> int:
        return sum(
            self.consumer.get_watermark_offsets(tp, timeout=5, cached=False)[1] for tp in self.tps
        )

    def close(self) -> None:
        self.consumer.close()


def wait_assigned(p: Pipeline, worker_id: str = "w0", timeout: float = 60) -> None:
    """Until the worker owns its input partitions: a fault injected before that tests nothing
    (on a busy machine joining the group alone can take longer than the workload's first 20 %)."""
    log = p.settings.data_dir / f"processor-{worker_id}.log"
    wait(
        lambda: log.exists() and "resuming at offset" in log.read_text(errors="replace"),
        timeout,
        f"worker {worker_id} to be assigned its partitions",
        p.worker_log,
    )


def events_in(key: bytes | None, value: bytes | None) -> int:
    """How many events a record of the events topic carries: a sealed batch holds several."""
    if (key or b"").startswith(b"seal:"):
        return 0
    if (key or b"").startswith(b"batch:") and value:
        return len(codec.load("sealed_batch").decode_body(value)["events"])
    if value and chain_rows.is_rows(value):  # chain output: a container of entry rows
        return chain_rows.row_count(value)
    return 1


def read_partitions(
    bootstrap: str,
    topic: str,
    partitions: int,
    events: dict[int, int],
    timeout: float = 60,
    *,
    exact: bool = True,
) -> dict[int, list[RawRecord]]:
    """Every record of ``topic`` per partition in offset order, as the processor would see it.

    ``events`` is how many events (alone or inside sealed batches) each partition holds (at least, unless
    ``exact``). The embedded
    broker's high watermark is the base offset of the last record batch + 1, not the end of the
    log, so reading stops only when those events are all there and nothing more arrives.
    """
    c = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "faults-reader", "enable.auto.commit": False}
    )
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        out: dict[int, list[RawRecord]] = {p: [] for p in range(partitions)}
        seen = dict.fromkeys(range(partitions), 0)
        deadline = time.monotonic() + timeout
        quiet_since = time.monotonic()
        while any(seen[p] < events.get(p, 0) for p in seen) or time.monotonic() - quiet_since < 1.0:
            assert time.monotonic() < deadline, (
                f"read {seen} of {events} events of {topic} in {timeout:.0f} s"
            )
            for m in c.consume(5000, 0.2):
                if m.error():
                    continue
                part, key = int(m.partition() or 0), m.key()
                out[part].append(
                    RawRecord(topic, part, int(m.offset() or 0), key, m.value(), m.timestamp()[1])
                )
                seen[part] += events_in(key, m.value())
                quiet_since = time.monotonic()
        for p, recs in out.items():
            recs.sort(key=lambda r: r.offset)
            assert [r.offset for r in recs] == list(range(len(recs))), (
                f"{topic}[{p}]: offsets not contiguous"
            )
        assert not exact or seen == {p: events.get(p, 0) for p in seen}, (
            f"expected {events} events, found {seen}"
        )
        return out
    finally:
        c.close()


# -- end state ---------------------------------------------------------------


@dataclass
class EndState:
    """What ClickHouse holds after the run, checked against what was emitted."""

    entries: int
    distinct_events: int
    raw_rows: int
    violations: Counter[str]
    chained_offsets: dict[int, set[int]] = field(default_factory=dict)
    chain: set[tuple[str, int, bytes, str, int, int, int]] = field(default_factory=set)
    violation_ids: set[tuple[str, str]] = field(default_factory=set)

    @property
    def duplicates(self) -> int:
        return self.entries - self.distinct_events


def check_end_state(p: Pipeline, wl: WorkloadThread) -> EndState:
    """Exactly the emitted events, once each; every chain recomputes; only the injected violations."""
    emitted = wl.emitted
    count, distinct = p.rows("SELECT count(), uniqExact(event_id) FROM {db}.lineage_entries FINAL")[
        0
    ]
    raw_rows = p.rows("SELECT count() FROM {db}.lineage_entries")[0][0]
    assert (count, distinct) == (emitted, emitted), (
        f"expected {emitted} entries with {emitted} distinct event ids, found {count} and {distinct}; "
        + diagnose(p, wl)
    )
    rows = p.rows(
        "SELECT workflow_id, chain_seq, event_id, prev_hash, entry_hash, event_digest, policy_digest, "
        "event_bytes, parent_event_id, source_partition, source_offset, log_index "
        "FROM {db}.lineage_entries FINAL ORDER BY workflow_id, chain_seq"
    )
    by_wf: dict[str, list[tuple[Any, ...]]] = {}
    for r in rows:
        by_wf.setdefault(r[0].decode(), []).append(r)
    assert set(by_wf) == set(wl.order), "expected one chain per emitted workflow"
    state = EndState(count, distinct, raw_rows, Counter())
    for wid, entries in by_wf.items():
        assert sorted(e[2].decode() for e in entries) == sorted(wl.order[wid]), (
            f"{wid}: chained events differ"
        )
        prev = hashing.genesis_hash(wid)
        chained: set[str] = set()
        for seq, (
            _,
            chain_seq,
            eid,
            prev_hash,
            entry_hash,
            digest,
            policy,
            data,
            parent,
            part,
            off,
            idx,
        ) in enumerate(entries):
            assert chain_seq == seq, f"{wid}: expected chain_seq {seq}, found {chain_seq}"
            assert prev_hash == prev, f"{wid}#{seq}: prev_hash does not link"
            assert digest == hashing.event_digest(data), (
                f"{wid}#{seq}: digest does not match the bytes"
            )
            assert entry_hash == hashing.entry_hash(prev, digest, seq, policy), (
                f"{wid}#{seq}: entry hash"
            )
            assert not parent or parent.decode() in chained, (
                f"{wid}#{seq}: chained before its parent"
            )
            chained.add(eid.decode())
            state.chained_offsets.setdefault(part, set()).add(off)
            state.chain.add((wid, seq, bytes(entry_hash), eid.decode(), part, off, idx))
            prev = entry_hash
    kinds = p.rows(
        "SELECT violation_type, count(), uniqExact(violation_id) FROM {db}.violations FINAL "
        "GROUP BY violation_type"
    )
    state.violations = Counter({k.decode(): n for k, n, _ in kinds})
    assert all(n == u for _, n, u in kinds), f"duplicate violation ids: {kinds}"
    expected = Counter({INJECTED: wl.workload.injected})
    assert state.violations == expected, (
        f"expected only the injected violations {dict(expected)}, found {dict(state.violations)}"
    )
    state.violation_ids = {
        (k.decode(), v.decode())
        for k, v in p.rows("SELECT violation_type, violation_id FROM {db}.violations FINAL")
    }
    return state


@dataclass
class Reference:
    """What a run without faults produces from the same partitions."""

    chain: set[tuple[str, int, bytes, str, int, int, int]]
    violations: set[tuple[str, str]]
    leaves: dict[int, list[bytes]]  # partition -> entry hashes in log order

    def check_checkpoints(self, p: Pipeline) -> int:
        """Every checkpoint ever inserted (not only FINAL) has the fault-free log's root at its size."""
        rows = p.rows("SELECT partition, tree_size, root_hash FROM {db}.checkpoints")
        by_partition: dict[int, set[int]] = {}
        for part, size, _ in rows:
            by_partition.setdefault(part, set()).add(size)
        roots: dict[tuple[int, int], bytes] = {}
        for part, sizes in by_partition.items():
            leaves = self.leaves[part]
            assert max(sizes) <= len(leaves), (
                f"partition {part}: checkpoint of {max(sizes)} > {len(leaves)} leaves"
            )
            rng = merkle.CompactRange()
            for i, leaf in enumerate(leaves, 1):
                rng.append(leaf)
                if i in sizes:
                    roots[(part, i)] = rng.root()
        for part, size, root in rows:
            assert root == roots[(part, size)], (
                f"partition {part}: checkpoint at size {size} forks the log"
            )
        return len(rows)


def diagnose(p: Pipeline, wl: WorkloadThread) -> str:
    """Where the missing events are, and what the pipeline reported about them."""
    chained = {r[0].decode() for r in p.rows("SELECT event_id FROM {db}.lineage_entries FINAL")}
    missing = [e for e in wl.events if e not in chained]
    workflows = Counter(wl.events[e][0] for e in missing)
    kinds = Counter(wl.kinds[e] for e in missing)
    parts = Counter(partition_for(wl.events[e][0].encode(), p.settings.partitions) for e in missing)
    violations = p.rows(
        "SELECT violation_type, count() FROM {db}.violations FINAL GROUP BY violation_type"
    )
    quarantine = p.rows(
        "SELECT reason_code, count() FROM {db}.quarantine FINAL GROUP BY reason_code"
    )
    return (
        f"{len(missing)} emitted events not chained, in {len(workflows)} workflows "
        f"(e.g. {workflows.most_common(3)}), kinds {dict(kinds)}, partitions {dict(parts)}; violations {violations}; quarantine {quarantine}"
        f"; sink error {p.sink and p.sink.error!r}; the worker log ends:\n{p.worker_log()}"
    )


def reference_run(p: Pipeline, events: dict[int, list[RawRecord]]) -> Reference:
    """The same partitions through a broker-less PartitionPipeline: what a run without faults chains."""
    s = p.settings
    registry = KeyRegistry.load(s.resolved_keys_file)
    signer = load_processor_signer(s, registry)
    config = PipelineConfig(
        limits=Limits(s.max_record_bytes, s.max_attributes),
        order_limits=OrderLimits(
            s.reorder_max_events_per_workflow,
            s.reorder_max_events_per_partition,
            s.reorder_max_bytes_per_partition,
        ),
        window_offsets=s.window_offsets,
        checkpoint_every_s=s.checkpoint_every_s,
    )
    ref = Reference(set(), set(), {})
    for partition, records in events.items():
        pl = PartitionPipeline(
            topic=s.topics.events,
            partition=partition,
            store=DictStore(),
            registry=registry,
            policy=p.policy,
            checkpoint_signer=signer,
            config=config,
        )
        out = Outputs()
        for i in range(0, len(records), 2000):
            res, seek = pl.process(records[i : i + 2000])
            assert seek is None, "a contiguous partition must never ask to seek"
            out.extend(res)
            pl.dirty_state()
        ref.chain |= {
            (
                e.workflow_id,
                e.chain_seq,
                bytes(e.entry_hash),
                e.event_id,
                e.source_partition,
                e.source_offset,
                e.log_index,
            )
            for e in out.entries
        }
        ref.violations |= {(v.violation_type.value, v.violation_id) for v in out.violations}
        ordered = sorted(out.entries, key=lambda e: e.log_index)
        assert [e.log_index for e in ordered] == list(range(len(ordered)))
        ref.leaves[partition] = [bytes(e.entry_hash) for e in ordered]
    return ref


def compare(state: EndState, ref: Reference) -> None:
    """ClickHouse holds exactly the fault-free run's entries (hash, position, offset, log index)."""
    missing, extra = ref.chain - state.chain, state.chain - ref.chain
    assert not missing and not extra, (
        f"expected the chains of a run without faults; {len(missing)} entries differ, e.g. "
        f"expected {sorted(missing)[:1]}, found {sorted(extra)[:1]}"
    )
    assert state.violation_ids == ref.violations, "expected the violations of a run without faults"


def event_offsets(events: dict[int, list[RawRecord]]) -> dict[int, set[int]]:
    """Offsets of event records (not seals) per partition."""
    return {
        p: {r.offset for r in recs if not (r.key or b"").startswith(b"seal:")}
        for p, recs in events.items()
    }


def check_offsets(chained: dict[int, set[int]], events: dict[int, set[int]]) -> None:
    """Every event record of every partition is chained, from exactly its own offset."""
    for part in sorted(set(chained) | set(events)):
        missing = sorted(events.get(part, set()) - chained.get(part, set()))
        extra = sorted(chained.get(part, set()) - events.get(part, set()))
        assert not missing and not extra, (
            f"partition {part}: expected every event offset chained once; not chained {missing[:10]} "
            f"({len(missing)}), chained but not an event offset {extra[:10]} ({len(extra)})"
        )


VERIFIER_MODULES = ("lineage.verify", "lineage_cli.evidence")


def clickhouse_verifier() -> Callable[..., Any] | None:
    """The project's ClickHouse verifier (a public verify function of a client and a database), if any."""
    for module_name in VERIFIER_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            if fn.__module__ != module.__name__ or name.startswith("_"):
                continue
            params = list(inspect.signature(fn).parameters)
            if "verify" in name and params[:2] == ["client", "database"]:
                return fn
    return None


def run_verifier(p: Pipeline) -> tuple[str, Any]:
    """Run the ClickHouse verifier if there is one and require it to pass; (its name, its result)."""
    fn = clickhouse_verifier()
    if fn is None:
        return "absent", None
    assert p.sink is not None
    params = inspect.signature(fn).parameters
    kwargs: dict[str, Any] = {}
    if "registry" in params:
        kwargs["registry"] = KeyRegistry.load(p.settings.resolved_keys_file)
    started = time.monotonic()
    with p.sink.sink.lock:
        result = fn(p.client, p.database, **kwargs)
    elapsed = time.monotonic() - started
    ok = getattr(result, "ok", result)
    assert ok is True, (
        f"{fn.__module__}.{fn.__name__} rejected the database: {getattr(result, 'failure', result)}"
    )
    return f"{fn.__module__}.{fn.__name__}", f"ok in {elapsed:.1f} s"


def report(tmp_path: Path, name: str, figures: dict[str, Any]) -> Path:
    """Print the figures (visible with ``pytest -s``) and write them as JSON under tmp_path."""
    path = tmp_path / "last_run.json"
    path.write_text(json.dumps(figures, indent=2, default=str))
    print(f"\n== {name} ==")
    for k, v in figures.items():
        print(f"  {k}: {v}")
    print(f"  figures written to {path}")
    return path

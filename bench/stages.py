"""Per-stage micro-benchmarks of the processor without a broker, and its memory under stress.

Run ``python -m bench.stages`` (``--help`` for the knobs). Inputs are built by the SDK's own
emitter code (``bench._offline``), so the bytes, seals and signatures are the real ones.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

from bench._offline import OfflineWorld
from lineage import codec
from lineage.ids import uuid7
from lineage.model import ChainEntry, EventKind, Runtime
from producers.scenario import MEASUREMENT
from sinks import rows
from stream_processors import chain, order
from stream_processors.authenticate import RECENT_DIGESTS, Authenticator
from stream_processors.checkpoint import PartitionLog
from stream_processors.decode import Decoder, Limits
from stream_processors.pipeline import PartitionPipeline
from stream_processors.policy_stage import PolicyStage, WorkflowPolicyState
from stream_processors.records import DecodedBatch, DecodedSeal, PendingEvent, RawRecord
from stream_processors.state import DictStore, EmitterState, WorkflowState

SEAL_SIZES = (1, 10, 100)
APP_BATCH = 2000  # stream.take_events(2000, ...) in stream_processors/app.py
AUTH_SHARE_TARGET = 0.10


@dataclass
class StageResult:
    """CPU time of one stage over a stream, per event."""

    name: str
    us_per_event: float
    note: str = ""

    @property
    def per_core(self) -> float:
        return 1e6 / self.us_per_event if self.us_per_event > 0 else float("inf")


def cpu_best(
    setup: Callable[[], Any], run: Callable[[Any], object], events: int, repeat: int
) -> float:
    """Least CPU µs per event of ``run(setup())`` over ``repeat`` runs (setup not timed)."""
    best = float("inf")
    for _ in range(repeat):
        state = setup()
        gc.collect()
        t0 = time.thread_time_ns()
        run(state)
        best = min(best, (time.thread_time_ns() - t0) / 1000 / max(events, 1))
    return best


def _is_event(records: list[RawRecord]) -> int:
    header = codec.load("execution_event").header
    return sum(1 for r in records if r.value is not None and r.value[: codec.HEADER_LEN] == header)


class Streams:
    """One realistic stream per seal size, built once."""

    def __init__(self, events: int) -> None:
        self.worlds: dict[int, OfflineWorld] = {}
        self.records: dict[int, list[RawRecord]] = {}
        for n in SEAL_SIZES:
            w = OfflineWorld(seal_every=n, batch_records=False)
            self.worlds[n] = w
            self.records[n] = w.workflows(events)


def _same(x: Any) -> Any:
    return x


def _decoded(records: list[RawRecord]) -> list[PendingEvent | DecodedSeal]:
    """Per-stage inputs use one record per event and per seal (framing 0), stage by stage."""
    d = Decoder(Limits())
    out: list[PendingEvent | DecodedSeal] = []
    for r in records:
        x = d.decode(r)
        assert not isinstance(x, DecodedBatch), "stage inputs are built with batch_records=False"
        out.append(x)
    return out


def _authenticate(
    world: OfflineWorld, decoded: list[PendingEvent | DecodedSeal]
) -> list[PendingEvent]:
    states: dict[str, EmitterState] = {}
    auth = Authenticator(
        world.log.topic,
        0,
        world.registry,
        world.policy.digest_hex,
        lambda e: states.setdefault(e, EmitterState()),
    )
    released: list[PendingEvent] = []
    for item in decoded:
        if isinstance(item, DecodedSeal):
            res = auth.on_seal(item)
            if res.violations:
                raise RuntimeError(f"benchmark input failed authentication: {res.violations[0]}")
            released += res.released
        else:
            auth.on_event(item)
    return released


def _order(released: list[PendingEvent]) -> list[PendingEvent]:
    wfs: dict[str, WorkflowState] = {}
    ready: list[PendingEvent] = []
    for p in released:
        wid = p.event.workflow_id
        wf = wfs.get(wid) or wfs.setdefault(wid, WorkflowState(wid))
        ready += order.offer(wf, p).ready
    return ready


def stage_table(events: int, repeat: int) -> tuple[list[StageResult], dict[str, Any]]:
    """Time every stage; returns the rows and figures for the summary."""
    s = Streams(events)
    w = s.worlds[100]
    recs = s.records[100]
    n_events = _is_event(recs)
    results: list[StageResult] = []
    extra: dict[str, Any] = {"events": n_events, "records": len(recs)}

    dec = Decoder(Limits())
    results.append(
        StageResult(
            "decode (framing, Avro, model, limits)",
            cpu_best(lambda: recs, lambda rs: [dec.decode(r) for r in rs], n_events, repeat),
            "per event, seals amortized",
        )
    )

    auth_us: dict[int, float] = {}
    for n in SEAL_SIZES:
        decoded = _decoded(s.records[n])
        ne = _is_event(s.records[n])
        auth_us[n] = cpu_best(
            partial(_same, decoded), partial(_authenticate, s.worlds[n]), ne, repeat
        )
        results.append(
            StageResult(
                f"authenticate, seal every N={n}",
                auth_us[n],
                "1 Ed25519 verify + Merkle root/paths per seal",
            )
        )

    released = _authenticate(w, _decoded(recs))
    if len(released) != n_events:
        raise RuntimeError(f"expected {n_events} authenticated events, found {len(released)}")
    results.append(
        StageResult(
            "order (causal, per workflow)", cpu_best(lambda: released, _order, n_events, repeat)
        )
    )
    ready = _order(released)

    def do_chain(items: list[PendingEvent]) -> None:
        wfs: dict[str, WorkflowState] = {}
        for p in items:
            wid = p.event.workflow_id
            wf = wfs.get(wid) or wfs.setdefault(wid, WorkflowState(wid))
            chain.link(wf, p.digest, w.policy.digest)

    results.append(
        StageResult(
            "chain (entry hash)",
            cpu_best(lambda: ready, do_chain, n_events, repeat),
            "incl. genesis hash per new workflow",
        )
    )

    def do_log(items: list[PendingEvent]) -> None:
        log = PartitionLog()
        for p in items:
            log.append(p.digest)

    results.append(
        StageResult(
            "partition log append (RFC 6962)", cpu_best(lambda: ready, do_log, n_events, repeat)
        )
    )

    stage = PolicyStage(w.policy, lambda _e: True)

    def do_policy(items: list[PendingEvent]) -> None:
        states: dict[str, WorkflowPolicyState] = {}
        for p in items:
            ps = states.get(p.event.workflow_id) or states.setdefault(
                p.event.workflow_id, WorkflowPolicyState()
            )
            stage.check(p.event, ps, authorizer_trusted=p.authorizer)

    results.append(
        StageResult("policy (stream rules)", cpu_best(lambda: ready, do_policy, n_events, repeat))
    )

    entries = _pipeline_entries(w, recs)
    entry_schema = codec.load("chain_entry")
    results.append(
        StageResult(
            "encode chain entry (Avro)",
            cpu_best(
                lambda: entries,
                lambda es: [entry_schema.encode(e.to_record(), check=False) for e in es],
                len(entries),
                repeat,
            ),
            "as Publisher.publish",
        )
    )
    encoded = [entry_schema.encode(e.to_record(), check=False) for e in entries]
    results.append(
        StageResult(
            "sink: decode chain entry (Avro)",
            cpu_best(
                lambda: encoded,
                lambda bs: [ChainEntry.from_record(entry_schema.decode_body(b)) for b in bs],
                len(entries),
                repeat,
            ),
            "ClickHouseSink._collect",
        )
    )
    results.append(
        StageResult(
            "sink: row (sinks.rows.entry_row)",
            cpu_best(
                lambda: entries, lambda es: [rows.entry_row(e) for e in es], len(entries), repeat
            ),
        )
    )

    for batch in (APP_BATCH, 100, 10):
        run = _whole_pipeline(w, recs, batch, repeat if batch > 10 else 1, n_events)
        results.append(
            StageResult(
                f"whole PartitionPipeline, batch {batch}",
                run.us,
                f"dirty_state() {run.state_us:.1f} µs; changelog {run.changelog_bytes_per_event:,.0f} B/event",
            )
        )
        extra[f"pipeline_batch{batch}_us"] = run.us
        extra[f"state_write_batch{batch}_us"] = run.state_us
        extra[f"changelog_bytes_per_event_batch{batch}"] = run.changelog_bytes_per_event
        extra[f"changelog_records_per_event_batch{batch}"] = run.changelog_records_per_event
    for n in (1, 10):
        run = _whole_pipeline(s.worlds[n], s.records[n], APP_BATCH, repeat, _is_event(s.records[n]))
        results.append(StageResult(f"whole PartitionPipeline, batch {APP_BATCH}, N={n}", run.us))
        extra[f"pipeline_n{n}_us"] = run.us
    extra["emitter_state"] = _emitter_state_cost()
    extra["auth_share_n100"] = auth_us[100] / extra[f"pipeline_batch{APP_BATCH}_us"]
    extra["auth_us"] = auth_us
    extra["state_bytes_per_workflow"] = _state_bytes_per_workflow(w, recs)
    return results, extra


def _new_pipeline(w: OfflineWorld, store: DictStore | None = None) -> PartitionPipeline:
    return PartitionPipeline(
        topic=w.log.topic,
        partition=0,
        store=store or DictStore(),
        registry=w.registry,
        policy=w.policy,
        checkpoint_signer=w.signers["lineage-processor"],
    )


def _pipeline_entries(w: OfflineWorld, recs: list[RawRecord]) -> list[ChainEntry]:
    out, _ = _new_pipeline(w).process(recs)
    return out.entries


@dataclass
class WholeRun:
    """The whole PartitionPipeline over a stream, in batches as the faust agent drives it."""

    us: float
    state_us: float
    changelog_records_per_event: float
    changelog_bytes_per_event: float


def _whole_pipeline(
    w: OfflineWorld, recs: list[RawRecord], batch: int, repeat: int, n_events: int
) -> WholeRun:
    """µs per event of process() + checkpoints + dirty_state() per batch, and what goes to the changelog."""
    best: WholeRun | None = None
    for _ in range(repeat):
        pl = _new_pipeline(w)
        gc.collect()
        state_ns, records, size = 0, 0, 0
        t0 = time.thread_time_ns()
        for i in range(0, len(recs), batch):
            _, seek = pl.process(recs[i : i + batch])
            if seek is not None:
                raise RuntimeError(f"unexpected offset gap at {seek}")
            pl.maybe_checkpoint()
            t1 = time.thread_time_ns()
            items = pl.dirty_state()
            state_ns += time.thread_time_ns() - t1
            records += len(items)
            size += sum(len(k) + len(v) for k, v in items)
        total = (time.thread_time_ns() - t0) / 1000 / n_events
        if best is None or total < best.us:
            best = WholeRun(total, state_ns / 1000 / n_events, records / n_events, size / n_events)
    assert best is not None
    return best


def _emitter_state_cost() -> dict[str, float]:
    """EmitterState.to_bytes once its recent-digest window is full (every dirty emitter, every batch)."""
    st = EmitterState(expected_seq=10_000, recent={i: bytes(32) for i in range(RECENT_DIGESTS)})
    n = 50
    t0 = time.thread_time_ns()
    for _ in range(n):
        data = st.to_bytes()
    return {"us_per_call": (time.thread_time_ns() - t0) / 1000 / n, "bytes": len(data)}


def _state_bytes_per_workflow(w: OfflineWorld, recs: list[RawRecord]) -> float:
    store = DictStore()
    pl = _new_pipeline(w, store)
    pl.process(recs)
    pl.dirty_state()
    wf_keys = [k for k in store.data if k.startswith("0|w|")]
    return sum(len(store.data[k]) for k in wf_keys) / max(len(wf_keys), 1)


# -- memory ----------------------------------------------------------------


def rss_mb() -> float:
    return float(psutil.Process().memory_info().rss) / 2**20


def store_mb(store: DictStore) -> float:
    return sum(len(k) + len(v) for k, v in store.data.items()) / 2**20


def memory_orphans(
    total: int, workflows: int, console: Console, batch: int = APP_BATCH
) -> list[dict[str, Any]]:
    """Events whose parents never arrive: RSS must flatten once the reorder window is full."""
    w = OfflineWorld(seal_every=100)
    store = DictStore()
    pl = _new_pipeline(w, store)
    em = w.emitters.tools
    wids = [f"wf-orphan-{i:05d}" for i in range(workflows)]
    points: list[dict[str, Any]] = []
    report_every = max(total // 10, batch)
    done, orphaned, t0 = 0, 0, time.monotonic()
    gc.collect()
    base = rss_mb()
    while done < total:
        for i in range(batch):
            em.emit(
                workflow_id=wids[(done + i) % workflows],
                kind=EventKind.RESOURCE_ACCESS,
                principal="agent:orchestrator",
                agent_id="tool-runner",
                action="tool.call:search",
                resource="web:search",
                parent_event_id=uuid7(),
                attributes={"note": "parent never sent"},
            )
        em.flush(0)
        out, _ = pl.process(w.log.take())
        pl.dirty_state()
        orphaned += sum(1 for v in out.violations if v.violation_type.value == "ORPHAN_EVENT")
        done += batch
        if done % report_every < batch or done >= total:
            gc.collect()
            point = {
                "events": done,
                "rss_mb": round(rss_mb(), 1),
                "rss_growth_mb": round(rss_mb() - base, 1),
                "waiting": pl.meta.counters.get("waiting", 0),
                "orphaned": orphaned,
                "store_mb": round(store_mb(store), 1),
                "events_per_s": round(done / (time.monotonic() - t0)),
            }
            points.append(point)
            console.print(f"  orphans: {json.dumps(point)}")
    return points


def memory_active(workflows: int, console: Console, chunk: int = 1000) -> dict[str, Any]:
    """``workflows`` workflows left open (started, attested, authorized, executing): RSS and state size."""
    w = OfflineWorld(seal_every=100)
    store = DictStore()
    pl = _new_pipeline(w, store)
    orch, agent = w.emitters.orchestrator, "agent:orchestrator"
    runtime = Runtime(
        host="node-1",
        image_digest="sha256:" + "cd" * 32,
        attestation_type="tpm2-quote",
        measurement=MEASUREMENT,
    )
    gc.collect()
    base = rss_mb()
    opened, events, t0 = 0, 0, time.monotonic()
    points: list[dict[str, Any]] = []
    while opened < workflows:
        for _ in range(min(chunk, workflows - opened)):
            wid = f"wf-{uuid7()}"
            start = orch.emit(
                workflow_id=wid,
                kind=EventKind.WORKFLOW_STARTED,
                principal=agent,
                agent_id=agent,
                action="workflow.start",
                model_id="gpt-4.1",
                model_version="2025-04-14",
            )
            orch.emit(
                workflow_id=wid,
                kind=EventKind.ATTESTATION,
                principal=agent,
                agent_id=agent,
                action="runtime.attest",
                parent_event_id=start.event_id,
                runtime=runtime,
            )
            grant = w.gate.authorize(
                workflow_id=wid,
                principal=agent,
                action="tool.call:search",
                resource="web:search",
                agent_id=agent,
                parent_event_id=start.event_id,
            )
            orch.emit(
                workflow_id=wid,
                kind=EventKind.EXECUTION_STARTED,
                principal=agent,
                agent_id=agent,
                action="tool.call:search",
                resource="web:search",
                parent_event_id=grant.event.event_id,
                authorization_id=grant.event.event_id,
                runtime=runtime,
            )
            opened += 1
        w.flush()
        recs = w.log.take()
        events += len(recs)
        for i in range(0, len(recs), APP_BATCH):
            pl.process(recs[i : i + APP_BATCH])
            pl.dirty_state()
        del recs
        if opened % max(workflows // 5, chunk) < chunk or opened >= workflows:
            gc.collect()
            point = {
                "active_workflows": opened,
                "rss_mb": round(rss_mb(), 1),
                "rss_growth_mb": round(rss_mb() - base, 1),
                "store_mb": round(store_mb(store), 1),
                "cached_workflows": len(pl.workflows),
                "elapsed_s": round(time.monotonic() - t0, 1),
            }
            points.append(point)
            console.print(f"  active: {json.dumps(point)}")
    return {
        "workflows": workflows,
        "records": events,
        "baseline_rss_mb": round(base, 1),
        "points": points,
    }


# -- report ----------------------------------------------------------------


def print_stages(results: list[StageResult], extra: dict[str, Any], console: Console) -> None:
    t = Table(
        title=f"per-stage cost, {extra['events']:,} events of the scenario mix, one core (CPU time, best run)"
    )
    t.add_column("stage")
    t.add_column("µs / event", justify="right")
    t.add_column("events/s per core", justify="right")
    t.add_column("note")
    for r in results:
        t.add_row(r.name, f"{r.us_per_event:.1f}", f"{r.per_core:,.0f}", r.note)
    console.print(t)
    share = extra["auth_share_n100"]
    verdict = "[green]met[/]" if share < AUTH_SHARE_TARGET else "[red]missed[/]"
    console.print(
        f"authentication share of per-event processing at N=100: {share:.1%} "
        f"(target < {AUTH_SHARE_TARGET:.0%}: {verdict})"
    )
    es = extra["emitter_state"]
    console.print(
        f"EmitterState.to_bytes() with its {RECENT_DIGESTS} recent digests: {es['us_per_call']:,.0f} µs and "
        f"{es['bytes']:,} bytes, for every emitter touched by a batch (stream_processors/state.py)"
    )
    console.print(
        f"workflow state kept per completed workflow: {extra['state_bytes_per_workflow']:,.0f} bytes "
        "(never deleted: the table grows with every workflow ever seen)"
    )


def _memory_child(which: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one memory check in a fresh interpreter, so earlier allocations do not hide growth."""
    cmd = [
        sys.executable,
        "-m",
        "bench.stages",
        "--memory-check",
        which,
        "--orphans",
        str(args.orphans),
        "--orphan-workflows",
        str(args.orphan_workflows),
        "--active-workflows",
        str(args.active_workflows),
    ]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, check=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _run_memory_check(which: str, args: argparse.Namespace) -> None:
    """Child side: load what a processor worker loads, then measure one check; JSON on stdout."""
    import stream_processors.app  # noqa: F401 - faust, aiokafka, confluent-kafka: the worker's baseline

    console = Console(stderr=True)
    if which == "orphans":
        result: dict[str, Any] = {
            "points": memory_orphans(args.orphans, args.orphan_workflows, console)
        }
    else:
        result = memory_active(args.active_workflows, console)
    print(json.dumps(result))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__)
    ap.add_argument(
        "--events", type=int, default=20_000, help="events per input stream (default 20000)"
    )
    ap.add_argument("--repeat", type=int, default=3, help="runs per stage; the best is reported")
    ap.add_argument(
        "--orphans",
        type=int,
        default=200_000,
        help="events in the never-arriving-parents memory check (0 = skip)",
    )
    ap.add_argument(
        "--orphan-workflows", type=int, default=2000, help="workflows the orphans are spread over"
    )
    ap.add_argument(
        "--active-workflows",
        type=int,
        default=100_000,
        help="open workflows in the active-workflows memory check (0 = skip)",
    )
    ap.add_argument("--no-stages", action="store_true", help="only the memory checks")
    ap.add_argument("--memory-check", choices=("orphans", "active"), help=argparse.SUPPRESS)
    ap.add_argument(
        "--json", action="store_true", help="also print one JSON object with every figure"
    )
    args = ap.parse_args(argv)
    if args.memory_check:
        _run_memory_check(args.memory_check, args)
        return
    console = Console(stderr=args.json)
    doc: dict[str, Any] = {}
    if not args.no_stages:
        console.print("[bold]building inputs with the SDK's emitter code…[/]")
        results, extra = stage_table(args.events, args.repeat)
        print_stages(results, extra, console)
        doc["stages"] = {
            r.name: {
                "us_per_event": round(r.us_per_event, 2),
                "events_per_s_per_core": round(r.per_core),
            }
            for r in results
        }
        doc["auth_share_n100"] = round(extra["auth_share_n100"], 4)
        doc["state_bytes_per_workflow"] = round(extra["state_bytes_per_workflow"])
        doc["details"] = extra
    if args.orphans:
        console.print(
            f"[bold]memory: {args.orphans:,} events whose parents never arrive, over "
            f"{args.orphan_workflows:,} workflows (fresh process with the worker's imports)[/]"
        )
        doc["memory_orphans"] = _memory_child("orphans", args)["points"]
    if args.active_workflows:
        console.print(
            f"[bold]memory: {args.active_workflows:,} active workflows "
            "(fresh process with the worker's imports)[/]"
        )
        doc["memory_active"] = _memory_child("active", args)
    if args.json:
        print(json.dumps(doc))


if __name__ == "__main__":
    main()

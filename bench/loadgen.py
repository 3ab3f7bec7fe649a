"""Load generator subprocess of ``lineage bench``: the scenario through the real SDK, or a raw replay.

Talks to the bench over pipes: JSON lines on stdout (``ready``, then ``done`` with its figures);
on stdin, ``visible N`` lines (rows queryable so far, for the closed-loop mode) and ``stop``.
Running in its own process keeps the emitters' CPU apart from the pipeline's.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench._offline import OfflineWorld
from lineage.config import Settings
from lineage.keys import Role, Signer
from lineage.policy import PolicySet
from producers.emitter import Emitter
from producers.gate import Gate
from producers.scenario import MISBEHAVIOURS, Emitters, Scenario
from stream_processors.records import RawRecord

PRODUCER_CONFIG: dict[str, Any] = {  # producers.Emitter's settings, for the raw ceiling
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    "queue.buffering.max.messages": 100_000,
    "message.timeout.ms": 120_000,
}


def say(**doc: Any) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


class Control:
    """What the bench says on stdin: how many rows are queryable, and when to stop."""

    def __init__(self) -> None:
        self.visible = 0
        self.stop = threading.Event()
        threading.Thread(target=self._read, name="control", daemon=True).start()

    def _read(self) -> None:
        for line in sys.stdin:
            parts = line.split()
            if parts[:1] == ["visible"] and len(parts) == 2:
                self.visible = int(parts[1])
            elif parts[:1] == ["stop"]:
                break
        self.stop.set()


def pick_misbehaviour(rng: random.Random, share: float, counter: Counter[str]) -> str | None:
    """Each workflow misbehaves with probability ``share``, cycling through every kind."""
    if rng.random() >= share:
        return None
    kind = MISBEHAVIOURS[sum(counter.values()) % len(MISBEHAVIOURS)]
    counter[kind] += 1
    return kind


def run_scenario(args: argparse.Namespace) -> None:
    from infra.demo import demo_signers

    settings = Settings(data_dir=Path(args.data_dir))
    signers = demo_signers(settings)
    policy = PolicySet.load(settings.resolved_policy_file)
    rogue, _ = Signer.generate_ephemeral("tool-runner", Role.EMITTER)  # not in the registry
    common: dict[str, Any] = {
        "bootstrap": args.bootstrap,
        "topic": args.topic,
        "seal_every": args.seal_every,
        "seal_ms": args.seal_ms,
    }
    orch = Emitter(signer=signers["orchestrator"], **common)
    tools = Emitter(signer=signers["tool-runner"], **common)
    subs = Emitter(signer=signers["subagents"], **common)
    forged = Emitter(signer=rogue, **common)
    trusted = (orch, tools, subs)
    gate = Gate(orch, policy, confirm_timeout_s=10.0 if args.confirm else None)
    scenario = Scenario(Emitters(orch, tools, subs, forged), gate, seed=args.seed)
    rng = random.Random(args.seed + 1)
    injected: Counter[str] = Counter()
    control = Control()
    say(event="ready", t=time.time())
    t0 = time.time()
    deadline = t0 + args.duration
    workflows = 0
    while not control.stop.is_set():
        now = time.time()
        if now >= deadline or (args.max_workflows and workflows >= args.max_workflows):
            break
        sent = sum(e.emitted for e in trusted)
        if (args.rate and sent >= args.rate * (now - t0)) or (
            args.max_in_flight and sent - control.visible >= args.max_in_flight
        ):
            time.sleep(0.002)
            continue
        scenario.workflow(args.workflow_events, pick_misbehaviour(rng, args.violations, injected))
        workflows += 1
    t_end = time.time()
    reports = [e.close(60) for e in (*trusted, forged)]
    say(
        event="done",
        start=t0,
        end=t_end,
        flushed=time.time(),
        workflows=workflows,
        trusted=sum(e.emitted for e in trusted),
        forged=forged.emitted,
        undelivered=sum(r.undelivered for r in reports),
        failed=sum(r.failed for r in reports),
        injected=dict(injected),
    )
    control.stop.wait(60)  # stay alive until the bench has read this process's figures


def ceiling_pool(args: argparse.Namespace) -> tuple[list[RawRecord], float]:
    """The scenario's event mix, sealed and framed as the SDK sends it (sealed-batch records by
    default), as exact bytes; returns the records and the events per record."""
    w = OfflineWorld(seal_every=args.seal_every, partitions=args.partitions, topic=args.topic)
    rng = random.Random(args.seed)
    injected: Counter[str] = Counter()
    while sum(e.emitted for e in w.all_emitters) < args.pool:  # events, whatever the framing
        w.scenario.workflow(args.workflow_events, pick_misbehaviour(rng, args.violations, injected))
    w.flush()
    records = w.log.take()
    events = sum(e.emitted for e in w.all_emitters)
    return records, events / len(records)


def run_ceiling(args: argparse.Namespace) -> None:
    from confluent_kafka import Producer

    records, event_share = ceiling_pool(args)
    producer = Producer({"bootstrap.servers": args.bootstrap, **PRODUCER_CONFIG})
    delivered = [0, 0]

    def on_delivery(err: Any, msg: Any) -> None:
        delivered[0 if err is None else 1] += 1

    control = Control()
    say(event="ready", t=time.time(), records=len(records))
    t0 = time.time()
    deadline = t0 + args.duration
    produced = 0
    produce = producer.produce
    while not control.stop.is_set() and time.time() < deadline:
        i = produced % len(records)
        for r in records[i : i + 1000]:
            while True:
                try:
                    produce(
                        args.topic,
                        value=r.value,
                        key=r.key,
                        partition=r.partition,
                        on_delivery=on_delivery,
                    )
                    break
                except BufferError:
                    producer.poll(0.01)
            produced += 1
        producer.poll(0)
    t_end = time.time()
    left = producer.flush(60)
    say(
        event="done",
        start=t0,
        end=t_end,
        flushed=time.time(),
        records=produced,
        event_share=event_share,
        delivered=delivered[0],
        failed=delivered[1],
        undelivered=left,
    )
    control.stop.wait(60)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    ap.add_argument("mode", choices=("scenario", "ceiling"))
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--data-dir", default=".lineage", help="where the keys are (scenario mode)")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument(
        "--rate", type=float, default=0.0, help="trusted events/s; 0 = as fast as allowed"
    )
    ap.add_argument(
        "--max-in-flight",
        type=int,
        default=0,
        help="closed loop: stay at most this many events ahead of 'visible N' (0 = open loop)",
    )
    ap.add_argument(
        "--violations", type=float, default=0.02, help="share of workflows that misbehave"
    )
    ap.add_argument("--workflow-events", type=int, default=25)
    ap.add_argument("--max-workflows", type=int, default=0)
    ap.add_argument("--seal-every", type=int, default=100)
    ap.add_argument("--seal-ms", type=int, default=200)
    ap.add_argument(
        "--confirm", action="store_true", help="the gate waits for the broker on every decision"
    )
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--partitions", type=int, default=4, help="ceiling mode: partitions of the topic"
    )
    ap.add_argument(
        "--pool", type=int, default=20_000, help="ceiling mode: events generated and replayed"
    )
    args = ap.parse_args(argv)
    if args.mode == "scenario":
        run_scenario(args)
    else:
        run_ceiling(args)


if __name__ == "__main__":
    main()

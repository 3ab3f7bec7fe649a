"""The processor's memory per workflow ever seen, without a broker: does state track open
workflows or history?

Runs ``PartitionPipeline`` over ``TableStore`` (a plain dict as the faust table) on the bench's
scenario in rounds of ``--events`` events, with live-like small seals, and prints after each round
how much traced Python memory (tracemalloc: the table, the caches, everything) and how many table
bytes were added per workflow seen in that round. Workflows complete, so flat state means these
figures stay at what a completed workflow's chain head costs.

``python -m bench.state_memory`` (about a minute).
"""

from __future__ import annotations

import argparse
import gc
import json
import tracemalloc

from bench._offline import OfflineWorld
from bench.processor_cpu import FakeTable
from stream_processors.pipeline import PartitionPipeline, PipelineConfig
from stream_processors.state import TableStore


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=20_000, help="events per round")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seal-every", type=int, default=5)
    ap.add_argument("--records-per-batch", type=int, default=8)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    world = OfflineWorld(seal_every=args.seal_every, partitions=1, topic="bench.events")
    rounds = [world.workflows(args.events) for _ in range(args.rounds)]
    table = FakeTable()
    pl = PartitionPipeline(
        topic=world.log.topic,
        partition=0,
        store=TableStore(table, 0),
        registry=world.registry,
        policy=world.policy,
        checkpoint_signer=world.signers["lineage-processor"],
        config=PipelineConfig(),
    )

    def workflows_seen() -> int:
        return len({k.split(b"|")[2] for k in table.data if k.startswith(b"0|w|")})

    tracemalloc.start()
    before = (tracemalloc.get_traced_memory()[0], 0, 0)
    results = []
    for i, records in enumerate(rounds):
        for j in range(0, len(records), args.records_per_batch):
            pl.process(records[j : j + args.records_per_batch])
            pl.dirty_state()
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0]
        table_bytes = sum(len(k) + len(v) for k, v in table.data.items())
        seen = workflows_seen()
        new = seen - before[2]
        results.append(
            {
                "round": i + 1,
                "workflows_seen": seen,
                "cached_workflows": len(pl.workflows),
                "traced_bytes_per_new_workflow": round((traced - before[0]) / new),
                "table_bytes_per_new_workflow": round((table_bytes - before[1]) / new),
            }
        )
        before = (traced, table_bytes, seen)
    if args.json:
        print(json.dumps(results))
        return
    print("round  workflows  cached  traced B / new workflow  table B / new workflow")
    for r in results:
        print(
            f"{r['round']:5}  {r['workflows_seen']:9,}  {r['cached_workflows']:6,}  "
            f"{r['traced_bytes_per_new_workflow']:23,}  {r['table_bytes_per_new_workflow']:22,}"
        )
    print("(round 1 includes the fixed costs: keys, policy, logs)")


if __name__ == "__main__":
    main()

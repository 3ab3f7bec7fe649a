"""Two workers in one group: kill -9 one mid-stream, the other takes over from the changelog; it comes back."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.faults._harness import (
    Workload,
    WorkloadThread,
    check_end_state,
    check_offsets,
    compare,
    diagnose,
    event_offsets,
    read_partitions,
    reference_run,
    report,
    run_verifier,
    wait,
)
from tests.integration.conftest import Pipeline, wait_for

# ~80 s on an idle box; under load the takeover, catch-up and verifier each take several times
# longer. The waits below fail first, with a diagnosis.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
HOLD_AFTER = 200  # events the stream may run past a fault's point before it waits for the test

RESUMED = re.compile(r"partition (\d+): resuming at offset (\d+)")
ASSIGNED = "Setting newly assigned partitions"
GAP = "offset gap, seeking back"
ROLLED_BACK = "state records of a batch that was never committed"
DROPPED = "records fetched before it was revoked"


class WorkerLog:
    """One worker's log file, read from where it stood when the worker (re)started."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.start = path.stat().st_size if path.exists() else 0

    def text(self) -> str:
        return self.path.read_text()[self.start :] if self.path.exists() else ""

    def owned(self) -> dict[int, int]:
        """Partitions resumed since the worker's latest assignment, with the offset resumed at."""
        text = self.text()
        latest = text[text.rfind(ASSIGNED) :] if ASSIGNED in text else ""
        return {int(a): int(b) for a, b in RESUMED.findall(latest)}


def test_worker_killed_and_back(pipeline: Pipeline, tmp_path: Path) -> None:
    p = pipeline
    logs = {w: p.settings.data_dir / f"processor-{w}.log" for w in ("w0", "w1")}
    survivor = p.start_worker("w0")
    w0 = WorkerLog(logs["w0"])
    victim = p.start_worker("w1")
    w1 = WorkerLog(logs["w1"])
    p.start_sink()
    wl = WorkloadThread(p, Workload(workflows=400, execs=16), rate=350)
    total = wl.workload.total
    kill_at, restart_at = int(total * 0.25), int(total * 0.55)
    wl.hold_at(kill_at + HOLD_AFTER)  # however slow the waits, each fault comes while events flow
    wl.start()

    wait(
        lambda: bool(w0.owned() and w1.owned()) and len(w0.owned()) + len(w1.owned()) == 4,
        60,
        "both workers processing their share",
        lambda: f"w0: {w0.owned()}, w1: {w1.owned()}",
    )
    wl.wait_emitted(kill_at, 90)
    wl.hold_at(restart_at + HOLD_AFTER)
    assert wl.emitted < total, "the kill must happen while events flow"
    moved = set(w1.owned())
    kept = set(w0.owned())
    emitted_at_kill = wl.emitted
    victim.kill()  # SIGKILL: no LeaveGroup, the broker notices only when the session times out
    victim.wait(10)
    killed_at = time.monotonic()
    wait(
        lambda: set(w0.owned()) == {0, 1, 2, 3},
        60,
        f"w0 to take over w1's partitions {sorted(moved)}",
        lambda: w0.text()[-2000:],
    )
    takeover = time.monotonic() - killed_at
    taken = w0.owned()
    assert all(taken[q] > 0 for q in moved), (
        f"expected w1's partitions {sorted(moved)} resumed from changelog state, found offsets {taken}"
    )

    wl.wait_emitted(restart_at, 90)
    wl.hold_at(None)
    assert wl.emitted < total, "the restart must happen while events flow"
    emitted_at_restart = wl.emitted
    w1 = WorkerLog(logs["w1"])
    p.start_worker("w1")
    restarted_at = time.monotonic()
    wait(
        lambda: (
            bool(w1.owned())
            and len(w0.owned()) + len(w1.owned()) == 4
            and not set(w0.owned()) & set(w1.owned())
        ),
        60,
        "partitions to move back to w1",
        lambda: f"w0: {w0.owned()}, w1: {w1.owned()}",
    )
    moved_back = time.monotonic() - restarted_at
    back = w1.owned()
    assert all(off > 0 for off in back.values()), (
        f"expected w1 to resume from changelog state, found {back}"
    )

    wl.join(120)
    wait(
        lambda: p.count("lineage_entries") >= wl.emitted,
        90,
        f"{wl.emitted} entries in ClickHouse",
        lambda: diagnose(p, wl),
    )
    wait_for(lambda: p.count("violations") >= wl.workload.injected, 30, "the injected violations")
    assert survivor.poll() is None, f"w0 exited: {p.worker_log('w0')}"
    assert p.sink is not None and p.sink.error is None, (
        f"the sink failed: {p.sink and p.sink.error!r}"
    )

    state = check_end_state(p, wl)
    events = read_partitions(
        p.bootstrap, p.settings.topics.events, p.settings.partitions, wl.per_partition()
    )
    check_offsets(state.chained_offsets, event_offsets(events))
    ref = reference_run(p, events)
    compare(state, ref)
    checkpoints = ref.check_checkpoints(p)
    verifier, result = run_verifier(p)
    gaps = {w: path.read_text().count(GAP) for w, path in logs.items()}
    report(
        tmp_path,
        "rebalance",
        {
            "faults_injected": "kill -9 of w1 (of 2 workers), then w1 restarted",
            "events_emitted": wl.emitted,
            "stream_held_for_the_test_s": round(wl.held_s, 2),
            "events_in_clickhouse": state.entries,
            "duplicates": state.duplicates,
            "violations": dict(state.violations),
            "chains_identical_to_fault_free_run": True,
            "every_event_offset_chained": True,
            "checkpoints_consistent_with_fault_free_log": checkpoints,
            "clickhouse_verifier": f"{verifier}: {result}",
            "killed_at_emitted": emitted_at_kill,
            "partitions_w0_kept": sorted(kept),
            "partitions_taken_over_from_w1": {q: taken[q] for q in sorted(moved)},
            "takeover_s": round(takeover, 2),
            "restarted_at_emitted": emitted_at_restart,
            "partitions_moved_back_to_w1": back,
            "move_back_s": round(moved_back, 2),
            "offset_gap_seeks_per_worker": gaps,
            "uncommitted_state_batches_rolled_back": sum(
                path.read_text().count(ROLLED_BACK) for path in logs.values()
            ),
            "records_dropped_after_revocation": sum(
                path.read_text().count(DROPPED) for path in logs.values()
            ),
        },
    )

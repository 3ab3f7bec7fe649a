"""ClickHouse unavailable to the sink for a while: nothing lost, nothing doubled, lag back to 0.

chDB runs inside this process, so it cannot be stopped the way a server can; the honest way to
take it away from the sink is a client wrapper whose inserts fail for the outage. The first failure
is the nasty kind: the insert is applied and then the error is raised (the acknowledgement was lost),
so the sink's retry delivers the same batch a second time.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from infra.demo import SinkThread
from tests.faults._harness import (
    Workload,
    WorkloadThread,
    check_end_state,
    report,
    wait_assigned,
)
from tests.integration.conftest import Pipeline, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

OUTAGE_S = 5.0
DOWN = "connection refused (ClickHouse down, injected by the test)"


class FlakyClient:
    """A clickhouse-connect client whose inserts (rows or forwarded bytes) fail while ``down``."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.down = threading.Event()
        self.applied_then_failed = 0
        self.refused = 0

    def insert(self, *args: Any, **kwargs: Any) -> Any:
        if self.down.is_set():
            if self.applied_then_failed == 0:
                self.client.insert(*args, **kwargs)
                self.applied_then_failed += 1
                raise ConnectionError(f"read timed out after the insert was sent; {DOWN}")
            self.refused += 1
            raise ConnectionError(DOWN)
        return self.client.insert(*args, **kwargs)

    def raw_insert(self, *args: Any, **kwargs: Any) -> Any:
        if self.down.is_set():
            if self.applied_then_failed == 0:
                self.client.raw_insert(*args, **kwargs)
                self.applied_then_failed += 1
                raise ConnectionError(f"read timed out after the insert was sent; {DOWN}")
            self.refused += 1
            raise ConnectionError(DOWN)
        return self.client.raw_insert(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def test_clickhouse_outage(pipeline: Pipeline, tmp_path: Path) -> None:
    p = pipeline
    p.start_worker()
    wait_assigned(p)
    flaky = FlakyClient(p.client)
    messages: list[str] = []
    sink = SinkThread(p.settings, p.bootstrap, flaky, on_outage=messages.append)
    p.sink = sink
    wl = WorkloadThread(p, Workload(workflows=120, execs=10), rate=300).start()
    total = wl.workload.total

    wl.wait_emitted(total // 5, 60)
    wait_for(lambda: p.count("lineage_entries") > 0, 60, "the sink to insert before the outage")
    flaky.down.set()
    down_at = time.monotonic()
    wait_for(lambda: flaky.refused > 0, 30, "the sink to hit the outage")
    lag_during = 0
    while time.monotonic() - down_at < OUTAGE_S:
        lag_during = max(lag_during, sink.sink.lag())
        time.sleep(
            0.5
        )  # the outage lasts a fixed time: that is the fault, not a wait for a condition
    rows_during = p.count("lineage_entries")
    emitted_during = wl.emitted
    flaky.down.clear()
    up_at = time.monotonic()
    assert lag_during > 0, "expected the sink's lag to show the backlog during the outage"
    assert emitted_during < total, "the outage must happen while events flow"

    wl.join(120)
    wait_for(
        lambda: p.count("lineage_entries") >= wl.emitted,
        90,
        f"{wl.emitted} entries after the outage",
    )
    caught_up = time.monotonic() - up_at
    wait_for(lambda: sink.sink.lag() == 0, 60, "the sink's lag to return to 0")
    lag_zero = time.monotonic() - up_at
    assert sink.thread.is_alive() and sink.error is None, f"the sink thread died: {sink.error!r}"

    state = check_end_state(p, wl)
    unavailable = [m for m in messages if m.startswith("ClickHouse unavailable")]
    back = [m for m in messages if m.startswith("ClickHouse is back after")]
    assert unavailable and all(DOWN in m for m in unavailable), (
        f"expected clear outage messages, found {messages[:3]}"
    )
    assert back, f"expected a message when ClickHouse came back, found {messages[-3:]}"
    assert sink.sink.stats.retries == len(unavailable)
    report(
        tmp_path,
        "sink outage",
        {
            "fault_injected": f"inserts fail for {OUTAGE_S:.0f} s (first one applied, then its ack lost)",
            "events_emitted": wl.emitted,
            "events_in_clickhouse": state.entries,
            "duplicates": state.duplicates,
            "rows_before_final": state.raw_rows,
            "violations": dict(state.violations),
            "insert_attempts_refused": flaky.refused,
            "inserts_applied_then_failed": flaky.applied_then_failed,
            "sink_retries": sink.sink.stats.retries,
            "sink_outage_s": round(sink.sink.stats.outage_s, 2),
            "max_lag_during_outage": lag_during,
            "entries_in_clickhouse_when_it_came_back": rows_during,
            "all_entries_in_clickhouse_after_s": round(caught_up, 2),
            "lag_zero_after_s": round(lag_zero, 2),
            "first_outage_message": unavailable[0],
            "last_outage_message": back[-1],
            "sink_thread_alive": sink.thread.is_alive(),
        },
    )


def test_sink_stops_promptly_during_an_outage(pipeline: Pipeline) -> None:
    """close() during a long outage returns without committing: the batch is redelivered later."""
    import time

    from tests.integration.test_end_to_end import emit_workflows

    p = pipeline
    p.start_worker()
    flaky = FlakyClient(p.client)
    flaky.applied_then_failed = 1  # every insert is refused
    flaky.down.set()
    messages: list[str] = []
    sink = SinkThread(p.settings, p.bootstrap, flaky, on_outage=messages.append)
    emit_workflows(p, workflows=3, steps=2)
    wait_for(lambda: flaky.refused >= 2, 60, "the sink to hit the outage")
    started = time.monotonic()
    sink.close()
    assert time.monotonic() - started < 10, "close() must not wait for ClickHouse to come back"
    assert not sink.thread.is_alive()
    assert any("stays uncommitted" in m for m in messages), messages
    assert sink.sink.stats.batches == 0, "no batch may be committed while nothing was inserted"

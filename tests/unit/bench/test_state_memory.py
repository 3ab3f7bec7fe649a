"""bench.state_memory prints its figures per round (the cache eviction itself is tested in
tests/unit/stream_processors/test_state_deltas.py)."""

from __future__ import annotations

import json

import pytest

from bench.state_memory import main


def test_each_round_reports_memory_and_table_bytes_per_new_workflow(
    capsys: pytest.CaptureFixture[str],
) -> None:
    main(["--events", "600", "--rounds", "2", "--json"])
    rounds = json.loads(capsys.readouterr().out)
    assert [r["round"] for r in rounds] == [1, 2]
    assert rounds[1]["workflows_seen"] > rounds[0]["workflows_seen"] > 0
    assert all(r["table_bytes_per_new_workflow"] > 100 for r in rounds), rounds
    assert all(r["traced_bytes_per_new_workflow"] > 0 for r in rounds), rounds

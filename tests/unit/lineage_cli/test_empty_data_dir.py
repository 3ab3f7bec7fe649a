"""Every command run against a data directory that holds nothing yet: one clear line, no traceback.

A first-time user, or an auditor pointing a command at the wrong directory, meets this case
before any other; a traceback there reads as a crash. The commands run as the user runs them, in
child processes (chDB opens one data path per process, so they cannot run in the test process).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

COMMANDS = [
    (["witness", "init"], 2, "key registry", "pass --log-key"),
    (["witness", "key"], 2, "witness.json does not exist", "lineage witness init"),
    (["witness", "state"], 2, "witness.json does not exist", "lineage witness init"),
    (["keys", "list"], 2, "key registry", "does not exist"),
    (["keys", "revoke", "ed25519:abc", "--reason", "test"], 2, "key registry", "does not exist"),
    (["export", "--workflow", "w", "--out", "b.json"], 2, "key registry", "does not exist"),
    (["verify", "--clickhouse"], 2, "UNUSABLE_INPUT", "does not exist"),
    (["verify", "missing.json"], 2, "UNUSABLE_INPUT", "cannot read"),
    (["query", "SELECT count() FROM lineage_entries"], 1, "query failed", "does not exist"),
    (["openlineage"], 2, "cannot read the lineage tables", "does not exist"),
]
IDS = [" ".join(c[0][:2]) for c in COMMANDS]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every command at once, each in its own empty data dir; results by test id."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINEAGE_")}
    env["COLUMNS"] = "200"
    procs = {}
    for name, (args, *_) in zip(IDS, COMMANDS, strict=True):
        data = tmp_path_factory.mktemp("empty")
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", "lineage_cli", *args],
            cwd=data,
            env={**env, "LINEAGE_DATA_DIR": str(data)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    out = {}
    for name, proc in procs.items():
        stdout, _ = proc.communicate(timeout=120)
        out[name] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout)
    return out


@pytest.mark.parametrize(("args", "code", "says", "hint"), COMMANDS, ids=IDS)
def test_command_on_an_empty_data_dir_fails_with_one_clear_line(
    args: list[str],
    code: int,
    says: str,
    hint: str,
    runs: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    run = runs[" ".join(args[:2])]
    out = run.stdout
    assert "Traceback" not in out, out
    assert run.returncode == code, f"expected exit {code}, found {run.returncode}:\n{out}"
    flat = "".join(out.split())  # rich folds long paths mid-word
    for part in (says, hint):
        assert "".join(part.split()) in flat, f"expected {part!r} in:\n{out}"

"""Every command run against a data directory that holds nothing yet: one clear line, no traceback.

A first-time user, or an auditor pointing a command at the wrong directory, meets this case
before any other; a traceback there reads as a crash.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from lineage_cli.main import app

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
]


@pytest.mark.parametrize(
    ("args", "code", "says", "hint"), COMMANDS, ids=[" ".join(c[0][:2]) for c in COMMANDS]
)
def test_command_on_an_empty_data_dir_fails_with_one_clear_line(
    args: list[str],
    code: int,
    says: str,
    hint: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LINEAGE_DATA_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, args)
    out = result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"expected a clean exit, found {result.exception!r}\n{out}"
    )
    assert result.exit_code == code, f"expected exit {code}, found {result.exit_code}:\n{out}"
    assert "Traceback" not in out, out
    flat = "".join(out.split())  # rich folds long paths mid-word
    for part in (says, hint):
        assert "".join(part.split()) in flat, f"expected {part!r} in:\n{out}"

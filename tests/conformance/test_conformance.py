"""The CLI verifier over the conformance corpus: every case gives its expected verdict, exit code
and failure kind, as JSON and as a human report that carries no raw control character."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from lineage_cli.main import app
from tests.conformance import generate

HERE = Path(__file__).resolve().parent
EXPECTED = json.loads((HERE / "expected.json").read_text())
CASES = EXPECTED["cases"]
_RAW_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _args(case: dict[str, Any]) -> list[str]:
    args = ["verify", str(HERE / case["file"])]
    if case["registry"] is not None:
        args += ["--registry", str(HERE / case["registry"])]
    for key in case["checkpoint_keys"]:
        args += ["--checkpoint-key", key]
    if case["workflow"] is not None:
        args += ["--workflow", case["workflow"]]
    for key in case["witness_keys"]:
        args += ["--witness-key", key]
    if case["witnesses_required"] is not None:
        args += ["--witnesses-required", str(case["witnesses_required"])]
    return args


@pytest.fixture(autouse=True)
def _no_trust_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LINEAGE_TRUST_FILE", raising=False)


def test_corpus_layout() -> None:
    assert EXPECTED["format"] == "lineage-conformance/v1"
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names)) >= 85
    verdicts = {c["verdict"] for c in CASES}
    assert verdicts == {"VERIFIED", "CONSISTENT_BUT_UNTRUSTED", "FAILED", "UNUSABLE_INPUT"}
    for c in CASES:
        assert (HERE / c["file"]).is_file(), c["file"]
    kinds = {c["failure_kind"] for c in CASES}
    assert kinds >= {
        "PARTITION_BINDING",
        "FINDINGS_MISMATCH",
        "POLICY_DECISION_MISMATCH",
        "POLICY_SET_MISSING",
        "KEY_COMPROMISED",
        "WITNESS_COSIGNATURES",
        "KEY_EXPIRED",
    }


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_cli_json_verdict(case: dict[str, Any]) -> None:
    result = CliRunner().invoke(app, [*_args(case), "--json"])
    assert result.exit_code == case["exit_code"], result.output[-2000:]
    report = json.loads(result.output)
    assert report["verdict"] == case["verdict"]
    assert report["exit_code"] == case["exit_code"]
    failure = report["failure"]
    assert (failure or {}).get("kind") == case["failure_kind"], failure
    # claims are proven only when VERIFIED; under untrusted keys they are only consistent
    assert bool(report["claims"]) == (case["verdict"] == "VERIFIED"), report["claims"]
    untrusted = case["verdict"] == "CONSISTENT_BUT_UNTRUSTED"
    assert bool(report["consistent_claims"]) == untrusted, report["consistent_claims"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_cli_human_report_is_safe(case: dict[str, Any]) -> None:
    result = CliRunner().invoke(app, _args(case))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == case["exit_code"], result.output[-2000:]
    assert not _RAW_CONTROL.search(result.output), repr(result.output[:400])
    verdict = case["verdict"].replace("_", " ").replace("CONSISTENT BUT", "CONSISTENT BUT")
    assert result.output.startswith(verdict), result.output[:200]


def test_ansi_and_markup_are_shown_escaped() -> None:
    out = CliRunner().invoke(app, _args(_case("ansi-event-id"))).output
    assert "\x1b" not in out
    assert "\\x1b[2J\\x1b[H\\x1b[32mVERIFIED" in out.replace("\n", "")
    out = CliRunner().invoke(app, _args(_case("markup-event-id"))).output
    assert "[/x] [bold red]not markup[/]" in out
    out = CliRunner().invoke(app, _args(_case("markup-workflow-id"))).output
    assert "[/x]\\u202eDEIFIREV" in out


def test_a_forged_bundle_under_its_own_keys_proves_nothing() -> None:
    """Forged end to end with the forger's keys, no keys named: exit 3, and the report's claims
    are "consistent under the bundle's own keys (not trusted)", never "proven"."""
    case = _case("forged-own-keys-no-trust")
    result = CliRunner().invoke(app, [*_args(case), "--json"])
    report = json.loads(result.output)
    assert (result.exit_code, report["verdict"], report["ok"]) == (
        3,
        "CONSISTENT_BUT_UNTRUSTED",
        False,
    )
    assert report["claims"] == []
    assert report["consistent_claims"][0].startswith("workflow wf-0000: 6 events, byte for byte")
    assert report["trust"]["anchored"] is False
    out = CliRunner(env={"COLUMNS": "200"}).invoke(app, _args(case)).output
    lines = out.splitlines()
    heading = lines.index("consistent under the bundle's own keys (not trusted):")
    assert lines[heading + 1 : heading + 1 + len(report["consistent_claims"])] == [
        f"  {c}" for c in report["consistent_claims"]
    ]
    assert not [line for line in lines if line.startswith("proven:")], out
    assert "6 (consistent under the bundle's own keys, not trusted)" in out
    genuine = CliRunner(env={"COLUMNS": "200"}).invoke(app, _args(_case("genuine"))).output
    assert "proven: workflow " in genuine and "not trusted" not in genuine


def _case(name: str) -> dict[str, Any]:
    return next(c for c in CASES if c["name"] == name)


def test_generator_is_deterministic(tmp_path: Path) -> None:
    """Rebuilding the corpus writes the committed bytes again."""
    generate.write(tmp_path)
    for c in CASES:
        if c["file"].startswith("cases/"):
            assert (tmp_path / c["file"]).read_bytes() == (HERE / c["file"]).read_bytes(), c
    for key in (HERE / "keys").iterdir():
        assert (tmp_path / "keys" / key.name).read_bytes() == key.read_bytes(), key.name
    assert (tmp_path / "expected.json").read_bytes() == (HERE / "expected.json").read_bytes()

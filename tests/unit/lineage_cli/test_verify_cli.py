"""``lineage verify --json``: every unusable outcome, option errors included, is the JSON report,
and its ``source`` and ``trust`` name only what was actually given and read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from lineage_cli.main import app

CORPUS = Path(__file__).resolve().parents[2] / "conformance"
GENUINE = CORPUS / "cases" / "genuine.json"
REGISTRY = CORPUS / "keys" / "auditor-registry.json"


@pytest.fixture(autouse=True)
def _no_trust_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LINEAGE_TRUST_FILE", raising=False)


def _json(args: list[str]) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["verify", *args])
    assert result.exit_code == 2, result.output
    report: dict[str, Any] = json.loads(result.output)
    assert (report["verdict"], report["exit_code"], report["ok"]) == ("UNUSABLE_INPUT", 2, False)
    assert report["failure"]["kind"] == "UNUSABLE_INPUT"
    assert report["claims"] == report["consistent_claims"] == []
    return report


def test_jobs_below_one_is_a_json_report() -> None:
    report = _json([str(GENUINE), "--json", "--jobs", "0"])
    assert report["failure"]["message"] == "--jobs: expected at least 1 process, found 0"
    assert report["source"] == f"bundle {GENUINE}"
    human = CliRunner().invoke(app, ["verify", str(GENUINE), "--jobs", "-3"])
    assert human.exit_code == 2
    assert "--jobs: expected at least 1 process, found -3" in human.output


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--jobs", "x"], "Invalid value for '--jobs'"),
        (["--witnesses-required", "two"], "Invalid value for '--witnesses-required'"),
        (["--no-such-option"], "No such option: --no-such-option"),
        (["--witness-key"], "Option '--witness-key' requires an argument."),
    ],
)
def test_option_errors_found_by_the_parser_are_json_reports(
    options: list[str], message: str
) -> None:
    """Typer rejects these before the command runs; with --json the answer is still JSON."""
    report = _json([str(GENUINE), "--json", *options])
    assert report["failure"]["message"].startswith(message), report["failure"]
    assert report["source"] == "none"
    assert report["trust"]["anchored"] is False
    human = CliRunner().invoke(app, ["verify", str(GENUINE), *options])
    assert human.exit_code == 2
    assert "Error" in human.output and not human.output.lstrip().startswith("{")


@pytest.mark.parametrize(
    "args", [["--json"], [str(GENUINE), "--clickhouse", "--json"]], ids=["nothing", "both"]
)
def test_without_one_input_the_source_is_none(args: list[str]) -> None:
    report = _json(args)
    assert report["source"] == "none"
    assert report["failure"]["message"] == "give either a bundle FILE or --clickhouse"


def test_garbage_input_names_no_keys_it_did_not_read(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(b"\x00 not a bundle")
    report = _json([str(garbage), "--json"])
    assert report["source"] == f"bundle {garbage}"
    assert report["trust"] == {
        "seal_keys": "none (no keys were read: the input is unusable)",
        "checkpoint_keys": "none (no keys were read: the input is unusable)",
        "anchored": False,
        "witnesses": [],
    }
    report = _json([str(garbage), "--json", "--registry", str(REGISTRY)])
    assert report["trust"]["seal_keys"] == f"auditor registry {REGISTRY}"


def test_a_bundle_whose_keys_do_not_parse_names_no_keys(tmp_path: Path) -> None:
    """The embedded registry is rejected, so no key was read from the bundle either."""
    doc = json.loads(GENUINE.read_text())
    doc["keys"]["keys"][0]["comment"] = "not a registry field"
    path = tmp_path / "bad-keys.json"
    path.write_text(json.dumps(doc))
    report = _json([str(path), "--json"])
    assert "unknown field(s) 'comment'" in report["failure"]["message"]
    assert report["trust"]["seal_keys"] == "none (no keys were read: the input is unusable)"
    genuine = CliRunner().invoke(app, ["verify", str(GENUINE), "--json"])
    assert genuine.exit_code == 3
    assert json.loads(genuine.output)["trust"]["seal_keys"] == (
        "keys inside the bundle (information, not trust)"
    )


def test_clickhouse_that_cannot_be_opened_is_a_json_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINEAGE_CLICKHOUSE_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("LINEAGE_CLICKHOUSE_DATABASE", "audited")
    report = _json(
        ["--clickhouse", "--registry", str(REGISTRY), "--data-dir", str(tmp_path), "--json"]
    )
    assert report["source"] == "clickhouse audited"
    assert report["failure"]["message"].startswith("cannot open ClickHouse at http://127.0.0.1:1")

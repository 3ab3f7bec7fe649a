"""``lineage witness`` over real HTTP, and ``lineage verify FILE --witness-key`` exit codes and JSON."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lineage import merkle
from lineage import witness as w
from lineage.bundle import build_bundle, write_bundle
from lineage.witnessed import StoredCosignature, attach_cosignatures
from lineage_cli.main import app
from lineage_cli.witness import serve_in_thread
from sinks.witness_feeder import post_add_checkpoint
from tests.support.lineage_builder import Dataset, build_dataset

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def data() -> Dataset:
    return build_dataset(partitions=1)


def test_witness_over_http_and_verify_with_its_key(tmp_path: Path, data: Dataset) -> None:
    wdir = tmp_path / "w"
    runner = CliRunner()
    r = runner.invoke(
        app,
        [
            "witness",
            "init",
            "--witness-dir",
            str(wdir),
            "--name",
            "witness.test/cli",
            "--log-key",
            data.checkpoint_vkey,
        ],
    )
    assert r.exit_code == 0, r.output
    vkey = r.output.strip()
    assert vkey.startswith("witness.test/cli+")
    assert runner.invoke(app, ["witness", "key", "--witness-dir", str(wdir)]).output.strip() == vkey

    server = serve_in_thread(w.Witness(w.WitnessStore(wdir)))
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        cps = data.partition_checkpoints(0)
        hashes = [merkle.leaf_hash(e.entry_hash) for e in data.partition_entries(0)]
        answer = post_add_checkpoint(url, w.format_add_checkpoint(0, [], cps[-1].note))
        assert answer.status == 200
        cosig = StoredCosignature(0, cps[-1].tree_size, cps[-1].root_hash, answer.body.decode())
        # A rollback over HTTP: 409 with the cosigned size, and a refusal on file.
        proof = merkle.consistency_proof_from_hashes(0, hashes[: cps[0].tree_size])
        answer = post_add_checkpoint(url, w.format_add_checkpoint(0, proof, cps[0].note))
        assert (answer.status, answer.body, answer.content_type) == (
            409,
            f"{cps[-1].tree_size}\n".encode(),
            "text/x.tlog.size",
        )
        assert post_add_checkpoint(url, b"old x\n\n").status == 400
        with urllib.request.urlopen(url + "/checkpoints", timeout=10) as resp:
            served = json.loads(resp.read())
        assert served["witness"] == vkey and len(served["checkpoints"]) == 1
    finally:
        server.shutdown()
        server.server_close()

    r = runner.invoke(app, ["witness", "refusals", "--witness-dir", str(wdir)])
    assert r.exit_code == 0 and r.output.startswith("ROLLBACK lineage.local/lineage.events/0 (409)")
    r = runner.invoke(
        app, ["witness", "state", "--witness-dir", str(wdir), "--out", str(tmp_path / "t.json")]
    )
    assert r.exit_code == 0 and f"size {cps[-1].tree_size}" in r.output

    wf = data.workflows[0]
    entries = data.workflow_entries(wf)
    bundle = build_bundle(
        wf,
        entries,
        data.partition_leaves(),
        attach_cosignatures(data.checkpoints, [cosig], {0: entries[-1].log_index}),
        data.registry,
        data.checkpoint_vkey,
        policy_sets=[data.policy_files],
        violations=data.violation_records,
    )
    path = tmp_path / "b.json"
    write_bundle(bundle, path)
    registry = tmp_path / "registry.json"
    data.registry.save(registry)
    base = ["verify", str(path), "--registry", str(registry), "--json"]
    r = runner.invoke(app, [*base, "--witness-key", vkey])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["witness"]["newest_cosigned"]["size"] == cps[-1].tree_size
    assert out["trust"]["witnesses"] == ["+".join(vkey.split("+")[:2])]
    assert out["witness"]["required"] == 1
    other = w.cosigner_vkey("witness.test/other", bytes(range(32)))
    r = runner.invoke(app, [*base, "--witness-key", other])
    assert r.exit_code == 1
    assert json.loads(r.output)["failure"]["kind"] == "WITNESS_COSIGNATURES"
    r = runner.invoke(app, [*base, "--witness-key", vkey, "--witnesses-required", "2"])
    assert r.exit_code == 2 and "expected 1..1" in r.output
    unusable = json.loads(r.output)  # option errors are reports too, in JSON with --json
    assert unusable["verdict"] == "UNUSABLE_INPUT" and unusable["exit_code"] == 2
    r = runner.invoke(app, [*base, "--witnesses-required", "1"])
    assert r.exit_code == 2
    r = runner.invoke(app, [*base, "--trusted-checkpoints", str(tmp_path / "t.json")])
    assert r.exit_code == 2 and "apply to --clickhouse" in r.output
    r = runner.invoke(app, ["verify", "--clickhouse", "--witness-key", vkey])
    assert r.exit_code == 2 and "needs --trusted-checkpoints" in r.output
    r = runner.invoke(app, ["verify", "--clickhouse", "--witness-url", "http://127.0.0.1:9"])
    assert r.exit_code == 2 and "needs --witness-key" in r.output

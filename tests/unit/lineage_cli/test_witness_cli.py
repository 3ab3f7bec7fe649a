"""``lineage witness`` over real HTTP, and ``lineage verify --witness-key`` exit codes and JSON,
for a bundle FILE and for the ClickHouse store against the witness's cosigned checkpoints."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from lineage import merkle
from lineage import witness as w
from lineage.bundle import build_bundle, write_bundle
from lineage.witnessed import StoredCosignature, attach_cosignatures
from lineage_cli import evidence
from lineage_cli.main import app
from lineage_cli.witness import serve_in_thread
from sinks import rows, schema
from sinks.witness_feeder import WitnessFeeder, load_cosignatures, post_add_checkpoint
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


@pytest.fixture
def witness_url(tmp_path: Path, data: Dataset) -> Iterator[tuple[str, str]]:
    """A witness of the dataset's logs served over HTTP on a free port: (url, verifier key)."""
    store = w.WitnessStore(tmp_path / "witness")
    store.init("witness.test/store", [w.LogSpec("lineage.local/", (data.checkpoint_vkey,), True)])
    witness = w.Witness(store)
    server = serve_in_thread(witness)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", witness.vkey
    finally:
        server.shutdown()
        server.server_close()


def test_store_verifies_against_the_witness_url_and_a_rollback_fails(
    tmp_path: Path,
    data: Dataset,
    chdb_client: Any,
    ch_database: str,
    witness_url: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, vkey = witness_url
    db = ch_database
    schema.migrate(chdb_client, db)
    chdb_client.insert(
        "lineage_entries",
        [rows.entry_row(e) for e in data.entries],
        column_names=list(rows.ENTRY_COLUMNS),
        database=db,
    )
    chdb_client.insert(
        "checkpoints",
        [rows.checkpoint_row(c) for c in data.checkpoints],
        column_names=list(rows.CHECKPOINT_COLUMNS),
        database=db,
    )
    cps = data.partition_checkpoints(0)
    assert len(cps) >= 3
    # The store's feeder submits the newest checkpoint over HTTP; the witness cosigns it.
    feeder = WitnessFeeder(chdb_client, threading.Lock(), db, url, vkey)
    assert feeder.step() == 1, feeder.stats.last_error
    with urllib.request.urlopen(url + "/checkpoints", timeout=10) as resp:
        served = w.parse_trusted_document(json.loads(resp.read()), url)
    (stored,) = load_cosignatures(chdb_client, db, [0])
    assert (stored.tree_size, stored.root_hash) == (cps[-1].tree_size, cps[-1].root_hash)
    assert served == [cps[-1].note + stored.line]

    auditor = tmp_path / "auditor.json"
    data.registry.save(auditor)
    for name in ("LINEAGE_TRUST_FILE", "LINEAGE_KEYS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LINEAGE_CLICKHOUSE_DATABASE", db)
    monkeypatch.setattr(evidence, "_client", lambda settings: chdb_client)
    command = [
        *("verify", "--clickhouse", "--data-dir", str(tmp_path), "--registry", str(auditor)),
        *("--witness-url", url, "--witness-key", vkey, "--jobs", "1", "--json"),
    ]
    runner = CliRunner()
    r = runner.invoke(app, command)
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["verdict"] == "VERIFIED" and out["failure"] is None
    witness_id = "+".join(vkey.split("+")[:2])
    assert out["trust"]["witnesses"] == [witness_id]
    assert out["witness"]["witnesses"] == [witness_id] and out["witness"]["required"] == 1
    assert out["witness"]["newest_cosigned"]["size"] == cps[-1].tree_size
    assert [c["witness"] for c in out["witness"]["logs"][0]["cosignatures"]] == [witness_id]
    assert any(f"from witness {url}" in claim for claim in out["claims"])

    # Roll partition 0 back: its newest rows go together with the checkpoints that cover them.
    keep = cps[-3].tree_size
    for sql in (
        f"DELETE FROM {db}.lineage_entries WHERE source_partition = 0 AND log_index >= {keep}",
        f"DELETE FROM {db}.checkpoints WHERE partition = 0 AND tree_size > {keep}",
    ):
        chdb_client.command(f"{sql} SETTINGS mutations_sync = 1")
    r = runner.invoke(app, command)
    assert r.exit_code == 1, r.output
    out = json.loads(r.output)
    assert out["verdict"] == "FAILED"
    failure = out["failure"]
    assert failure["kind"] == "LOG_ROLLED_BACK"
    assert failure["where"] == {
        "partition": 0,
        "origin": cps[-1].origin,
        "tree_size": cps[-1].tree_size,
    }
    assert (failure["expected"], failure["found"]) == (
        f"at least {cps[-1].tree_size} entries",
        f"{keep} entries",
    )
    assert out["claims"] == []
    # Without the witness, the rolled-back store is self-consistent: the witness is what tells.
    r = runner.invoke(app, [*command[:6], "--jobs", "1", "--json"])
    assert r.exit_code == 0, r.output

"""``lineage demo --keys pkcs11``: the whole demo with every signing key in a SoftHSM2 token."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.softhsm import init_token

ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_with_every_key_in_a_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hsm = init_token(tmp_path / "hsm", monkeypatch, label="lineage-demo")
    data_dir = tmp_path / "data"
    env = dict(
        os.environ,
        LINEAGE_DATA_DIR=str(data_dir),
        SOFTHSM2_CONF=str(hsm.conf),
        LINEAGE_PKCS11_MODULE=hsm.module,
        LINEAGE_PKCS11_PIN_FILE=str(hsm.pin_file),
        COLUMNS="200",  # one summary line per fact, not wrapped
    )
    env.pop("LINEAGE_KAFKA_BOOTSTRAP", None)
    env.pop("LINEAGE_PKCS11_PIN", None)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "lineage_cli",
            "demo",
            "--keys",
            "pkcs11",
            "--events",
            "800",
            "--workflows",
            "20",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )
    out = run.stdout
    assert run.returncode == 0, (
        f"demo failed ({run.returncode}):\n{out[-3000:]}\n{run.stderr[-3000:]}"
    )
    assert "OK:" in out and "chained, verified lineage" in out
    assert (
        "keys  lineage-processor: pkcs11, orchestrator: pkcs11, subagents: pkcs11, "
        "tool-runner: pkcs11" in out
    )
    assert not (data_dir / "keys" / "private").exists(), "no private key file may be written"
    assert not (data_dir / "witness" / "witness.key").exists(), "the witness key is in the token"
    assert "key pkcs11:token=lineage-demo;object=lineage-witness" in out
    listing = subprocess.run(
        [sys.executable, "-m", "lineage_cli", "keys", "list", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )
    assert listing.returncode == 0, listing.stderr
    keys = json.loads(listing.stdout)["keys"]
    assert sorted((k["subject"], k["custody"]) for k in keys) == [
        ("lineage-processor", "pkcs11"),
        ("orchestrator", "pkcs11"),
        ("subagents", "pkcs11"),
        ("tool-runner", "pkcs11"),
    ]
    assert all(k["key_uri"].startswith("pkcs11:token=lineage-demo;object=") for k in keys)

    witness_key = subprocess.run(
        [sys.executable, "-m", "lineage_cli", "witness", "key"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )
    assert witness_key.returncode == 0, witness_key.stderr
    vkey = witness_key.stdout.strip()
    assert vkey.startswith("witness.lineage.local/demo+") and f"--witness-key '{vkey}'" in out
    bundle = next((data_dir / "evidence").glob("*.json"))
    verify = subprocess.run(
        [
            sys.executable,
            "-m",
            "lineage_cli",
            "verify",
            str(bundle),
            "--registry",
            str(data_dir / "keys" / "registry.json"),
            "--witness-key",
            vkey,
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )
    report = json.loads(verify.stdout)
    assert verify.returncode == 0, report
    assert report["trust"]["witnesses"] == ["+".join(vkey.split("+", 2)[:2])], report["trust"]

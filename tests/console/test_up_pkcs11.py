"""``lineage up --keys pkcs11``: the running stack signs with keys in a SoftHSM2 token only.

Every registry key and the witness key live in the token; in a deployment that claims to be
production the health surface then reports no file-backed key, and a demo scenario is chained.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.console.stack import interrupt, wait_for
from tests.support.softhsm import init_token

pytestmark = pytest.mark.integration


def _call(info: dict[str, Any], path: str, body: dict[str, Any] | None = None) -> Any:
    req = urllib.request.Request(
        info["url"] + path,
        data=json.dumps(body).encode() if body is not None else None,
        method="POST" if body is not None else "GET",
        headers={"Authorization": f"Bearer {info['token']}", "Content-Type": "application/json"},
    )
    return json.loads(urllib.request.urlopen(req, timeout=30).read())


@pytest.mark.timeout(180)
def test_lineage_up_keeps_every_key_in_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hsm = init_token(tmp_path / "hsm", monkeypatch, label="lineage-up")
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINEAGE_")}
    env.update(
        LINEAGE_DATA_DIR=str(data),
        LINEAGE_CHECKPOINT_EVERY_S="0.5",
        LINEAGE_PRODUCTION="true",
        SOFTHSM2_CONF=str(hsm.conf),
        LINEAGE_PKCS11_MODULE=hsm.module,
        LINEAGE_PKCS11_PIN_FILE=str(hsm.pin_file),
    )
    log = tmp_path / "up.log"
    args = ["up", "--port", "0", "--data-dir", str(data), "--keys", "pkcs11"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "lineage_cli", *args, "--token", "lineage-up"],
        stdout=open(log, "w"),  # noqa: SIM115 - the child owns it
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        lock = data / "console.json"

        def serving() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"lineage up exited {proc.returncode}: {log.read_text()}")
            return lock.exists() and json.loads(lock.read_text())["pid"] == proc.pid

        wait_for(serving, 90, "lineage up to serve")
        info = json.loads(lock.read_text())
        keys = _call(info, "/api/public/keys")["keys"]
        assert {k["custody"] for k in keys} == {"pkcs11"}, keys
        assert {k["subject"] for k in keys} >= {"orchestrator", "tool-runner", "lineage-processor"}
        witness = json.loads((data / "witness" / "witness.json").read_text())
        assert witness["key_uri"].startswith("pkcs11:token=lineage-up;"), witness
        assert not (data / "witness" / "witness.key").exists()
        health = _call(info, "/api/health")
        assert health["keys"]["production"] is True
        assert health["keys"]["file_backed"] == [], health["keys"]
        assert health["keys"]["in_use"] == {"pkcs11": len(keys)}, health["keys"]
        _call(info, "/api/demo/scenario", {"events": 60, "workflows": 3})
        wait_for(
            lambda: int(_call(info, "/api/health").get("tables", {}).get("entries", 0)) >= 60,
            90,
            f"the scenario chained (log: {log.read_text()[-2000:]})",
        )
    finally:
        interrupt(proc)
    assert proc.returncode == 0, log.read_text()[-3000:]

"""lineage_cli.remote: the lock file and the value encoding (no stack needed)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from console.app import encode_value
from lineage.config import Settings
from lineage_cli.remote import RemoteClient, ServedElsewhere, _decode, open_client, served_by


def test_values_round_trip() -> None:
    values = [
        b"\x00\xff" * 16,
        "text",
        7,
        2**63,
        None,
        [b"a", [1]],
        {"k": "v"},
        dt.datetime(2026, 1, 2, 3, 4, 5, 6),
        dt.date(2026, 1, 2),
        1.5,
    ]
    encoded = json.loads(json.dumps([encode_value(v) for v in values]))
    assert [_decode(v) for v in encoded] == values


def test_stale_lock_file_is_ignored(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead = int(proc.stdout)
    (tmp_path / "console.json").write_text(
        json.dumps({"pid": dead, "url": "http://127.0.0.1:9", "token": "t"})
    )
    assert served_by(Settings(data_dir=tmp_path)) is None


def test_live_holder_that_does_not_answer_is_named(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / "console.json").write_text(
            json.dumps({"pid": holder.pid, "url": "http://127.0.0.1:9", "token": "t"})
        )
        client = open_client(Settings(data_dir=tmp_path))
        assert isinstance(client, RemoteClient)
        with pytest.raises(ServedElsewhere) as err:
            client.query("SELECT 1")
        message = str(err.value)
        assert f"pid {holder.pid}" in message and f"kill -INT {holder.pid}" in message
    finally:
        holder.kill()
        holder.wait()


def test_a_second_lineage_up_is_refused(tmp_path: Path) -> None:
    from lineage_cli.remote import refuse_if_served

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / "console.json").write_text(
            json.dumps({"pid": holder.pid, "url": "http://x", "token": "t"})
        )
        with pytest.raises(ServedElsewhere, match=f"pid {holder.pid}"):
            refuse_if_served(Settings(data_dir=tmp_path))
    finally:
        holder.kill()
        holder.wait()
    assert os.path.exists(tmp_path / "console.json")
    assert base64  # keep import for clarity of encoded bytes

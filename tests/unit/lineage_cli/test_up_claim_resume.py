"""Which broker snapshot ``lineage up`` resumes from: only one that goes with the stored lineage,
and each at most once."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console

from infra.broker_snapshot import SNAPSHOT_DIR, SNAPSHOT_FORMAT
from lineage.config import Settings
from lineage_cli.up import STORE_MARKER, claim_resume


def _data_dir(tmp_path: Path, snapshot_marker: str, store_marker: str | None) -> Settings:
    settings = Settings(data_dir=tmp_path / "data")
    settings.chdb_path.mkdir(parents=True)
    if store_marker is not None:
        (settings.chdb_path / STORE_MARKER).write_text(store_marker + "\n")
    snap = settings.data_dir / SNAPSHOT_DIR
    snap.mkdir()
    manifest = {
        "format": SNAPSHOT_FORMAT,
        "created_at": 0,
        "topics": {},
        "records": {},
        "groups": {},
        "data_sha256": "",
        "store": {"marker": snapshot_marker},
    }
    (snap / "manifest.json").write_text(json.dumps(manifest))
    return settings


def _console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=300), out


def test_the_snapshot_of_this_store_is_claimed_once(tmp_path: Path) -> None:
    settings = _data_dir(tmp_path, "m1", "m1")
    console, _ = _console()
    claimed = claim_resume(settings, console)
    assert claimed is not None and claimed.name.startswith(f"{SNAPSHOT_DIR}.loaded-")
    assert not (settings.chdb_path / STORE_MARKER).exists(), "the marker is consumed"
    assert claim_resume(settings, console) is None, "never loaded twice"


def test_a_snapshot_of_another_store_is_refused(tmp_path: Path) -> None:
    settings = _data_dir(tmp_path, "m1", "m2")
    console, out = _console()
    assert claim_resume(settings, console) is None
    assert "does not go with the stored lineage" in out.getvalue()
    assert not (settings.data_dir / SNAPSHOT_DIR).exists(), "claimed even when refused"


def test_a_snapshot_whose_store_has_no_marker_is_refused(tmp_path: Path) -> None:
    settings = _data_dir(tmp_path, "m1", None)  # e.g. `lineage demo` wiped the store since
    console, out = _console()
    assert claim_resume(settings, console) is None
    assert "its store marker is missing or another" in out.getvalue()


def test_an_external_clickhouse_never_resumes_from_a_snapshot(tmp_path: Path) -> None:
    settings = _data_dir(tmp_path, "m1", "m1").model_copy(
        update={"clickhouse_url": "http://127.0.0.1:8123"}
    )
    console, _ = _console()
    assert claim_resume(settings, console) is None
    assert (settings.data_dir / SNAPSHOT_DIR).exists(), "left alone"

"""Bundles exported by the first v1 exporter (frozen in tests/conformance/legacy_v1) still verify."""

from __future__ import annotations

from pathlib import Path

import pytest

from lineage.keys import KeyRegistry
from lineage.verify import verify_bundle_bytes

LEGACY = Path(__file__).resolve().parents[2] / "conformance" / "legacy_v1"
BUNDLES = sorted(LEGACY.glob("*.bundle.json"))


def test_there_are_legacy_bundles() -> None:
    assert len(BUNDLES) == 2


@pytest.mark.parametrize("path", BUNDLES, ids=lambda p: p.name)
def test_legacy_bundle_verifies_with_the_auditor_registry(path: Path) -> None:
    registry = KeyRegistry.load(LEGACY / "registry.json")
    report = verify_bundle_bytes(path.read_bytes(), registry=registry)
    assert report.failure is None, report.failure
    assert (report.verdict.value, report.exit_code) == ("VERIFIED", 0)
    assert report.proven.workflows == {path.name.split(".")[0]}


@pytest.mark.parametrize("path", BUNDLES, ids=lambda p: p.name)
def test_legacy_bundle_verifies_with_the_checkpoint_key_and_registry(path: Path) -> None:
    registry = KeyRegistry.load(LEGACY / "registry.json")
    vkey = (LEGACY / "checkpoint-key.txt").read_text().strip()
    report = verify_bundle_bytes(
        path.read_bytes(), registry=registry, trusted_checkpoint_vkeys=[vkey]
    )
    assert report.exit_code == 0, report.failure


@pytest.mark.parametrize("path", BUNDLES, ids=lambda p: p.name)
def test_legacy_bundle_without_named_keys_is_consistent_but_untrusted(path: Path) -> None:
    report = verify_bundle_bytes(path.read_bytes())
    assert (report.verdict.value, report.exit_code) == ("CONSISTENT_BUT_UNTRUSTED", 3)

"""Bundles written by the first release of ``lineage-evidence-bundle/v1`` (commit 1ed335f), frozen.

Run once with that code (``python -m tests.conformance.legacy_v1.make``); the files are kept as
they came out and never regenerated, so later verifiers are tested against what was actually
exported before them. Keys are derived from a fixed seed, so the run is reproducible.
"""

from __future__ import annotations

import json
from pathlib import Path

from lineage.bundle import write_bundle
from tests.support.lineage_builder import build_dataset

HERE = Path(__file__).resolve().parent
SEED = b"lineage-conformance-legacy-v1"


def main() -> None:
    """Write two workflows' bundles, the auditor's registry and the processor's verifier key."""
    data = build_dataset(workflows=4, steps=1, partitions=2, seed=SEED)
    for wf in data.workflows[:2]:
        write_bundle(data.bundle(wf), HERE / f"{wf}.bundle.json")
    (HERE / "registry.json").write_text(
        json.dumps(data.registry.to_json(), indent=1) + "\n", encoding="ascii"
    )
    (HERE / "checkpoint-key.txt").write_text(data.checkpoint_vkey + "\n", encoding="ascii")


if __name__ == "__main__":
    main()

"""A trusted-checkpoints document is read as strictly as a bundle: no two texts mean one document."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lineage.witness import TRUSTED_FORMAT
from lineage_cli.witness import OptionError, _trusted_notes

GOOD = json.dumps(
    {"format": TRUSTED_FORMAT, "checkpoints": [{"note": "lineage.local/p0\n1\nAA==\n"}]}
)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (GOOD.replace('"checkpoints"', '"x": NaN, "checkpoints"'), "found NaN"),
        (GOOD.replace('"checkpoints"', '"x": -Infinity, "checkpoints"'), "found -Infinity"),
        (GOOD.replace("{", '{"format": "other", ', 1), "duplicate JSON member 'format'"),
        (GOOD[:-1], "not a JSON document"),
    ],
    ids=["nan", "infinity", "duplicate-member", "truncated"],
)
def test_unusable_trusted_checkpoints_are_refused_with_the_reason(
    text: str, reason: str, tmp_path: Path
) -> None:
    path = tmp_path / "trusted.json"
    path.write_text(text)
    with pytest.raises(OptionError, match="cannot read trusted checkpoints from") as caught:
        _trusted_notes(path, None)
    assert reason in str(caught.value), str(caught.value)


def test_a_well_formed_document_gives_its_notes(tmp_path: Path) -> None:
    path = tmp_path / "trusted.json"
    path.write_text(GOOD)
    assert _trusted_notes(path, None) == ["lineage.local/p0\n1\nAA==\n"]

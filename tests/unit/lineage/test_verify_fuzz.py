"""Fuzzing the bundle parser and verifier with structure-aware mutations of a real bundle.

Whatever the mutation, verification returns a report (no exception, no hang) whose exit code is
1 or 2; exit 0 is allowed only when the mutated document means exactly the genuine one apart from
the information-only members ``keys`` and ``checkpoint_keys`` (which are never trusted). A
document holding NaN or Infinity anywhere is not JSON (RFC 8259) and must be unusable input.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lineage.keys import KeyRegistry
from lineage.verify import Report, verify_bundle_bytes

CORPUS = Path(__file__).resolve().parents[2] / "conformance"
GENUINE_TEXT = (CORPUS / "cases" / "genuine.json").read_bytes()
GENUINE: dict[str, Any] = json.loads(GENUINE_TEXT)
REGISTRY = KeyRegistry.load(CORPUS / "keys" / "auditor-registry.json")
INFORMATION_ONLY = ("keys", "checkpoint_keys")

Path_ = tuple[str | int, ...]


def _paths(value: Any, prefix: Path_ = ()) -> list[Path_]:
    out: list[Path_] = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


PATHS = _paths(GENUINE)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63 - 4, max_value=2**64 + 4),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(),
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec=None, categories=["Cc", "Cs", "Cf"]), max_size=8),
    st.sampled_from(["", "00" * 32, "AA==", "[/x]", "\x1b[2J", "lineage.local/a/1", "٣"]),
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def _parent(doc: Any, path: Path_) -> Any:
    for p in path[:-1]:
        doc = doc[p]
    return doc


def _tweak_text(text: str, data: st.DataObject) -> str:
    if not text:
        return "x"
    i = data.draw(st.integers(0, len(text) - 1))
    op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
    if op == "flip":
        return text[:i] + chr(ord(text[i]) ^ data.draw(st.integers(1, 0x7F))) + text[i + 1 :]
    if op == "cut":
        return text[:i]
    return text[:i] + data.draw(st.characters()) + text[i:]


def _mutate(doc: Any, data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(PATHS))
    parent, key = _parent(doc, path), path[-1]
    old = parent[key]
    op = data.draw(st.sampled_from(["replace", "tweak", "delete", "duplicate", "swap"]))
    if op == "replace":
        parent[key] = data.draw(json_values.filter(lambda v: v != old))
    elif op == "tweak" and isinstance(old, str):
        parent[key] = _tweak_text(old, data)
    elif op == "tweak" and isinstance(old, int) and not isinstance(old, bool):
        parent[key] = old + data.draw(st.sampled_from([-1, 1, 2**32, -(2**63), 2**64]))
    elif op == "delete":
        del parent[key]
    elif op == "duplicate" and isinstance(parent, list):
        parent.insert(int(key), copy.deepcopy(old))
    elif op == "swap" and isinstance(parent, list) and len(parent) > 1:
        j = data.draw(st.integers(0, len(parent) - 1).filter(lambda j: j != key))
        parent[key], parent[j] = parent[j], parent[key]
    else:
        parent[key] = data.draw(json_values.filter(lambda v: v != old))


def _meaning(text: bytes) -> Any:
    doc = json.loads(text)
    if isinstance(doc, dict):
        for name in INFORMATION_ONLY:
            doc.pop(name, None)
    return doc


def _non_finite(value: Any) -> bool:
    """True when NaN or an infinity is anywhere in the document (json.dumps writes them bare)."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    if isinstance(value, list):
        return any(_non_finite(v) for v in value)
    return False


def _check(raw: bytes) -> Report:
    report = verify_bundle_bytes(raw, registry=REGISTRY)
    assert report.exit_code in (0, 1, 2), report.to_json()
    json.dumps(report.to_json())  # every outcome serialises
    if report.exit_code == 0:
        assert _meaning(raw) == _meaning(GENUINE_TEXT), "a changed bundle verified"
    return report


def test_the_seed_bundle_verifies() -> None:
    assert verify_bundle_bytes(GENUINE_TEXT, registry=REGISTRY).exit_code == 0


@pytest.mark.timeout(60)
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), rounds=st.integers(1, 3))
def test_structural_mutations_never_crash_or_verify(data: st.DataObject, rounds: int) -> None:
    doc = copy.deepcopy(GENUINE)
    for _ in range(rounds):
        try:
            _mutate(doc, data)
        except (KeyError, IndexError, TypeError):
            break
    report = _check(json.dumps(doc).encode())
    if _non_finite(doc):
        assert report.failure is not None and report.exit_code == 2, report.to_json()
        assert "expected RFC 8259 JSON, found " in report.failure.message, report.failure


@pytest.mark.timeout(60)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_byte_mutations_never_crash_or_verify(data: st.DataObject) -> None:
    raw = bytearray(GENUINE_TEXT)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    _check(bytes(raw))

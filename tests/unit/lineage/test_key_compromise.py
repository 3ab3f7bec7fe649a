"""Compromise and retirement of keys, judged on real evidence bundles and on the records alone."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from lineage.errors import ConfigError
from lineage.keys import (
    REGISTRY_FORMAT_V1,
    REGISTRY_FORMAT_V2,
    KeyCompromisedError,
    KeyExpiredError,
    KeyRegistry,
    RevokedKeyError,
    Role,
    Signer,
)
from lineage.verify import FailureKind, verify_bundle
from tests.support.lineage_builder import (
    RUNTIME_SUBJECT,
    Dataset,
    build_dataset,
    decode_event,
)

SEC = 1_000_000


@pytest.fixture(scope="module")
def data() -> Dataset:
    return build_dataset()


def _runtime_times(doc: dict[str, Any]) -> list[int]:
    times = []
    for e in doc["entries"]:
        event = decode_event(base64.b64decode(e["event"]))
        if event.emitter_id.startswith(RUNTIME_SUBJECT + "#"):
            times.append(event.event_time)
    return sorted(times)


def _copy(registry: KeyRegistry) -> KeyRegistry:
    return KeyRegistry.from_json(json.loads(json.dumps(registry.to_json())))


def _runtime_key(registry: KeyRegistry) -> str:
    return next(r.key_id for r in registry.records() if r.subject == RUNTIME_SUBJECT)


def _verify(data: Dataset, registry: KeyRegistry, wf: str) -> Any:
    return verify_bundle(
        json.loads(json.dumps(data.bundle(wf))),
        registry=registry,
        trusted_checkpoint_vkeys=[data.checkpoint_vkey],
    )


def test_compromise_fails_evidence_signed_from_then_on_and_keeps_earlier(data: Dataset) -> None:
    wf = data.workflows[0]
    times = _runtime_times(data.bundle(wf))
    assert len(times) >= 2
    registry = _copy(data.registry)
    key = _runtime_key(registry)
    # compromised after the last runtime event of this workflow: everything here stays valid
    registry.revoke(key, times[-1] + SEC, "laptop stolen", compromised_at_us=times[-1] + 1)
    assert _verify(data, registry, wf).ok
    # compromised in the middle: the first event signed at or after that time fails, named
    registry = _copy(data.registry)
    registry.revoke(key, times[-1] + SEC, "laptop stolen", compromised_at_us=times[1])
    report = _verify(data, registry, wf)
    assert not report.ok and report.failure is not None
    assert report.failure.kind is FailureKind.KEY_COMPROMISED
    assert "is compromised since" in report.failure.message
    assert report.failure.expected == "a signature made before the key's compromise"
    assert report.failure.found == key


def test_plain_revocation_still_distrusts_everything(data: Dataset) -> None:
    wf = data.workflows[0]
    registry = _copy(data.registry)
    registry.revoke(_runtime_key(registry), _runtime_times(data.bundle(wf))[-1] + SEC, "policy")
    report = _verify(data, registry, wf)
    assert report.failure is not None and report.failure.kind is FailureKind.REVOKED_KEY


def test_retired_key_leaves_all_its_evidence_valid(data: Dataset) -> None:
    wf = data.workflows[0]
    last = _runtime_times(data.bundle(wf))[-1]
    registry = _copy(data.registry)
    registry.retire(_runtime_key(registry), last)  # rotated away right after it last signed
    assert _verify(data, registry, wf).ok
    registry = _copy(data.registry)
    registry.retire(_runtime_key(registry), last - 1)  # a window that ends too early is caught
    report = _verify(data, registry, wf)
    assert report.failure is not None and report.failure.kind is FailureKind.KEY_EXPIRED


def test_v1_and_v2_registries_give_the_same_verdicts(data: Dataset, tmp_path: Path) -> None:
    wf = data.workflows[0]
    document = data.registry.to_json()
    assert document["format"] == REGISTRY_FORMAT_V1  # nothing needs v2: older readers still work
    path = tmp_path / "v1.json"
    path.write_text(json.dumps(document))
    assert _verify(data, KeyRegistry.load(path), wf).ok
    upgraded = dict(document, format=REGISTRY_FORMAT_V2)
    upgraded["keys"] = [
        {**k, "compromised_at": None, "custody": "file", "key_uri": None} for k in document["keys"]
    ]
    path.write_text(json.dumps(upgraded))
    v2 = KeyRegistry.load(path)
    assert v2.records() == data.registry.records()
    assert _verify(data, v2, wf).ok
    key = _runtime_key(v2)
    v2.revoke(key, _runtime_times(data.bundle(wf))[-1] + SEC, "x", compromised_at_us=0)
    v2.save(path)
    assert json.loads(path.read_text())["format"] == REGISTRY_FORMAT_V2
    report = _verify(data, KeyRegistry.load(path), wf)
    assert report.failure is not None and report.failure.kind is FailureKind.KEY_COMPROMISED


def test_trust_at_decides_by_time() -> None:
    _, record = Signer.generate_ephemeral("svc", Role.EMITTER, not_before_us=100 * SEC)
    registry = KeyRegistry([record])
    assert record.trust_at(150 * SEC) is None
    expired = record.trust_at(99 * SEC)
    assert isinstance(expired, KeyExpiredError)
    updated = registry.revoke(record.key_id, 300 * SEC, "leak", compromised_at_us=200 * SEC)
    assert updated.status(0) == "compromised"
    assert updated.trust_at(199 * SEC) is None
    verdict = updated.trust_at(200 * SEC)
    assert isinstance(verdict, KeyCompromisedError) and isinstance(verdict, RevokedKeyError)
    assert str(verdict) == (
        f"key {record.key_id} is compromised since 1970-01-01T00:03:20Z (revoked at "
        "1970-01-01T00:05:00Z: leak); the signed item claims 1970-01-01T00:03:20Z, "
        "not before the compromise"
    )
    assert verdict.code == "UNKNOWN_KEY"
    # the registry check applies it too (processors quarantine with UNKNOWN_KEY)
    registry.check(record.key_id, role=Role.EMITTER, subject="svc", at_us=199 * SEC)
    with pytest.raises(KeyCompromisedError):
        registry.check(record.key_id, role=Role.EMITTER, subject="svc", at_us=250 * SEC)
    # before not_before is still out of window, compromise or not
    assert isinstance(updated.trust_at(50 * SEC), KeyExpiredError)


def test_revoke_and_retire_refuse_what_would_widen_trust() -> None:
    _, record = Signer.generate_ephemeral("svc", Role.EMITTER, not_before_us=100 * SEC)
    registry = KeyRegistry([record])
    with pytest.raises(ConfigError, match="compromised_at 1970-01-01T00:10:00Z is in the future"):
        registry.revoke(record.key_id, 300 * SEC, "x", compromised_at_us=600 * SEC)
    with pytest.raises(ConfigError, match="before its not_before"):
        registry.retire(record.key_id, 50 * SEC)
    registry.retire(record.key_id, 500 * SEC)
    with pytest.raises(ConfigError, match="would extend it"):
        registry.retire(record.key_id, 600 * SEC)
    registry.revoke(record.key_id, 300 * SEC, "plain")
    with pytest.raises(ConfigError, match="already revoked"):
        registry.revoke(record.key_id, 400 * SEC, "now compromised", compromised_at_us=350 * SEC)
    with pytest.raises(ConfigError, match="cannot be retired"):
        registry.retire(record.key_id, 200 * SEC)


def test_registry_entry_errors_for_v2_fields() -> None:
    _, record = Signer.generate_ephemeral("svc", Role.EMITTER)
    entry = KeyRegistry([record]).to_json()["keys"][0]
    base = {**entry, "compromised_at": None, "custody": "file", "key_uri": None}
    cases = [
        (
            {"compromised_at": "1970-01-01T00:00:01Z"},
            "compromised_at is set but revoked_at is null",
        ),
        (
            {
                "revoked_at": "1970-01-01T00:00:01Z",
                "compromised_at": "1970-01-01T00:00:02Z",
            },
            "compromised_at (1970-01-01T00:00:02Z) is after revoked_at (1970-01-01T00:00:01Z)",
        ),
        ({"custody": "pkcs11"}, "custody 'pkcs11' needs a pkcs11: key_uri, found None"),
        ({"custody": "Bad Name"}, "custody must be 'file', 'pkcs11' or another lowercase"),
        ({"key_uri": "pkcs11:object=x"}, "custody 'file' takes no key_uri"),
    ]
    for change, message in cases:
        doc = {"format": REGISTRY_FORMAT_V2, "keys": [{**base, **change}]}
        with pytest.raises(
            ConfigError, match="keys\\[0\\]: " + message.replace("(", "\\(").replace(")", "\\)")
        ):
            KeyRegistry.from_json(doc, source="r.json")


# -- command line ------------------------------------------------------------


def _cli(*args: str) -> Any:
    from typer.testing import CliRunner

    from lineage_cli.main import app

    return CliRunner().invoke(app, list(args))


def test_cli_revoke_compromised_retire_and_rotate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINEAGE_DATA_DIR", str(tmp_path / "data"))
    reg = str(tmp_path / "registry.json")
    keys = str(tmp_path / "keys")
    result = _cli(
        "keys",
        "generate",
        "--subject",
        "svc",
        "--role",
        "emitter",
        "--registry",
        reg,
        "--keys-dir",
        keys,
    )
    assert result.exit_code == 0, result.output
    key = KeyRegistry.load(Path(reg)).records()[0]
    # rotate: new key beside the old one, valid from switch - overlap, old retired at + overlap
    result = _cli(
        "keys",
        "rotate",
        "--subject",
        "svc",
        "--role",
        "emitter",
        "--switch-in",
        "120",
        "--overlap",
        "30",
        "--registry",
        reg,
        "--keys-dir",
        keys,
    )
    assert result.exit_code == 0, result.output
    registry = KeyRegistry.load(Path(reg))
    old, new = registry.records()
    assert old.key_id == key.key_id and new.key_id != key.key_id
    assert old.not_after_us is not None
    assert old.not_after_us - new.not_before_us == 60 * SEC
    assert f"retiring {old.key_id} at " in result.output
    assert (tmp_path / "keys" / "private" / f"svc.emitter.{new.key_id[8:]}.pem").exists()
    result = _cli(
        "keys",
        "rotate",
        "--subject",
        "svc",
        "--role",
        "emitter",
        "--switch-in",
        "10",
        "--overlap",
        "30",
        "--registry",
        reg,
        "--keys-dir",
        keys,
    )
    assert result.exit_code == 2 and "not in the future" in result.stderr
    # retire can only shorten
    result = _cli("keys", "retire", new.key_id, "--at", "2099-01-01T00:00:00Z", "--registry", reg)
    assert result.exit_code == 0, result.output
    result = _cli("keys", "retire", new.key_id, "--at", "2100-01-01T00:00:00Z", "--registry", reg)
    assert result.exit_code == 2 and "would extend it" in result.stderr
    # revoke as compromised: the time is recorded, the status says so, v2 is written
    result = _cli(
        "keys",
        "revoke",
        old.key_id,
        "--reason",
        "host breached",
        "--compromised-at",
        "2026-01-01T00:00:00Z",
        "--registry",
        reg,
    )
    assert result.exit_code == 0, result.output
    assert "as compromised since 2026-01-01T00:00:00Z: host breached" in result.output
    stored = json.loads(Path(reg).read_text())
    assert stored["format"] == REGISTRY_FORMAT_V2
    entry = next(k for k in stored["keys"] if k["key_id"] == old.key_id)
    assert entry["compromised_at"] == "2026-01-01T00:00:00Z"
    result = _cli("keys", "list", "--registry", reg, "--json")
    statuses = {k["key_id"]: k["status"] for k in json.loads(result.stdout)["keys"]}
    assert statuses[old.key_id] == "compromised"
    result = _cli(
        "keys",
        "revoke",
        new.key_id,
        "--reason",
        "x",
        "--compromised-at",
        "2999-01-01T00:00:00Z",
        "--registry",
        reg,
    )
    assert result.exit_code == 2 and "is in the future" in result.stderr
    result = _cli(
        "keys",
        "revoke",
        new.key_id,
        "--reason",
        "x",
        "--compromised-at",
        "yesterday",
        "--registry",
        reg,
    )
    assert result.exit_code == 2
    assert "--compromised-at: not an RFC 3339 timestamp" in result.stderr


def test_store_verification_applies_the_same_compromise_verdicts(data: Dataset) -> None:
    from lineage.verify import verify_entries

    def store(registry: KeyRegistry) -> Any:
        logs = {p: data.partition_entries(p) for p in range(data.partitions)}
        return verify_entries(
            logs,
            data.checkpoints,
            registry=registry,
            trusted_checkpoint_vkeys=[data.checkpoint_vkey],
        )

    assert store(data.registry).ok
    events = [decode_event(e.event_bytes) for e in data.entries]
    times = sorted(
        ev.event_time for ev in events if ev.emitter_id.startswith(RUNTIME_SUBJECT + "#")
    )
    registry = _copy(data.registry)
    key = _runtime_key(registry)
    registry.revoke(key, times[-1] + SEC, "leak", compromised_at_us=times[-1] + 1)
    assert store(registry).ok  # nothing was signed after the compromise
    registry = _copy(data.registry)
    registry.revoke(key, times[-1] + SEC, "leak", compromised_at_us=times[len(times) // 2])
    report = store(registry)
    assert report.failure is not None and report.failure.kind is FailureKind.KEY_COMPROMISED


def test_trusted_window() -> None:
    _, record = Signer.generate_ephemeral("svc", Role.EMITTER, not_before_us=100)
    registry = KeyRegistry([record])
    assert record.trusted_window() == (100, 2**63 - 1)
    retired = registry.retire(record.key_id, 500)
    assert retired.trusted_window() == (100, 500)
    compromised = registry.revoke(record.key_id, 900, "x", compromised_at_us=300)
    assert compromised.trusted_window() == (100, 299)
    for at in (99, 100, 299, 300, 500, 501):
        lo, hi = compromised.trusted_window()
        assert (lo <= at <= hi) == (compromised.trust_at(at) is None), at
    _, other = Signer.generate_ephemeral("svc", Role.EMITTER)
    plain = KeyRegistry([other]).revoke(other.key_id, 5, "y")
    lo, hi = plain.trusted_window()
    assert lo > hi

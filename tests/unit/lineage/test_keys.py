"""Tests for the Ed25519 key registry, private key files and signers."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from lineage.errors import ConfigError, IntegrityError
from lineage.keys import (
    REGISTRY_FORMAT_V1,
    BadSignatureError,
    KeyExpiredError,
    KeyRecord,
    KeyRegistry,
    KeyScopeError,
    RevokedKeyError,
    Role,
    Signer,
    UnknownKeyError,
    ensure_demo_keys,
    format_time_us,
    generate_key,
    key_id_for,
    load_private_key,
    parse_time_us,
    private_key_path,
)
from lineage.model import ViolationType

# RFC 8032 section 7.1, test 1: secret key, public key, and the signature over the empty message.
RFC8032_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bac"
    "c61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)
RFC8032_KEY_ID = "ed25519:21fe31dfa154a261"

T0 = 1_704_067_200_000_000  # 2024-01-01T00:00:00Z
DAY = 86_400_000_000


def rfc_record(**changes: Any) -> KeyRecord:
    fields: dict[str, Any] = {
        "key_id": RFC8032_KEY_ID,
        "public_key": RFC8032_PUBLIC,
        "role": Role.EMITTER,
        "subject": "svc-a",
        "not_before_us": T0,
        "not_after_us": T0 + 30 * DAY,
    }
    fields.update(changes)
    return KeyRecord(**fields)


def rfc_entry(**changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "key_id": RFC8032_KEY_ID,
        "public_key": "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
        "role": "emitter",
        "subject": "svc-a",
        "not_before": "2024-01-01T00:00:00Z",
        "not_after": "2024-01-31T00:00:00Z",
        "revoked_at": None,
        "revocation_reason": None,
    }
    entry.update(changes)
    return entry


def test_key_id_is_sha256_prefix_of_raw_public_key() -> None:
    assert key_id_for(bytes(32)) == "ed25519:66687aadf862bd77"
    assert key_id_for(RFC8032_PUBLIC) == RFC8032_KEY_ID
    assert key_id_for(RFC8032_PUBLIC) == key_id_for(bytes(RFC8032_PUBLIC))


def test_time_formatting_round_trips_microseconds() -> None:
    assert format_time_us(T0) == "2024-01-01T00:00:00Z"
    assert format_time_us(T0 + 1) == "2024-01-01T00:00:00.000001Z"
    assert parse_time_us("2024-01-01T00:00:00Z") == T0
    assert parse_time_us("2024-01-01t01:00:00.5+01:00") == T0 + 500_000
    for us in (0, T0, T0 + 123_456, 253_402_300_799_999_999):
        assert parse_time_us(format_time_us(us)) == us


@pytest.mark.parametrize(
    "text",
    ["2024-01-01", "2024-01-01T00:00:00", "2024-01-01T00:00:00.1234567Z", "2024-13-01T00:00:00Z"],
)
def test_parse_time_rejects_non_rfc3339(text: str) -> None:
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_time_us(text)


def test_record_invariants() -> None:
    with pytest.raises(ConfigError, match="public_key must be 32 raw bytes, found 31"):
        rfc_record(public_key=bytes(31))
    with pytest.raises(
        ConfigError,
        match=r"not_after \(2023-12-31T00:00:00Z\) is before not_before \(2024-01-01T00:00:00Z\)",
    ):
        rfc_record(not_after_us=T0 - DAY)
    with pytest.raises(ConfigError, match="revocation_reason is set but revoked_at is null"):
        rfc_record(revocation_reason="lost")
    with pytest.raises(ConfigError, match="role must be a Role"):
        rfc_record(role="emitter")
    assert not rfc_record().revoked
    assert rfc_record(revoked_at_us=T0, revocation_reason="lost").revoked


def test_registry_file_round_trip_and_exact_format(tmp_path: Path) -> None:
    _, other = Signer.generate_ephemeral("proc-1", Role.PROCESSOR, not_before_us=T0 + 7)
    registry = KeyRegistry([rfc_record(), other])
    registry.revoke(other.key_id, T0 + DAY, "rotated")
    path = tmp_path / "nested" / "registry.json"
    registry.save(path)

    document = json.loads(path.read_text())
    assert document["format"] == REGISTRY_FORMAT_V1
    assert document["keys"][0] == rfc_entry()
    assert document["keys"][1]["not_before"] == "2024-01-01T00:00:00.000007Z"
    assert document["keys"][1]["revoked_at"] == "2024-01-02T00:00:00Z"
    assert document["keys"][1]["revocation_reason"] == "rotated"

    loaded = KeyRegistry.load(path)
    assert loaded.records() == registry.records()
    assert KeyRegistry.from_json(registry.to_json()).records() == registry.records()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in path.parent.iterdir()) == ["registry.json"]


def test_save_replaces_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    KeyRegistry().save(path)
    KeyRegistry([rfc_record()]).save(path)
    assert [r.key_id for r in KeyRegistry.load(path).records()] == [RFC8032_KEY_ID]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["registry.json"]


def test_optional_fields_may_be_absent() -> None:
    entry = rfc_entry()
    for name in ("not_after", "revoked_at", "revocation_reason"):
        del entry[name]
    registry = KeyRegistry.from_json({"format": REGISTRY_FORMAT_V1, "keys": [entry]})
    assert registry.records() == [rfc_record(not_after_us=None)]


def _write(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document))
    return path


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([["not", "an", "object"]], "keys[0]: expected an object, found list"),
        ([rfc_entry(), rfc_entry(extra=1)], "keys[1]: unknown field(s) 'extra'"),
        (
            [{k: v for k, v in rfc_entry().items() if k != "role"}],
            "keys[0]: missing field 'role'",
        ),
        ([rfc_entry(subject=7)], "keys[0]: 'subject' must be a string, found 7"),
        (
            [rfc_entry(public_key="not base64!")],
            "keys[0]: 'public_key' is not valid standard base64",
        ),
        (
            [rfc_entry(public_key=base64.b64encode(bytes(31)).decode())],
            "keys[0]: 'public_key' must decode to 32 bytes, found 31",
        ),
        (
            [rfc_entry(role="admin")],
            "keys[0]: 'role' must be one of 'emitter', 'authorizer', 'processor', found 'admin'",
        ),
        (
            [rfc_entry(not_before="2024-01-01")],
            "keys[0]: 'not_before': not an RFC 3339 timestamp with at most 6 fraction digits: "
            "'2024-01-01'",
        ),
        (
            [rfc_entry(revoked_at=5)],
            "keys[0]: 'revoked_at' must be a string or null, found 5",
        ),
        (
            [rfc_entry(not_after="2023-01-01T00:00:00Z")],
            "keys[0]: not_after (2023-01-01T00:00:00Z) is before not_before (2024-01-01T00:00:00Z)",
        ),
        (
            [rfc_entry(key_id="ed25519:0000000000000000")],
            "keys[0]: key_id 'ed25519:0000000000000000' does not match the public key "
            f"(expected '{RFC8032_KEY_ID}')",
        ),
        (
            [rfc_entry(), rfc_entry(subject="other")],
            f"keys[1]: duplicate key_id '{RFC8032_KEY_ID}' (first at keys[0])",
        ),
    ],
)
def test_malformed_entries_name_file_and_index(
    tmp_path: Path, entries: list[Any], message: str
) -> None:
    path = _write(tmp_path / "registry.json", {"format": REGISTRY_FORMAT_V1, "keys": entries})
    with pytest.raises(ConfigError) as info:
        KeyRegistry.load(path)
    assert str(info.value) == f"{path}: {message}"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b"{",
            "not valid JSON: Expecting property name enclosed in double quotes at line 1 column 2",
        ),
        (b"\xff", "not valid UTF-8"),
        (b"[]", "expected a JSON object, found list"),
        (
            b'{"format": "lineage-key-registry/v3", "keys": []}',
            "unsupported format 'lineage-key-registry/v3', expected "
            "'lineage-key-registry/v1' or 'lineage-key-registry/v2'",
        ),
        (
            b'{"keys": []}',
            "unsupported format None, expected "
            "'lineage-key-registry/v1' or 'lineage-key-registry/v2'",
        ),
        (
            b'{"format": "lineage-key-registry/v1", "keys": [{"compromised_at": null}]}',
            "keys[0]: unknown field(s) 'compromised_at' "
            "(compromised_at need format 'lineage-key-registry/v2')",
        ),
        (
            b'{"format": "lineage-key-registry/v1", "keys": [], "note": 1}',
            "unknown top-level field(s) 'note'",
        ),
        (b'{"format": "lineage-key-registry/v1", "keys": {}}', "'keys' must be a list, found dict"),
        (
            b'{"format": "lineage-key-registry/v1", "format": "lineage-key-registry/v1"}',
            "duplicate JSON member 'format'",
        ),
    ],
)
def test_malformed_files_are_rejected(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "registry.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        KeyRegistry.load(path)
    assert str(info.value) == f"{path}: {message}"


def test_duplicate_member_inside_an_entry_cannot_unrevoke(tmp_path: Path) -> None:
    entry = json.dumps(rfc_entry(revoked_at="2024-01-02T00:00:00Z"))
    sneaky = entry[:-1] + ', "revoked_at": null}'
    path = tmp_path / "registry.json"
    path.write_text(f'{{"format": "{REGISTRY_FORMAT_V1}", "keys": [{sneaky}]}}')
    with pytest.raises(ConfigError, match="duplicate JSON member 'revoked_at'"):
        KeyRegistry.load(path)


def test_missing_registry_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"
    with pytest.raises(ConfigError) as info:
        KeyRegistry.load(path)
    assert str(info.value) == f"key registry {path} does not exist"


def test_add_rejects_duplicates_and_foreign_key_ids() -> None:
    registry = KeyRegistry([rfc_record()])
    with pytest.raises(ConfigError) as info:
        registry.add(rfc_record(subject="svc-b"))
    assert str(info.value) == f"key {RFC8032_KEY_ID} is already in the registry"
    with pytest.raises(ConfigError, match="does not match the public key"):
        registry.add(rfc_record(key_id="ed25519:ffffffffffffffff", public_key=bytes(32)))
    assert len(registry) == 1


def test_check_accepts_inclusive_window() -> None:
    registry = KeyRegistry([rfc_record()])
    for at in (T0, T0 + DAY, T0 + 30 * DAY):
        assert registry.check(RFC8032_KEY_ID, role=Role.EMITTER, subject="svc-a", at_us=at) == (
            rfc_record()
        )


def test_open_ended_window() -> None:
    registry = KeyRegistry([rfc_record(not_after_us=None)])
    registry.check(RFC8032_KEY_ID, role=Role.EMITTER, subject="svc-a", at_us=T0 + 10_000 * DAY)
    with pytest.raises(KeyExpiredError) as info:
        registry.check(RFC8032_KEY_ID, role=Role.EMITTER, subject="svc-a", at_us=T0 - 1)
    assert str(info.value) == (
        f"key {RFC8032_KEY_ID} is not valid before 2024-01-01T00:00:00Z; "
        "the signed item claims 2023-12-31T23:59:59.999999Z"
    )


def test_unknown_key() -> None:
    with pytest.raises(UnknownKeyError) as info:
        KeyRegistry().check("ed25519:0000000000000000", role=Role.EMITTER, subject="s", at_us=T0)
    assert str(info.value) == "unknown key 'ed25519:0000000000000000': not in the key registry"
    assert info.value.code == "UNKNOWN_KEY"
    assert info.value.key_id == "ed25519:0000000000000000"


def test_revoked_key_is_rejected_at_any_time() -> None:
    registry = KeyRegistry([rfc_record()])
    registry.revoke(RFC8032_KEY_ID, T0 + 10 * DAY, "private key leaked")
    for at in (T0, T0 + 5 * DAY, T0 + 20 * DAY):
        with pytest.raises(RevokedKeyError) as info:
            registry.check(RFC8032_KEY_ID, role=Role.EMITTER, subject="svc-a", at_us=at)
        assert str(info.value) == (
            f"key {RFC8032_KEY_ID} was revoked at 2024-01-11T00:00:00Z: private key leaked"
        )
        assert info.value.code == "UNKNOWN_KEY"
    with pytest.raises(RevokedKeyError):
        registry.verify(
            RFC8032_KEY_ID,
            b"",
            RFC8032_SIGNATURE,
            role=Role.EMITTER,
            subject="svc-a",
            at_us=T0,
        )


def test_revoked_without_reason_says_so() -> None:
    registry = KeyRegistry([rfc_record(revoked_at_us=T0)])
    with pytest.raises(RevokedKeyError) as info:
        registry.check(RFC8032_KEY_ID, role=Role.EMITTER, subject="svc-a", at_us=T0)
    assert str(info.value) == (
        f"key {RFC8032_KEY_ID} was revoked at 2024-01-01T00:00:00Z: no reason given"
    )


def test_scope_errors_name_expected_and_found() -> None:
    registry = KeyRegistry([rfc_record()])
    with pytest.raises(KeyScopeError) as info:
        registry.check(RFC8032_KEY_ID, role=Role.PROCESSOR, subject="svc-a", at_us=T0)
    assert str(info.value) == f"key {RFC8032_KEY_ID} has role 'emitter', expected role 'processor'"
    assert info.value.code == "UNKNOWN_KEY"
    with pytest.raises(KeyScopeError) as info:
        registry.check(RFC8032_KEY_ID, role=Role.EMITTER, subject="svc-A", at_us=T0)
    assert str(info.value) == f"key {RFC8032_KEY_ID} has subject 'svc-a', expected subject 'svc-A'"
    assert (info.value.expected, info.value.found) == ("svc-A", "svc-a")


def test_expired_key() -> None:
    registry = KeyRegistry([rfc_record()])
    with pytest.raises(KeyExpiredError) as info:
        registry.check(RFC8032_KEY_ID, role=Role.EMITTER, subject="svc-a", at_us=T0 + 30 * DAY + 1)
    assert str(info.value) == (
        f"key {RFC8032_KEY_ID} expired at 2024-01-31T00:00:00Z; "
        "the signed item claims 2024-01-31T00:00:00.000001Z"
    )
    assert info.value.code == "UNKNOWN_KEY"


def test_error_codes_are_violation_types() -> None:
    for error in (UnknownKeyError, RevokedKeyError, KeyScopeError, KeyExpiredError):
        assert issubclass(error, IntegrityError)
        assert ViolationType(error.code) is ViolationType.UNKNOWN_KEY
    assert issubclass(BadSignatureError, IntegrityError)
    assert ViolationType(BadSignatureError.code) is ViolationType.BAD_SIGNATURE


def test_verify_rfc8032_vector() -> None:
    KeyRegistry([rfc_record()]).verify(
        RFC8032_KEY_ID, b"", RFC8032_SIGNATURE, role=Role.EMITTER, subject="svc-a", at_us=T0
    )


@pytest.mark.parametrize("position", [0, 31, 32, 63])
def test_flipped_signature_byte_fails(position: int) -> None:
    registry = KeyRegistry([rfc_record()])
    tampered = bytearray(RFC8032_SIGNATURE)
    tampered[position] ^= 0x01
    with pytest.raises(BadSignatureError) as info:
        registry.verify(
            RFC8032_KEY_ID, b"", bytes(tampered), role=Role.EMITTER, subject="svc-a", at_us=T0
        )
    assert str(info.value) == (
        f"Ed25519 signature does not verify under key {RFC8032_KEY_ID} over the 0 signed bytes"
    )
    assert info.value.code == "BAD_SIGNATURE"


def test_signer_round_trip_and_tampered_message() -> None:
    signer, record = Signer.generate_ephemeral("svc-b", Role.AUTHORIZER)
    registry = KeyRegistry([record])
    message = b"decision: ALLOW"
    signature = signer.sign(message)
    assert len(signature) == 64
    registry.verify(
        signer.key_id, message, signature, role=Role.AUTHORIZER, subject="svc-b", at_us=T0
    )
    tampered = bytearray(message)
    tampered[-1] ^= 0x01
    with pytest.raises(BadSignatureError):
        registry.verify(
            signer.key_id,
            bytes(tampered),
            signature,
            role=Role.AUTHORIZER,
            subject="svc-b",
            at_us=T0,
        )
    with pytest.raises(BadSignatureError):
        registry.verify(
            signer.key_id,
            message,
            signature[:-1],
            role=Role.AUTHORIZER,
            subject="svc-b",
            at_us=T0,
        )


def test_public_keys_are_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    original = Ed25519PublicKey.from_public_bytes

    def counting(data: bytes) -> Ed25519PublicKey:
        calls.append(data)
        return original(data)

    monkeypatch.setattr(Ed25519PublicKey, "from_public_bytes", counting)
    registry = KeyRegistry([rfc_record()])
    for _ in range(3):
        registry.verify(
            RFC8032_KEY_ID, b"", RFC8032_SIGNATURE, role=Role.EMITTER, subject="svc-a", at_us=T0
        )
    assert calls == [RFC8032_PUBLIC]


def test_signer_repr_hides_private_key() -> None:
    signer, _ = Signer.generate_ephemeral("svc", Role.EMITTER)
    assert repr(signer) == f"Signer(key_id={signer.key_id!r}, subject='svc', role='emitter')"


def test_revoke_errors_and_persistence(tmp_path: Path) -> None:
    registry = KeyRegistry([rfc_record()])
    with pytest.raises(UnknownKeyError):
        registry.revoke("ed25519:0000000000000000", T0, "x")
    with pytest.raises(ConfigError, match="needs a reason"):
        registry.revoke(RFC8032_KEY_ID, T0, "  ")
    updated = registry.revoke(RFC8032_KEY_ID, T0 + DAY, "rotated")
    assert updated.revoked and updated.revocation_reason == "rotated"
    with pytest.raises(ConfigError) as info:
        registry.revoke(RFC8032_KEY_ID, T0 + 2 * DAY, "again")
    assert str(info.value) == (
        f"key {RFC8032_KEY_ID} is already revoked at 2024-01-02T00:00:00Z: rotated"
    )
    path = tmp_path / "registry.json"
    registry.save(path)
    assert KeyRegistry.load(path).get(RFC8032_KEY_ID) == updated


def test_generate_key_writes_private_key_0600(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    record, path = generate_key("svc-a", Role.EMITTER, keys_dir, valid_days=10, now_us=T0)
    assert path == keys_dir / "private" / "svc-a.emitter.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert (record.role, record.subject) == (Role.EMITTER, "svc-a")
    assert (record.not_before_us, record.not_after_us) == (T0, T0 + 10 * DAY)
    assert record.key_id == key_id_for(record.public_key)
    assert load_private_key(path).public_key().public_bytes_raw() == record.public_key
    assert sorted(p.name for p in path.parent.iterdir()) == ["svc-a.emitter.pem"]


def test_generate_key_refuses_to_overwrite(tmp_path: Path) -> None:
    _, path = generate_key("svc-a", Role.EMITTER, tmp_path)
    before = path.read_bytes()
    with pytest.raises(ConfigError) as info:
        generate_key("svc-a", Role.EMITTER, tmp_path)
    assert str(info.value) == f"private key file {path} already exists; refusing to overwrite it"
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["svc-a.emitter.pem"]


def test_generate_key_keeps_odd_subjects_inside_the_directory(tmp_path: Path) -> None:
    record, path = generate_key("../../etc/x", Role.PROCESSOR, tmp_path)
    assert path.parent == tmp_path / "private"
    assert path.name == "..%2F..%2Fetc%2Fx.processor.pem"
    assert record.subject == "../../etc/x"
    assert private_key_path(tmp_path, "../../etc/x", Role.PROCESSOR) == path


def test_generate_key_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="valid_days must be at least 1, found 0"):
        generate_key("svc", Role.EMITTER, tmp_path, valid_days=0)
    with pytest.raises(ConfigError, match="subject must be a non-empty string"):
        generate_key("", Role.EMITTER, tmp_path)


def test_load_private_key_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(ConfigError) as info:
        load_private_key(missing)
    assert str(info.value) == f"private key file {missing} does not exist"

    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello")
    with pytest.raises(ConfigError) as info:
        load_private_key(garbage)
    assert str(info.value) == f"{garbage} is not a PEM private key"

    ed448 = tmp_path / "ed448.pem"
    ed448.write_bytes(
        Ed448PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ConfigError) as info:
        load_private_key(ed448)
    assert str(info.value) == f"{ed448} holds a key of type Ed448PrivateKey, expected Ed25519"

    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    with pytest.raises(ConfigError) as info:
        load_private_key(encrypted)
    assert (
        str(info.value) == f"private key {encrypted} is encrypted; an unencrypted key is expected"
    )


def test_signer_from_file_checks_the_record(tmp_path: Path) -> None:
    record, path = generate_key("svc-a", Role.EMITTER, tmp_path, now_us=T0)
    signer = Signer.from_file(path, record)
    assert (signer.key_id, signer.subject, signer.role) == (record.key_id, "svc-a", Role.EMITTER)
    assert signer.public_key == record.public_key
    with pytest.raises(ConfigError) as info:
        Signer.from_file(path, rfc_record())
    assert str(info.value) == (
        f"private key {path} is {record.key_id}, not registry key {RFC8032_KEY_ID}"
    )


def test_ensure_demo_keys_is_idempotent(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    registry_path = keys_dir / "registry.json"
    subjects = [("svc-a", Role.EMITTER), ("gate", Role.AUTHORIZER), ("proc", Role.PROCESSOR)]

    first = ensure_demo_keys(keys_dir, registry_path, subjects)
    assert sorted(first) == ["gate", "proc", "svc-a"]
    content = registry_path.read_bytes()
    mtime = registry_path.stat().st_mtime_ns
    pems = {p.name: p.read_bytes() for p in (keys_dir / "private").iterdir()}
    assert sorted(pems) == ["gate.authorizer.pem", "proc.processor.pem", "svc-a.emitter.pem"]

    second = ensure_demo_keys(keys_dir, registry_path, subjects)
    assert {s: v.key_id for s, v in second.items()} == {s: v.key_id for s, v in first.items()}
    assert registry_path.read_bytes() == content
    assert registry_path.stat().st_mtime_ns == mtime
    assert {p.name: p.read_bytes() for p in (keys_dir / "private").iterdir()} == pems

    registry = KeyRegistry.load(registry_path)
    assert len(registry) == 3
    for subject, role in subjects:
        signer = second[subject]
        message = subject.encode()
        record = registry.get(signer.key_id)
        assert record is not None
        registry.verify(
            signer.key_id,
            message,
            signer.sign(message),
            role=role,
            subject=subject,
            at_us=record.not_before_us,
        )


def test_ensure_demo_keys_adds_a_missing_subject_and_a_lost_entry(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    registry_path = keys_dir / "registry.json"
    first = ensure_demo_keys(keys_dir, registry_path, [("svc-a", Role.EMITTER)])
    KeyRegistry().save(registry_path)  # the entry is lost, the private key is still there
    second = ensure_demo_keys(
        keys_dir, registry_path, [("svc-a", Role.EMITTER), ("proc", Role.PROCESSOR)]
    )
    assert second["svc-a"].key_id == first["svc-a"].key_id
    assert sorted(r.subject for r in KeyRegistry.load(registry_path).records()) == [
        "proc",
        "svc-a",
    ]


def test_ensure_demo_keys_refuses_a_revoked_key(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    registry_path = keys_dir / "registry.json"
    signer = ensure_demo_keys(keys_dir, registry_path, [("svc-a", Role.EMITTER)])["svc-a"]
    registry = KeyRegistry.load(registry_path)
    registry.revoke(signer.key_id, T0, "compromised")
    registry.save(registry_path)
    pem = private_key_path(keys_dir, "svc-a", Role.EMITTER)
    with pytest.raises(ConfigError) as info:
        ensure_demo_keys(keys_dir, registry_path, [("svc-a", Role.EMITTER)])
    assert str(info.value) == (
        f"demo key {pem} cannot be used: key {signer.key_id} was revoked at "
        "2024-01-01T00:00:00Z: compromised; delete it to generate a new one"
    )
    os.unlink(pem)
    fresh = ensure_demo_keys(keys_dir, registry_path, [("svc-a", Role.EMITTER)])["svc-a"]
    assert fresh.key_id != signer.key_id


def test_ensure_demo_keys_rejects_repeated_subjects(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="each subject may appear once, repeated: x"):
        ensure_demo_keys(
            tmp_path, tmp_path / "registry.json", [("x", Role.EMITTER), ("x", Role.PROCESSOR)]
        )


# -- rotation ---------------------------------------------------------------


def test_rotating_signer_switches_in_the_middle_of_the_overlap(tmp_path: Path) -> None:
    from lineage.keys import RotatingSigner, plan_rotation

    keys_dir = tmp_path / "keys"
    path = keys_dir / "registry.json"
    old, _ = generate_key("svc", Role.EMITTER, keys_dir, now_us=T0)
    registry = KeyRegistry([old])
    registry.save(path)
    clock = [T0 + DAY]
    signer = RotatingSigner("svc", Role.EMITTER, path, keys_dir, clock=lambda: clock[0])
    assert signer.key_id == old.key_id
    signer.sign(b"consumes the pin")
    new, new_path = generate_key("svc", Role.EMITTER, keys_dir, now_us=T0, per_key=True)
    assert new_path.name == f"svc.emitter.{new.key_id.split(':')[1]}.pem"
    switch = T0 + 2 * DAY
    with pytest.raises(ConfigError, match="not in the future"):
        plan_rotation(registry, new, switch_at_us=switch, overlap_us=DAY + 1, now_us=clock[0])
    retired = plan_rotation(
        registry, new, switch_at_us=switch, overlap_us=60_000_000, now_us=clock[0]
    )
    assert [r.key_id for r in retired] == [old.key_id]
    registry.save(path)
    stored = KeyRegistry.load(path)
    assert stored.get(old.key_id).not_after_us == switch + 60_000_000  # type: ignore[union-attr]
    assert stored.get(new.key_id).not_before_us == switch - 60_000_000  # type: ignore[union-attr]
    signer._checked = 0.0  # the next use re-reads the registry (normally after a second)
    for now, expected in (
        (switch - 60_000_000, old.key_id),  # both valid: the old key keeps signing
        (switch - 1, old.key_id),
        (switch, new.key_id),  # middle of the overlap
        (switch + 60_000_001, new.key_id),  # old key expired
    ):
        clock[0] = now
        assert signer.current_key_id() == expected, now
    # key_id pins the key for this thread until sign(): message and signature always agree
    clock[0] = switch - 1
    pinned = signer.key_id
    clock[0] = switch
    assert signer.key_id == pinned == old.key_id
    signature = signer.sign(b"m")
    stored.verify(old.key_id, b"m", signature, role=Role.EMITTER, subject="svc", at_us=switch - 1)
    assert signer.key_id == new.key_id


def test_rotating_signer_needs_a_usable_key(tmp_path: Path) -> None:
    from lineage.keys import RotatingSigner

    path = tmp_path / "registry.json"
    KeyRegistry([]).save(path)
    with pytest.raises(ConfigError, match="no usable emitter key for 'svc'"):
        RotatingSigner("svc", Role.EMITTER, path, tmp_path)


def test_watched_registry_picks_up_changes_and_keeps_the_last_good(tmp_path: Path) -> None:
    from lineage.keys import WatchedKeyRegistry

    path = tmp_path / "registry.json"
    signer, record = Signer.generate_ephemeral("svc", Role.EMITTER)
    KeyRegistry([record]).save(path)
    watched = WatchedKeyRegistry(path)
    signature = signer.sign(b"m")
    watched.verify(record.key_id, b"m", signature, role=Role.EMITTER, subject="svc", at_us=5)
    later, later_record = Signer.generate_ephemeral("svc", Role.EMITTER)
    updated = KeyRegistry([record, later_record])
    updated.revoke(record.key_id, 10, "rotated out")
    updated.save(path)
    watched._checked = 0.0  # normally re-checked after a second
    assert watched.get(later_record.key_id) == later_record
    with pytest.raises(RevokedKeyError):
        watched.check(record.key_id, role=Role.EMITTER, subject="svc", at_us=5)
    path.write_text("{ half written")
    watched._checked = 0.0
    assert len(watched) == 2 and watched.last_error is not None
    assert "not valid JSON" in watched.last_error
    watched.verify(
        later_record.key_id, b"x", later.sign(b"x"), role=Role.EMITTER, subject="svc", at_us=5
    )


def test_rotating_signer_skips_keys_this_host_cannot_open(tmp_path: Path) -> None:
    from lineage.keys import RotatingSigner

    keys_dir = tmp_path / "keys"
    path = keys_dir / "registry.json"
    _, elsewhere = Signer.generate_ephemeral("proc", Role.PROCESSOR, not_before_us=T0)
    mine, _ = generate_key("proc", Role.PROCESSOR, keys_dir, now_us=T0 + 1)
    KeyRegistry([elsewhere, mine]).save(path)
    signer = RotatingSigner("proc", Role.PROCESSOR, path, keys_dir, clock=lambda: T0 + DAY)
    assert signer.current_key_id() == mine.key_id
    KeyRegistry([elsewhere]).save(path)
    with pytest.raises(ConfigError, match=r"and can be opened here .*does not exist"):
        RotatingSigner("proc", Role.PROCESSOR, path, tmp_path / "empty", clock=lambda: T0 + DAY)

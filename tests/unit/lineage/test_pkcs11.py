"""Keys in a PKCS#11 token (SoftHSM2, one fresh token per test): generate, sign, verify, refuse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner

from lineage import note
from lineage.errors import ConfigError
from lineage.keys import (
    CUSTODY_PKCS11,
    REGISTRY_FORMAT_V2,
    BadSignatureError,
    KeyRegistry,
    Role,
    RotatingSigner,
    file_backed_keys,
    generate_key,
    open_signer,
)
from lineage.pkcs11 import TokenConfig, generate_token_key, open_token_key, parse_uri
from lineage_cli.main import app
from tests.support.softhsm import SoftHsm, init_token


@pytest.fixture
def hsm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SoftHsm:
    return init_token(tmp_path / "hsm", monkeypatch)


def test_uri_parsing() -> None:
    uri = parse_uri("pkcs11:token=my%20token;object=gate-1;id=%01%02?module-path=/x.so")
    assert uri.attr("token") == "my token"
    assert uri.label == "gate-1"
    assert uri.path["id"] == b"\x01\x02"
    assert uri.query == {"module-path": "/x.so"}
    with pytest.raises(ConfigError, match="a PIN in the URI is refused"):
        parse_uri("pkcs11:token=t;object=o?pin-value=1234")
    with pytest.raises(ConfigError, match="unknown path attribute 'label'"):
        parse_uri("pkcs11:label=t")
    with pytest.raises(ConfigError, match="attribute 'object' given twice"):
        parse_uri("pkcs11:object=a;object=b")
    with pytest.raises(ConfigError, match="starting with 'pkcs11:'"):
        parse_uri("file:/etc/key")
    with pytest.raises(ConfigError, match="needs an 'object' attribute"):
        _ = parse_uri("pkcs11:token=t").label


def test_token_key_signs_inside_the_token_and_verifies_in_the_registry(hsm: SoftHsm) -> None:
    record = generate_token_key(
        hsm.uri("seal-1"), "payments", Role.EMITTER, config=hsm.config, not_before_us=0
    )
    assert record.custody == CUSTODY_PKCS11 and record.key_uri == hsm.uri("seal-1")
    registry = KeyRegistry([record])
    assert registry.to_json()["format"] == REGISTRY_FORMAT_V2
    signer = open_signer(record, Path("/nonexistent"), hsm.config)
    assert signer.backend == "pkcs11" and signer.key_id == record.key_id
    assert signer.public_key == record.public_key
    message = b"seal message bytes"
    signature = signer.sign(message)
    assert len(signature) == 64
    registry.verify(
        record.key_id, message, signature, role=Role.EMITTER, subject="payments", at_us=5
    )
    with pytest.raises(BadSignatureError):
        registry.verify(
            record.key_id, message + b"!", signature, role=Role.EMITTER, subject="payments", at_us=5
        )
    # The private key never leaves the token.
    with pytest.raises(ConfigError, match="cannot leave its pkcs11"):
        signer._private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    with pytest.raises(ConfigError, match="cannot leave its pkcs11"):
        signer._private_key.private_bytes_raw()


def test_token_key_is_sensitive_and_not_extractable(hsm: SoftHsm) -> None:
    import pkcs11
    from pkcs11 import Attribute, ObjectClass

    generate_token_key(hsm.uri("k"), "svc", Role.AUTHORIZER, config=hsm.config)
    token = pkcs11.lib(hsm.module).get_token(token_label=hsm.label)
    with token.open(user_pin="246810") as session:
        (private,) = session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY})
        assert private[Attribute.SENSITIVE] is True
        assert private[Attribute.EXTRACTABLE] is False
        assert private[Attribute.NEVER_EXTRACTABLE] is True
        assert private[Attribute.TOKEN] is True
        with pytest.raises(pkcs11.PKCS11Error):
            _ = private[Attribute.VALUE]


def test_checkpoint_notes_signed_in_the_token_open_with_the_verifier_key(hsm: SoftHsm) -> None:
    record = generate_token_key(
        hsm.uri("proc"), "lineage-processor", Role.PROCESSOR, config=hsm.config
    )
    signer = open_signer(record, Path("/nonexistent"), hsm.config)
    body = note.checkpoint_body("example.org/log/t/0", 7, b"\x11" * 32)
    text = note.sign_note(body, "lineage-processor", signer._private_key)
    opened, names = note.open_note(text, [("lineage-processor", record.public_key)])
    assert opened == body and names == ["lineage-processor"]


def test_generate_refuses_an_existing_label(hsm: SoftHsm) -> None:
    generate_token_key(hsm.uri("dup"), "svc", Role.EMITTER, config=hsm.config)
    with pytest.raises(ConfigError, match="already holds 2 object\\(s\\) labelled 'dup'"):
        generate_token_key(hsm.uri("dup"), "svc", Role.EMITTER, config=hsm.config)


def test_open_checks_the_registered_public_key(hsm: SoftHsm) -> None:
    a = generate_token_key(hsm.uri("a"), "svc", Role.EMITTER, config=hsm.config)
    b = generate_token_key(hsm.uri("b"), "svc", Role.EMITTER, config=hsm.config)
    with pytest.raises(
        ConfigError, match=f"the token key is {a.key_id}, not the registered {b.key_id}"
    ):
        open_token_key(hsm.uri("a"), b.public_key, hsm.config)
    with pytest.raises(ConfigError, match="found 0 private and 0 public"):
        open_token_key(hsm.uri("missing"), None, hsm.config)


def test_pin_errors_are_clear(hsm: SoftHsm, tmp_path: Path) -> None:
    generate_token_key(hsm.uri("k"), "svc", Role.EMITTER, config=hsm.config)
    with pytest.raises(ConfigError, match="no PIN: set LINEAGE_PKCS11_PIN_FILE"):
        open_token_key(hsm.uri("k"), None, TokenConfig(module=hsm.module))
    with pytest.raises(ConfigError, match="the token refused the PIN"):
        open_token_key(hsm.uri("k"), None, TokenConfig(module=hsm.module, pin="000000"))
    with pytest.raises(ConfigError, match="cannot read PIN file"):
        open_token_key(
            hsm.uri("k"), None, TokenConfig(module=hsm.module, pin_file=tmp_path / "nope")
        )
    # pin-source in the URI names a file, never the PIN itself
    key = open_token_key(
        hsm.uri("k") + f"?pin-source=file:{hsm.pin_file}", None, TokenConfig(module=hsm.module)
    )
    assert len(key.sign(b"x")) == 64
    with pytest.raises(ConfigError, match=r"no token in .* matches"):
        open_token_key("pkcs11:token=other;object=k", None, hsm.config)


def test_rotating_signer_opens_token_keys_from_the_registry(hsm: SoftHsm, tmp_path: Path) -> None:
    record = generate_token_key(hsm.uri("gate"), "gate", Role.AUTHORIZER, config=hsm.config)
    path = tmp_path / "registry.json"
    KeyRegistry([record]).save(path)
    signer = RotatingSigner("gate", Role.AUTHORIZER, path, tmp_path, token=hsm.config)
    assert signer.key_id == record.key_id and signer.backend == "pkcs11"
    signature = signer.sign(b"m")
    KeyRegistry.load(path).verify(
        record.key_id,
        b"m",
        signature,
        role=Role.AUTHORIZER,
        subject="gate",
        at_us=record.not_before_us,
    )


def test_file_backed_keys_are_reported_in_production(hsm: SoftHsm, tmp_path: Path) -> None:
    token = generate_token_key(hsm.uri("t"), "svc-a", Role.EMITTER, config=hsm.config)
    file_record, _ = generate_key("svc-b", Role.EMITTER, tmp_path)
    registry = KeyRegistry([token, file_record])
    assert file_backed_keys(registry, production=False) == []
    assert file_backed_keys(registry, production=True) == [file_record]
    registry.revoke(file_record.key_id, file_record.not_before_us, "gone")
    assert file_backed_keys(registry, production=True) == []


def test_cli_generate_pkcs11_and_list_shows_custody(
    hsm: SoftHsm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINEAGE_PKCS11_MODULE", hsm.module)
    monkeypatch.setenv("LINEAGE_PKCS11_PIN_FILE", str(hsm.pin_file))
    monkeypatch.setenv("LINEAGE_DATA_DIR", str(tmp_path / "data"))
    registry = tmp_path / "registry.json"
    runner = CliRunner()
    uri = hsm.uri("orchestrator-1")
    result = runner.invoke(
        app,
        [
            "keys",
            "generate",
            "--subject",
            "orchestrator",
            "--role",
            "authorizer",
            "--pkcs11",
            uri,
            "--registry",
            str(registry),
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"private key: {uri}" in result.output
    assert not (tmp_path / "data" / "keys" / "private").exists()
    result = runner.invoke(
        app,
        [
            "keys",
            "generate",
            "--subject",
            "tool-runner",
            "--role",
            "emitter",
            "--registry",
            str(registry),
        ],
    )
    assert result.exit_code == 0, result.output
    monkeypatch.setenv("LINEAGE_PRODUCTION", "true")
    result = runner.invoke(app, ["keys", "list", "--registry", str(registry), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["format"] == REGISTRY_FORMAT_V2 and doc["production"] is True
    custody = {k["subject"]: (k["custody"], k["key_uri"]) for k in doc["keys"]}
    assert custody == {"orchestrator": ("pkcs11", uri), "tool-runner": ("file", None)}
    file_key = next(k["key_id"] for k in doc["keys"] if k["subject"] == "tool-runner")
    assert doc["file_backed_in_production"] == [file_key]
    result = runner.invoke(app, ["keys", "list", "--registry", str(registry)])
    assert result.exit_code == 0
    assert "pkcs11" in result.stdout
    assert f"1 key(s) in use are file-backed: {file_key} (tool-runner)" in result.stderr


def test_cli_refuses_a_pin_on_the_command_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "keys",
            "generate",
            "--subject",
            "s",
            "--role",
            "emitter",
            "--pkcs11",
            "pkcs11:token=t;object=o?pin-value=1234",
            "--registry",
            str(tmp_path / "r.json"),
        ],
    )
    assert result.exit_code == 2
    assert "a PIN in the URI is refused" in result.stderr
    assert "1234" not in result.stderr


def test_demo_token_keys_are_idempotent_and_retire_file_keys(hsm: SoftHsm, tmp_path: Path) -> None:
    from lineage.keys import ensure_demo_keys
    from lineage.pkcs11 import ensure_token_keys

    keys_dir = tmp_path / "keys"
    path = keys_dir / "registry.json"
    subjects = [("gate", Role.AUTHORIZER), ("proc", Role.PROCESSOR)]
    files = ensure_demo_keys(keys_dir, path, subjects)
    signers, retired = ensure_token_keys(hsm.label, path, subjects, hsm.config)
    assert sorted(r.key_id for r in retired) == sorted(s.key_id for s in files.values())
    assert {s.backend for s in signers.values()} == {"pkcs11"}
    registry = KeyRegistry.load(path)
    assert len(registry) == 4
    assert all(r.not_after_us is not None for r in registry.records() if r.custody == "file")
    before = path.read_bytes()
    again, retired_again = ensure_token_keys(hsm.label, path, subjects, hsm.config)
    assert retired_again == [] and path.read_bytes() == before
    assert {k: s.key_id for k, s in again.items()} == {k: s.key_id for k, s in signers.items()}
    # the registry lost (new data dir): the token's existing key pairs are registered again
    path.unlink()
    third, _ = ensure_token_keys(hsm.label, path, subjects, hsm.config)
    assert {k: s.key_id for k, s in third.items()} == {k: s.key_id for k, s in signers.items()}
    assert {r.custody for r in KeyRegistry.load(path).records()} == {"pkcs11"}


def test_token_key_reopens_a_dropped_session(hsm: SoftHsm) -> None:
    record = generate_token_key(hsm.uri("k"), "svc", Role.EMITTER, config=hsm.config)
    key = open_token_key(hsm.uri("k"), record.public_key, hsm.config)
    key._session.close()  # the token forgot the session (e.g. it was reset)
    signature = key.sign(b"after")
    KeyRegistry([record]).verify(
        record.key_id,
        b"after",
        signature,
        role=Role.EMITTER,
        subject="svc",
        at_us=record.not_before_us,
    )
    key.close()
    with pytest.raises(ConfigError, match="the token key was closed"):
        key.sign(b"closed")


_CONCURRENT_SIGNERS = """
import sys, threading
from lineage.pkcs11 import TokenConfig, generate_token_key, open_token_key
from lineage.keys import Role
from pathlib import Path
module, pin_file, label = sys.argv[1:4]
config = TokenConfig(module=module, pin_file=Path(pin_file))
uris = [f"pkcs11:token={label};object=k{i}" for i in range(4)]
records = [generate_token_key(u, f"s{i}", Role.EMITTER, config=config) for i, u in enumerate(uris)]
keys = [open_token_key(u, r.public_key, config) for u, r in zip(uris, records)]
failures = []

def run(key):
    try:
        for n in range(300):
            message = b"seal %d" % n
            key.public_key().verify(key.sign(message), message)
    except Exception as exc:  # reported below; the parent asserts on it
        failures.append(repr(exc))

threads = [threading.Thread(target=run, args=(k,)) for k in keys]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("signed", 4 * 300, "failures", failures)
"""


def test_keys_of_one_token_sign_from_many_threads_at_once(hsm: SoftHsm) -> None:
    """Four emitters' seal timers sign at the same time (the demo's case). python-pkcs11 tells
    the library it is never called concurrently and SoftHSM2 then does no locking: unserialised,
    C_Sign crashed the process. The run is a child process so a crash cannot take pytest down."""
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-c", _CONCURRENT_SIGNERS, hsm.module, str(hsm.pin_file), hsm.label],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, f"exit {run.returncode}: {run.stderr[-2000:]}"
    assert run.stdout.strip() == "signed 1200 failures []", run.stdout

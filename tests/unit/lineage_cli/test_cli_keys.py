"""Tests for the ``lineage keys`` commands, run through typer's CliRunner on a temporary data dir."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from lineage.errors import ConfigError
from lineage.keys import KeyRegistry
from lineage_cli.keys import keys_app

KEY_ID = re.compile(r"ed25519:[0-9a-f]{16}")


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LINEAGE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("LINEAGE_KEYS_FILE", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    return tmp_path / "data"


def run(*args: str) -> Result:
    return CliRunner().invoke(keys_app, list(args))


def list_json(*args: str) -> dict[str, Any]:
    result = run("list", "--json", *args)
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def test_generate_list_revoke_list(data_dir: Path) -> None:
    result = run("generate", "--subject", "svc-a", "--role", "emitter")
    assert result.exit_code == 0, result.output
    match = KEY_ID.search(result.stdout)
    assert match is not None
    key_id = match.group(0)
    pem = data_dir / "keys" / "private" / "svc-a.emitter.pem"
    registry = data_dir / "keys" / "registry.json"
    assert f"private key: {pem}" in result.stdout
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    assert [r.key_id for r in KeyRegistry.load(registry).records()] == [key_id]

    listed = run("list")
    assert listed.exit_code == 0, listed.output
    row = next(line for line in listed.stdout.splitlines() if key_id in line)
    assert "emitter" in row and "svc-a" in row and "active" in row and "no end" in row

    revoked = run("revoke", key_id, "--reason", "laptop lost")
    assert revoked.exit_code == 0, revoked.output
    assert revoked.stdout.startswith(f"revoked {key_id} at ")
    assert revoked.stdout.rstrip().endswith(": laptop lost")

    listed = run("list")
    row = next(line for line in listed.stdout.splitlines() if key_id in line)
    assert "revoked" in row and "laptop lost" in row and "active" not in row

    document = list_json()
    assert document["registry"] == str(registry)
    [entry] = document["keys"]
    assert entry["key_id"] == key_id
    assert entry["status"] == "revoked"
    assert entry["revocation_reason"] == "laptop lost"
    assert entry["revoked_at"] is not None


def test_explicit_paths_and_validity(tmp_path: Path, data_dir: Path) -> None:
    keys_dir = tmp_path / "elsewhere"
    registry = tmp_path / "reg.json"
    result = run(
        "generate",
        "--subject",
        "proc-1",
        "--role",
        "processor",
        "--valid-days",
        "7",
        "--keys-dir",
        str(keys_dir),
        "--registry",
        str(registry),
    )
    assert result.exit_code == 0, result.output
    assert (keys_dir / "private" / "proc-1.processor.pem").exists()
    assert not (data_dir / "keys").exists()
    [record] = KeyRegistry.load(registry).records()
    assert record.not_after_us is not None
    assert record.not_after_us - record.not_before_us == 7 * 86_400_000_000
    [entry] = list_json("--registry", str(registry))["keys"]
    assert (entry["role"], entry["subject"], entry["status"]) == ("processor", "proc-1", "active")


def test_keys_file_setting_is_the_default_registry(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = tmp_path / "configured.json"
    monkeypatch.setenv("LINEAGE_KEYS_FILE", str(registry))
    assert run("generate", "--subject", "gate", "--role", "authorizer").exit_code == 0
    assert [r.subject for r in KeyRegistry.load(registry).records()] == ["gate"]
    assert not (data_dir / "keys" / "registry.json").exists()


def test_generate_twice_fails_cleanly(data_dir: Path) -> None:
    assert run("generate", "--subject", "svc-a", "--role", "emitter").exit_code == 0
    again = run("generate", "--subject", "svc-a", "--role", "emitter")
    pem = data_dir / "keys" / "private" / "svc-a.emitter.pem"
    assert again.exit_code == 2
    assert again.stderr == (
        f"error: private key file {pem} already exists; refusing to overwrite it\n"
    )
    assert len(list_json()["keys"]) == 1


def test_generate_removes_the_key_when_the_registry_cannot_be_saved(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_save(self: KeyRegistry, path: Path) -> None:
        raise ConfigError(f"cannot write key registry {path}: disk full")

    monkeypatch.setattr(KeyRegistry, "save", failing_save)
    result = run("generate", "--subject", "svc-a", "--role", "emitter")
    assert result.exit_code == 2
    registry = data_dir / "keys" / "registry.json"
    assert result.stderr == f"error: cannot write key registry {registry}: disk full\n"
    assert list((data_dir / "keys" / "private").iterdir()) == []


def test_revoke_unknown_and_twice(data_dir: Path) -> None:
    assert run("generate", "--subject", "svc-a", "--role", "emitter").exit_code == 0
    unknown = run("revoke", "ed25519:0000000000000000", "--reason", "x")
    assert unknown.exit_code == 2
    assert unknown.stderr == (
        "error: unknown key 'ed25519:0000000000000000': not in the key registry\n"
    )
    key_id = list_json()["keys"][0]["key_id"]
    assert run("revoke", key_id, "--reason", "first").exit_code == 0
    twice = run("revoke", key_id, "--reason", "second")
    assert twice.exit_code == 2
    assert twice.stderr.startswith(f"error: key {key_id} is already revoked at ")
    assert twice.stderr.endswith(": first\n")


def test_list_errors(data_dir: Path) -> None:
    registry = data_dir / "keys" / "registry.json"
    missing = run("list")
    assert missing.exit_code == 2
    assert missing.stderr == f"error: key registry {registry} does not exist\n"

    registry.parent.mkdir(parents=True)
    registry.write_text('{"format": "lineage-key-registry/v1", "keys": [{"key_id": 1}]}')
    malformed = run("list", "--json")
    assert malformed.exit_code == 2
    assert malformed.stderr == f"error: {registry}: keys[0]: missing field 'public_key'\n"
    assert malformed.stdout == ""


def test_bad_role_is_a_usage_error(data_dir: Path) -> None:
    result = run("generate", "--subject", "svc-a", "--role", "admin")
    assert result.exit_code == 2
    assert "admin" in result.stderr
    assert not (data_dir / "keys").exists()

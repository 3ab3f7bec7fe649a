"""The health surface says where signing keys are held, and flags file keys in production."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from console.app import ConsoleContext, create_app, key_custody
from lineage.config import Settings
from lineage.keys import KeyRecord, KeyRegistry, Role, ensure_demo_keys, key_id_for

TOKEN = "operator-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _record(role: Role, subject: str, **kw: Any) -> KeyRecord:
    public = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    fields: dict[str, Any] = {"not_before_us": 0, "not_after_us": None, **kw}
    return KeyRecord(
        key_id=key_id_for(public), public_key=public, role=role, subject=subject, **fields
    )


def _registry(data_dir: Path) -> Path:
    """Two file keys in use, one token key in use, and one retired file key."""
    path = data_dir / "keys" / "registry.json"
    ensure_demo_keys(
        data_dir / "keys",
        path,
        [("agent-runtime", Role.EMITTER), ("lineage-processor", Role.PROCESSOR)],
    )
    registry = KeyRegistry.load(path)
    registry.add(
        _record(
            Role.AUTHORIZER,
            "policy-gate",
            custody="pkcs11",
            key_uri="pkcs11:token=lineage;object=policy-gate",
        )
    )
    registry.add(_record(Role.EMITTER, "agent-runtime", not_after_us=1_000_000))  # retired 1970
    registry.save(path)
    return path


def _client(data_dir: Path, *, production: bool) -> TestClient:
    settings = Settings(data_dir=data_dir, production=production)
    return TestClient(create_app(ConsoleContext(settings=settings, store=None, token=TOKEN)))


def test_key_custody_counts_keys_in_use_and_lists_file_keys_only_in_production(
    tmp_path: Path,
) -> None:
    _registry(tmp_path)
    dev = key_custody(Settings(data_dir=tmp_path))
    assert dev == {"production": False, "in_use": {"file": 2, "pkcs11": 1}, "file_backed": []}
    prod = key_custody(Settings(data_dir=tmp_path, production=True))
    assert prod["in_use"] == {"file": 2, "pkcs11": 1}
    assert sorted((k["subject"], k["role"]) for k in prod["file_backed"]) == [
        ("agent-runtime", "emitter"),
        ("lineage-processor", "processor"),
    ]


def test_health_endpoint_flags_file_backed_keys_in_production(tmp_path: Path) -> None:
    _registry(tmp_path)
    with _client(tmp_path, production=True) as client:
        h = client.get("/api/health", headers=AUTH).json()
    assert h["keys"]["production"] is True
    assert {k["subject"] for k in h["keys"]["file_backed"]} == {
        "agent-runtime",
        "lineage-processor",
    }
    assert h["errors"]["keys"] == (
        "production deployment with file-backed signing keys: "
        + ", ".join(f"{k['subject']} ({k['role']})" for k in h["keys"]["file_backed"])
    )
    with _client(tmp_path, production=False) as client:
        h = client.get("/api/health", headers=AUTH).json()
        public = client.get("/api/public/keys").json()["keys"]
    assert h["keys"]["file_backed"] == [] and "keys" not in h.get("errors", {})
    assert sorted(k["custody"] for k in public) == ["file", "file", "file", "pkcs11"]


def test_an_unreadable_registry_is_a_health_error_not_a_crash(tmp_path: Path) -> None:
    with _client(tmp_path, production=True) as client:
        r = client.get("/api/health", headers=AUTH)
    assert r.status_code == 200
    h = r.json()
    assert "keys" not in h
    assert (
        h["errors"]["keys"].startswith("key registry ") and "does not exist" in h["errors"]["keys"]
    )

"""Ed25519 key registry: which key may speak for which emitter, authorizer or processor, and when.

Registry file (JSON, UTF-8; full description in ``docs/keys.md``)::

    {"format": "lineage-key-registry/v2",
     "keys": [{"key_id": "ed25519:<first 16 hex of SHA-256(raw public key)>",
               "public_key": "<32 raw bytes, standard base64>",
               "role": "emitter" | "authorizer" | "processor",
               "subject": "<emitter id, service or processor name; exact match>",
               "not_before": "<RFC 3339>", "not_after": "<RFC 3339>" | null,
               "revoked_at": "<RFC 3339>" | null, "revocation_reason": "<text>" | null,
               "compromised_at": "<RFC 3339>" | null,          # v2 only
               "custody": "file" | "pkcs11" | "<plugin>",       # v2 only, default "file"
               "key_uri": "pkcs11:token=...;object=..." | null}]} # v2 only

Version 1 documents (no ``compromised_at``, ``custody`` or ``key_uri``) still load unchanged;
a registry is written as v1 while none of its keys needs a v2 field, so older verifiers keep
reading it.

Signing goes through :class:`Signer`; where the private key lives (a PEM file, a PKCS#11 token
via ``lineage.pkcs11``, a cloud KMS) is hidden behind an :class:`ExternalEd25519Key`.
"""

from __future__ import annotations

from lineage.keys.registry import (
    CUSTODY_FILE,
    CUSTODY_PKCS11,
    PUBLIC_KEY_BYTES,
    REGISTRY_FORMAT,
    REGISTRY_FORMAT_V1,
    REGISTRY_FORMAT_V2,
    REGISTRY_FORMATS,
    BadSignatureError,
    KeyCompromisedError,
    KeyExpiredError,
    KeyRecord,
    KeyRegistry,
    KeyScopeError,
    KeyTrustError,
    RevokedKeyError,
    Role,
    UnknownKeyError,
    WatchedKeyRegistry,
    format_time_us,
    key_id_for,
    parse_time_us,
)
from lineage.keys.signers import (
    ExternalEd25519Key,
    RotatingSigner,
    Signer,
    ensure_demo_keys,
    file_backed_keys,
    generate_key,
    load_private_key,
    open_signer,
    plan_rotation,
    private_key_path,
)

__all__ = [
    "CUSTODY_FILE",
    "CUSTODY_PKCS11",
    "PUBLIC_KEY_BYTES",
    "REGISTRY_FORMAT",
    "REGISTRY_FORMATS",
    "REGISTRY_FORMAT_V1",
    "REGISTRY_FORMAT_V2",
    "BadSignatureError",
    "ExternalEd25519Key",
    "KeyCompromisedError",
    "KeyExpiredError",
    "KeyRecord",
    "KeyRegistry",
    "KeyScopeError",
    "KeyTrustError",
    "RevokedKeyError",
    "Role",
    "RotatingSigner",
    "Signer",
    "UnknownKeyError",
    "WatchedKeyRegistry",
    "ensure_demo_keys",
    "file_backed_keys",
    "format_time_us",
    "generate_key",
    "key_id_for",
    "load_private_key",
    "open_signer",
    "parse_time_us",
    "plan_rotation",
    "private_key_path",
]

"""Ed25519 key registry: which key may speak for which emitter, authorizer or processor, and when.

Registry file (JSON, UTF-8; full description in ``docs/keys.md``)::

    {"format": "lineage-key-registry/v1",
     "keys": [{"key_id": "ed25519:<first 16 hex of SHA-256(raw public key)>",
               "public_key": "<32 raw bytes, standard base64>",
               "role": "emitter" | "authorizer" | "processor",
               "subject": "<emitter id, service or processor name; exact match>",
               "not_before": "<RFC 3339>", "not_after": "<RFC 3339>" | null,
               "revoked_at": "<RFC 3339>" | null, "revocation_reason": "<text>" | null}]}
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from lineage.errors import ConfigError, IntegrityError
from lineage.ids import KeyId

REGISTRY_FORMAT = "lineage-key-registry/v1"
PUBLIC_KEY_BYTES = 32

_US_PER_DAY = 86_400_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_US = (datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC) - _EPOCH) // timedelta(
    microseconds=1
)
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:[Zz]|[+-]\d{2}:\d{2})"
)
_REQUIRED_FIELDS = ("key_id", "public_key", "role", "subject", "not_before")
_OPTIONAL_FIELDS = ("not_after", "revoked_at", "revocation_reason")


class Role(StrEnum):
    """What a key may sign: emitter seals, authorization decisions, or processor checkpoints."""

    EMITTER = "emitter"
    AUTHORIZER = "authorizer"
    PROCESSOR = "processor"


def key_id_for(public_key: bytes) -> KeyId:
    """The key id of a raw Ed25519 public key: ``ed25519:`` + first 16 hex of its SHA-256."""
    return KeyId("ed25519:" + hashlib.sha256(public_key).hexdigest()[:16])


def format_time_us(us: int) -> str:
    """RFC 3339 UTC text for microseconds since the Unix epoch (fraction only when non-zero)."""
    dt = _EPOCH + timedelta(microseconds=us)
    spec = "microseconds" if dt.microsecond else "seconds"
    return dt.isoformat(timespec=spec).replace("+00:00", "Z")


def parse_time_us(text: str) -> int:
    """Microseconds since the Unix epoch from an RFC 3339 timestamp (at most 6 fraction digits)."""
    if not _RFC3339.fullmatch(text):
        raise ValueError(f"not an RFC 3339 timestamp with at most 6 fraction digits: {text!r}")
    try:
        dt = datetime.fromisoformat(text.upper())
    except ValueError:
        raise ValueError(f"not a valid RFC 3339 timestamp: {text!r}") from None
    us = (dt - _EPOCH) // timedelta(microseconds=1)
    if not 0 <= us <= _MAX_US:
        raise ValueError(f"timestamp out of range: {text!r}")
    return us


def _now_us() -> int:
    return time.time_ns() // 1000


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One registry entry; times are microseconds since the Unix epoch, windows inclusive."""

    key_id: str
    public_key: bytes
    role: Role
    subject: str
    not_before_us: int
    not_after_us: int | None
    revoked_at_us: int | None = None
    revocation_reason: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.key_id, str) or not self.key_id:
            raise ConfigError("key_id must be a non-empty string")
        if not isinstance(self.public_key, bytes) or len(self.public_key) != PUBLIC_KEY_BYTES:
            found = len(self.public_key) if isinstance(self.public_key, bytes) else "non-bytes"
            raise ConfigError(f"public_key must be {PUBLIC_KEY_BYTES} raw bytes, found {found}")
        if not isinstance(self.role, Role):
            raise ConfigError(f"role must be a Role, found {self.role!r}")
        if not isinstance(self.subject, str) or not self.subject:
            raise ConfigError("subject must be a non-empty string")
        for name in ("not_before_us", "not_after_us", "revoked_at_us"):
            value = getattr(self, name)
            if value is None and name != "not_before_us":
                continue
            if not _is_int(value) or not 0 <= value <= _MAX_US:
                raise ConfigError(f"{name} must be an integer in [0, {_MAX_US}], found {value!r}")
        if self.not_after_us is not None and self.not_after_us < self.not_before_us:
            raise ConfigError(
                f"not_after ({format_time_us(self.not_after_us)}) is before "
                f"not_before ({format_time_us(self.not_before_us)})"
            )
        if self.revocation_reason is not None:
            if not isinstance(self.revocation_reason, str):
                raise ConfigError("revocation_reason must be a string or null")
            if self.revoked_at_us is None:
                raise ConfigError("revocation_reason is set but revoked_at is null")

    @property
    def revoked(self) -> bool:
        """Whether the key has been revoked (it is then trusted for nothing, at any time)."""
        return self.revoked_at_us is not None

    def status(self, at_us: int) -> str:
        """``revoked``, ``not yet valid``, ``expired`` or ``active`` at ``at_us``."""
        if self.revoked:
            return "revoked"
        if at_us < self.not_before_us:
            return "not yet valid"
        if self.not_after_us is not None and at_us > self.not_after_us:
            return "expired"
        return "active"


class KeyTrustError(IntegrityError):
    """A key cannot vouch for a signed item; ``code`` is the violation type to record."""

    code: ClassVar[str] = "UNKNOWN_KEY"

    def __init__(self, key_id: str, message: str) -> None:
        super().__init__(message)
        self.key_id = key_id


class UnknownKeyError(KeyTrustError):
    """The key id is not in the registry."""

    def __init__(self, key_id: str) -> None:
        super().__init__(key_id, f"unknown key {key_id!r}: not in the key registry")


class RevokedKeyError(KeyTrustError):
    """The key was revoked; revoked keys are rejected whatever time the signed item claims."""

    def __init__(self, key_id: str, revoked_at_us: int, reason: str | None) -> None:
        why = reason if reason else "no reason given"
        super().__init__(
            key_id, f"key {key_id} was revoked at {format_time_us(revoked_at_us)}: {why}"
        )
        self.revoked_at_us = revoked_at_us
        self.reason = reason


class KeyScopeError(KeyTrustError):
    """The key exists but may not speak for this role or subject."""

    def __init__(self, key_id: str, field: str, expected: str, found: str) -> None:
        super().__init__(
            key_id, f"key {key_id} has {field} {found!r}, expected {field} {expected!r}"
        )
        self.field = field
        self.expected = expected
        self.found = found


class KeyExpiredError(KeyTrustError):
    """The time the signed item claims lies outside the key's validity window."""

    def __init__(
        self, key_id: str, at_us: int, not_before_us: int, not_after_us: int | None
    ) -> None:
        at = format_time_us(at_us)
        if not_after_us is None or at_us < not_before_us:
            detail = f"is not valid before {format_time_us(not_before_us)}"
        else:
            detail = f"expired at {format_time_us(not_after_us)}"
        super().__init__(key_id, f"key {key_id} {detail}; the signed item claims {at}")
        self.at_us = at_us


class BadSignatureError(KeyTrustError):
    """The Ed25519 signature does not verify under the registered public key."""

    code: ClassVar[str] = "BAD_SIGNATURE"

    def __init__(self, key_id: str, message_len: int) -> None:
        super().__init__(
            key_id,
            f"Ed25519 signature does not verify under key {key_id} "
            f"over the {message_len} signed bytes",
        )


def _record_to_json(record: KeyRecord) -> dict[str, Any]:
    return {
        "key_id": record.key_id,
        "public_key": base64.b64encode(record.public_key).decode("ascii"),
        "role": record.role.value,
        "subject": record.subject,
        "not_before": format_time_us(record.not_before_us),
        "not_after": None if record.not_after_us is None else format_time_us(record.not_after_us),
        "revoked_at": None
        if record.revoked_at_us is None
        else format_time_us(record.revoked_at_us),
        "revocation_reason": record.revocation_reason,
    }


def _str(entry: Mapping[str, Any], name: str) -> str:
    value = entry.get(name)
    if not isinstance(value, str):
        raise ConfigError(f"{name!r} must be a string, found {json.dumps(value)}")
    return value


def _opt_str(entry: Mapping[str, Any], name: str) -> str | None:
    value = entry.get(name)
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{name!r} must be a string or null, found {json.dumps(value)}")
    return value


def _time(name: str, text: str) -> int:
    try:
        return parse_time_us(text)
    except ValueError as exc:
        raise ConfigError(f"{name!r}: {exc}") from None


def _opt_time(entry: Mapping[str, Any], name: str) -> int | None:
    text = _opt_str(entry, name)
    return None if text is None else _time(name, text)


def _record_from_json(entry: object) -> KeyRecord:
    if not isinstance(entry, dict):
        raise ConfigError(f"expected an object, found {type(entry).__name__}")
    unknown = sorted(set(entry) - set(_REQUIRED_FIELDS) - set(_OPTIONAL_FIELDS))
    if unknown:
        raise ConfigError("unknown field(s) " + ", ".join(repr(u) for u in unknown))
    for name in _REQUIRED_FIELDS:
        if name not in entry:
            raise ConfigError(f"missing field {name!r}")
    key_id = _str(entry, "key_id")
    encoded = _str(entry, "public_key")
    role_text = _str(entry, "role")
    subject = _str(entry, "subject")
    not_before = _time("not_before", _str(entry, "not_before"))
    try:
        public_key = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise ConfigError("'public_key' is not valid standard base64") from None
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise ConfigError(
            f"'public_key' must decode to {PUBLIC_KEY_BYTES} bytes, found {len(public_key)}"
        )
    try:
        role = Role(role_text)
    except ValueError:
        allowed = ", ".join(repr(r.value) for r in Role)
        raise ConfigError(f"'role' must be one of {allowed}, found {role_text!r}") from None
    return KeyRecord(
        key_id=key_id,
        public_key=public_key,
        role=role,
        subject=subject,
        not_before_us=not_before,
        not_after_us=_opt_time(entry, "not_after"),
        revoked_at_us=_opt_time(entry, "revoked_at"),
        revocation_reason=_opt_str(entry, "revocation_reason"),
    )


def _no_duplicate_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name in out:
            raise ConfigError(f"duplicate JSON member {name!r}")
        out[name] = value
    return out


class KeyRegistry:
    """The trusted keys by key id; ``check`` and ``verify`` fail closed."""

    def __init__(self, records: Iterable[KeyRecord] = ()) -> None:
        self._records: dict[str, KeyRecord] = {}
        self._public: dict[str, Ed25519PublicKey] = {}
        for record in records:
            self.add(record)

    def __len__(self) -> int:
        return len(self._records)

    def add(self, record: KeyRecord) -> None:
        """Add a record; its key id must be ``key_id_for(public_key)`` and not already present."""
        expected = key_id_for(record.public_key)
        if record.key_id != expected:
            raise ConfigError(
                f"key_id {record.key_id!r} does not match the public key (expected {expected!r})"
            )
        if record.key_id in self._records:
            raise ConfigError(f"key {record.key_id} is already in the registry")
        try:
            public = Ed25519PublicKey.from_public_bytes(record.public_key)
        except ValueError as exc:
            raise ConfigError(f"key {record.key_id}: invalid Ed25519 public key: {exc}") from None
        self._records[record.key_id] = record
        self._public[record.key_id] = public

    def revoke(self, key_id: str, at_us: int, reason: str) -> KeyRecord:
        """Mark a key revoked at ``at_us`` for ``reason``; returns the updated record."""
        record = self._records.get(key_id)
        if record is None:
            raise UnknownKeyError(key_id)
        if record.revoked_at_us is not None:
            raise ConfigError(
                f"key {key_id} is already revoked at {format_time_us(record.revoked_at_us)}: "
                f"{record.revocation_reason or 'no reason given'}"
            )
        if not reason.strip():
            raise ConfigError(f"revoking key {key_id} needs a reason")
        updated = replace(record, revoked_at_us=at_us, revocation_reason=reason)
        self._records[key_id] = updated
        return updated

    def get(self, key_id: str) -> KeyRecord | None:
        """The record for ``key_id``, or None."""
        return self._records.get(key_id)

    def records(self) -> list[KeyRecord]:
        """All records, in registry order."""
        return list(self._records.values())

    def check(self, key_id: str, *, role: Role, subject: str, at_us: int) -> KeyRecord:
        """The record if the key may sign as ``role`` for ``subject`` at ``at_us``, else raise.

        Checked in this order: known, not revoked (at any time), role, subject, validity window.
        """
        record = self._records.get(key_id)
        if record is None:
            raise UnknownKeyError(key_id)
        if record.revoked_at_us is not None:
            raise RevokedKeyError(key_id, record.revoked_at_us, record.revocation_reason)
        if record.role != role:
            raise KeyScopeError(key_id, "role", str(role), str(record.role))
        if record.subject != subject:
            raise KeyScopeError(key_id, "subject", subject, record.subject)
        if at_us < record.not_before_us or (
            record.not_after_us is not None and at_us > record.not_after_us
        ):
            raise KeyExpiredError(key_id, at_us, record.not_before_us, record.not_after_us)
        return record

    def verify(
        self,
        key_id: str,
        message: bytes,
        signature: bytes,
        *,
        role: Role,
        subject: str,
        at_us: int,
    ) -> None:
        """``check`` the key, then verify the Ed25519 signature over the exact ``message`` bytes."""
        self.check(key_id, role=role, subject=subject, at_us=at_us)
        try:
            self._public[key_id].verify(signature, message)
        except InvalidSignature:
            raise BadSignatureError(key_id, len(message)) from None

    def to_json(self) -> dict[str, Any]:
        """The registry as the JSON document described in the module docstring."""
        return {
            "format": REGISTRY_FORMAT,
            "keys": [_record_to_json(r) for r in self._records.values()],
        }

    @classmethod
    def from_json(cls, data: object, *, source: str = "key registry") -> KeyRegistry:
        """Parse a registry document; errors name ``source``, the entry index and the problem."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a JSON object, found {type(data).__name__}")
        if data.get("format") != REGISTRY_FORMAT:
            raise ConfigError(
                f"{source}: unsupported format {data.get('format')!r}, expected {REGISTRY_FORMAT!r}"
            )
        unknown = sorted(set(data) - {"format", "keys"})
        if unknown:
            raise ConfigError(
                f"{source}: unknown top-level field(s) " + ", ".join(repr(u) for u in unknown)
            )
        entries = data.get("keys")
        if not isinstance(entries, list):
            raise ConfigError(f"{source}: 'keys' must be a list, found {type(entries).__name__}")
        registry = cls()
        first_index: dict[str, int] = {}
        for index, entry in enumerate(entries):
            where = f"{source}: keys[{index}]"
            try:
                record = _record_from_json(entry)
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None
            if record.key_id in first_index:
                raise ConfigError(
                    f"{where}: duplicate key_id {record.key_id!r} "
                    f"(first at keys[{first_index[record.key_id]}])"
                )
            try:
                registry.add(record)
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None
            first_index[record.key_id] = index
        return registry

    @classmethod
    def load(cls, path: Path) -> KeyRegistry:
        """Read and validate a registry file."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(f"key registry {path} does not exist") from None
        except OSError as exc:
            raise ConfigError(f"cannot read key registry {path}: {_reason(exc)}") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not valid UTF-8") from None
        try:
            data = json.loads(text, object_pairs_hook=_no_duplicate_members)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{path}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from None
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        return cls.from_json(data, source=str(path))

    def save(self, path: Path) -> None:
        """Write the registry atomically (temporary file in the same directory, then rename)."""
        text = json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    out.write(text)
                    out.flush()
                    os.fsync(out.fileno())
                os.chmod(tmp, 0o644)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            _fsync_dir(path.parent)
        except OSError as exc:
            raise ConfigError(f"cannot write key registry {path}: {_reason(exc)}") from None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def private_key_path(keys_dir: Path, subject: str, role: Role) -> Path:
    """Where ``generate_key`` puts a key: ``keys_dir/private/<subject>.<role>.pem``.

    The subject is percent-encoded in the file name, so ``/`` and the like cannot escape the
    directory; ordinary subjects (letters, digits, ``-``, ``_``, ``.``) appear unchanged.
    """
    return keys_dir / "private" / f"{quote(subject, safe='')}.{role.value}.pem"


def _write_private_key(path: Path, pem: bytes) -> None:
    private_dir = path.parent
    private_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(private_dir, 0o700)
    fd, tmp = tempfile.mkstemp(dir=private_dir, prefix=".", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
            out.flush()
            os.fsync(out.fileno())
        # A hard link fails if the target exists: an existing private key is never overwritten.
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise ConfigError(
                f"private key file {path} already exists; refusing to overwrite it"
            ) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    _fsync_dir(private_dir)


def generate_key(
    subject: str,
    role: Role,
    keys_dir: Path,
    *,
    valid_days: int | None = None,
    now_us: int | None = None,
) -> tuple[KeyRecord, Path]:
    """Create a key pair, write the private key (PKCS#8 PEM, mode 0600) and return its record.

    The record is valid from ``now_us`` (default: now) for ``valid_days`` (default: no end);
    the caller adds it to a registry. An existing private key file is never overwritten.
    """
    if not subject:
        raise ConfigError("subject must be a non-empty string")
    if valid_days is not None and valid_days < 1:
        raise ConfigError(f"valid_days must be at least 1, found {valid_days}")
    now = _now_us() if now_us is None else now_us
    key = Ed25519PrivateKey.generate()
    record = _record_for(key, subject, role, now, valid_days)
    path = private_key_path(keys_dir, subject, role)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        _write_private_key(path, pem)
    except OSError as exc:
        raise ConfigError(f"cannot write private key {path}: {_reason(exc)}") from None
    return record, path


def _record_for(
    key: Ed25519PrivateKey, subject: str, role: Role, not_before_us: int, valid_days: int | None
) -> KeyRecord:
    public = key.public_key().public_bytes_raw()
    return KeyRecord(
        key_id=key_id_for(public),
        public_key=public,
        role=role,
        subject=subject,
        not_before_us=not_before_us,
        not_after_us=None if valid_days is None else not_before_us + valid_days * _US_PER_DAY,
    )


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read an unencrypted PKCS#8 PEM Ed25519 private key."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"private key file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read private key {path}: {_reason(exc)}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigError(
            f"private key {path} is encrypted; an unencrypted key is expected"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"{path} is not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} holds a key of type {type(key).__name__}, expected Ed25519")
    return key


class Signer:
    """An Ed25519 private key together with the key id, subject and role it signs as."""

    __slots__ = ("_private_key", "key_id", "role", "subject")

    def __init__(
        self, key_id: str, private_key: Ed25519PrivateKey, subject: str, role: Role
    ) -> None:
        self.key_id = key_id
        self._private_key = private_key
        self.subject = subject
        self.role = role

    def __repr__(self) -> str:
        return f"Signer(key_id={self.key_id!r}, subject={self.subject!r}, role={self.role.value!r})"

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte public key."""
        return self._private_key.public_key().public_bytes_raw()

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature over the exact ``message`` bytes."""
        return self._private_key.sign(message)

    @classmethod
    def from_file(cls, path: Path, record: KeyRecord) -> Signer:
        """Load the private key at ``path`` and check it belongs to the registry ``record``."""
        key = load_private_key(path)
        if key.public_key().public_bytes_raw() != record.public_key:
            found = key_id_for(key.public_key().public_bytes_raw())
            raise ConfigError(f"private key {path} is {found}, not registry key {record.key_id}")
        return cls(record.key_id, key, record.subject, record.role)

    @classmethod
    def generate_ephemeral(
        cls,
        subject: str,
        role: Role,
        *,
        not_before_us: int = 0,
        valid_days: int | None = None,
    ) -> tuple[Signer, KeyRecord]:
        """An in-memory key (for tests) and its record, valid from ``not_before_us`` (default 0)."""
        key = Ed25519PrivateKey.generate()
        record = _record_for(key, subject, role, not_before_us, valid_days)
        return cls(record.key_id, key, subject, role), record


def ensure_demo_keys(
    keys_dir: Path, registry_path: Path, subjects: list[tuple[str, Role]]
) -> dict[str, Signer]:
    """Create missing keys and registry entries, reuse existing ones; signers by subject.

    Idempotent: a second call with the same arguments changes no file. A private key whose
    registry entry is revoked, expired or scoped differently is an error, not silently replaced.
    """
    seen = [s for s, _ in subjects]
    dupes = sorted({s for s in seen if seen.count(s) > 1})
    if dupes:
        raise ConfigError("each subject may appear once, repeated: " + ", ".join(dupes))
    registry = KeyRegistry.load(registry_path) if registry_path.exists() else KeyRegistry()
    now = _now_us()
    changed = False
    signers: dict[str, Signer] = {}
    for subject, role in subjects:
        path = private_key_path(keys_dir, subject, role)
        if not path.exists():
            record, path = generate_key(subject, role, keys_dir, now_us=now)
            registry.add(record)
            changed = True
        else:
            key = load_private_key(path)
            public = key.public_key().public_bytes_raw()
            existing = registry.get(key_id_for(public))
            if existing is None:
                record = _record_for(key, subject, role, now, None)
                registry.add(record)
                changed = True
            else:
                record = existing
                try:
                    registry.check(record.key_id, role=role, subject=subject, at_us=now)
                except KeyTrustError as exc:
                    raise ConfigError(
                        f"demo key {path} cannot be used: {exc}; delete it to generate a new one"
                    ) from None
        signers[subject] = Signer.from_file(path, record)
    if changed or not registry_path.exists():
        registry.save(registry_path)
    return signers

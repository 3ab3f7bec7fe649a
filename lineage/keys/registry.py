"""The key registry: records, trust errors, the registry file and its live-reloading variant.

Part of :mod:`lineage.keys`; import from there."""

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

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from lineage.errors import ConfigError, IntegrityError
from lineage.ids import KeyId

REGISTRY_FORMAT_V1 = "lineage-key-registry/v1"
REGISTRY_FORMAT_V2 = "lineage-key-registry/v2"
REGISTRY_FORMAT = REGISTRY_FORMAT_V2
"""The newest registry format; ``to_json`` still writes v1 when no key needs a v2 field."""
REGISTRY_FORMATS = (REGISTRY_FORMAT_V1, REGISTRY_FORMAT_V2)
CUSTODY_FILE = "file"
CUSTODY_PKCS11 = "pkcs11"
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
_V2_FIELDS = ("compromised_at", "custody", "key_uri")
_CUSTODY = re.compile(r"[a-z][a-z0-9-]{0,31}")


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
    compromised_at_us: int | None = None
    custody: str = CUSTODY_FILE
    key_uri: str | None = None

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
        for name in ("not_before_us", "not_after_us", "revoked_at_us", "compromised_at_us"):
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
        if self.compromised_at_us is not None:
            if self.revoked_at_us is None:
                raise ConfigError("compromised_at is set but revoked_at is null")
            if self.compromised_at_us > self.revoked_at_us:
                raise ConfigError(
                    f"compromised_at ({format_time_us(self.compromised_at_us)}) is after "
                    f"revoked_at ({format_time_us(self.revoked_at_us)})"
                )
        if not isinstance(self.custody, str) or not _CUSTODY.fullmatch(self.custody):
            raise ConfigError(
                f"custody must be 'file', 'pkcs11' or another lowercase backend name, "
                f"found {self.custody!r}"
            )
        if self.key_uri is not None and (not isinstance(self.key_uri, str) or not self.key_uri):
            raise ConfigError("key_uri must be a non-empty string or null")
        if self.custody == CUSTODY_PKCS11 and not (self.key_uri or "").startswith("pkcs11:"):
            raise ConfigError(f"custody 'pkcs11' needs a pkcs11: key_uri, found {self.key_uri!r}")
        if self.custody == CUSTODY_FILE and self.key_uri is not None:
            raise ConfigError("custody 'file' takes no key_uri (the file is found by subject)")

    @property
    def needs_v2(self) -> bool:
        """Whether the record uses a field that registry format v1 does not have."""
        return (
            self.compromised_at_us is not None
            or self.custody != CUSTODY_FILE
            or self.key_uri is not None
        )

    def trust_at(self, at_us: int) -> KeyTrustError | None:
        """Why a signature this key made at ``at_us`` cannot be trusted, or None if it can.

        Only the key's own life is judged here (revocation, compromise, validity window); the
        registry's ``check`` adds role and subject. In order:

        * revoked with ``compromised_at`` C: signatures claiming ``at_us >= C`` are untrusted
          (:class:`KeyCompromisedError`); earlier ones are judged by the window as usual;
        * revoked without ``compromised_at``: untrusted whatever time is claimed
          (:class:`RevokedKeyError`);
        * outside ``not_before <= at_us <= not_after``: :class:`KeyExpiredError`. A retired key
          (``not_after`` set by a rotation, never revoked) keeps vouching for everything it
          signed inside its window.
        """
        return self.revocation_error(at_us) or self.window_error(at_us)

    def trusted_window(self) -> tuple[int, int]:
        """The inclusive range of claimed times ``trust_at`` accepts (empty: ``lo > hi``).

        ``[not_before, not_after]``, cut at ``compromised_at - 1`` for a compromised key, empty
        for a key revoked without ``compromised_at``. Verifiers may cache it per signature.
        """
        hi = 2**63 - 1 if self.not_after_us is None else self.not_after_us  # int64 µs times
        if self.revoked_at_us is not None:
            if self.compromised_at_us is None:
                return (1, 0)
            hi = min(hi, self.compromised_at_us - 1)
        return (self.not_before_us, hi)

    def revocation_error(self, at_us: int) -> KeyTrustError | None:
        """The revocation or compromise verdict alone (see ``trust_at``)."""
        if self.revoked_at_us is None:
            return None
        if self.compromised_at_us is None:
            return RevokedKeyError(self.key_id, self.revoked_at_us, self.revocation_reason)
        if at_us >= self.compromised_at_us:
            return KeyCompromisedError(
                self.key_id,
                at_us,
                self.compromised_at_us,
                self.revoked_at_us,
                self.revocation_reason,
            )
        return None

    def window_error(self, at_us: int) -> KeyTrustError | None:
        """The validity-window verdict alone (see ``trust_at``)."""
        if at_us < self.not_before_us or (
            self.not_after_us is not None and at_us > self.not_after_us
        ):
            return KeyExpiredError(self.key_id, at_us, self.not_before_us, self.not_after_us)
        return None

    @property
    def revoked(self) -> bool:
        """Whether the key has been revoked (it is then trusted for nothing, at any time)."""
        return self.revoked_at_us is not None

    def status(self, at_us: int) -> str:
        """``compromised``, ``revoked``, ``not yet valid``, ``expired`` or ``active``."""
        if self.compromised_at_us is not None:
            return "compromised"
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


class KeyCompromisedError(RevokedKeyError):
    """The key was revoked as compromised and the signed item claims a time at or after that.

    A forger holding the key can sign anything; what it signed from ``compromised_at`` on is
    untrustworthy. Items claiming an earlier time still verify (see ``docs/keys.md`` for why
    that claim needs anchoring by a checkpoint or witness cosignature made before the
    compromise).
    """

    def __init__(
        self,
        key_id: str,
        at_us: int,
        compromised_at_us: int,
        revoked_at_us: int,
        reason: str | None,
    ) -> None:
        super().__init__(key_id, revoked_at_us, reason)
        why = reason if reason else "no reason given"
        self.args = (
            f"key {key_id} is compromised since {format_time_us(compromised_at_us)} "
            f"(revoked at {format_time_us(revoked_at_us)}: {why}); the signed item claims "
            f"{format_time_us(at_us)}, not before the compromise",
        )
        self.at_us = at_us
        self.compromised_at_us = compromised_at_us


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


def _record_to_json(record: KeyRecord, *, v2: bool = True) -> dict[str, Any]:
    out = {
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
    if v2:
        out["compromised_at"] = (
            None if record.compromised_at_us is None else format_time_us(record.compromised_at_us)
        )
        out["custody"] = record.custody
        out["key_uri"] = record.key_uri
    return out


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


def _record_from_json(entry: object, *, v2: bool = True) -> KeyRecord:
    if not isinstance(entry, dict):
        raise ConfigError(f"expected an object, found {type(entry).__name__}")
    known = {*_REQUIRED_FIELDS, *_OPTIONAL_FIELDS, *(_V2_FIELDS if v2 else ())}
    unknown = sorted(set(entry) - known)
    if unknown:
        later = [u for u in unknown if u in _V2_FIELDS]
        hint = f" ({', '.join(later)} need format {REGISTRY_FORMAT_V2!r})" if later else ""
        raise ConfigError("unknown field(s) " + ", ".join(repr(u) for u in unknown) + hint)
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
        compromised_at_us=_opt_time(entry, "compromised_at"),
        custody=_opt_str(entry, "custody") or CUSTODY_FILE,
        key_uri=_opt_str(entry, "key_uri"),
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

    def revoke(
        self, key_id: str, at_us: int, reason: str, *, compromised_at_us: int | None = None
    ) -> KeyRecord:
        """Mark a key revoked at ``at_us`` for ``reason``; returns the updated record.

        Without ``compromised_at_us`` the key is trusted for nothing, whatever time an item
        claims. With it, items claiming a time before ``compromised_at_us`` still verify and
        later ones fail as compromised; it may not be after ``at_us``.
        """
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
        if compromised_at_us is not None and compromised_at_us > at_us:
            raise ConfigError(
                f"compromised_at {format_time_us(compromised_at_us)} is in the future "
                f"(revoking at {format_time_us(at_us)}); a compromise is revoked after it happens"
            )
        updated = replace(
            record,
            revoked_at_us=at_us,
            revocation_reason=reason,
            compromised_at_us=compromised_at_us,
        )
        self._records[key_id] = updated
        return updated

    def retire(self, key_id: str, not_after_us: int) -> KeyRecord:
        """End a key's validity at ``not_after_us`` (rotation); what it signed stays valid.

        A window can only be shortened: a later ``not_after`` than the current one would make
        the key vouch for times it was not trusted for when the evidence was made.
        """
        record = self._records.get(key_id)
        if record is None:
            raise UnknownKeyError(key_id)
        if record.revoked_at_us is not None:
            raise ConfigError(f"key {key_id} is revoked; a revoked key cannot be retired")
        if not_after_us < record.not_before_us:
            raise ConfigError(
                f"cannot retire key {key_id} at {format_time_us(not_after_us)}: before its "
                f"not_before {format_time_us(record.not_before_us)}"
            )
        if record.not_after_us is not None and not_after_us > record.not_after_us:
            raise ConfigError(
                f"key {key_id} already ends at {format_time_us(record.not_after_us)}; "
                f"retiring it later, at {format_time_us(not_after_us)}, would extend it"
            )
        updated = replace(record, not_after_us=not_after_us)
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

        Checked in this order: known, not revoked (at any time; for a key revoked as compromised,
        not at or after ``compromised_at``), role, subject, validity window.
        """
        record = self._records.get(key_id)
        if record is None:
            raise UnknownKeyError(key_id)
        revoked = record.revocation_error(at_us)
        if revoked is not None:
            raise revoked
        if record.role != role:
            raise KeyScopeError(key_id, "role", str(role), str(record.role))
        if record.subject != subject:
            raise KeyScopeError(key_id, "subject", subject, record.subject)
        expired = record.window_error(at_us)
        if expired is not None:
            raise expired
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
        v2 = any(r.needs_v2 for r in self._records.values())
        return {
            "format": REGISTRY_FORMAT_V2 if v2 else REGISTRY_FORMAT_V1,
            "keys": [_record_to_json(r, v2=v2) for r in self._records.values()],
        }

    @classmethod
    def from_json(cls, data: object, *, source: str = "key registry") -> KeyRegistry:
        """Parse a registry document; errors name ``source``, the entry index and the problem."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a JSON object, found {type(data).__name__}")
        fmt = data.get("format")
        if fmt not in REGISTRY_FORMATS:
            raise ConfigError(
                f"{source}: unsupported format {fmt!r}, expected "
                + " or ".join(repr(f) for f in REGISTRY_FORMATS)
            )
        v2 = fmt == REGISTRY_FORMAT_V2
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
                record = _record_from_json(entry, v2=v2)
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


class WatchedKeyRegistry(KeyRegistry):
    """A registry that re-reads its file when it changes (checked at most once a second).

    Long-running verifiers (processor workers) use it so that a key registered for a rotation,
    a retirement or a revocation takes effect without a restart. A file that stops loading
    (half-edited, invalid) keeps the last good registry in force and is reported in
    ``last_error``; the next valid version is picked up.
    """

    RELOAD_S = 1.0

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.last_error: str | None = None
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._refresh(force=True)

    def _refresh(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < self.RELOAD_S:
            return
        self._checked = now
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp == self._stamp:
                return
            fresh = KeyRegistry.load(self.path)
        except (OSError, ConfigError) as exc:
            if force:
                raise ConfigError(f"cannot load key registry {self.path}: {exc}") from None
            self.last_error = str(exc)
            return
        self._records, self._public = fresh._records, fresh._public
        self._stamp = stamp
        self.last_error = None

    def __len__(self) -> int:
        self._refresh()
        return super().__len__()

    def get(self, key_id: str) -> KeyRecord | None:
        self._refresh()
        return super().get(key_id)

    def records(self) -> list[KeyRecord]:
        self._refresh()
        return super().records()

    def check(self, key_id: str, *, role: Role, subject: str, at_us: int) -> KeyRecord:
        self._refresh()
        return super().check(key_id, role=role, subject=subject, at_us=at_us)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

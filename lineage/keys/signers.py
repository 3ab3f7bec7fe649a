"""Private keys and signing: key files, generation, external (token/KMS) keys, signers, rotation.

Part of :mod:`lineage.keys`; import from there."""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from lineage.errors import ConfigError

if TYPE_CHECKING:
    from lineage.pkcs11 import TokenConfig

from lineage.keys.registry import (
    _US_PER_DAY,
    CUSTODY_FILE,
    CUSTODY_PKCS11,
    PUBLIC_KEY_BYTES,
    KeyRecord,
    KeyRegistry,
    KeyTrustError,
    Role,
    _fsync_dir,
    _now_us,
    _reason,
    format_time_us,
    key_id_for,
)


def private_key_path(keys_dir: Path, subject: str, role: Role, key_id: str | None = None) -> Path:
    """Where ``generate_key`` puts a key: ``keys_dir/private/<subject>.<role>[.<hex>].pem``.

    The subject is percent-encoded in the file name, so ``/`` and the like cannot escape the
    directory; ordinary subjects (letters, digits, ``-``, ``_``, ``.``) appear unchanged. With
    ``key_id`` the name carries the key's hex digits, so a rotated key can sit beside the old.
    """
    suffix = "" if key_id is None else "." + key_id.split(":", 1)[-1]
    return keys_dir / "private" / f"{quote(subject, safe='')}.{role.value}{suffix}.pem"


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
    per_key: bool = False,
) -> tuple[KeyRecord, Path]:
    """Create a key pair, write the private key (PKCS#8 PEM, mode 0600) and return its record.

    The record is valid from ``now_us`` (default: now) for ``valid_days`` (default: no end);
    the caller adds it to a registry. An existing private key file is never overwritten.
    ``per_key`` puts the key id in the file name (for a rotation's successor key).
    """
    if not subject:
        raise ConfigError("subject must be a non-empty string")
    if valid_days is not None and valid_days < 1:
        raise ConfigError(f"valid_days must be at least 1, found {valid_days}")
    now = _now_us() if now_us is None else now_us
    key = Ed25519PrivateKey.generate()
    record = _record_for(key, subject, role, now, valid_days)
    path = private_key_path(keys_dir, subject, role, record.key_id if per_key else None)
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


class ExternalEd25519Key(Ed25519PrivateKey):
    """An Ed25519 private key held elsewhere (PKCS#11 token, cloud KMS): it signs, never exports.

    A backend implements ``sign`` (64-byte Ed25519 signature, RFC 8032, over the exact bytes)
    and passes the raw public key and a ``backend`` name; everything that takes an
    ``Ed25519PrivateKey`` (``Signer``, ``note.sign_note``) then works unchanged. The
    ``private_bytes`` methods raise: the key material never leaves its custody.
    """

    backend: str = "external"

    def __init__(self, public_key: bytes, *, backend: str, location: str) -> None:
        if len(public_key) != PUBLIC_KEY_BYTES:
            raise ConfigError(
                f"{location}: public key must be {PUBLIC_KEY_BYTES} bytes, found {len(public_key)}"
            )
        self._public_raw = public_key
        self._public = Ed25519PublicKey.from_public_bytes(public_key)
        self.backend = backend
        self.location = location

    def public_key(self) -> Ed25519PublicKey:
        return self._public

    def sign(self, data: bytes | bytearray | memoryview) -> bytes:
        raise NotImplementedError(f"{type(self).__name__} must implement sign()")

    def private_bytes(
        self,
        encoding: serialization.Encoding,
        format: serialization.PrivateFormat,
        encryption_algorithm: serialization.KeySerializationEncryption,
    ) -> bytes:
        raise ConfigError(f"the private key at {self.location} cannot leave its {self.backend}")

    def private_bytes_raw(self) -> bytes:
        raise ConfigError(f"the private key at {self.location} cannot leave its {self.backend}")

    def __copy__(self) -> ExternalEd25519Key:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> ExternalEd25519Key:
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r})"


class Signer:
    """Signs as one key id, subject and role: the interface every signing role uses.

    Emitters (seals), the gate (authorizer decisions, through its emitter), the processor
    (checkpoint notes) and the witness all sign through ``sign``/``key_id``/``public_key``.
    The private key is any ``Ed25519PrivateKey``: an in-memory key read from a PEM file, or an
    :class:`ExternalEd25519Key` whose ``sign`` runs inside a token or KMS. ``backend`` says
    which (``file``, ``memory``, ``pkcs11``, ...).
    """

    def __init__(
        self,
        key_id: str,
        private_key: Ed25519PrivateKey,
        subject: str,
        role: Role,
        *,
        backend: str | None = None,
    ) -> None:
        self._key_id = key_id
        self._key = private_key
        self._subject = subject
        self._role = role
        self._backend: str = backend or str(getattr(private_key, "backend", "memory"))

    def __repr__(self) -> str:
        return f"Signer(key_id={self.key_id!r}, subject={self.subject!r}, role={self.role.value!r})"

    @property
    def key_id(self) -> str:
        """The registry key id signatures are made under."""
        return self._key_id

    @key_id.setter
    def key_id(self, value: str) -> None:  # settable, as before (``SignerLike`` protocols)
        self._key_id = value

    @property
    def subject(self) -> str:
        return self._subject

    @subject.setter
    def subject(self, value: str) -> None:
        self._subject = value

    @property
    def role(self) -> Role:
        return self._role

    @property
    def backend(self) -> str:
        """Where the private key lives: ``file``, ``memory``, ``pkcs11`` or a plugin name."""
        return self._backend

    @property
    def _private_key(self) -> Ed25519PrivateKey:
        """The key object, for APIs that take an ``Ed25519PrivateKey`` (note signing)."""
        return self._key

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte public key."""
        return self._private_key.public_key().public_bytes_raw()

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature over the exact ``message`` bytes."""
        return self._key.sign(message)

    @classmethod
    def from_file(cls, path: Path, record: KeyRecord) -> Signer:
        """Load the private key at ``path`` and check it belongs to the registry ``record``."""
        key = load_private_key(path)
        if key.public_key().public_bytes_raw() != record.public_key:
            found = key_id_for(key.public_key().public_bytes_raw())
            raise ConfigError(f"private key {path} is {found}, not registry key {record.key_id}")
        return cls(record.key_id, key, record.subject, record.role, backend=CUSTODY_FILE)

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
        return cls(record.key_id, key, subject, role, backend="memory"), record


def open_signer(record: KeyRecord, keys_dir: Path, token: TokenConfig | None = None) -> Signer:
    """The signer for a registry ``record``, from wherever its custody says the key lives.

    ``file``: ``keys_dir/private/<subject>.<role>.<key hex>.pem``, else the older
    ``<subject>.<role>.pem``; ``pkcs11``: the token object named by ``key_uri``, with the
    library and PIN from ``token`` (see ``lineage.pkcs11``). Another
    custody is refused: plug a KMS in by constructing ``Signer`` with its own key object.
    """
    if record.custody == CUSTODY_PKCS11:
        from lineage.pkcs11 import open_token_key  # optional dependency: imported on use

        assert record.key_uri is not None  # checked by KeyRecord
        key = open_token_key(record.key_uri, record.public_key, token)
        return Signer(record.key_id, key, record.subject, record.role, backend=CUSTODY_PKCS11)
    if record.custody != CUSTODY_FILE:
        raise ConfigError(
            f"key {record.key_id} is held by {record.custody!r}; this process has no signer for it"
        )
    per_key = private_key_path(keys_dir, record.subject, record.role, record.key_id)
    path = per_key if per_key.exists() else private_key_path(keys_dir, record.subject, record.role)
    return Signer.from_file(path, record)


class RotatingSigner(Signer):
    """Every usable key of one subject and role, switching from old to new at a boundary.

    Keys come from the registry file, re-read when it changes (at most once a second), so a
    key registered while the process runs is picked up without a restart. At any moment the
    signer uses, among the keys that are valid now, not revoked and openable on this host
    (another host's key of the same subject is skipped), the one that
    became valid first; once the next key's window has started, the switch happens at the
    middle of the overlap ``[new.not_before, old.not_after]``, so a batch opened shortly before
    the switch and signed after it still lies inside the new key's window (and the old key's
    last signatures inside its own).

    Seals name the key id in the signed message: reading ``key_id`` pins that key for the
    calling thread until its next ``sign``, so message and signature always agree. Checkpoint
    notes take ``_private_key``, one object carrying both public key and signing.
    """

    RELOAD_S = 1.0

    def __init__(
        self,
        subject: str,
        role: Role,
        registry_path: Path,
        keys_dir: Path,
        *,
        token: TokenConfig | None = None,
        clock: Callable[[], int] | None = None,
    ) -> None:
        self._token = token
        self._subject = subject
        self._role = role
        self._path = registry_path
        self._keys_dir = keys_dir
        self._clock = clock or _now_us
        self._lock = threading.Lock()
        self._local = threading.local()
        self._signers: dict[str, Signer] = {}
        self._unopenable: dict[str, str] = {}
        self._ring: list[KeyRecord] = []
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._reload(force=True)
        if not self._ring:
            raise ConfigError(
                f"no usable {role.value} key for {subject!r} in {registry_path} "
                "(valid now or later, not revoked)"
            )
        self._current()

    def __repr__(self) -> str:
        keys = ", ".join(r.key_id for r in self._ring)
        return f"RotatingSigner(subject={self.subject!r}, role={self.role.value!r}, keys=[{keys}])"

    def _reload(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < self.RELOAD_S:
            return
        self._checked = now
        try:
            st = self._path.stat()
        except OSError as exc:
            if force:
                raise ConfigError(
                    f"cannot read key registry {self._path}: {_reason(exc)}"
                ) from None
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        try:
            registry = KeyRegistry.load(self._path)
        except ConfigError:
            if force:
                raise
            return  # keep signing with the last good registry; verifiers will say if it matters
        now_us = self._clock()
        ring = [
            r
            for r in registry.records()
            if r.subject == self._subject
            and r.role == self._role
            and r.revoked_at_us is None
            and (r.not_after_us is None or r.not_after_us >= now_us)
        ]
        ring.sort(key=lambda r: r.not_before_us)
        self._ring = ring
        self._stamp = stamp
        self._unopenable.clear()  # a key file may have been deployed with this registry

    def _open(self, record: KeyRecord) -> Signer | None:
        """The record's signer, or None if this host cannot open it (e.g. another host's key)."""
        signer = self._signers.get(record.key_id)
        if signer is None and record.key_id not in self._unopenable:
            try:
                signer = open_signer(record, self._keys_dir, self._token)
            except ConfigError as exc:
                self._unopenable[record.key_id] = str(exc)
                return None
            self._signers[record.key_id] = signer
        return signer

    def _pick(self, now_us: int) -> KeyRecord:
        valid = [
            r
            for r in self._ring
            if r.not_before_us <= now_us
            and (r.not_after_us is None or now_us <= r.not_after_us)
            and self._open(r) is not None
        ]
        if not valid:
            why = "; ".join(f"{k}: {e}" for k, e in self._unopenable.items())
            raise ConfigError(
                f"no {self._role.value} key of {self._subject!r} is valid at "
                f"{format_time_us(now_us)} and can be opened here" + (f" ({why})" if why else "")
            )
        chosen = valid[0]
        for successor in valid[1:]:
            if chosen.not_after_us is None:
                break
            switch = successor.not_before_us + (chosen.not_after_us - successor.not_before_us) // 2
            if now_us < switch:
                break
            chosen = successor
        return chosen

    def _current(self) -> Signer:
        with self._lock:
            self._reload()
            record = self._pick(self._clock())
            return self._signers[record.key_id]

    def _pinned(self) -> Signer:
        pinned: Signer | None = getattr(self._local, "signer", None)
        return pinned if pinned is not None else self._current()

    @property
    def key_id(self) -> str:
        signer = self._pinned()
        self._local.signer = signer
        return signer.key_id

    @key_id.setter
    def key_id(self, value: str) -> None:
        raise ConfigError("a RotatingSigner's key id follows the registry; it cannot be set")

    @property
    def backend(self) -> str:
        return self._pinned().backend

    @property
    def _private_key(self) -> Ed25519PrivateKey:
        return self._current()._private_key

    def sign(self, message: bytes) -> bytes:
        signer = self._pinned()
        self._local.signer = None
        return signer.sign(message)

    def current_key_id(self) -> str:
        """The key id a signature made now would use (does not pin)."""
        return self._current().key_id


def plan_rotation(
    registry: KeyRegistry,
    new: KeyRecord,
    *,
    switch_at_us: int,
    overlap_us: int,
    now_us: int | None = None,
) -> list[KeyRecord]:
    """Register ``new`` as the successor of the current keys of its subject and role.

    The new key becomes valid at ``switch_at_us - overlap_us`` (which must be in the future)
    and every current unrevoked key of the same subject and role is retired at
    ``switch_at_us + overlap_us``; a :class:`RotatingSigner` switches at ``switch_at_us``, the
    middle of the overlap. Returns the retired records. Nothing already signed loses validity.
    """
    now = _now_us() if now_us is None else now_us
    if overlap_us < 1:
        raise ConfigError(f"overlap must be positive, found {overlap_us} µs")
    not_before = switch_at_us - overlap_us
    if not_before <= now:
        raise ConfigError(
            f"the new key would be valid from {format_time_us(not_before)}, not in the future "
            f"(now {format_time_us(now)}); choose a later switch time"
        )
    old = [
        r
        for r in registry.records()
        if r.subject == new.subject
        and r.role == new.role
        and r.revoked_at_us is None
        and (r.not_after_us is None or r.not_after_us >= now)
    ]
    registry.add(replace(new, not_before_us=not_before))
    retired = []
    for record in old:
        end = switch_at_us + overlap_us
        if record.not_after_us is None or record.not_after_us > end:
            retired.append(registry.retire(record.key_id, end))
    return retired


def file_backed_keys(
    registry: KeyRegistry, *, production: bool, at_us: int | None = None
) -> list[KeyRecord]:
    """For the health surface: keys in use whose private key is a file, if ``production``.

    "In use" means not revoked and not past ``not_after`` at ``at_us`` (default now), so a key
    scheduled for a rotation counts too. Outside production (file keys are fine for
    development) the list is empty. ``Settings.production`` (``LINEAGE_PRODUCTION``) says
    whether the deployment claims to be production.
    """
    if not production:
        return []
    now = _now_us() if at_us is None else at_us
    return [
        r
        for r in registry.records()
        if r.custody == CUSTODY_FILE
        and r.revoked_at_us is None
        and (r.not_after_us is None or r.not_after_us >= now)
    ]


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

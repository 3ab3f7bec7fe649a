"""A transparency-log witness: C2SP cosignature/v1 (tlog-cosignature) and add-checkpoint (tlog-witness).

The witness keeps, for every log it is configured for, the last checkpoint it cosigned, in a
directory of its own (never in the store it vouches for). It cosigns a new checkpoint only after
checking the log's signature and a consistency proof from that last size; it refuses rollbacks and
forks and keeps each refusal, with both signed checkpoints, as evidence. See docs/witness.md.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from lineage import merkle, note
from lineage.errors import ConfigError, LineageError

if TYPE_CHECKING:
    from lineage.pkcs11 import TokenConfig

COSIGNATURE_TYPE = b"\x04"
"""Signed-note signature type of timestamped Ed25519 witness cosignatures (c2sp.org/signed-note)."""
COSIGNATURE_HEADER = "cosignature/v1\n"
MAX_TIMESTAMP = 2**63 - 1
MAX_PROOF_LINES = 63
MAX_REQUEST_BYTES = 64 * 1024
SIZE_CONTENT_TYPE = "text/x.tlog.size"
COSIGNATURE_SIZE = 4 + 8 + 64
"""Decoded cosignature: key id (4) ‖ u64be timestamp (8) ‖ Ed25519 signature (64)."""

CONFIG_FORMAT = "lineage-witness/v1"
STATE_FORMAT = "lineage-witness-state/v1"
REFUSAL_FORMAT = "lineage-witness-refusal/v1"
TRUSTED_FORMAT = "lineage-trusted-checkpoints/v1"

_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}", re.ASCII)
_KEY_ID_HEX = re.compile(r"[0-9a-fA-F]{8}", re.ASCII)


class WitnessError(LineageError, ValueError):
    """A cosignature, cosigner key, witness request or witness state is malformed or invalid."""


# -- cosignature/v1 ---------------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise WitnessError(f"{what}: expected standard base64, found {text[:80]!r}") from None
    if _b64(raw) != text:
        raise WitnessError(f"{what}: expected canonical base64, found {text[:80]!r}")
    return raw


def cosigner_key_id(name: str, public_key: bytes) -> bytes:
    """The 4-byte key ID: SHA-256(name ‖ 0x0A ‖ 0x04 ‖ Ed25519 public key)[:4]."""
    note.key_id(name, public_key)  # checks the name and the key length
    return hashlib.sha256(name.encode() + b"\n" + COSIGNATURE_TYPE + public_key).digest()[:4]


def cosigner_vkey(name: str, public_key: bytes) -> str:
    """A witness verifier key: ``<name>+<hex key id>+<base64(0x04 ‖ public key)>``."""
    return f"{name}+{cosigner_key_id(name, public_key).hex()}+{_b64(COSIGNATURE_TYPE + public_key)}"


def parse_cosigner_vkey(vkey: str) -> tuple[str, bytes]:
    """Decode a witness verifier key into (name, raw Ed25519 public key), checking its key ID."""
    parts = vkey.split("+", 2)
    if len(parts) != 3:
        raise WitnessError(f"witness key: expected <name>+<key id>+<key>, found {vkey[:120]!r}")
    name, kid_hex, key64 = parts
    if not _KEY_ID_HEX.fullmatch(kid_hex):
        raise WitnessError(f"witness key id: expected 8 hex digits, found {kid_hex[:20]!r}")
    raw = _unb64(key64, "witness key material")
    if len(raw) != 33 or raw[:1] != COSIGNATURE_TYPE:
        raise WitnessError(
            f"witness key {name}: expected type 0x04 (cosignature/v1) and 32 key bytes, found "
            f"type {raw[:1].hex() or 'none'} and {max(len(raw) - 1, 0)} bytes"
        )
    try:
        expected = cosigner_key_id(name, raw[1:]).hex()
    except note.NoteError as exc:
        raise WitnessError(f"witness key: {exc}") from None
    if expected != kid_hex.lower():
        raise WitnessError(f"witness key {name}: expected key id {expected}, found {kid_hex}")
    return name, raw[1:]


def cosigned_message(body: str, timestamp: int) -> bytes:
    """The signed message: ``cosignature/v1\\n`` ‖ ``time <decimal>\\n`` ‖ the checkpoint note text."""
    if isinstance(timestamp, bool) or not 0 <= timestamp <= MAX_TIMESTAMP:
        raise WitnessError(f"cosignature timestamp: expected 0..2**63-1, found {timestamp!r}")
    if not body.endswith("\n"):
        raise WitnessError(f"note text: expected to end with a newline, found {body[-20:]!r}")
    return f"{COSIGNATURE_HEADER}time {timestamp}\n{body}".encode()


@dataclass(frozen=True, slots=True)
class Cosignature:
    """One cosignature line: who (name and key id), when (POSIX seconds), and the signature."""

    name: str
    key_id: bytes
    timestamp: int
    signature: bytes

    @property
    def signer(self) -> str:
        """``<name>+<hex key id>``."""
        return f"{self.name}+{self.key_id.hex()}"

    def line(self) -> str:
        """The note signature line, ending in newline."""
        raw = self.key_id + self.timestamp.to_bytes(8, "big") + self.signature
        return f"{note.SIGNATURE_PREFIX}{self.name} {_b64(raw)}\n"


def cosign(body: str, name: str, private_key: Ed25519PrivateKey, timestamp: int) -> Cosignature:
    """Cosign a checkpoint note text (as returned by ``note.open_note``) at ``timestamp``.

    ``private_key`` is any ``Ed25519PrivateKey``, as for ``note.sign_note``: a key read from a
    PEM file, or a :class:`~lineage.keys.ExternalEd25519Key` (a PKCS#11 token key, a KMS key)
    that signs where it is kept.
    """
    public = private_key.public_key().public_bytes_raw()
    kid = cosigner_key_id(name, public)
    return Cosignature(name, kid, timestamp, private_key.sign(cosigned_message(body, timestamp)))


def split_note(signed: str) -> tuple[str, list[tuple[str, bytes]]]:
    """Split a signed note into its text and (key name, decoded signature) pairs, unverified."""
    if not isinstance(signed, str):
        raise WitnessError("note: expected text")
    try:
        note._check_text(signed, "note")  # one definition of the note text rules
    except note.NoteError as exc:
        raise WitnessError(str(exc)) from None
    split = signed.rfind("\n\n")
    if split < 0 or not signed.endswith("\n"):
        raise WitnessError("note: expected text, a blank line and signature lines")
    text, lines = signed[: split + 1], signed[split + 2 : -1].split("\n")
    if len(lines) > note.MAX_SIGNATURES:
        raise WitnessError(f"note: expected at most {note.MAX_SIGNATURES} signatures")
    out: list[tuple[str, bytes]] = []
    for line in lines:
        if not line.startswith(note.SIGNATURE_PREFIX):
            raise WitnessError(f"signature line: expected to start with '— ', found {line[:40]!r}")
        name, _, sig64 = line[len(note.SIGNATURE_PREFIX) :].partition(" ")
        if not name or "+" in name or any(c.isspace() for c in name):
            raise WitnessError(f"signature line: bad key name {name[:40]!r}")
        raw = _unb64(sig64, f"signature by {name}")
        if len(raw) < 5:
            raise WitnessError(f"signature by {name}: expected at least 5 bytes, found {len(raw)}")
        out.append((name, raw))
    return text, out


def verify_cosignatures(
    signed: str, witnesses: Iterable[tuple[str, bytes]]
) -> tuple[str, list[Cosignature]]:
    """The note text and the valid cosignatures of the given witnesses on it.

    Lines of other keys are ignored (c2sp.org/signed-note); a line of a given witness that does
    not verify, or carries a timestamp above 2**63-1, raises ``WitnessError``.
    """
    known = {
        (n, cosigner_key_id(n, k)): Ed25519PublicKey.from_public_bytes(k) for n, k in witnesses
    }
    text, sigs = split_note(signed)
    valid: list[Cosignature] = []
    for name, raw in sigs:
        public = known.get((name, raw[:4]))
        if public is None:
            continue
        if len(raw) != COSIGNATURE_SIZE:
            raise WitnessError(
                f"cosignature by {name}+{raw[:4].hex()}: expected {COSIGNATURE_SIZE} bytes, "
                f"found {len(raw)}"
            )
        ts = int.from_bytes(raw[4:12], "big")
        if ts > MAX_TIMESTAMP:
            raise WitnessError(f"cosignature by {name}: timestamp {ts} exceeds 2**63-1")
        try:
            public.verify(raw[12:], cosigned_message(text, ts))
        except InvalidSignature:
            raise WitnessError(
                f"cosignature by {name}+{raw[:4].hex()}: expected a valid cosignature/v1 "
                f"signature at time {ts}, found an invalid one"
            ) from None
        valid.append(Cosignature(name, raw[:4], ts, raw[12:]))
    return text, valid


def add_signature_lines(signed: str, lines: Iterable[str]) -> str:
    """``signed`` with the given signature lines appended (lines already present are skipped)."""
    out = signed
    for line in lines:
        if not line.endswith("\n") or not line.startswith(note.SIGNATURE_PREFIX):
            raise WitnessError(f"signature line: expected '— name sig\\n', found {line[:60]!r}")
        if f"\n{line}" not in out:
            out += line
    return out


# -- add-checkpoint (c2sp.org/tlog-witness) ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class AddCheckpoint:
    """A parsed add-checkpoint request body."""

    old_size: int
    proof: tuple[bytes, ...]
    checkpoint: str


def format_add_checkpoint(old_size: int, proof: Sequence[bytes], checkpoint: str) -> bytes:
    """An add-checkpoint request body: ``old N``, proof lines, a blank line, the signed note."""
    lines = [f"old {old_size}\n", *(f"{_b64(h)}\n" for h in proof), "\n"]
    return ("".join(lines) + checkpoint).encode()


def parse_add_checkpoint(body: bytes) -> AddCheckpoint:
    """Parse an add-checkpoint body; ``WitnessError`` (HTTP 400) when malformed."""
    if len(body) > MAX_REQUEST_BYTES:
        raise WitnessError(
            f"request: expected at most {MAX_REQUEST_BYTES} bytes, found {len(body)}"
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WitnessError(f"request: expected UTF-8, found {exc.reason} at {exc.start}") from None
    head, sep, checkpoint = text.partition("\n\n")
    if not sep:
        raise WitnessError("request: expected an old size line, proof lines and a blank line")
    lines = head.split("\n")
    first = lines[0]
    if not first.startswith("old ") or not _DECIMAL.fullmatch(first[4:]):
        raise WitnessError(f"old size line: expected 'old <decimal>', found {first[:40]!r}")
    old_size = int(first[4:])
    if old_size > note.MAX_TREE_SIZE:
        raise WitnessError(f"old size: expected at most 2**64-1, found {old_size}")
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise WitnessError(
            f"proof: expected at most {MAX_PROOF_LINES} lines, found {len(lines) - 1}"
        )
    proof = []
    for i, line in enumerate(lines[1:]):
        h = _unb64(line, f"proof line {i}")
        if len(h) != merkle.HASH_SIZE:
            raise WitnessError(f"proof line {i}: expected a 32-byte hash, found {len(h)} bytes")
        proof.append(h)
    return AddCheckpoint(old_size, tuple(proof), checkpoint)


@dataclass(frozen=True, slots=True)
class Response:
    """An HTTP answer: status, content type and body."""

    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


def _text(status: int, message: str) -> Response:
    return Response(status, (message.rstrip("\n") + "\n").encode())


# -- configuration and state ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogSpec:
    """A log the witness accepts: an exact origin, or every origin under a prefix, and its keys."""

    origin: str
    keys: tuple[str, ...]
    prefix: bool = False

    def matches(self, origin: str) -> bool:
        """Whether ``origin`` is this log (or under this prefix)."""
        return origin.startswith(self.origin) if self.prefix else origin == self.origin

    def verifiers(self) -> list[tuple[str, bytes]]:
        """The log's verifier keys as (name, public key) pairs."""
        return [note.parse_verifier_key(k) for k in self.keys]

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        member = "origin_prefix" if self.prefix else "origin"
        return {member: self.origin, "keys": list(self.keys)}

    @classmethod
    def from_json(cls, doc: object, where: str) -> LogSpec:
        """Parse and validate one ``logs`` item."""
        if not isinstance(doc, dict):
            raise ConfigError(f"{where}: expected an object")
        prefix = "origin_prefix" in doc
        origin = doc.get("origin_prefix" if prefix else "origin")
        keys = doc.get("keys")
        if not isinstance(origin, str) or not origin or (prefix and "origin" in doc):
            raise ConfigError(f"{where}: expected exactly one of origin, origin_prefix (string)")
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
            raise ConfigError(f"{where}.keys: expected a non-empty list of verifier keys")
        spec = cls(origin, tuple(keys), prefix)
        try:
            spec.verifiers()
        except note.NoteError as exc:
            raise ConfigError(f"{where}.keys: {exc}") from None
        return spec


@dataclass(frozen=True, slots=True)
class LogState:
    """The latest checkpoint the witness cosigned for one origin."""

    origin: str
    size: int
    root_hash: bytes
    note: str
    """The checkpoint as received, with this witness's cosignature appended."""
    cosigned_at: int

    def to_json(self) -> dict[str, Any]:
        """JSON form (root in base64, as in checkpoints)."""
        return {
            "format": STATE_FORMAT,
            "origin": self.origin,
            "size": self.size,
            "root_hash": _b64(self.root_hash),
            "note": self.note,
            "cosigned_at": self.cosigned_at,
        }

    @classmethod
    def from_json(cls, doc: Any, where: str) -> LogState:
        """Parse a state file."""
        try:
            if doc["format"] != STATE_FORMAT:
                raise WitnessError(f"{where}: expected format {STATE_FORMAT}")
            return cls(
                str(doc["origin"]),
                int(doc["size"]),
                _unb64(str(doc["root_hash"]), "root_hash"),
                str(doc["note"]),
                int(doc["cosigned_at"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise WitnessError(f"{where}: not a witness state file: {exc}") from None


@dataclass(frozen=True, slots=True)
class Refusal:
    """Evidence of a refused checkpoint: the stored and the submitted signed checkpoints."""

    kind: str
    """``ROLLBACK`` (smaller than the cosigned size), ``FORK`` (same size, other root) or
    ``INCONSISTENT`` (the consistency proof from the cosigned size does not verify)."""
    origin: str
    status: int
    at: int
    message: str
    stored: LogState
    submitted_note: str
    old_size: int
    proof: tuple[bytes, ...]

    def to_json(self) -> dict[str, Any]:
        """JSON form: everything needed to show the log signed both checkpoints."""
        return {
            "format": REFUSAL_FORMAT,
            "kind": self.kind,
            "origin": self.origin,
            "status": self.status,
            "at": self.at,
            "message": self.message,
            "stored": {
                "size": self.stored.size,
                "root_hash": _b64(self.stored.root_hash),
                "note": self.stored.note,
            },
            "submitted": {
                "old_size": self.old_size,
                "proof": [_b64(h) for h in self.proof],
                "note": self.submitted_note,
            },
        }


def _atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``path`` so a reader sees the old or the new content, never a mix, even on crash."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


@dataclass
class WitnessConfig:
    """Name, accepted logs and, for a key in a token, where it is (``witness.json``).

    ``key_uri`` (RFC 7512 ``pkcs11:`` URI) names the witness's key pair in a PKCS#11 token and
    ``public_key`` is that key's public half as recorded by ``init``: opening another key under
    the same URI is refused, so the witness's identity cannot change behind its auditors' back.
    Without ``key_uri`` the key is the file ``witness.key``.
    """

    name: str
    logs: list[LogSpec] = field(default_factory=list)
    key_uri: str | None = None
    public_key: bytes | None = None

    def spec_for(self, origin: str) -> LogSpec | None:
        """The first log spec matching ``origin``."""
        return next((s for s in self.logs if s.matches(origin)), None)

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        doc: dict[str, Any] = {
            "format": CONFIG_FORMAT,
            "name": self.name,
            "logs": [s.to_json() for s in self.logs],
        }
        if self.key_uri is not None:
            assert self.public_key is not None  # set together by WitnessStore.init
            doc["key_uri"] = self.key_uri
            doc["public_key"] = _b64(self.public_key)
        return doc

    @classmethod
    def from_json(cls, doc: object, where: str) -> WitnessConfig:
        """Parse and validate."""
        if not isinstance(doc, dict) or doc.get("format") != CONFIG_FORMAT:
            raise ConfigError(f"{where}: expected a {CONFIG_FORMAT} document")
        name = doc.get("name")
        if not isinstance(name, str):
            raise ConfigError(f"{where}.name: expected a string")
        try:
            note.key_id(name, bytes(32))
        except note.NoteError as exc:
            raise ConfigError(f"{where}.name: {exc}") from None
        logs = doc.get("logs")
        if not isinstance(logs, list):
            raise ConfigError(f"{where}.logs: expected a list")
        key_uri, public_key = _key_from_json(doc, where)
        return cls(
            name,
            [LogSpec.from_json(d, f"{where}.logs[{i}]") for i, d in enumerate(logs)],
            key_uri,
            public_key,
        )


def _key_from_json(doc: dict[str, Any], where: str) -> tuple[str | None, bytes | None]:
    """``key_uri`` and ``public_key`` of a config: both or neither."""
    key_uri, public64 = doc.get("key_uri"), doc.get("public_key")
    if key_uri is None and public64 is None:
        return None, None
    if not isinstance(key_uri, str) or not isinstance(public64, str):
        raise ConfigError(
            f"{where}: expected key_uri (a pkcs11: URI) and public_key (base64) together, "
            f"found key_uri {key_uri!r:.80} and public_key {public64!r:.80}"
        )
    from lineage.pkcs11 import parse_uri

    parse_uri(key_uri)
    try:
        public_key = _unb64(public64, f"{where}.public_key")
    except WitnessError as exc:
        raise ConfigError(str(exc)) from None
    if len(public_key) != 32:
        raise ConfigError(
            f"{where}.public_key: expected 32 Ed25519 key bytes, found {len(public_key)}"
        )
    return key_uri, public_key


class WitnessStore:
    """The witness directory: ``witness.json``, ``witness.key``, ``state/``, ``refusals/``.

    The key is the file ``witness.key``, or a key pair in a PKCS#11 token that ``witness.json``
    names (``key_uri``); then no key file exists. ``lock`` takes an exclusive lock on the
    directory, so two witness processes can never interleave their check-and-persist steps on
    one state.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock_fd: int | None = None

    @property
    def config_path(self) -> Path:
        """``witness.json``."""
        return self.directory / "witness.json"

    @property
    def key_path(self) -> Path:
        """``witness.key`` (PKCS#8 PEM, mode 0600), when the key is a file."""
        return self.directory / "witness.key"

    def init(
        self,
        name: str,
        logs: Sequence[LogSpec] = (),
        *,
        key_uri: str | None = None,
        token: TokenConfig | None = None,
    ) -> WitnessConfig:
        """Create the directory, a key if none exists, and the config; add ``logs`` to it.

        An existing key is kept (the witness's identity must not change), file or token. With
        ``key_uri`` the key is the Ed25519 key pair that URI names in a PKCS#11 token, created
        there if the token has none under that label (library and PIN from ``token``); a
        witness that already has another key refuses it. A log spec with the same origin as an
        existing one replaces its keys.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "state").mkdir(exist_ok=True)
        (self.directory / "refusals").mkdir(exist_ok=True)
        config = self.load_config() if self.config_path.exists() else WitnessConfig(name)
        if key_uri is not None:
            self._init_token_key(config, name, key_uri, token)
        elif config.key_uri is None and not self.key_path.exists():
            pem = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            _atomic_write(self.key_path, pem, 0o600)
        config.name = name
        for spec in logs:
            config.logs = [
                s for s in config.logs if (s.origin, s.prefix) != (spec.origin, spec.prefix)
            ]
            config.logs.append(spec)
        WitnessConfig.from_json(config.to_json(), str(self.config_path))
        _atomic_write(self.config_path, (json.dumps(config.to_json(), indent=1) + "\n").encode())
        return config

    def _init_token_key(
        self, config: WitnessConfig, name: str, key_uri: str, token: TokenConfig | None
    ) -> None:
        """Point ``config`` at the token key ``key_uri``: the one recorded, an existing pair, or
        a new one generated in the token."""
        from lineage.keys import Role
        from lineage.pkcs11 import generate_token_key, open_token_key, parse_uri

        parse_uri(key_uri)
        if config.key_uri == key_uri:
            open_token_key(key_uri, config.public_key, token).close()  # still the same key
            return
        if config.key_uri is not None:
            raise ConfigError(
                f"{self.config_path}: the witness signs with {config.key_uri}; another key "
                f"({key_uri}) would change its identity: use another witness directory"
            )
        if self.key_path.exists():
            raise ConfigError(
                f"{self.key_path}: the witness signs with this file key; a token key would "
                "change its identity: use another witness directory, or move the file away "
                "(auditors then need the new --witness-key)"
            )
        try:
            key = open_token_key(key_uri, None, token)
        except ConfigError as exc:
            if "found 0 private and 0 public" not in str(exc):
                raise
            # generate_token_key returns a key registry record; a witness key is not in the
            # registry (auditors get its verifier key), so only the public key is kept and the
            # record's role is never read.
            record = generate_token_key(key_uri, name, Role.PROCESSOR, config=token)
            public = record.public_key
        else:
            public = key.public_key().public_bytes_raw()
            key.close()
        config.key_uri, config.public_key = key_uri, public

    def load_config(self) -> WitnessConfig:
        """Read ``witness.json``."""
        try:
            doc = json.loads(self.config_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(
                f"{self.config_path} does not exist; run `lineage witness init` first"
            ) from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {self.config_path}: {exc}") from None
        return WitnessConfig.from_json(doc, str(self.config_path))

    def load_key(
        self, config: WitnessConfig | None = None, token: TokenConfig | None = None
    ) -> Ed25519PrivateKey:
        """The witness's signing key: ``witness.key``, or the token key the config names.

        A token key is opened with the library and PIN from ``token`` and must be the public
        key recorded at ``init``; it signs inside the token.
        """
        config = config or self.load_config()
        if config.key_uri is not None:
            from lineage.pkcs11 import open_token_key

            return open_token_key(config.key_uri, config.public_key, token)
        try:
            key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        except FileNotFoundError:
            raise ConfigError(
                f"{self.key_path} does not exist; run `lineage witness init`"
            ) from None
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(f"cannot read witness key {self.key_path}: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"{self.key_path}: expected an Ed25519 key")
        return key

    def vkey(self, config: WitnessConfig | None = None) -> str:
        """The witness's verifier key, without opening a token: a token key's public key is the
        one recorded at ``init`` (``Witness`` refuses to sign with another)."""
        config = config or self.load_config()
        if config.public_key is not None:
            return cosigner_vkey(config.name, config.public_key)
        return cosigner_vkey(config.name, self.load_key(config).public_key().public_bytes_raw())

    def lock(self) -> None:
        """Take the directory's exclusive lock; ConfigError if another process holds it."""
        fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ConfigError(f"another witness process holds {self.directory}") from None
        self._lock_fd = fd

    def unlock(self) -> None:
        """Release the directory lock."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _state_path(self, origin: str) -> Path:
        return self.directory / "state" / f"{hashlib.sha256(origin.encode()).hexdigest()[:32]}.json"

    def state(self, origin: str) -> LogState | None:
        """The latest cosigned checkpoint of ``origin``, or None."""
        path = self._state_path(origin)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            state = LogState.from_json(json.loads(raw), str(path))
        except ValueError as exc:
            raise WitnessError(f"{path}: {exc}") from None
        if state.origin != origin:
            raise WitnessError(f"{path}: expected origin {origin!r}, found {state.origin!r}")
        return state

    def states(self) -> list[LogState]:
        """Every log's state, by origin."""
        out = []
        for path in sorted((self.directory / "state").glob("*.json")):
            out.append(LogState.from_json(json.loads(path.read_bytes()), str(path)))
        return sorted(out, key=lambda s: s.origin)

    def save_state(self, state: LogState) -> None:
        """Persist ``state`` atomically (write, fsync, rename, fsync the directory)."""
        path = self._state_path(state.origin)
        _atomic_write(path, (json.dumps(state.to_json(), indent=1) + "\n").encode())

    def record_refusal(self, refusal: Refusal) -> Path:
        """Keep a refusal as an evidence file; returns its path."""
        data = (json.dumps(refusal.to_json(), indent=1) + "\n").encode()
        digest = hashlib.sha256(data).hexdigest()[:12]
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(refusal.at))
        path = self.directory / "refusals" / f"{stamp}-{refusal.kind.lower()}-{digest}.json"
        _atomic_write(path, data)
        return path

    def refusals(self) -> list[dict[str, Any]]:
        """Every recorded refusal, oldest first."""
        out = []
        for path in sorted((self.directory / "refusals").glob("*.json")):
            doc = json.loads(path.read_bytes())
            doc["file"] = str(path)
            out.append(doc)
        return out


# -- the witness ------------------------------------------------------------------------------


class Witness:
    """add-checkpoint per c2sp.org/tlog-witness over a ``WitnessStore``; safe across threads."""

    def __init__(
        self,
        store: WitnessStore,
        *,
        clock: Callable[[], float] = time.time,
        config: WitnessConfig | None = None,
        key: Ed25519PrivateKey | None = None,
        token: TokenConfig | None = None,
    ) -> None:
        self.store = store
        self.config = config or store.load_config()
        self.key = key or store.load_key(self.config, token)
        self.clock = clock
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the key's token session, if it has one (signing afterwards is an error)."""
        close = getattr(self.key, "close", None)
        if close is not None:
            close()

    @property
    def name(self) -> str:
        """The witness's key name."""
        return self.config.name

    @property
    def vkey(self) -> str:
        """The witness's verifier key (type 0x04)."""
        return cosigner_vkey(self.name, self.key.public_key().public_bytes_raw())

    def add_checkpoint(self, body: bytes) -> Response:
        """Handle one add-checkpoint request body; returns the HTTP response to send."""
        try:
            req = parse_add_checkpoint(body)
            text, _ = split_note(req.checkpoint)
            origin = text.split("\n", 1)[0]
        except WitnessError as exc:
            return _text(400, str(exc))
        spec = self.config.spec_for(origin)
        if spec is None:
            return _text(404, f"unknown log origin {origin!r}")
        try:
            body_text, _ = note.open_note(req.checkpoint, spec.verifiers())
        except note.NoteError as exc:
            return _text(403, f"no valid signature by a key trusted for {origin!r}: {exc}")
        try:
            cp = note.parse_checkpoint(body_text)
        except note.NoteError as exc:
            return _text(400, f"not a checkpoint: {exc}")
        with self._lock:
            return self._add(req, cp, body_text)

    def _add(self, req: AddCheckpoint, cp: note.Checkpoint, body_text: str) -> Response:
        stored = self.store.state(cp.origin)
        now = int(self.clock())
        size, root = (stored.size, stored.root_hash) if stored else (0, merkle.EMPTY_ROOT)

        def refuse(kind: str, status: int, message: str, resp: Response) -> Response:
            if stored is not None:
                self.store.record_refusal(
                    Refusal(
                        kind,
                        cp.origin,
                        status,
                        now,
                        message,
                        stored,
                        req.checkpoint,
                        req.old_size,
                        req.proof,
                    )
                )
            return resp

        if cp.size < size:
            message = f"rollback: size {cp.size} is below the cosigned size {size}"
            status = 400 if req.old_size > cp.size else 409
            resp = (
                _text(400, message)
                if status == 400
                else Response(409, f"{size}\n".encode(), SIZE_CONTENT_TYPE)
            )
            return refuse("ROLLBACK", status, message, resp)
        if req.old_size > cp.size:
            return _text(400, f"old size {req.old_size} exceeds the checkpoint size {cp.size}")
        if req.old_size != size:
            return Response(409, f"{size}\n".encode(), SIZE_CONTENT_TYPE)
        if req.old_size == 0 and req.proof:
            return _text(400, "the consistency proof must be empty for old size 0")
        if cp.size == size:
            if cp.root_hash != root:
                message = f"fork: size {size} cosigned with another root"
                return refuse("FORK", 409, message, _text(409, message))
        elif size and not merkle.verify_consistency(size, cp.size, root, cp.root_hash, req.proof):
            message = f"the consistency proof from size {size} to {cp.size} does not verify"
            return refuse("INCONSISTENT", 422, message, _text(422, message))
        cosig = cosign(body_text, self.name, self.key, now)
        signed = add_signature_lines(req.checkpoint, [cosig.line()])
        self.store.save_state(LogState(cp.origin, cp.size, cp.root_hash, signed, now))
        return Response(200, cosig.line().encode())

    def trusted_checkpoints(self) -> dict[str, Any]:
        """Every log's latest cosigned checkpoint, as a trusted-checkpoints document."""
        return trusted_document(self.vkey, [s.note for s in self.store.states()])


def trusted_document(witness_vkey: str | None, notes: Iterable[str]) -> dict[str, Any]:
    """A ``lineage-trusted-checkpoints/v1`` document (what an auditor keeps, or a witness serves)."""
    doc: dict[str, Any] = {"format": TRUSTED_FORMAT, "checkpoints": [{"note": n} for n in notes]}
    if witness_vkey is not None:
        doc["witness"] = witness_vkey
    return doc


def parse_trusted_document(doc: object, where: str) -> list[str]:
    """The checkpoint notes of a trusted-checkpoints document; WitnessError when malformed."""
    if not isinstance(doc, dict) or doc.get("format") != TRUSTED_FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise WitnessError(f"{where}: expected format {TRUSTED_FORMAT!r}, found {found!r:.80}")
    items = doc.get("checkpoints")
    if not isinstance(items, list):
        raise WitnessError(f"{where}.checkpoints: expected a list")
    notes = []
    for i, item in enumerate(items):
        text = item.get("note") if isinstance(item, dict) else None
        if not isinstance(text, str) or not text:
            raise WitnessError(f"{where}.checkpoints[{i}].note: expected a signed note")
        notes.append(text)
    return notes

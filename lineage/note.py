"""C2SP signed notes with Ed25519 keys (c2sp.org/signed-note) and tlog-checkpoint note bodies."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from lineage.errors import LineageError

ED25519_TYPE = b"\x01"
PUBLIC_KEY_SIZE = 32
ROOT_HASH_SIZE = 32
SIGNATURE_PREFIX = "\u2014 "
MAX_SIGNATURES = 100
MAX_TREE_SIZE = 2**64 - 1

_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}", re.ASCII)
_KEY_ID_HEX = re.compile(r"[0-9a-fA-F]{8}", re.ASCII)

Verifiers = Mapping[str, bytes] | Iterable[tuple[str, bytes]]


class NoteError(LineageError, ValueError):
    """A signed note, verifier key or checkpoint is malformed, unsigned or badly signed."""


def _check_name(name: str) -> None:
    if not name or "+" in name or any(c.isspace() or c < " " for c in name):
        raise NoteError(f"key name: expected non-empty, without spaces or '+', found {name!r}")


def _check_text(text: str, what: str) -> None:
    """Reject text that is not UTF-8 encodable or holds ASCII controls other than newline."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise NoteError(f"{what}: expected valid UTF-8, found {e.reason} at {e.start}") from e
    for i, c in enumerate(text):
        if c < " " and c != "\n":
            raise NoteError(f"{what}: expected no control characters, found {c!r} at {i}")


def _b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _b64decode(text: str, what: str) -> bytes:
    """Decode standard, padded, canonical base64 (RFC 4648 section 4)."""
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError as e:
        raise NoteError(f"{what}: expected standard base64, found {text!r}") from e
    if _b64encode(raw) != text:
        raise NoteError(f"{what}: expected canonical base64, found {text!r}")
    return raw


def key_id(name: str, public_key: bytes) -> bytes:
    """The 4-byte key ID: SHA-256(name || 0x0A || 0x01 || Ed25519 public key)[:4]."""
    _check_name(name)
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise NoteError(
            f"Ed25519 public key: expected {PUBLIC_KEY_SIZE} bytes, found {len(public_key)}"
        )
    return hashlib.sha256(name.encode() + b"\n" + ED25519_TYPE + public_key).digest()[:4]


def verifier_key(name: str, public_key: bytes) -> str:
    """Encode a verifier key as ``<name>+<hex key id>+<base64(0x01 || public key)>``."""
    kid = key_id(name, public_key)
    return f"{name}+{kid.hex()}+{_b64encode(ED25519_TYPE + public_key)}"


def parse_verifier_key(vkey: str) -> tuple[str, bytes]:
    """Decode a verifier key into (name, raw Ed25519 public key), checking its key ID."""
    parts = vkey.split("+", 2)
    if len(parts) != 3:
        raise NoteError(f"verifier key: expected <name>+<key id>+<key>, found {vkey!r}")
    name, kid_hex, key64 = parts
    _check_name(name)
    if not _KEY_ID_HEX.fullmatch(kid_hex):
        raise NoteError(f"verifier key id: expected 8 hex digits, found {kid_hex!r}")
    raw = _b64decode(key64, "verifier key material")
    if len(raw) != 1 + PUBLIC_KEY_SIZE or raw[:1] != ED25519_TYPE:
        raise NoteError(
            f"verifier key material: expected 0x01 (Ed25519) and {PUBLIC_KEY_SIZE} key bytes, "
            f"found type {raw[:1].hex() or 'none'} and {max(len(raw) - 1, 0)} bytes"
        )
    public_key = raw[1:]
    expected = key_id(name, public_key).hex()
    if expected != kid_hex.lower():
        raise NoteError(f"verifier key {name}: expected key id {expected}, found {kid_hex}")
    return name, public_key


def sign_note(body: str, name: str, private_key: Ed25519PrivateKey) -> str:
    """Sign ``body`` (the note text, ending in newline) and return the signed note."""
    _check_name(name)
    _check_text(body, "note text")
    if not body.endswith("\n"):
        raise NoteError(f"note text: expected to end with a newline, found {body[-20:]!r}")
    kid = key_id(name, private_key.public_key().public_bytes_raw())
    signature = private_key.sign(body.encode("utf-8"))
    return f"{body}\n{SIGNATURE_PREFIX}{name} {_b64encode(kid + signature)}\n"


def _known_keys(verifiers: Verifiers) -> dict[tuple[str, bytes], Ed25519PublicKey]:
    pairs = verifiers.items() if isinstance(verifiers, Mapping) else verifiers
    known: dict[tuple[str, bytes], Ed25519PublicKey] = {}
    for name, public_key in pairs:
        slot = (name, key_id(name, public_key))
        if slot in known:
            if known[slot].public_bytes_raw() != public_key:
                raise NoteError(
                    f"verifiers: expected one key per name and key id, found two for "
                    f"{name}+{slot[1].hex()}"
                )
            continue
        known[slot] = Ed25519PublicKey.from_public_bytes(public_key)
    return known


def open_note(note: str, verifiers: Verifiers) -> tuple[str, list[str]]:
    """Parse and verify a signed note; return (note text, names of keys whose signatures verified).

    ``verifiers`` maps key names to raw Ed25519 public keys (a mapping, or (name, key) pairs to
    allow several keys per name). Signatures from unknown keys are ignored; a note with no
    verified known-key signature, or with a bad one from a known key, raises ``NoteError``.
    """
    known = _known_keys(verifiers)
    _check_text(note, "note")
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteError(
            "note: expected text, a blank line and signature lines, found no blank line"
        )
    text, block = note[: split + 1], note[split + 2 :]
    if not block.endswith("\n"):
        raise NoteError(f"note signatures: expected lines ending in newline, found {block[-20:]!r}")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"note: expected at most {MAX_SIGNATURES} signatures, found {len(lines)}")
    message = text.encode("utf-8")
    verified: list[str] = []
    seen: list[str] = []
    for line in lines:
        if not line.startswith(SIGNATURE_PREFIX):
            raise NoteError(f"signature line: expected to start with '— ', found {line[:40]!r}")
        name, _, sig64 = line[len(SIGNATURE_PREFIX) :].partition(" ")
        _check_name(name)
        raw = _b64decode(sig64, f"signature by {name}")
        if len(raw) < 5:
            raise NoteError(
                f"signature by {name}: expected a 4-byte key id and a signature, "
                f"found {len(raw)} bytes"
            )
        kid, signature = raw[:4], raw[4:]
        seen.append(f"{name}+{kid.hex()}")
        public_key = known.get((name, kid))
        if public_key is None:
            continue
        try:
            public_key.verify(signature, message)
        except InvalidSignature as e:
            raise NoteError(
                f"signature by {name}+{kid.hex()}: expected a valid Ed25519 signature over the "
                f"note text, found an invalid one"
            ) from e
        if name not in verified:
            verified.append(name)
    if not verified:
        wanted = sorted(f"{n}+{k.hex()}" for n, k in known)
        raise NoteError(f"note: expected a signature by a known key {wanted}, found only {seen}")
    return text, verified


def _check_line(line: str, what: str) -> None:
    _check_text(line, what)
    if not line or "\n" in line:
        raise NoteError(f"{what}: expected one non-empty line, found {line!r}")


@dataclass(frozen=True)
class Checkpoint:
    """A tlog-checkpoint note body: origin, tree size, root hash and optional extension lines."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Check the invariants of c2sp.org/tlog-checkpoint."""
        _check_line(self.origin, "checkpoint origin")
        if isinstance(self.size, bool) or not 0 <= self.size <= MAX_TREE_SIZE:
            raise NoteError(f"checkpoint tree size: expected 0..2**64-1, found {self.size!r}")
        if len(self.root_hash) != ROOT_HASH_SIZE:
            found = len(self.root_hash)
            raise NoteError(f"checkpoint root hash: expected {ROOT_HASH_SIZE} bytes, found {found}")
        for ext in self.extensions:
            _check_line(ext, "checkpoint extension")

    def to_body(self) -> str:
        """The note text: one line each for origin, size, base64 root and extensions."""
        lines = [self.origin, str(self.size), _b64encode(self.root_hash), *self.extensions]
        return "".join(f"{line}\n" for line in lines)


def checkpoint_body(
    origin: str, size: int, root_hash: bytes, extensions: Sequence[str] = ()
) -> str:
    """Format a tlog-checkpoint note text (every line, including the last, ends in newline)."""
    return Checkpoint(origin, size, root_hash, tuple(extensions)).to_body()


def parse_checkpoint(body: str) -> Checkpoint:
    """Parse and validate a tlog-checkpoint note text (as returned by ``open_note``)."""
    if not body.endswith("\n"):
        raise NoteError(f"checkpoint: expected text ending in newline, found {body[-20:]!r}")
    lines = body[:-1].split("\n")
    if len(lines) < 3:
        raise NoteError(f"checkpoint: expected at least 3 lines, found {len(lines)}")
    origin, size_text, root_text, *extensions = lines
    if not _DECIMAL.fullmatch(size_text):
        raise NoteError(
            f"checkpoint tree size: expected decimal without leading zeros, found {size_text!r}"
        )
    root_hash = _b64decode(root_text, "checkpoint root hash")
    return Checkpoint(origin, int(size_text), root_hash, tuple(extensions))

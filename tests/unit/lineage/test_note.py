"""Tests for C2SP signed notes and tlog-checkpoint bodies, including published vectors."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from lineage.errors import LineageError
from lineage.merkle import root
from lineage.note import (
    Checkpoint,
    NoteError,
    checkpoint_body,
    key_id,
    open_note,
    parse_checkpoint,
    parse_verifier_key,
    sign_note,
    verifier_key,
)

EM = "\u2014"

# golang.org/x/mod/sumdb/note (note.go package doc and note_test.go).
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = (
    f"{EM} PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    f"{EM} EnochRoot "
    "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"
)
# Go's checksum database key (cmd/go/internal/modfetch/key.go); its base64 contains '+'.
SUMDB_VKEY = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
# The example of earlier c2sp.org/signed-note revisions.
FOO_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
FOO_NOTE = (
    "This is an example message.\n\n"
    f"{EM} example.com/foo "
    "Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)
# The example of the current c2sp.org/signed-note (no verifier key is published for it).
QUASIMODO_NOTE = (
    "Ognuno sta solo sul cuor della terra\ntrafitto da un raggio di sole:\n\ned è subito sera.\n\n"
    f"{EM} quasimodo.example/salvatore "
    "NnugSzTjtVAewIS+Z/iJhUPeFDkO/5QQ2i5ddnGITLlC+EhfLW9oJKONrMouFSQU0xMcXxj99ihAQwaqP3ZekRwNtIc=\n"
)
# The example of c2sp.org/tlog-checkpoint.
SOFA_BODY = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"


def _go_private_key() -> Ed25519PrivateKey:
    raw = base64.b64decode(GO_SKEY.split("+", 4)[4])
    assert raw[0] == 0x01
    return Ed25519PrivateKey.from_private_bytes(raw[1:])


def _raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def _fixed_key(seed: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


def _tamper_signature(note: str, name: str) -> str:
    """Flip one bit of the Ed25519 signature (not the key id) on ``name``'s line."""
    prefix = f"{EM} {name} "
    lines = note.split("\n")
    for i, line in enumerate(lines):
        if line.startswith(prefix):
            raw = bytearray(base64.b64decode(line[len(prefix) :]))
            raw[10] ^= 0x01
            lines[i] = prefix + base64.b64encode(bytes(raw)).decode()
    return "\n".join(lines)


def test_sign_reproduces_go_sumdb_note_byte_for_byte() -> None:
    assert sign_note(GO_TEXT, "PeterNeumann", _go_private_key()) == GO_TEXT + "\n" + PETER_SIG


def test_go_verifier_keys_round_trip() -> None:
    assert verifier_key("PeterNeumann", _raw_public(_go_private_key())) == PETER_VKEY
    for vkey in (PETER_VKEY, ENOCH_VKEY, SUMDB_VKEY, FOO_VKEY):
        assert verifier_key(*parse_verifier_key(vkey)) == vkey
    # note_test.go's EnochRoot key is the one Go's GenerateKey derives from an all-zero seed.
    assert verifier_key("EnochRoot", _raw_public(_fixed_key(0))) == ENOCH_VKEY


def test_open_go_doubly_signed_note() -> None:
    note = GO_TEXT + "\n" + PETER_SIG + ENOCH_SIG
    peter, enoch = parse_verifier_key(PETER_VKEY), parse_verifier_key(ENOCH_VKEY)
    assert open_note(note, [peter, enoch]) == (GO_TEXT, ["PeterNeumann", "EnochRoot"])
    assert open_note(note, [enoch]) == (GO_TEXT, ["EnochRoot"])
    assert open_note(note, dict([peter])) == (GO_TEXT, ["PeterNeumann"])
    assert sign_note(GO_TEXT, "EnochRoot", _fixed_key(0)) == GO_TEXT + "\n" + ENOCH_SIG


def test_open_c2sp_example_note() -> None:
    assert open_note(FOO_NOTE, [parse_verifier_key(FOO_VKEY)]) == (
        "This is an example message.\n",
        ["example.com/foo"],
    )


def test_current_spec_example_splits_at_last_blank_line() -> None:
    other = _raw_public(_fixed_key(7))
    with pytest.raises(NoteError, match=r"found only \['quasimodo.example/salvatore\+367ba04b'\]"):
        open_note(QUASIMODO_NOTE, {"quasimodo.example/salvatore": other})


def test_key_id_and_verifier_key_match_independent_computation() -> None:
    pub = _raw_public(_fixed_key(1))
    expected = hashlib.sha256(b"log.example/a" + b"\x0a" + b"\x01" + pub).digest()[:4]
    assert key_id("log.example/a", pub) == expected
    material = base64.b64encode(b"\x01" + pub).decode()
    assert verifier_key("log.example/a", pub) == f"log.example/a+{expected.hex()}+{material}"
    assert parse_verifier_key(f"log.example/a+{expected.hex().upper()}+{material}") == (
        "log.example/a",
        pub,
    )


@pytest.mark.parametrize(
    ("vkey", "message"),
    [
        (
            "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "expected key id c74f20a3, found c74f20a4",
        ),
        (
            "PeterNeuman+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "expected key id [0-9a-f]{8}, found c74f20a3",
        ),
        (
            "PeterNeumann+c74f20a3+AhpczQcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "expected 0x01 .* found type 02",
        ),
        (
            "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10Q=",
            "found type 01 and 31 bytes",
        ),
        (
            "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T",
            "expected standard base64",
        ),
        (
            "PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "expected 8 hex digits",
        ),
        ("PeterNeumann+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "expected <name>"),
        ("Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "without spaces"),
        ("+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "key name: expected non-empty"),
    ],
)
def test_parse_verifier_key_rejects(vkey: str, message: str) -> None:
    with pytest.raises(NoteError, match=message):
        parse_verifier_key(vkey)


def test_note_error_is_a_value_error_and_a_lineage_error() -> None:
    assert issubclass(NoteError, ValueError) and issubclass(NoteError, LineageError)


def test_round_trip() -> None:
    key = _fixed_key(2)
    body = "hello\n\nworld\n"
    note = sign_note(body, "log.example/x", key)
    assert note.startswith(body + "\n" + EM + " log.example/x ")
    assert open_note(note, {"log.example/x": _raw_public(key)}) == (body, ["log.example/x"])


def test_flipped_body_byte_fails() -> None:
    key = _fixed_key(3)
    note = sign_note("abc\n", "n", key)
    tampered = "abd" + note[3:]
    with pytest.raises(NoteError, match=r"signature by n\+[0-9a-f]{8}: expected a valid"):
        open_note(tampered, {"n": _raw_public(key)})


def test_flipped_signature_byte_fails() -> None:
    key = _fixed_key(3)
    note = _tamper_signature(sign_note("abc\n", "n", key), "n")
    with pytest.raises(NoteError, match=r"signature by n\+[0-9a-f]{8}: expected a valid"):
        open_note(note, {"n": _raw_public(key)})


def test_bad_known_signature_rejects_whole_note() -> None:
    a, b = _fixed_key(4), _fixed_key(5)
    note = sign_note(GO_TEXT, "a", a) + sign_note(GO_TEXT, "b", b).split("\n\n")[-1]
    keys = {"a": _raw_public(a), "b": _raw_public(b)}
    assert open_note(note, keys) == (GO_TEXT, ["a", "b"])
    with pytest.raises(NoteError, match=r"signature by b\+"):
        open_note(_tamper_signature(note, "b"), keys)


def test_unknown_keys_are_ignored() -> None:
    a, b = _fixed_key(4), _fixed_key(5)
    note = sign_note(GO_TEXT, "a", a) + sign_note(GO_TEXT, "b", b).split("\n\n")[-1]
    assert open_note(note, {"a": _raw_public(a)}) == (GO_TEXT, ["a"])
    # Same name, another key: a different key id, so the bad-for-us signature is unknown.
    assert open_note(note, [("a", _raw_public(a)), ("b", _raw_public(a))]) == (GO_TEXT, ["a"])
    # A tampered signature from an unknown key is not even checked.
    assert open_note(_tamper_signature(note, "b"), {"a": _raw_public(a)}) == (GO_TEXT, ["a"])


def test_no_known_signature_fails() -> None:
    note = sign_note(GO_TEXT, "a", _fixed_key(4))
    with pytest.raises(NoteError, match=r"expected a signature by a known key \['b\+"):
        open_note(note, {"b": _raw_public(_fixed_key(5))})
    with pytest.raises(NoteError, match=r"known key \[\], found only \['a\+"):
        open_note(note, {})


def test_several_keys_under_one_name() -> None:
    old, new = _fixed_key(8), _fixed_key(9)
    keys = [("log", _raw_public(old)), ("log", _raw_public(new))]
    assert open_note(sign_note(GO_TEXT, "log", new), keys) == (GO_TEXT, ["log"])


@pytest.mark.parametrize(
    ("note", "message"),
    [
        ("text\n" + PETER_SIG, "found no blank line"),
        (GO_TEXT + "\n" + PETER_SIG[:-1], "expected lines ending in newline"),
        (GO_TEXT + "\n", "expected lines ending in newline"),
        (GO_TEXT + "\n" + PETER_SIG.replace(EM, "-"), "expected to start with '— '"),
        (GO_TEXT + "\n" + PETER_SIG.replace("x08go", "x08g!"), "expected standard base64"),
        (GO_TEXT + "\n" + f"{EM} PeterNeumann AAAAAA==\n", "found 4 bytes"),
        (GO_TEXT + "\n" + f"{EM} Peter+Neumann AAAAAAA=\n", "without spaces or '\\+'"),
        (GO_TEXT + "\n" + f"{EM} PeterNeumann\n", "found 0 bytes"),
        ("tab\there\n\n" + PETER_SIG, "expected no control characters, found '\\\\t' at 3"),
        ("bad \ud800\n\n" + PETER_SIG, "expected valid UTF-8"),
        (GO_TEXT + "\n" + PETER_SIG * 101, "expected at most 100 signatures, found 101"),
    ],
)
def test_malformed_notes_are_rejected(note: str, message: str) -> None:
    with pytest.raises(NoteError, match=message):
        open_note(note, [parse_verifier_key(PETER_VKEY)])


def test_non_canonical_base64_is_rejected() -> None:
    b64 = PETER_SIG.split()[-1]
    raw = base64.b64decode(b64)
    assert len(raw) % 3 == 2  # one padding char: the last data char carries 2 spare bits
    loose = b64[:-2] + chr(ord(b64[-2]) + 1) + "="
    assert base64.b64decode(loose) == raw
    with pytest.raises(NoteError, match="expected canonical base64"):
        open_note(GO_TEXT + "\n" + PETER_SIG.replace(b64, loose), [parse_verifier_key(PETER_VKEY)])


@pytest.mark.parametrize(
    ("body", "name", "message"),
    [
        ("no newline", "n", "expected to end with a newline"),
        ("bell\a\n", "n", "expected no control characters"),
        ("ok\n", "has space", "without spaces"),
        ("ok\n", "a+b", "without spaces or '\\+'"),
        ("ok\n", "", "expected non-empty"),
    ],
)
def test_sign_note_rejects_bad_input(body: str, name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sign_note(body, name, _fixed_key(1))


_NAMES = st.text(
    st.characters(blacklist_characters="+", blacklist_categories=("Zs", "Zl", "Zp", "Cc", "Cs")),
    min_size=1,
    max_size=20,
)
_TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs")) | st.just("\n"), max_size=200)


@settings(max_examples=100, deadline=None)
@given(_TEXT, _NAMES, st.binary(min_size=32, max_size=32))
def test_any_note_round_trips(text: str, name: str, seed: bytes) -> None:
    key = Ed25519PrivateKey.from_private_bytes(seed)
    body = text + "\n"
    assert open_note(sign_note(body, name, key), {name: _raw_public(key)}) == (body, [name])
    vkey = verifier_key(name, _raw_public(key))
    assert parse_verifier_key(vkey) == (name, _raw_public(key))


def test_checkpoint_body_format() -> None:
    r = root([b"a", b"b", b"c"])
    body = checkpoint_body("lineage.example/log", 3, r, ["ext one"])
    assert body == f"lineage.example/log\n3\n{base64.b64encode(r).decode()}\next one\n"
    assert parse_checkpoint(body) == Checkpoint("lineage.example/log", 3, r, ("ext one",))
    assert (
        checkpoint_body("o", 0, root([])) == "o\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"
    )


def test_published_checkpoint_body_parses() -> None:
    cp = parse_checkpoint(SOFA_BODY)
    assert (cp.origin, cp.size, cp.extensions) == ("example.com/behind-the-sofa", 20852163, ())
    assert cp.root_hash.hex() == "0ac5186a91863e8e1d90c808014aa89bf5da8e3ee1d9f07630f0378f68f1ab62"
    assert cp.to_body() == SOFA_BODY


def test_signed_checkpoint_flow() -> None:
    key = _fixed_key(6)
    r = root([b"x"] * 5)
    note = sign_note(checkpoint_body("log.example", 5, r), "log.example", key)
    body, names = open_note(note, {"log.example": _raw_public(key)})
    assert names == ["log.example"]
    assert parse_checkpoint(body) == Checkpoint("log.example", 5, r)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("o\n1\n" + "A" * 43 + "=", "expected text ending in newline"),
        ("o\n1\n", "expected at least 3 lines, found 2"),
        ("o\n01\n" + "A" * 43 + "=\n", "expected decimal without leading zeros, found '01'"),
        ("o\n+1\n" + "A" * 43 + "=\n", "found '\\+1'"),
        ("o\n-1\n" + "A" * 43 + "=\n", "found '-1'"),
        ("o\n 1\n" + "A" * 43 + "=\n", "found ' 1'"),
        ("o\n1_0\n" + "A" * 43 + "=\n", "found '1_0'"),
        ("o\n\u0661\n" + "A" * 43 + "=\n", "expected decimal"),
        ("o\n18446744073709551616\n" + "A" * 43 + "=\n", "expected 0..2\\*\\*64-1"),
        ("o\n1\n" + "A" * 42 + "==\n", "expected 32 bytes, found 31"),
        ("o\n1\n" + "A" * 42 + "B=\n", "expected canonical base64"),
        ("o\n1\nnot base64!\n", "expected standard base64"),
        ("\n1\n" + "A" * 43 + "=\n", "checkpoint origin: expected one non-empty line"),
        ("o\n1\n" + "A" * 43 + "=\n\n", "checkpoint extension: expected one non-empty line"),
        ("o\x7f\x01\n1\n" + "A" * 43 + "=\n", "expected no control characters"),
    ],
)
def test_parse_checkpoint_rejects(body: str, message: str) -> None:
    with pytest.raises(NoteError, match=message):
        parse_checkpoint(body)


def test_checkpoint_invariants_on_construction() -> None:
    r = bytes(32)
    assert Checkpoint("o", 2**64 - 1, r).size == 2**64 - 1
    with pytest.raises(NoteError, match="found -1"):
        Checkpoint("o", -1, r)
    with pytest.raises(NoteError, match="found True"):
        Checkpoint("o", True, r)
    with pytest.raises(NoteError, match="expected 32 bytes, found 33"):
        checkpoint_body("o", 1, bytes(33))
    with pytest.raises(NoteError, match="expected one non-empty line, found 'a\\\\nb'"):
        checkpoint_body("a\nb", 1, r)
    with pytest.raises(NoteError, match="checkpoint extension"):
        checkpoint_body("o", 1, r, [""])


@settings(max_examples=100, deadline=None)
@given(
    st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40),
    st.integers(0, 2**64 - 1),
    st.binary(min_size=32, max_size=32),
    st.lists(st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1), max_size=3),
)
def test_any_checkpoint_round_trips(origin: str, size: int, r: bytes, ext: list[str]) -> None:
    cp = parse_checkpoint(checkpoint_body(origin, size, r, ext))
    assert cp == Checkpoint(origin, size, r, tuple(ext))


def test_verifiers_reject_bad_or_ambiguous_keys() -> None:
    note = sign_note(GO_TEXT, "a", _fixed_key(4))
    with pytest.raises(NoteError, match="Ed25519 public key: expected 32 bytes, found 31"):
        open_note(note, {"a": bytes(31)})
    pub = _raw_public(_fixed_key(4))
    assert open_note(note, [("a", pub), ("a", pub)]) == (GO_TEXT, ["a"])

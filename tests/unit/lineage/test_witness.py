"""The witness core: cosignature/v1 bytes, add-checkpoint semantics, refusals kept as evidence."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lineage import merkle, note
from lineage import witness as w

pytestmark = pytest.mark.timeout(60)

# RFC 8032 section 7.1, test 1: a published Ed25519 key, so the vectors below can be re-derived.
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
# The checkpoint of the c2sp.org/tlog-cosignature and tlog-witness examples.
SPEC_BODY = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
SPEC_COSIGNATURE = (
    "jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZ"
    "qhf5nNo0xUe+mbIUBkBIfZ+qnA=="
)
ORIGIN = "lineage.local/lineage.events/0"


def test_spec_example_cosignature_layout() -> None:
    """The spec's example line: key id, then the u64 timestamp its signed-message example shows."""
    raw = base64.b64decode(SPEC_COSIGNATURE)
    assert len(raw) == w.COSIGNATURE_SIZE == 76
    assert raw[:4].hex() == "8d66cf3f"
    assert int.from_bytes(raw[4:12], "big") == 1679315147
    assert w.cosigned_message(SPEC_BODY, 1679315147) == (
        b"cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\n"
        b"CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    )


def test_cosignature_vector_with_rfc8032_key() -> None:
    key = Ed25519PrivateKey.from_private_bytes(RFC8032_SEED)
    name = "witness.example.com/w1"
    assert (
        w.cosigner_key_id(name, RFC8032_PUBLIC)
        == (hashlib.sha256(name.encode() + b"\n\x04" + RFC8032_PUBLIC).digest()[:4])
    )
    vkey = w.cosigner_vkey(name, RFC8032_PUBLIC)
    assert vkey == "witness.example.com/w1+7e6f4aaa+BNdamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea"
    assert w.parse_cosigner_vkey(vkey) == (name, RFC8032_PUBLIC)
    cosig = w.cosign(SPEC_BODY, name, key, 1679315147)
    assert cosig.line() == (
        "— witness.example.com/w1 fm9KqgAAAABkGFDL+TPmh4BYuAjsYRoqMJCWb/gWJaeRF/kmm5tlCr9sJ57DLE"
        "rur7K0yDXc2ArN+TIuotuB/HbuL3AJsp3bv/aNCQ==\n"
    )
    # Verified independently of the module: Ed25519 over the documented message layout.
    key.public_key().verify(
        cosig.signature, b"cosignature/v1\ntime 1679315147\n" + SPEC_BODY.encode()
    )


def _processor() -> tuple[Ed25519PrivateKey, str]:
    key = Ed25519PrivateKey.generate()
    return key, note.verifier_key("lineage-processor", key.public_key().public_bytes_raw())


def _checkpoint(key: Ed25519PrivateKey, leaves: list[bytes], origin: str = ORIGIN) -> str:
    body = note.checkpoint_body(origin, len(leaves), merkle.root(leaves))
    return note.sign_note(body, "lineage-processor", key)


def _leaves(n: int, tag: bytes = b"") -> list[bytes]:
    return [hashlib.sha256(tag + i.to_bytes(8, "big")).digest() for i in range(n)]


def test_cosignature_verification_ignores_unknown_and_rejects_bad() -> None:
    proc, _ = _processor()
    wkey = Ed25519PrivateKey.generate()
    other = Ed25519PrivateKey.generate()
    signed = _checkpoint(proc, _leaves(3))
    body, _ = note.open_note(
        signed,
        [
            note.parse_verifier_key(
                note.verifier_key("lineage-processor", proc.public_key().public_bytes_raw())
            )
        ],
    )
    c1 = w.cosign(body, "w1", wkey, 100)
    c2 = w.cosign(body, "w2", other, 200)
    cosigned = w.add_signature_lines(signed, [c1.line(), c2.line()])
    trusted = [("w1", wkey.public_key().public_bytes_raw())]
    text, valid = w.verify_cosignatures(cosigned, trusted)
    assert text == body and [(c.signer, c.timestamp) for c in valid] == [(c1.signer, 100)]
    # The processor's own signature still verifies: old readers ignore cosignature lines.
    assert note.open_note(cosigned, [("lineage-processor", proc.public_key().public_bytes_raw())])
    # A changed timestamp breaks the signature (it is covered by the signed message).
    raw = bytearray(c1.key_id + (101).to_bytes(8, "big") + c1.signature)
    forged = signed + f"— w1 {base64.b64encode(bytes(raw)).decode()}\n"
    with pytest.raises(w.WitnessError, match="invalid one"):
        w.verify_cosignatures(forged, trusted)
    # The same witness key under the processor's 0x01 key id is a different key: ignored.
    assert w.verify_cosignatures(signed, trusted)[1] == []


def _witness(tmp_path: Path, vkey: str, clock: list[float]) -> w.Witness:
    store = w.WitnessStore(tmp_path / "witness")
    store.init(
        "witness.test/w1", [w.LogSpec("lineage.local/lineage.events/", (vkey,), prefix=True)]
    )
    return w.Witness(store, clock=lambda: clock[0])


def test_add_checkpoint_grows_and_refuses_rollback_and_fork(tmp_path: Path) -> None:
    proc, vkey = _processor()
    clock = [1_700_000_000.0]
    wit = _witness(tmp_path, vkey, clock)
    leaves = _leaves(10)
    first = _checkpoint(proc, leaves[:4])
    r = wit.add_checkpoint(w.format_add_checkpoint(0, [], first))
    assert r.status == 200 and r.body.decode().startswith("— witness.test/w1 ")
    _, valid = w.verify_cosignatures(first + r.body.decode(), [w.parse_cosigner_vkey(wit.vkey)])
    assert valid[0].timestamp == 1_700_000_000
    # Unknown old size: 409 with the cosigned size, as text/x.tlog.size.
    second = _checkpoint(proc, leaves[:9])
    r = wit.add_checkpoint(w.format_add_checkpoint(0, [], second))
    assert (r.status, r.body, r.content_type) == (409, b"4\n", "text/x.tlog.size")
    # A good proof from 4 to 9 is cosigned, and the state persisted.
    clock[0] += 5
    proof = merkle.consistency_proof(4, leaves[:9])
    r = wit.add_checkpoint(w.format_add_checkpoint(4, proof, second))
    assert r.status == 200
    state = wit.store.state(ORIGIN)
    assert state is not None and (state.size, state.cosigned_at) == (9, 1_700_000_005)
    assert state.note.startswith(second) and state.note.endswith(r.body.decode())
    assert wit.store.refusals() == []
    # Rollback: size 4 after 9, whatever the old size the client claims.
    r = wit.add_checkpoint(w.format_add_checkpoint(4, [], first))
    assert (r.status, r.body) == (409, b"9\n")
    r = wit.add_checkpoint(w.format_add_checkpoint(9, [], first))
    assert r.status == 400
    # Fork: size 9 again with another root (the processor key signed a second history).
    fork = _checkpoint(proc, leaves[:8] + _leaves(1, b"x"))
    r = wit.add_checkpoint(w.format_add_checkpoint(9, [], fork))
    assert r.status == 409
    # Inconsistent: a size-10 tree that does not extend the cosigned one.
    other = _leaves(10, b"y")
    bad = _checkpoint(proc, other)
    r = wit.add_checkpoint(w.format_add_checkpoint(9, merkle.consistency_proof(9, other), bad))
    assert r.status == 422
    kinds = [(x["kind"], x["status"]) for x in wit.store.refusals()]
    assert sorted(kinds) == [
        ("FORK", 409),
        ("INCONSISTENT", 422),
        ("ROLLBACK", 400),
        ("ROLLBACK", 409),
    ]
    evidence = next(x for x in wit.store.refusals() if x["kind"] == "FORK")
    assert evidence["stored"]["note"] == state.note and evidence["submitted"]["note"] == fork
    # The state never moved.
    assert wit.store.state(ORIGIN) == state
    # The same checkpoint again is cosigned again (fresh timestamp), nothing changes.
    clock[0] += 60
    r = wit.add_checkpoint(w.format_add_checkpoint(9, [], second))
    assert r.status == 200
    assert wit.store.state(ORIGIN).cosigned_at == 1_700_000_065  # type: ignore[union-attr]


def test_add_checkpoint_rejects_unknown_origin_bad_signature_and_garbage(tmp_path: Path) -> None:
    proc, vkey = _processor()
    wit = _witness(tmp_path, vkey, [1.0])
    stranger, _ = _processor()
    r = wit.add_checkpoint(w.format_add_checkpoint(0, [], _checkpoint(stranger, _leaves(2))))
    assert r.status == 403
    r = wit.add_checkpoint(
        w.format_add_checkpoint(0, [], _checkpoint(proc, _leaves(2), "other.log/x"))
    )
    assert r.status == 404
    for body in (b"", b"old 01\n\n", b"old 1\nnot base64!\n\nx", b"\xff\xfe", b"old 0\n" * 70):
        assert wit.add_checkpoint(body).status == 400, body
    proof = [bytes(32)] * 64
    r = wit.add_checkpoint(w.format_add_checkpoint(0, proof, _checkpoint(proc, _leaves(2))))
    assert r.status == 400 and b"at most 63" in r.body
    assert wit.store.states() == []


def test_state_survives_restart_and_directory_is_locked(tmp_path: Path) -> None:
    proc, vkey = _processor()
    wit = _witness(tmp_path, vkey, [10.0])
    leaves = _leaves(5)
    assert (
        wit.add_checkpoint(w.format_add_checkpoint(0, [], _checkpoint(proc, leaves))).status == 200
    )
    store = w.WitnessStore(tmp_path / "witness")
    store.lock()
    try:
        with pytest.raises(Exception, match="another witness process"):
            w.WitnessStore(tmp_path / "witness").lock()
    finally:
        store.unlock()
    again = w.Witness(w.WitnessStore(tmp_path / "witness"))
    assert again.vkey == wit.vkey
    r = again.add_checkpoint(w.format_add_checkpoint(0, [], _checkpoint(proc, leaves[:3])))
    assert (r.status, r.body) == (409, b"5\n")
    doc = again.trusted_checkpoints()
    assert doc["witness"] == wit.vkey
    assert w.parse_trusted_document(json.loads(json.dumps(doc)), "doc") == [
        again.store.state(ORIGIN).note  # type: ignore[union-attr]
    ]


def test_extension_lines_are_cosigned_with_the_checkpoint(tmp_path: Path) -> None:
    """A checkpoint extension line (e.g. a partition count) is part of the cosigned message."""
    proc, vkey = _processor()
    wit = _witness(tmp_path, vkey, [50.0])
    leaves = _leaves(3)
    body = note.checkpoint_body(ORIGIN, 3, merkle.root(leaves), ["partitions 4"])
    signed = note.sign_note(body, "lineage-processor", proc)
    r = wit.add_checkpoint(w.format_add_checkpoint(0, [], signed))
    assert r.status == 200
    cosig = r.body.decode()
    text, valid = w.verify_cosignatures(signed + cosig, [w.parse_cosigner_vkey(wit.vkey)])
    assert text == body and text.endswith("partitions 4\n") and len(valid) == 1
    # The same cosignature on the note without (or with another) extension line is invalid.
    plain = _checkpoint(proc, leaves)
    with pytest.raises(w.WitnessError, match="invalid one"):
        w.verify_cosignatures(plain + cosig, [w.parse_cosigner_vkey(wit.vkey)])


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_add_checkpoint_never_raises_on_hostile_bodies(tmp_path: Path, data: st.DataObject) -> None:
    """Mutations of a real request (and raw bytes) get an HTTP status, never an exception."""
    proc, vkey = _processor()
    wit = _witness(tmp_path / str(data.draw(st.integers(0, 10**9))), vkey, [1.0])
    leaves = _leaves(6)
    good = w.format_add_checkpoint(0, [], _checkpoint(proc, leaves))
    body = data.draw(
        st.one_of(
            st.binary(max_size=300),
            st.builds(
                lambda i, b: good[:i] + b + good[i + len(b) :],
                st.integers(0, len(good)),
                st.binary(min_size=1, max_size=8),
            ),
            st.builds(lambda i: good[:i], st.integers(0, len(good))),
        )
    )
    r = wit.add_checkpoint(body)
    assert r.status in (200, 400, 403, 404, 409, 422)

"""Rebuild the conformance corpus: ``python -m tests.conformance.generate`` (from the repo root).

Every case is a file a verifier is given, the keys it is told to trust, and the outcome it must
report (tests/conformance/README.md). Keys come from fixed seeds and Ed25519 signatures are
deterministic, so two runs write identical bytes; ``test_conformance.py`` checks that. To add a
case, add one function to ``CASES`` below and run this module.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lineage import codec, hashing, merkle, note, witness
from lineage.bundle import build_bundle, leaf_record
from lineage.keys import KeyRegistry, Role
from lineage.model import Decision, ExecutionEvent
from lineage.partitioning import workflow_partition
from tests.support.lineage_builder import (
    CRITICAL_FORBIDDEN_POLICY,
    GATE_ID,
    PROCESSOR_SUBJECT,
    RUNTIME_ID,
    RUNTIME_SUBJECT,
    Dataset,
    WorkflowShape,
    build_dataset,
    decode_event,
    make_seal,
    seeded_signer,
    sign_checkpoint,
)

HERE = Path(__file__).resolve().parent
CORPUS_FORMAT = "lineage-conformance/v1"
SEED = b"lineage-conformance-v1"
FORGER_SEED = b"lineage-conformance-forger"
WITNESS_NAME = "witness.example/w1"
OTHER_WITNESS_NAME = "witness.example/w2"
COSIGNED_AT = 1_767_312_000
"""2026-01-02T00:00:00Z: when the corpus's witness cosigned (POSIX seconds)."""
Doc = dict[str, Any]

_EVENTS = codec.load("execution_event")
_SEALS = codec.load("seal")


@dataclass
class Case:
    """One corpus case before it is written: content, trust given, expected outcome."""

    name: str
    description: str
    content: Doc | bytes
    verdict: str
    exit_code: int
    failure_kind: str | None
    registry: str | None = "auditor-registry.json"
    checkpoint_keys: list[str] = field(default_factory=list)
    workflow: str | None = None
    witness_keys: list[str] = field(default_factory=list)
    witnesses_required: int | None = None


@dataclass
class World:
    """The genuine data every case derives from."""

    data: Dataset
    wf: str
    doc: Doc
    forger: Dataset
    plus: Dataset
    claims: Dataset
    """Same keys as ``data``: a workflow with HIGH findings, a contained one, a clean one, and
    one whose gate recorded a decision its policy set did not make."""
    registries: dict[str, KeyRegistry] = field(default_factory=dict)

    def fresh(self) -> Doc:
        return copy.deepcopy(self.doc)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _event(doc: Doc, k: int) -> bytes:
    return base64.b64decode(doc["entries"][k]["event"])


def _rechain(doc: Doc, start: int) -> None:
    """What a forger does after changing entry ``start``: recompute every later hash and link."""
    entries = doc["entries"]
    prev = bytes.fromhex(entries[start]["prev_hash"])
    for k in range(start, len(entries)):
        e = entries[k]
        e["prev_hash"] = prev.hex()
        prev = hashing.entry_hash(
            prev,
            bytes.fromhex(e["event_digest"]),
            e["chain_seq"],
            bytes.fromhex(e["policy_digest"]),
        )
        e["entry_hash"] = prev.hex()


def _reencode_event(doc: Doc, k: int, **changes: Any) -> bytes:
    record = decode_event(_event(doc, k)).to_record()
    record.update(changes)
    data = _EVENTS.encode(record, check=False)
    e = doc["entries"][k]
    e["event"] = _b64(data)
    e["event_digest"] = hashing.event_digest(data).hex()
    return data


def _seal_record(doc: Doc, k: int) -> dict[str, Any]:
    return dict(_SEALS.decode_body(base64.b64decode(doc["entries"][k]["seal"]["record"])))


def _note_body(text: str) -> note.Checkpoint:
    return note.parse_checkpoint(text[: text.index("\n\n") + 1])


def _first_gate_entry(doc: Doc) -> int:
    return next(k for k, _ in enumerate(doc["entries"]) if _emitter(doc, k) == GATE_ID)


def _emitter(doc: Doc, k: int) -> str:
    return decode_event(_event(doc, k)).emitter_id


# -- cases ----------------------------------------------------------------------------------

OK = ("VERIFIED", 0, None)
UNTRUSTED = ("CONSISTENT_BUT_UNTRUSTED", 3, None)


def _fails(kind: str) -> tuple[str, int, str]:
    return ("FAILED", 1, kind)


UNUSABLE = ("UNUSABLE_INPUT", 2, "UNUSABLE_INPUT")


def genuine(w: World) -> list[Case]:
    out = [Case("genuine", "a bundle as exported, auditor registry", w.fresh(), *OK)]
    out.append(
        Case(
            "genuine-checkpoint-key",
            "a bundle as exported, auditor registry and the processor's verifier key",
            w.fresh(),
            *OK,
            checkpoint_keys=[w.data.checkpoint_vkey],
        )
    )
    out.append(
        Case(
            "genuine-expected-workflow",
            "a bundle as exported, the auditor expects its workflow",
            w.fresh(),
            *OK,
            workflow=w.wf,
        )
    )
    other = next(x for x in w.data.workflows if x != w.wf)
    out.append(
        Case("genuine-other-workflow", "another workflow's bundle", w.data.bundle(other), *OK)
    )
    out.append(
        Case(
            "untrusted-no-keys",
            "a genuine bundle verified with no keys named: its own keys are not trust",
            w.fresh(),
            *UNTRUSTED,
            registry=None,
        )
    )
    out.append(
        Case(
            "untrusted-checkpoint-key-only",
            "checkpoint key named, but seal keys only from the bundle",
            w.fresh(),
            *UNTRUSTED,
            registry=None,
            checkpoint_keys=[w.data.checkpoint_vkey],
        )
    )
    forged = w.forger.bundle(w.forger.workflows[0])
    out.append(
        Case(
            "forged-own-keys-no-trust",
            "a bundle forged end to end with the forger's own keys, no keys named",
            forged,
            *UNTRUSTED,
            registry=None,
        )
    )
    out.append(
        Case(
            "forged-own-keys-auditor-registry",
            "the same forged bundle against the auditor's registry",
            forged,
            *_fails("CHECKPOINT_SIGNATURE"),
        )
    )
    return out


def tampered(w: World) -> list[Case]:
    out: list[Case] = []

    def case(name: str, kind: str, description: str, doc: Doc, **kw: Any) -> None:
        out.append(Case(name, description, doc, *_fails(kind), **kw))

    d = w.fresh()
    raw = bytearray(_event(d, 2))
    raw[len(raw) // 2] ^= 1
    d["entries"][2]["event"] = _b64(bytes(raw))
    case("event-byte-flipped", "EVENT_DIGEST_MISMATCH", "one event byte flipped", d)

    d = w.fresh()
    raw = bytearray(_event(d, 1))
    raw[raw.index(b"user:") + 5] ^= 0x20
    d["entries"][1]["event"] = _b64(bytes(raw))
    d["entries"][1]["event_digest"] = hashing.event_digest(bytes(raw)).hex()
    _rechain(d, 1)
    case(
        "event-edited-digest-recomputed",
        "SEAL_INCLUSION",
        "user:alice became user:Alice, digest and chain recomputed",
        d,
    )

    d = w.fresh()
    k = len(d["entries"]) // 2
    forger, record = seeded_signer(_emitter(d, k).split("#")[0], Role.EMITTER, FORGER_SEED)
    ev = decode_event(_event(d, k))
    data = _reencode_event(d, k, resource="prod-db:payroll/salaries")
    seal = make_seal(
        forger,
        ev.emitter_id,
        ev.partition,
        ev.emitter_seq,
        [hashing.event_digest(data)],
        hashing.ZERO_HASH,
    )
    d["entries"][k]["seal"] = {"record": _b64(seal), "index": 0, "path": []}
    d["keys"]["keys"].append(KeyRegistry([record]).to_json()["keys"][0])
    _rechain(d, k)
    case(
        "resealed-unregistered-key",
        "UNKNOWN_KEY",
        "an event edited and re-sealed by a key the auditor never registered",
        d,
    )

    d = w.fresh()
    del d["entries"][4]
    case("entry-removed", "CHAIN_SEQUENCE", "entry 4 removed", d)

    d = w.fresh()
    d["entries"].insert(3, copy.deepcopy(d["entries"][2]))
    case("entry-replayed", "CHAIN_SEQUENCE", "entry 2 inserted again after itself", d)

    d = w.fresh()
    d["entries"][2], d["entries"][3] = d["entries"][3], d["entries"][2]
    case("entries-swapped", "CHAIN_SEQUENCE", "entries 2 and 3 swapped", d)

    d = w.fresh()
    e = d["entries"]
    e[2], e[3] = e[3], e[2]
    e[2]["chain_seq"], e[3]["chain_seq"] = 2, 3
    case("entries-swapped-renumbered", "CHAIN_LINK", "entries 2 and 3 swapped and renumbered", d)

    d = w.fresh()
    del d["entries"][-2:]
    case("tail-cut", "CHAIN_TRUNCATED", "last two entries removed, count unchanged", d)

    d = w.fresh()
    del d["entries"][-2:]
    d["entry_count"] -= 2
    case("tail-cut-count-fixed", "TAIL_PROOF_MISMATCH", "last two entries removed, count fixed", d)

    chain = w.data.workflow_entries(w.wf)
    d = build_bundle(
        w.wf,
        chain[:-2],
        w.data.partition_leaves(),
        w.data.checkpoints,
        w.data.registry,
        w.data.checkpoint_vkey,
    )
    case(
        "tail-cut-by-exporter",
        "CHAIN_TRUNCATED",
        "a dishonest exporter rebuilt the bundle without the last two entries",
        d,
    )

    d = w.fresh()
    log = d["logs"][0]
    text = log["checkpoints"][-1]["note"]
    root64 = text.split("\n")[2]
    other = _b64(hashlib.sha256(b"other").digest())
    log["checkpoints"][-1]["note"] = text.replace(f"\n{root64}\n", f"\n{other}\n", 1)
    case("checkpoint-root-edited", "CHECKPOINT_SIGNATURE", "a signed checkpoint's root replaced", d)

    d = w.fresh()
    log = d["logs"][0]
    impostor, _ = seeded_signer(PROCESSOR_SUBJECT, Role.PROCESSOR, FORGER_SEED)
    cp = _note_body(log["checkpoints"][0]["note"])
    log["checkpoints"][0]["note"] = sign_checkpoint(impostor, cp.origin, cp.size, cp.root_hash)
    case(
        "checkpoint-impostor-key",
        "CHECKPOINT_SIGNATURE",
        "a checkpoint re-signed by a key of the same name the auditor does not trust",
        d,
    )

    d = w.fresh()
    sizes = sorted({e["inclusion"]["tree_size"] for e in d["entries"]})
    k = next(k for k, e in enumerate(d["entries"]) if e["log_index"] >= sizes[0])
    d["entries"][k]["inclusion"]["tree_size"] = sizes[0]
    case(
        "stale-checkpoint",
        "STALE_CHECKPOINT",
        "an entry proven against a checkpoint older than it",
        d,
    )

    d = w.fresh()
    d["entries"][0]["inclusion"]["tree_size"] += 1
    case(
        "missing-checkpoint",
        "MISSING_CHECKPOINT",
        "an inclusion proof names a size the bundle lacks",
        d,
    )

    d = w.fresh()
    d["entries"][3]["inclusion"]["path"][-1] = hashlib.sha256(b"x").hexdigest()
    case("log-path-edited", "LOG_INCLUSION", "one node of a log inclusion path replaced", d)

    d = w.fresh()
    log = d["logs"][0]
    p = log["partition"]
    size = _note_body(log["checkpoints"][-1]["note"]).size
    leaves = [leaf_record(e) for e in w.data.partition_entries(p)][:size]
    forked = [hashing.sha256(b"forked")] + [hashing.entry_hash_of_record(x) for x in leaves[1:]]
    log["checkpoints"][-1]["note"] = sign_checkpoint(
        w.data.processor, log["origin"], size, merkle.root(forked)
    )
    old = log["consistency"][-1]["old_size"]
    log["consistency"][-1]["path"] = [h.hex() for h in merkle.consistency_proof(old, forked)]
    case(
        "checkpoint-fork",
        "CHECKPOINT_INCONSISTENT",
        "the processor key signed a second, forked history",
        d,
    )

    d = w.fresh()
    d["entries"][6]["seal"] = None
    case("seal-missing", "MISSING_SEAL", "an entry without its seal", d)

    d = w.fresh()
    gate = _first_gate_entry(d)
    runtime = next(k for k in range(len(d["entries"])) if _emitter(d, k) == RUNTIME_ID)
    d["entries"][gate]["seal"] = copy.deepcopy(d["entries"][runtime]["seal"])
    case("seal-of-another-emitter", "SEAL_MISMATCH", "a gate event carrying the runtime's seal", d)

    d = w.fresh()
    rec = bytearray(base64.b64decode(d["entries"][0]["seal"]["record"]))
    rec[-1] ^= 1
    d["entries"][0]["seal"]["record"] = _b64(bytes(rec))
    case(
        "seal-signature-flipped",
        "BAD_SEAL_SIGNATURE",
        "the last signature byte of a seal flipped",
        d,
    )

    d = w.fresh()
    d["entries"][0]["seal"]["record"] = _b64(b"\xc3\x01" + bytes(8) + b"junk")
    case("seal-garbage", "SEAL_MALFORMED", "a seal record that is not a Seal", d)

    d = w.fresh()
    garbage = _EVENTS.header + b"\xff" * 5
    d["entries"][0]["event"] = _b64(garbage)
    d["entries"][0]["event_digest"] = hashing.event_digest(garbage).hex()
    case("event-garbage", "EVENT_MALFORMED", "event bytes that do not decode, digest recomputed", d)

    d = w.fresh()
    d["entries"][1]["event_id"] = d["entries"][2]["event_id"]
    case(
        "event-id-swapped", "EVENT_ID_MISMATCH", "an entry names another event id than its bytes", d
    )

    d = w.fresh()
    other = next(x for x in w.data.workflows if x != w.wf)
    d["workflow_id"] = other
    case(
        "workflow-renamed",
        "WORKFLOW_MISMATCH",
        "the bundle claims another workflow id than its events",
        d,
    )

    d = w.fresh()
    case(
        "unexpected-workflow",
        "UNEXPECTED_WORKFLOW",
        "the auditor expects another workflow",
        d,
        workflow=other,
    )

    d = w.fresh()
    d["policy_digests"] = [hashlib.sha256(b"p").hexdigest()]
    case(
        "policy-digests-edited",
        "POLICY_DIGESTS",
        "the stated policy digests differ from the entries'",
        d,
    )

    d = w.fresh()
    d["entries"][2]["entry_hash"] = hashlib.sha256(b"e").hexdigest()
    case("entry-hash-edited", "ENTRY_HASH_MISMATCH", "a stated entry hash replaced", d)

    d = w.fresh()
    following = base64.b64decode(d["tail"]["following"])
    if following:
        d["tail"]["following"] = _b64(bytes([following[0] ^ 1]) + following[1:])
    else:
        d["tail"]["prefix"][0] = hashlib.sha256(b"t").hexdigest()
    case("tail-proof-edited", "TAIL_PROOF_MISMATCH", "one byte of the tail proof changed", d)

    d = w.fresh()
    d["entries"][-1]["partition"] = 1 - d["entries"][-1]["partition"]
    case(
        "entry-in-another-partition",
        "PARTITION_MISMATCH",
        "the last entry claims the workflow's other partition",
        d,
    )

    d = w.fresh()
    log = d["logs"][0]
    log["origin"] = log["origin"].rsplit("/", 1)[0] + f"/{log['partition'] + 7}"
    case(
        "origin-other-partition",
        "CHECKPOINT_ORIGIN",
        "the log section's origin names another partition",
        d,
    )

    for name, registry, kind, description in (
        (
            "key-revoked",
            "registry-runtime-revoked.json",
            "REVOKED_KEY",
            "the runtime's key is revoked in the auditor's registry",
        ),
        (
            "key-expired",
            "registry-runtime-expired.json",
            "KEY_EXPIRED",
            "the runtime's key expired before the events",
        ),
        (
            "key-scope",
            "registry-runtime-other-subject.json",
            "KEY_SCOPE",
            "the runtime's key is registered for another subject",
        ),
        (
            "decision-by-non-authorizer",
            "registry-gate-as-emitter.json",
            "AUTHORIZER_ROLE",
            "the gate's key is registered as an emitter key, so its decisions are not authorizations",
        ),
    ):
        case(name, kind, description, w.fresh(), registry=registry)
    out.append(
        Case(
            "processor-key-revoked",
            "the processor's key is revoked: no trusted checkpoint key remains",
            w.fresh(),
            *UNUSABLE,
            registry="registry-processor-revoked.json",
        )
    )
    return out


def hostile(w: World) -> list[Case]:
    out: list[Case] = []

    def case(
        name: str,
        description: str,
        content: Doc | bytes,
        outcome: tuple[str, int, str | None] = UNUSABLE,
    ) -> None:
        out.append(Case(name, description, content, *outcome))

    text = json.dumps(w.doc, indent=1)
    case(
        "huge-integer",
        "entry_count is a 5,000-digit integer",
        text.replace(
            f'"entry_count": {w.doc["entry_count"]}', '"entry_count": ' + "9" * 5000
        ).encode(),
    )
    case("deep-nesting", "JSON nested 100,000 deep", b"[" * 100_000 + b"]" * 100_000)
    case(
        "deep-nesting-inside",
        "a member nested 1,000 deep",
        text.replace('"tail": {', '"x": ' + "[" * 1000 + "]" * 1000 + ', "tail": {', 1).encode(),
    )
    case(
        "lone-surrogate",
        "an event id holding a lone surrogate",
        text.replace(f'"{w.doc["entries"][0]["event_id"]}"', '"\\ud800"', 1).encode(),
    )
    case("not-json", "not JSON at all", b"this is not JSON")
    case("empty-file", "an empty file", b"")
    case("truncated-json", "a bundle cut in the middle", text[: len(text) // 2].encode())
    case(
        "format-v3",
        "a format this verifier does not know",
        text.replace('"lineage-evidence-bundle/v2"', '"lineage-evidence-bundle/v3"', 1).encode(),
    )
    case(
        "duplicate-member",
        "a member given twice",
        text.replace('"entry_count"', '"entry_count": 1, "entry_count"', 1).encode(),
    )
    case("not-utf8", "bytes that are not UTF-8", b'{"format": "\xff\xfe"}')
    for name, constant in (
        ("nan-member", "NaN"),
        ("infinity-member", "Infinity"),
        ("negative-infinity-member", "-Infinity"),
    ):
        case(
            name,
            f"an unknown member whose value is {constant}: not RFC 8259 JSON",
            text.replace('"tail": {', f'"x-note": {constant}, "tail": {{', 1).encode(),
        )

    d = w.fresh()
    seal = _seal_record(d, 0)
    seal["partition"] = -1
    d["entries"][0]["seal"]["record"] = _b64(_SEALS.encode(seal, check=False))
    case("seal-negative-partition", "a seal with partition -1", d)

    d = w.fresh()
    seal = _seal_record(d, 0)
    seal["emitter_id"] = "e" * 70_000
    d["entries"][0]["seal"]["record"] = _b64(_SEALS.encode(seal, check=False))
    case("seal-long-emitter-id", "a seal whose emitter_id is 70,000 bytes", d)

    for name, t in (("event-time-far-future", 2**62), ("event-time-negative", -(2**62))):
        d = w.fresh()
        _reencode_event(d, 0, event_time=t)
        case(name, f"an event time of {t} µs, outside the calendar", d)

    d = w.fresh()
    d["logs"][0]["origin"] = d["logs"][0]["origin"].rsplit("/", 1)[0] + "/\u0661"
    case(
        "origin-non-ascii-digit", "a checkpoint origin whose partition is ARABIC-INDIC DIGIT ONE", d
    )
    d = w.fresh()
    d["logs"][0]["origin"] = d["logs"][0]["origin"].rsplit("/", 1)[0] + "/\u00b2"
    case("origin-superscript-digit", "a checkpoint origin whose partition is SUPERSCRIPT TWO", d)

    d = w.fresh()
    d["entries"][0]["seal"]["path"] = [hashlib.sha256(b"%d" % i).hexdigest() for i in range(65)]
    case("path-too-long", "a seal path of 65 hashes (more than any tree below 2^64 needs)", d)

    d = w.fresh()
    d["entries"][1]["event_id"] = "\x1b[2J\x1b[H\x1b[32mVERIFIED\x1b[0m"
    case(
        "ansi-event-id",
        "an event id that clears the screen and prints VERIFIED",
        d,
        _fails("EVENT_ID_MISMATCH"),
    )

    d = w.fresh()
    d["entries"][1]["event_id"] = "[/x] [bold red]not markup[/]"
    case(
        "markup-event-id",
        "an event id holding rich markup, including a closing tag [/x]",
        d,
        _fails("EVENT_ID_MISMATCH"),
    )

    d = w.fresh()
    d["workflow_id"] = "[/x]\u202eDEIFIREV"
    case(
        "markup-workflow-id",
        "a workflow id with markup and a right-to-left override",
        d,
        _fails("WORKFLOW_MISMATCH"),
    )
    return out


def spec_points(w: World) -> list[Case]:
    """Points the spec had to settle: unknown members, '+' in a verifier key's base64."""
    out: list[Case] = []
    d = w.fresh()
    d["exported_by"] = {"tool": "some exporter", "note": "information only"}
    d["entries"][0]["comment"] = "ignored"
    out.append(
        Case(
            "unknown-bundle-members",
            "unknown members at the top level and in an entry are ignored",
            d,
            *OK,
        )
    )
    d = w.fresh()
    d["keys"]["keys"][0]["comment"] = "not a registry field"
    out.append(
        Case(
            "unknown-embedded-registry-member",
            "an unknown field in the embedded key registry is rejected, as keys.md says",
            d,
            *UNUSABLE,
        )
    )
    plus = w.plus
    out.append(
        Case(
            "checkpoint-key-with-plus",
            "the processor's verifier key has '+' in its base64 part: split at the first two '+'",
            plus.bundle(plus.workflows[0]),
            *OK,
            registry="plus-registry.json",
            checkpoint_keys=[plus.checkpoint_vkey],
        )
    )
    return out


def _flip_decision(event: ExecutionEvent) -> ExecutionEvent:
    """A lying gate: the recorded decision is DENY where the policy set allows."""
    assert event.authorization is not None
    auth = dataclasses.replace(event.authorization, decision=Decision.DENY, determining_policies=())
    return dataclasses.replace(event, authorization=auth)


def _resign(w: World, doc: Doc, edit: Callable[[note.Checkpoint], list[str]]) -> None:
    """Re-sign every checkpoint of ``doc`` with the trusted processor key, extension lines edited:
    what a dishonest (or misconfigured) processor signs."""
    for log in doc["logs"]:
        for cp in log["checkpoints"]:
            body = _note_body(cp["note"])
            text = note.checkpoint_body(body.origin, body.size, body.root_hash, edit(body))
            cp["note"] = note.sign_note(text, PROCESSOR_SUBJECT, w.data.processor._private_key)


def v2_claims(w: World) -> list[Case]:
    """Format v2: partition binding, findings, decisions re-run."""
    out: list[Case] = []
    c = w.claims
    denied, contained, clean, lying = c.workflows[:4]

    def case(name: str, kind: str, description: str, doc: Doc) -> None:
        out.append(Case(name, description, doc, *_fails(kind)))

    out.append(
        Case(
            "findings-high",
            "a workflow that ran an action its gate denied: its HIGH findings travel with it",
            c.bundle(denied),
            *OK,
        )
    )
    out.append(
        Case(
            "findings-contained",
            "a workflow contained by a CRITICAL finding (a forbidden resource)",
            c.bundle(contained),
            *OK,
        )
    )
    out.append(
        Case("findings-none", "a clean workflow sharing the findings log", c.bundle(clean), *OK)
    )

    d = copy.deepcopy(c.bundle(contained))
    d["findings"]["records"].pop(0)
    case(
        "findings-record-dropped", "FINDINGS_MISMATCH", "one of the workflow's findings left out", d
    )

    d = copy.deepcopy(c.bundle(denied))
    rec = d["findings"]["records"][0]
    raw = bytearray(base64.b64decode(rec["record"]))
    raw[-1] ^= 1
    rec["record"] = _b64(bytes(raw))
    case("findings-record-edited", "FINDINGS_MISMATCH", "one byte of a finding record flipped", d)

    d = copy.deepcopy(c.bundle(contained))
    leaves = bytearray(base64.b64decode(d["findings"]["leaves"]))
    for r in d["findings"]["records"]:
        i = r["index"] * 64
        leaves[i : i + 32] = hashlib.sha256(b"\x16" + clean.encode()).digest()
    d["findings"]["leaves"] = _b64(bytes(leaves))
    d["findings"]["records"] = []
    case(
        "findings-retagged",
        "FINDINGS_MISMATCH",
        "the workflow's findings re-tagged as another workflow's and left out",
        d,
    )

    d = copy.deepcopy(c.bundle(contained))
    d["findings"] = None
    case(
        "findings-null",
        "FINDINGS_MISMATCH",
        "findings null while the signed checkpoint commits to a findings log",
        d,
    )

    d = copy.deepcopy(c.bundle(contained))
    del d["findings"]
    out.append(Case("findings-absent", "a v2 bundle without its findings member", d, *UNUSABLE))

    d = copy.deepcopy(c.bundle(denied))
    d["policies"] = []
    case(
        "policy-set-missing",
        "POLICY_SET_MISSING",
        "the policy set the decisions name removed from policies",
        d,
    )

    d = copy.deepcopy(c.bundle(denied))
    d["policies"] = d["policies"] * 2
    case(
        "policy-set-repeated",
        "POLICY_SET_MISSING",
        "the bundle's policy set carried twice (found by the structural fuzz test)",
        d,
    )

    case(
        "policy-decision-lied",
        "POLICY_DECISION_MISMATCH",
        "the gate's genuine key sealed a DENY its policy set does not make for the request",
        c.bundle(lying),
    )

    d = w.fresh()
    partition = d["entries"][0]["partition"]
    count = next(n for n in range(3, 64) if workflow_partition(w.wf, n) != partition)

    def other_count(body: note.Checkpoint) -> list[str]:
        return [
            f"partitions {count}" if x.startswith("partitions ") else x for x in body.extensions
        ]

    _resign(w, d, other_count)
    case(
        "partition-binding",
        "PARTITION_BINDING",
        f"checkpoints re-signed by the processor key naming {count} partitions, under which the "
        "workflow maps to another partition",
        d,
    )

    d = w.fresh()

    def without_binding(body: note.Checkpoint) -> list[str]:
        return [x for x in body.extensions if not x.startswith("partitions ")]

    _resign(w, d, without_binding)
    out.append(
        Case(
            "partition-binding-unsigned",
            "checkpoints without the partitions line (older format): verified with a warning",
            d,
            *OK,
        )
    )

    out.append(
        Case(
            "key-compromised",
            "the runtime's key revoked as compromised from the time of the workflow's third event",
            w.fresh(),
            *_fails("KEY_COMPROMISED"),
            registry="registry-runtime-compromised.json",
        )
    )
    return out


def _witness_key(name: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(
        hashlib.sha256(SEED + b"/" + name.encode()).digest()
    )


def _witness_vkey(name: str) -> str:
    return witness.cosigner_vkey(name, _witness_key(name).public_key().public_bytes_raw())


def _cosigned(doc: Doc, name: str = WITNESS_NAME, at: int = COSIGNED_AT) -> Doc:
    """``doc`` with the newest checkpoint of every log cosigned by witness ``name`` at ``at``."""
    out = copy.deepcopy(doc)
    for log in out["logs"]:
        cp = log["checkpoints"][-1]
        body, _ = witness.split_note(cp["note"])
        line = witness.cosign(body, name, _witness_key(name), at).line()
        cp["note"] = witness.add_signature_lines(cp["note"], [line])
    return out


def witnessed(w: World) -> list[Case]:
    """Witness cosignatures (C2SP tlog-cosignature), with witness keys among the trust inputs."""
    out: list[Case] = []
    w1, w2 = _witness_vkey(WITNESS_NAME), _witness_vkey(OTHER_WITNESS_NAME)
    cosigned = _cosigned(w.fresh())
    out.append(
        Case(
            "witness-cosigned",
            "the newest checkpoint of every log cosigned by the witness the auditor names",
            cosigned,
            *OK,
            witness_keys=[w1],
        )
    )
    out.append(
        Case(
            "witness-lines-ignored",
            "a cosigned bundle verified without witness keys: cosignature lines are ignored",
            cosigned,
            *OK,
        )
    )
    out.append(
        Case(
            "witness-missing",
            "a bundle without cosignatures, the auditor requires one",
            w.fresh(),
            *_fails("WITNESS_COSIGNATURES"),
            witness_keys=[w1],
        )
    )
    out.append(
        Case(
            "witness-quorum",
            "cosigned by one of two witnesses the auditor names, both required",
            cosigned,
            *_fails("WITNESS_COSIGNATURES"),
            witness_keys=[w1, w2],
            witnesses_required=2,
        )
    )
    out.append(
        Case(
            "witness-quorum-met",
            "cosigned by both witnesses the auditor names, both required",
            _cosigned(cosigned, OTHER_WITNESS_NAME),
            *OK,
            witness_keys=[w1, w2],
            witnesses_required=2,
        )
    )
    d = copy.deepcopy(cosigned)
    text = d["logs"][0]["checkpoints"][-1]["note"]
    head, line = text.rsplit("— ", 1)
    name, sig64 = line.rstrip("\n").split(" ")
    raw = bytearray(base64.b64decode(sig64))
    raw[-1] ^= 1
    d["logs"][0]["checkpoints"][-1]["note"] = f"{head}— {name} {_b64(bytes(raw))}\n"
    out.append(
        Case(
            "witness-cosignature-forged",
            "one byte of the witness's cosignature flipped",
            d,
            *_fails("WITNESS_COSIGNATURES"),
            witness_keys=[w1],
        )
    )
    d = copy.deepcopy(w.fresh())
    for log in d["logs"]:
        cp = log["checkpoints"][-1]
        body, _ = witness.split_note(cp["note"])
        body = body.replace("partitions ", "partitions 9", 1) if "partitions " in body else body
        line = witness.cosign(body, WITNESS_NAME, _witness_key(WITNESS_NAME), COSIGNED_AT).line()
        cp["note"] = witness.add_signature_lines(cp["note"], [line])
    out.append(
        Case(
            "witness-cosigned-other-text",
            "the cosignature covers other extension lines than the note's (the whole text is signed)",
            d,
            *_fails("WITNESS_COSIGNATURES"),
            witness_keys=[w1],
        )
    )
    out.append(
        Case(
            "witness-processor-key-expired",
            "cosigned after the processor key's not_after: the key no longer vouched for it",
            cosigned,
            *_fails("KEY_EXPIRED"),
            registry="registry-processor-expired.json",
            witness_keys=[w1],
        )
    )
    return out


CASES: list[Callable[[World], list[Case]]] = [
    genuine,
    tampered,
    hostile,
    spec_points,
    v2_claims,
    witnessed,
]


def _registries(data: Dataset, wf: str) -> dict[str, KeyRegistry]:
    base = data.registry.to_json()
    runtime = data.signers[RUNTIME_ID].key_id
    gate = data.signers[GATE_ID].key_id

    def edited(key_id: str, **changes: Any) -> KeyRegistry:
        doc = copy.deepcopy(base)
        for k in doc["keys"]:
            if k["key_id"] == key_id:
                k.update(changes)
        return KeyRegistry.from_json(doc)

    revoked = KeyRegistry.from_json(base)
    revoked.revoke(runtime, 1, "key leaked")
    processor_revoked = KeyRegistry.from_json(base)
    processor_revoked.revoke(data.processor.key_id, 1, "retired")
    compromised = KeyRegistry.from_json(base)
    third = next(e for e in data.entries if e.workflow_id == wf and e.chain_seq == 2)
    at = decode_event(third.event_bytes).event_time
    compromised.revoke(runtime, at, "key leaked", compromised_at_us=at)
    return {
        "auditor-registry.json": data.registry,
        "registry-runtime-revoked.json": revoked,
        "registry-runtime-expired.json": edited(runtime, not_after="2025-12-31T00:00:00Z"),
        "registry-runtime-other-subject.json": edited(runtime, subject=RUNTIME_SUBJECT + "-other"),
        "registry-gate-as-emitter.json": edited(gate, role="emitter"),
        "registry-processor-revoked.json": processor_revoked,
        "registry-runtime-compromised.json": compromised,
        "registry-processor-expired.json": edited(
            data.processor.key_id, not_after="2026-01-01T12:00:00Z"
        ),
    }


def world() -> World:
    """The genuine dataset (seeded), the bundle most cases start from, a forger's dataset."""
    data = build_dataset(workflows=4, steps=2, partitions=2, seed=SEED)
    wf = next(
        x
        for x in data.workflows
        if len({e["inclusion"]["tree_size"] for e in data.bundle(x)["entries"]}) >= 2
    )
    forger = build_dataset(workflows=2, steps=1, partitions=1, seed=FORGER_SEED)
    plus = build_dataset(workflows=1, steps=1, partitions=1, seed=_plus_seed())
    claims = build_dataset(
        workflows=4,
        steps=2,
        partitions=1,
        seed=SEED,
        shapes={
            0: WorkflowShape(denied=True),
            1: WorkflowShape(resource="secrets:api-token"),
            3: WorkflowShape(tamper=_flip_decision),
        },
        policy_file=CRITICAL_FORBIDDEN_POLICY,
    )
    w = World(data, wf, data.bundle(wf), forger, plus, claims)
    w.registries = _registries(data, wf)
    w.registries["plus-registry.json"] = plus.registry
    return w


def _plus_seed() -> bytes:
    """The first seed whose processor verifier key has a '+' in its base64 part."""
    for n in range(1000):
        seed = b"lineage-conformance-plus-%d" % n
        signer, _ = seeded_signer(PROCESSOR_SUBJECT, Role.PROCESSOR, seed)
        if "+" in note.verifier_key(PROCESSOR_SUBJECT, signer.public_key).split("+", 2)[2]:
            return seed
    raise AssertionError("no seed gives a verifier key with '+'")


def _text(doc: Doc | bytes) -> bytes:
    if isinstance(doc, bytes):
        return doc
    return (json.dumps(doc, indent=1) + "\n").encode("ascii")


def write(root: Path) -> list[dict[str, Any]]:
    """Write cases/, keys/ and expected.json under ``root``; returns the expected cases."""
    w = world()
    cases_dir, keys_dir = root / "cases", root / "keys"
    for d in (cases_dir, keys_dir):
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
    for name, registry in w.registries.items():
        (keys_dir / name).write_text(json.dumps(registry.to_json(), indent=1) + "\n", "ascii")
    (keys_dir / "checkpoint-key.txt").write_text(w.data.checkpoint_vkey + "\n", "ascii")
    expected: list[dict[str, Any]] = []
    names: set[str] = set()
    for make in CASES:
        for c in make(w):
            assert c.name not in names, c.name
            names.add(c.name)
            (cases_dir / f"{c.name}.json").write_bytes(_text(c.content))
            expected.append(
                {
                    "name": c.name,
                    "description": c.description,
                    "file": f"cases/{c.name}.json",
                    "registry": None if c.registry is None else f"keys/{c.registry}",
                    "checkpoint_keys": c.checkpoint_keys,
                    "workflow": c.workflow,
                    "witness_keys": c.witness_keys,
                    "witnesses_required": c.witnesses_required,
                    "verdict": c.verdict,
                    "exit_code": c.exit_code,
                    "failure_kind": c.failure_kind,
                }
            )
    for legacy in sorted((HERE / "legacy_v1").glob("*.bundle.json")):
        expected.append(
            {
                "name": f"legacy-v1-{legacy.name.split('.')[0]}",
                "description": "exported by the first v1 exporter (frozen, never regenerated)",
                "file": f"legacy_v1/{legacy.name}",
                "registry": "legacy_v1/registry.json",
                "checkpoint_keys": [],
                "workflow": None,
                "witness_keys": [],
                "witnesses_required": None,
                "verdict": "VERIFIED",
                "exit_code": 0,
                "failure_kind": None,
            }
        )
    doc = {"format": CORPUS_FORMAT, "cases": expected}
    (root / "expected.json").write_text(json.dumps(doc, indent=1) + "\n", "ascii")
    return expected


def main() -> None:
    """Rebuild the corpus in place (or under the directory given as the first argument)."""
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    cases = write(root)
    print(f"wrote {len(cases)} cases to {root}")


if __name__ == "__main__":
    main()

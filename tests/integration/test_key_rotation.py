"""Key rotation without downtime: an emitter, an authorizer and the processor move to new keys.

A steady stream runs through the embedded broker, a processor worker and the sink; every
workflow carries a pre-execution gate decision sealed by the authorizer. In the middle of it the
emitter's key, the authorizer's key and the processor's checkpoint key are rotated the way an
operator does it (new key registered with a future ``not_before``, old key retired with a
``not_after``); the running emitters and worker pick the new keys up from the registry file
without a restart. Nothing may be quarantined, no violation raised, and both the bundle and the
store verify with evidence on both sides of the boundary.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
from typing import Any

from lineage import codec, note
from lineage.bundle import write_bundle
from lineage.keys import KeyRegistry, Role, RotatingSigner, generate_key, plan_rotation
from lineage.model import EventKind, Seal
from lineage.policy import PolicySet
from lineage.verify import checkpoint_vkeys, verify_bundle
from lineage_cli.evidence import export_bundle, verify_clickhouse
from producers.emitter import Emitter
from producers.gate import Gate
from stream_processors.main import PROCESSOR_SUBJECT
from tests.integration.conftest import Pipeline, wait_for

SEALS = codec.load("seal")
SUBJECT = "tool-runner"
AUTHORIZER = "orchestrator"
ROTATED = (
    (SUBJECT, Role.EMITTER),
    (AUTHORIZER, Role.AUTHORIZER),
    (PROCESSOR_SUBJECT, Role.PROCESSOR),
)
OVERLAP_US = 1_500_000  # both keys valid 1.5 s each side of the switch; batches seal in 50 ms


def _rotate(p: Pipeline, switch_at_us: int) -> list[str]:
    """What `lineage keys rotate` does, for each subject of ``ROTATED``; new key ids."""
    path = p.settings.resolved_keys_file
    keys_dir = path.parent
    registry = KeyRegistry.load(path)
    new_ids = []
    for subject, role in ROTATED:
        record, _ = generate_key(subject, role, keys_dir, per_key=True)
        retired = plan_rotation(registry, record, switch_at_us=switch_at_us, overlap_us=OVERLAP_US)
        assert len(retired) == 1, f"expected the one current {role.value} key retired"
        new_ids.append(record.key_id)
    registry.save(path)
    return new_ids


def _stream(emitter: Emitter, gate: Gate, stop: threading.Event, started: list[str]) -> None:
    """Workflows of start, a gate decision, three attestations and completion."""
    n = 0
    while not stop.is_set():
        wid = f"rot-{n:05d}"
        ev = emitter.emit(
            workflow_id=wid, kind=EventKind.WORKFLOW_STARTED, principal="agent:r", action="start"
        )
        ev = gate.authorize(
            workflow_id=wid,
            principal="agent:r",
            action="tool.call:search",
            resource="web:search",
            parent_event_id=ev.event_id,
        ).event
        for step in range(3):
            ev = emitter.emit(
                workflow_id=wid,
                kind=EventKind.ATTESTATION,
                principal="agent:r",
                action=f"attest:{step}",
                parent_event_id=ev.event_id,
            )
            time.sleep(0.003)
        emitter.emit(
            workflow_id=wid,
            kind=EventKind.WORKFLOW_COMPLETED,
            principal="agent:r",
            action="done",
            parent_event_id=ev.event_id,
        )
        started.append(wid)
        n += 1


def _seal_keys(p: Pipeline, where: str) -> set[str]:
    """The key ids of the seals over the stored entries matching ``where``."""
    rows = p.rows("SELECT DISTINCT seal_bytes FROM {db}.lineage_entries FINAL WHERE " + where)
    return {Seal.from_record(SEALS.decode_body(r[0])).key_id for r in rows}


def _checkpoint_key_ids(p: Pipeline) -> set[str]:
    """The C2SP key ids (hex) that signed the stored checkpoint notes."""
    out = set()
    for (text,) in p.rows("SELECT note FROM {db}.checkpoints FINAL"):
        body = text.decode() if isinstance(text, bytes) else text
        for line in body.split("\n\n", 1)[1].splitlines():
            if line.startswith(note.SIGNATURE_PREFIX):
                out.add(base64.b64decode(line.split(" ")[2])[:4].hex())
    return out


def test_rotate_emitter_authorizer_and_processor_keys_mid_stream(pipeline: Pipeline) -> None:
    p = pipeline
    path = p.settings.resolved_keys_file
    registry0 = KeyRegistry.load(path)
    old_emitter = next(r.key_id for r in registry0.records() if r.subject == SUBJECT)
    old_authorizer = next(r.key_id for r in registry0.records() if r.subject == AUTHORIZER)
    old_processor = next(r for r in registry0.records() if r.subject == PROCESSOR_SUBJECT)
    signer = RotatingSigner(SUBJECT, Role.EMITTER, path, path.parent)
    authorizer = RotatingSigner(AUTHORIZER, Role.AUTHORIZER, path, path.parent)
    p.start_worker()
    p.start_sink()
    stop = threading.Event()
    started: list[str] = []
    with (
        Emitter(
            bootstrap=p.bootstrap,
            topic=p.settings.topics.events,
            signer=signer,
            seal_every=20,
            seal_ms=50,
        ) as emitter,
        Emitter(
            bootstrap=p.bootstrap,
            topic=p.settings.topics.events,
            signer=authorizer,
            seal_every=20,
            seal_ms=50,
        ) as orchestrator,
    ):
        gate = Gate(orchestrator, p.policy)
        thread = threading.Thread(target=_stream, args=(emitter, gate, stop, started), daemon=True)
        thread.start()
        wait_for(lambda: len(started) >= 40, 60, "the stream to get going")
        # Checkpoints by the old processor key exist before the switch.
        wait_for(lambda: p.count("checkpoints") > 0, 60, "a first checkpoint")
        switch = time.time_ns() // 1000 + 2 * OVERLAP_US  # new keys valid 1.5 s from now
        new_emitter, new_authorizer, new_processor = _rotate(p, switch)
        # Keep streaming until well after the old keys expired (switch + overlap).
        wait_for(
            lambda: time.time_ns() // 1000 > switch + OVERLAP_US + 2_000_000,
            30,
            "the end of the overlap",
        )
        stop.set()
        thread.join(30)
        assert not thread.is_alive()
        for em in (emitter, orchestrator):
            report = em.flush(30)
            assert report.ok, f"expected every record delivered, found {report}"
    total = emitter.emitted + orchestrator.emitted
    wait_for(
        lambda: p.count("lineage_entries") >= total,
        120,
        f"{total} chained entries (worker log: {p.worker_log()})",
    )

    def covered() -> bool:
        rows = p.rows(
            "SELECT sum(s) FROM (SELECT max(tree_size) AS s FROM {db}.checkpoints FINAL "
            "GROUP BY partition)"
        )
        return int(rows[0][0] or 0) >= total

    wait_for(covered, 60, "checkpoints covering every entry")
    assert p.count("quarantine") == 0, p.rows("SELECT reason_code, detail FROM {db}.quarantine")
    assert p.count("violations") == 0, p.rows("SELECT violation_type FROM {db}.violations")
    assert p.count("lineage_entries") == total

    # Both emitter keys and both authorizer keys sealed events, both processor keys signed
    # checkpoints.
    seal_keys = _seal_keys(p, "1")
    assert {old_emitter, new_emitter, old_authorizer, new_authorizer} <= seal_keys, seal_keys
    registry = KeyRegistry.load(path)
    new_proc_record = registry.get(new_processor)
    assert new_proc_record is not None
    cp_keys = _checkpoint_key_ids(p)
    expected = {
        note.key_id(PROCESSOR_SUBJECT, old_processor.public_key).hex(),
        note.key_id(PROCESSOR_SUBJECT, new_proc_record.public_key).hex(),
    }
    assert expected <= cp_keys, f"expected checkpoints by both processor keys, found {cp_keys}"

    # `lineage verify --clickhouse` and a bundle, with the trusted keys passed explicitly.
    vkeys = checkpoint_vkeys(registry)
    assert len(vkeys) == 2
    client: Any = p.client
    with p.sink.sink.lock:  # type: ignore[union-attr]
        store = verify_clickhouse(
            client, p.database, registry=registry, trusted_checkpoint_vkeys=vkeys
        )
    assert store.ok, store.to_json()
    assert store.proven.events == total
    # A workflow sealed by the old keys and one sealed by the new keys; their gate decisions
    # are re-run and checked against the authorizer's key on each side of the switch.
    for wid, keys in (
        (started[0], {old_emitter, old_authorizer}),
        (started[-1], {new_emitter, new_authorizer}),
    ):
        assert _seal_keys(p, f"workflow_id = '{wid}'") == keys
        with p.sink.sink.lock:  # type: ignore[union-attr]
            bundle = export_bundle(
                client,
                p.database,
                wid,
                registry,
                policy_sets=[PolicySet.files(p.settings.resolved_policy_file)],
            )
        report = verify_bundle(bundle, registry=registry, trusted_checkpoint_vkeys=vkeys)
        assert report.ok, (wid, report.failure)
        assert report.proven.decisions_rerun == 1, (wid, report.to_json())
        # and `lineage verify FILE` as an auditor runs it, trusted keys passed explicitly
        out = p.settings.data_dir / f"{wid}.json"
        write_bundle(bundle, out)
        run = subprocess.run(
            [sys.executable, "-m", "lineage_cli", "verify", str(out), "--registry", str(path)]
            + [arg for v in vkeys for arg in ("--checkpoint-key", v)]
            + ["--json"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, (wid, run.stdout[-2000:], run.stderr[-2000:])
        assert json.loads(run.stdout)["ok"] is True

"""``lineage up`` stopped and restarted in the middle of a scenario resumes: workflows that started
before the restart continue their chains after it, no event emitted after the restart is lost or
quarantined, and ``lineage verify --clickhouse`` accepts the whole store."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from infra.demo import demo_signers
from lineage.config import Settings
from lineage.model import EventKind
from lineage.policy import PolicySet
from producers.emitter import Emitter
from producers.gate import Gate, TraceContext
from producers.scenario import Emitters, Scenario
from tests.console.stack import wait_for
from tests.console.test_console_up import LINEAGE, _call, _cli, _env

pytestmark = pytest.mark.integration
WORKFLOWS = 6


def _start(data: Path, log: Path) -> tuple[subprocess.Popen[bytes], dict[str, Any], str]:
    proc = subprocess.Popen(
        [*LINEAGE, "up", "--port", "0", "--data-dir", str(data)],
        stdout=open(log, "w"),  # noqa: SIM115 - the child owns it
        stderr=subprocess.STDOUT,
        env=_env(data),
    )
    lock = data / "console.json"

    def bootstrap_line() -> str | None:
        lines = log.read_text().splitlines() if log.exists() else []
        return next((ln for ln in lines if "Kafka bootstrap" in ln), None)

    # the lock file is written just before the addresses are printed: wait for both
    try:
        wait_for(
            lambda: (
                lock.exists()
                and json.loads(lock.read_text())["pid"] == proc.pid
                and bootstrap_line() is not None
            ),
            120,
            f"lineage up to serve (log: {log.read_text()[-2000:] if log.exists() else ''})",
        )
    except BaseException:
        proc.kill()  # its children die with it
        proc.wait()
        raise
    bootstrap = str(bootstrap_line()).split()[2]
    return proc, json.loads(lock.read_text()), bootstrap


def _stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    proc.send_signal(signal.SIGINT)
    assert proc.wait(120) == 0, log.read_text()[-3000:]


def _scenario(settings: Settings, bootstrap: str) -> tuple[Scenario, list[Emitter]]:
    signers = demo_signers(settings)
    emitters = [
        Emitter(bootstrap=bootstrap, topic=settings.topics.events, signer=signers[s], seal_ms=20)
        for s in ("orchestrator", "tool-runner", "subagents", "orchestrator")
    ]
    policy = PolicySet.load(settings.resolved_policy_file)
    return Scenario(Emitters(*emitters), Gate(emitters[0], policy), seed=7), emitters


def _stored(info: dict[str, Any]) -> int:
    return int(_call(info, "/api/health")["tables"]["entries"])


def test_a_restart_in_the_middle_of_a_scenario_continues_every_workflow(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = Settings(data_dir=data)
    log1, log2 = tmp_path / "up1.log", tmp_path / "up2.log"
    proc, info, bootstrap = _start(data, log1)
    agent = "agent:orchestrator"
    started: list[tuple[str, str, TraceContext]] = []
    try:
        scenario, emitters = _scenario(settings, bootstrap)
        for n in range(WORKFLOWS):  # each workflow's first half: start, attestation, a tool call
            wid, trace = f"wf-resume-{n}", TraceContext.new()
            start = emitters[0].emit(
                workflow_id=wid,
                kind=EventKind.WORKFLOW_STARTED,
                principal=agent,
                agent_id=agent,
                action="workflow.start",
                trace_id=trace.trace_id,
                span_id=trace.span_id,
            )
            scenario._tool_call(wid, start.event_id, agent, trace)
            started.append((wid, start.event_id, trace))
        for e in emitters:
            e.close()
        before = WORKFLOWS * 5
        # stop while the pipeline is still at work: the snapshot carries what is not chained yet
        wait_for(lambda: _stored(info) >= 10, 90, "the first entries stored")
        _stop(proc, log1)
    finally:
        if proc.poll() is None:
            proc.kill()
    out1 = " ".join(log1.read_text().split())
    assert "saved " in out1 and "the next lineage up resumes from them" in out1, out1[-2000:]

    proc, info, bootstrap = _start(data, log2)
    try:
        out2 = " ".join(log2.read_text().split())
        assert "resumed: " in out2 and "new log epoch" not in out2, out2[-2000:]
        assert not (data / "epochs").exists(), "a resumed run archives nothing"
        scenario, emitters = _scenario(settings, bootstrap)  # new emitter instances, as a
        for wid, start_id, trace in started:  # restarted service would have
            scenario._tool_call(wid, start_id, agent, trace)
            scenario._tool_call(wid, start_id, agent, trace)
            emitters[0].emit(
                workflow_id=wid,
                kind=EventKind.WORKFLOW_COMPLETED,
                principal=agent,
                agent_id=agent,
                action="workflow.complete",
                parent_event_id=start_id,
            )
        for e in emitters:
            e.close()
        per_workflow = 5 + 4 + 4 + 1
        total = WORKFLOWS * per_workflow
        assert total > before
        wait_for(lambda: _stored(info) >= total, 120, f"all {total} entries stored")
        rows = _cli(
            data,
            "query",
            "SELECT workflow_id, count(), uniqExact(chain_seq), max(chain_seq) "
            "FROM lineage_entries FINAL WHERE workflow_id LIKE 'wf-resume-%' "
            "GROUP BY workflow_id ORDER BY workflow_id",
            "--format",
            "csv",
        )
        assert rows.returncode == 0, rows.stderr
        chains = [ln.replace('"', "").split(",") for ln in rows.stdout.split()]
        expected = [[f"wf-resume-{n}", str(per_workflow)] * 1 for n in range(WORKFLOWS)]
        assert [c[:2] for c in chains] == expected, rows.stdout
        assert all(c[2] == str(per_workflow) and c[3] == str(per_workflow - 1) for c in chains), (
            f"expected chain_seq 0..{per_workflow - 1} once each per workflow: {rows.stdout}"
        )
        quarantined = _cli(data, "query", "SELECT count() FROM quarantine FINAL", "--format", "csv")
        assert quarantined.stdout.strip() == "0", "nothing emitted after the restart is quarantined"
        wait_for(
            lambda: (
                _cli(
                    data, "verify", "--clickhouse", "--registry", str(settings.resolved_keys_file)
                ).returncode
                == 0
            ),
            60,
            "lineage verify --clickhouse to accept the store once checkpoints cover it",
        )
        _stop(proc, log2)
    finally:
        if proc.poll() is None:
            proc.kill()

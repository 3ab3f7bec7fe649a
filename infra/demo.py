"""``lineage demo``: the whole pipeline on the embedded stack, with a summary of what was proven."""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from infra.demo_witness import DemoWitness
from infra.embedded import Stack, child_env, open_stack, spawn, terminate_on_signals
from lineage.config import Settings
from lineage.errors import LineageError
from lineage.keys import Role, Signer, ensure_demo_keys
from lineage.policy import PolicySet
from lineage.querypack import load_pack
from producers.emitter import Emitter
from producers.gate import Gate
from producers.scenario import Emitters, Scenario, ScenarioReport
from sinks.clickhouse import ClickHouseSink, open_client
from stream_processors.main import PROCESSOR_SUBJECT

QUERY_PACK = Path(__file__).resolve().parents[1] / "docs" / "queries.sql"
DEMO_SUBJECTS = [
    ("orchestrator", Role.AUTHORIZER),
    ("tool-runner", Role.EMITTER),
    ("subagents", Role.EMITTER),
    (PROCESSOR_SUBJECT, Role.PROCESSOR),
]


def demo_signers(
    settings: Settings, keys: str = "file", token: str = "lineage-demo"
) -> dict[str, Signer]:
    """The demo's signers: PEM files under the data dir, or (``keys="pkcs11"``) key pairs in
    the PKCS#11 token labelled ``token`` (library and PIN from LINEAGE_PKCS11_* settings)."""
    keys_file = settings.resolved_keys_file
    if keys == "pkcs11":
        from lineage.pkcs11 import TokenConfig, ensure_token_keys

        signers, _ = ensure_token_keys(
            token, keys_file, DEMO_SUBJECTS, TokenConfig.from_settings(settings)
        )
        return signers
    if keys != "file":
        raise ValueError(f"keys: expected 'file' or 'pkcs11', found {keys!r}")
    return ensure_demo_keys(keys_file.parent, keys_file, DEMO_SUBJECTS)


def start_processor(stack: Stack, settings: Settings, worker_id: str) -> Any:
    from infra.metrics import EMBEDDED_PROCESSOR_PORT_OFFSET, child_metrics_env

    env = child_env(
        settings,
        LINEAGE_KAFKA_BOOTSTRAP=stack.bootstrap,
        **child_metrics_env(settings, EMBEDDED_PROCESSOR_PORT_OFFSET),
    )
    log = settings.data_dir / "logs" / f"processor-{worker_id}.log"
    return stack.add(
        spawn(
            [sys.executable, "-m", "lineage_cli", "process", "--worker-id", worker_id], log, env=env
        )
    )


class SinkThread:
    """The sink in this process: chDB allows one process per data directory."""

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        client: Any,
        on_outage: Callable[[str], None] | None = None,
    ) -> None:
        self.sink = ClickHouseSink(settings, bootstrap, client, on_outage=on_outage)
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="sink", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.sink.run(self.stop)
        except BaseException as exc:
            self.error = exc

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.sink.close()


def count(client: Any, lock: threading.Lock, database: str, sql: str) -> int:
    with lock:
        return int(client.query(sql.format(db=database)).result_rows[0][0])


def run_demo(
    settings: Settings,
    *,
    events: int,
    workflows: int,
    timeout: float,
    console: Console,
    keys: str = "file",
    token: str = "lineage-demo",
) -> int:
    """Run the scenario end to end; returns the exit code."""
    t0 = time.monotonic()
    chdb_dir = settings.chdb_path
    if chdb_dir.exists():
        shutil.rmtree(chdb_dir)  # the embedded broker forgets everything too: start both clean
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        signers = demo_signers(settings, keys, token)
    except LineageError as exc:
        console.print(f"[red]error:[/] cannot set up the demo's {keys} keys: {exc}")
        return 2
    policy = PolicySet.load(settings.resolved_policy_file)
    rogue, _ = Signer.generate_ephemeral(
        "tool-runner", Role.EMITTER
    )  # a key the registry never saw
    console.print(
        f"[bold]lineage demo[/]: data in {settings.data_dir.resolve()}, policy {policy.policy_id} "
        f"{policy.digest_hex[:19]}…"
    )
    console.print(
        "  keys  "
        + ", ".join(f"{subject}: {signer.backend}" for subject, signer in sorted(signers.items()))
    )
    with terminate_on_signals(), open_stack(settings) as stack:
        console.print(
            f"  broker  {'Tansu (embedded) at ' if stack.broker else ''}{stack.bootstrap}"
        )
        worker = start_processor(stack, settings, "w0")
        client = open_client(settings)
        console.print(f"  ClickHouse  {settings.clickhouse_dsn}")
        sink = SinkThread(
            settings,
            stack.bootstrap,
            client,
            on_outage=lambda m: console.print(f"  [yellow]sink:[/] {m}"),
        )
        witness = DemoWitness(stack, settings, client, sink.sink.lock, keys=keys, token=token)
        console.print(
            f"  witness  {witness.url} (state in {witness.dir}, key {witness.key_location})"
        )
        if witness.retired_key is not None:
            console.print(
                f"  witness  key moved to the token; the file key is kept as "
                f"{witness.retired_key.name} and the witness has a new --witness-key"
            )

        def emitter(signer: Signer) -> Emitter:
            return Emitter(
                bootstrap=stack.bootstrap,
                topic=settings.topics.events,
                signer=signer,
                seal_every=settings.seal_every_events,
                seal_ms=settings.seal_every_ms,
            )

        try:
            with (
                emitter(signers["orchestrator"]) as orch,
                emitter(signers["tool-runner"]) as tools,
                emitter(signers["subagents"]) as subs,
                emitter(rogue) as forged,
            ):
                gate = Gate(orch, policy)
                scenario = Scenario(Emitters(orch, tools, subs, forged), gate)
                with Progress(
                    TextColumn("  emit"),
                    BarColumn(),
                    TextColumn("{task.completed}/{task.total} events"),
                    TimeElapsedColumn(),
                    console=console,
                    transient=False,
                ) as prog:
                    task = prog.add_task("emit", total=events)
                    report = scenario.run(
                        events, workflows, progress=lambda n: prog.update(task, completed=n)
                    )
                    prog.update(task, completed=report.events, total=report.events)
            emitted_at = time.monotonic()
            trusted = report.events
            code = wait_and_summarize(
                settings,
                client,
                sink,
                report,
                trusted,
                t0,
                emitted_at,
                timeout,
                console,
                workers=[worker],
                witness=witness,
            )
        finally:
            witness.close()
            sink.close()
    return code


def wait_and_summarize(
    settings: Settings,
    client: Any,
    sink: SinkThread,
    report: ScenarioReport,
    trusted: int,
    t0: float,
    emitted_at: float,
    timeout: float,
    console: Console,
    workers: list[Any],
    witness: DemoWitness | None = None,
) -> int:
    db = settings.clickhouse_database
    lock = sink.sink.lock
    deadline = time.monotonic() + timeout
    with Progress(
        TextColumn("  verify+store"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} entries"),
        TimeElapsedColumn(),
        console=console,
    ) as prog:
        task = prog.add_task("wait", total=trusted)
        while True:
            dead = [w for w in workers if w.poll() is not None]
            if dead:
                console.print(
                    f"[red]processor worker exited with code {dead[0].returncode}[/]; "
                    f"see {settings.data_dir / 'logs'}"
                )
                return 1
            if sink.error:
                console.print(f"[red]sink failed:[/] {sink.error}")
                return 1
            entries = count(client, lock, db, "SELECT count() FROM {db}.lineage_entries FINAL")
            quarantined = count(client, lock, db, "SELECT count() FROM {db}.quarantine FINAL")
            covered = count(
                client,
                lock,
                db,
                "SELECT sum(s) FROM (SELECT max(tree_size) AS s FROM "
                "{db}.checkpoints FINAL GROUP BY partition)",
            )
            prog.update(task, completed=entries)
            if entries >= trusted and quarantined >= report.forged_events and covered >= entries:
                break
            if time.monotonic() > deadline:
                console.print(
                    f"[red]timed out[/] after {timeout:.0f} s: {entries}/{trusted} entries in ClickHouse; "
                    f"see {settings.data_dir / 'logs'}"
                )
                return 1
            time.sleep(0.25)
    done = time.monotonic()
    return summarize(
        settings, client, lock, report, trusted, t0, emitted_at, done, console, witness
    )


def summarize(
    settings: Settings,
    client: Any,
    lock: threading.Lock,
    report: ScenarioReport,
    trusted: int,
    t0: float,
    emitted_at: float,
    done: float,
    console: Console,
    witness: DemoWitness | None = None,
) -> int:
    db = settings.clickhouse_database
    with lock:
        client.database = db
        q = client.query
        entries = q(
            f"SELECT count(), uniqExact(workflow_id) FROM {db}.lineage_entries FINAL"
        ).result_rows[0]
        violations = q(
            f"SELECT violation_type, count() FROM {db}.violations FINAL GROUP BY violation_type "
            "ORDER BY violation_type"
        ).result_rows
        quarantine = q(
            f"SELECT reason_code, count() FROM {db}.quarantine FINAL GROUP BY reason_code"
        ).result_rows
        checkpoints = q(f"SELECT count(), max(tree_size) FROM {db}.checkpoints FINAL").result_rows[
            0
        ]
        pack = load_pack(QUERY_PACK)["agent_systems"]
        sql, params = pack.render({})
        example = q(sql, parameters=params or None)
    total_s = done - t0
    t = Table(title="pipeline summary", show_header=True)
    t.add_column("stage")
    t.add_column("count", justify="right")
    t.add_row("events emitted (trusted emitters)", str(trusted))
    t.add_row("events emitted with a forged key", str(report.forged_events))
    t.add_row("chained entries in ClickHouse", str(entries[0]))
    t.add_row("workflows", str(entries[1]))
    t.add_row("quarantined records", str(sum(n for _, n in quarantine)))
    t.add_row("violations", str(sum(n for _, n in violations)))
    t.add_row("signed checkpoints (largest tree)", f"{checkpoints[0]} ({checkpoints[1]})")
    t.add_row("time, start to queryable", f"{total_s:.1f} s")
    t.add_row("drain after last emit", f"{done - emitted_at:.1f} s")
    t.add_row("rate (events / total time)", f"{trusted / total_s:,.0f} events/s")
    console.print(t)
    v = Table(title="violations caught, by type")
    v.add_column("violation_type")
    v.add_column("count", justify="right")
    for name, n in violations:
        v.add_row(name, str(n))
    console.print(v)
    if quarantine:
        console.print("quarantine by reason: " + ", ".join(f"{c}={n}" for c, n in quarantine))
    console.print(
        "injected on purpose: " + ", ".join(f"{k}={n}" for k, n in sorted(report.injected.items()))
    )
    e = Table(
        title="analyst query agent_systems (docs/queries.sql): what systems did the busiest agent touch"
    )
    for c in example.column_names:
        e.add_column(c)
    for row in example.result_rows[:8]:
        e.add_row(*[", ".join(map(str, v)) if isinstance(v, list) else str(v) for v in row])
    console.print(e)
    console.print(
        "  rerun: lineage query --file docs/queries.sql --name agent_systems [--param agent=...]"
    )
    ok = entries[0] == trusted
    console.print(
        ("[green]OK[/]" if ok else "[red]MISMATCH[/]")
        + f": {entries[0]} of {trusted} emitted events are chained, verified lineage"
    )
    verified = export_and_verify(settings, client, lock, report, console, witness)
    return 0 if ok and verified else 1


def export_and_verify(
    settings: Settings,
    client: Any,
    lock: threading.Lock,
    report: ScenarioReport,
    console: Console,
    witness: DemoWitness | None = None,
) -> bool:
    """Export one workflow's evidence bundle and verify it offline, as an auditor would."""
    from lineage.bundle import write_bundle
    from lineage.keys import KeyRegistry
    from lineage.verify import checkpoint_vkeys, verify_bundle
    from lineage_cli.evidence import (
        export_bundle,
        findings_behind,
        print_report,
        verify_clickhouse,
    )

    db = settings.clickhouse_database
    # The demo plays the auditor: it names the keys it trusts (the registry it just wrote and its
    # processor keys) explicitly, as an auditor would with --registry / --checkpoint-key.
    keys_file = settings.resolved_keys_file
    registry = KeyRegistry.load(keys_file)
    vkeys = checkpoint_vkeys(registry)
    trust_source = f"registry {keys_file}, named by the demo as the auditor's"
    clean = next(
        w for w in report.workflows if w not in report.misbehaving_workflows and "/" not in w
    )
    out = settings.data_dir / "evidence" / f"{clean}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    until = time.monotonic() + 15.0
    while time.monotonic() < until:  # the sink writes violations and checkpoints independently
        with lock:
            if findings_behind(client, db) == 0:
                break
        time.sleep(0.25)
    if witness is not None and not witness.wait(client, lock):
        console.print(
            f"[red]the witness did not cosign the newest checkpoints[/]: {witness.feeder.stats}"
        )
    with lock:
        bundle = export_bundle(
            client,
            db,
            clean,
            registry,
            policy_sets=[PolicySet.files(settings.resolved_policy_file)],
        )
        store_report = verify_clickhouse(
            client,
            db,
            registry=registry,
            trusted_checkpoint_vkeys=vkeys,
            registry_source=trust_source,
        )
    write_bundle(bundle, out)
    console.print(f"exported the evidence bundle of {clean} to {out}")
    bundle_report = verify_bundle(
        bundle,
        registry=registry,
        trusted_checkpoint_vkeys=vkeys,
        registry_source=trust_source,
        options=witness.bundle_options(registry) if witness else None,
    )
    if witness is not None:
        witness.check_store(store_report, client, lock, registry)
    print_report(bundle_report, f"lineage verify {out.name}", console)
    print_report(store_report, "lineage verify --clickhouse", console)
    wkey = f" --witness-key '{witness.vkey}'" if witness else ""
    console.print(f"verify it yourself: lineage verify {out} --registry {keys_file}{wkey}")
    return bundle_report.ok and store_report.ok

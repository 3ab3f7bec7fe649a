"""A real stack for the console tests: Tansu, a processor worker, the sink, demo data, the app.

Shared by tests/console (API, through httpx) and tests/browser (uvicorn + Chromium). chDB allows
one data path per process, so the stack uses the session's chDB client with a database of its own.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from console.app import ConsoleContext, create_app
from console.demo import DemoRunner
from console.health import Component, HealthMonitor
from console.live import AlertFeed, LiveHub
from console.store import Store
from infra.demo import DEMO_SUBJECTS, SinkThread
from infra.embedded import Broker, child_env, create_topics, spawn, start_broker, stop_process
from lineage.config import Settings
from lineage.keys import Signer, ensure_demo_keys
from lineage.model import EventKind
from lineage.policy import PolicySet
from producers.emitter import Emitter
from producers.gate import Gate
from producers.scenario import Emitters, Scenario

TOKEN = "test-operator-token-" + "x" * 12
LONG = "L" * 3000
HOSTILE_AGENT = '<script>window.__xss = "agent"</script>' + LONG
HOSTILE_RESOURCE = "<img src=x onerror=\"window.__xss='resource'\"><b>bold</b>" + LONG
HOSTILE_ATTRS = {
    "<script>alert(1)</script>": '"><svg onload="window.__xss=\'attr\'">',
    "note": "</pre><iframe src=javascript:window.__xss='iframe'></iframe>" + LONG,
}


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@dataclass
class ConsoleStack:
    settings: Settings
    broker: Broker
    client: Any
    database: str
    signers: dict[str, Signer]
    worker: Any = None
    sink: SinkThread | None = None
    store: Store | None = None
    ctx: ConsoleContext | None = None
    app: Any = None
    health: HealthMonitor | None = None
    feed: AlertFeed | None = None
    demo: DemoRunner | None = None
    workflows: list[str] = field(default_factory=list)
    misbehaving: dict[str, str] = field(default_factory=dict)
    hostile_workflow: str = ""
    emitted: int = 0
    _worker_env: dict[str, str] = field(default_factory=dict)

    def count(self, table: str) -> int:
        assert self.store is not None
        return int(self.store.rows(f"SELECT count() AS n FROM {{db}}.{table} FINAL")[0]["n"])

    def checkpointed(self) -> int:
        assert self.store is not None
        rows = self.store.rows(
            "SELECT sum(s) AS n FROM (SELECT max(tree_size) AS s FROM {db}.checkpoints FINAL "
            "GROUP BY partition)"
        )
        return int(rows[0]["n"] or 0)

    def wait_drained(self, timeout: float = 120.0) -> None:
        wait_for(
            lambda: (
                self.count("lineage_entries") >= self.emitted
                and self.checkpointed() >= self.emitted
            ),
            timeout,
            f"{self.emitted} entries stored and checkpointed",
        )

    def emitter(self, subject: str) -> Emitter:
        return Emitter(
            bootstrap=self.broker.bootstrap,
            topic=self.settings.topics.events,
            signer=self.signers[subject],
            seal_every=self.settings.seal_every_events,
            seal_ms=self.settings.seal_every_ms,
        )

    def restart_worker(self, timeout: float = 90.0) -> None:
        """Start the processor again (after a test killed it) and wait until it processes."""
        assert self.demo is not None
        self.worker = spawn(
            [sys.executable, "-m", "lineage_cli", "process", "--worker-id", "w0"],
            self.settings.data_dir / "processor.log",
            env=self._worker_env,
        )
        before = self.count("lineage_entries")
        self.demo.start_workflow()
        wait_for(lambda: self.count("lineage_entries") >= before + 2, timeout, "the worker back")

    def stop(self) -> None:
        for closer in (
            self.demo.close if self.demo else None,
            self.feed.close if self.feed else None,
            self.health.close if self.health else None,
            self.sink.close if self.sink else None,
        ):
            if closer:
                with contextlib.suppress(Exception):
                    closer()
        if self.worker is not None:
            stop_process(self.worker)
        self.broker.stop()


def interrupt(proc: subprocess.Popen[Any], timeout: float = 60) -> None:
    """Stop a ``lineage up`` child as Ctrl-C does; kill it if it has not stopped in ``timeout``."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def start_stack(client: Any, data_dir: Path) -> ConsoleStack:
    """Broker, worker, sink, scenario data, a hostile workflow, and the app."""
    uid = uuid.uuid4().hex[:8]
    database = f"console_{uid}"
    broker = start_broker(data_dir / "broker.log")
    settings = Settings(
        data_dir=data_dir,
        kafka_bootstrap=broker.bootstrap,
        topic_prefix=f"c{uid}",
        processor_group=f"proc-{uid}",
        sink_group=f"sink-{uid}",
        clickhouse_database=database,
        partitions=2,
        checkpoint_every_s=0.5,
    )
    create_topics(broker.bootstrap, settings.topics.all(), settings.partitions)
    keys = settings.resolved_keys_file
    signers = ensure_demo_keys(keys.parent, keys, DEMO_SUBJECTS)
    st = ConsoleStack(settings, broker, client, database, signers)
    try:
        env = child_env(settings, LINEAGE_KAFKA_BOOTSTRAP=broker.bootstrap)
        env["LINEAGE_PROCESSOR_GROUP"] = settings.processor_group
        env["LINEAGE_CLICKHOUSE_DATABASE"] = database
        env["LINEAGE_CHECKPOINT_EVERY_S"] = "0.5"
        st._worker_env = env
        st.worker = spawn(
            [sys.executable, "-m", "lineage_cli", "process", "--worker-id", "w0"],
            data_dir / "processor.log",
            env=env,
        )
        st.sink = SinkThread(settings, broker.bootstrap, client)
        st.store = Store(client, database, st.sink.sink.lock)
        hub = LiveHub()
        st.feed = AlertFeed(settings, broker.bootstrap, hub)
        policy = PolicySet.load(settings.resolved_policy_file)
        with (
            st.emitter("orchestrator") as orch,
            st.emitter("tool-runner") as tools,
            st.emitter("subagents") as subs,
        ):
            scenario = Scenario(Emitters(orch, tools, subs), Gate(orch, policy), seed=11)
            report = scenario.run(300, 8)
            st.workflows = list(report.workflows)
            st.misbehaving = dict(report.misbehaving_workflows)
            st.hostile_workflow = f"wf-hostile-{uid}"
            start = tools.emit(
                workflow_id=st.hostile_workflow,
                kind=EventKind.WORKFLOW_STARTED,
                principal=HOSTILE_AGENT,
                agent_id=HOSTILE_AGENT,
                action="<i>workflow.start</i>",
                attributes=HOSTILE_ATTRS,
            )
            tools.emit(
                workflow_id=st.hostile_workflow,
                kind=EventKind.RESOURCE_ACCESS,
                principal=HOSTILE_AGENT,
                agent_id=HOSTILE_AGENT,
                action="tool.call:<script>x</script>",
                resource=HOSTILE_RESOURCE,
                parent_event_id=start.event_id,
                attributes=HOSTILE_ATTRS,
            )
            for e in (orch, tools, subs):
                e.flush(60)
            st.emitted = orch.emitted + tools.emitted + subs.emitted
        st.wait_drained(120.0)

        def processor_probe() -> tuple[bool, str]:
            code = st.worker.poll()
            return (True, f"pid {st.worker.pid}") if code is None else (False, f"exited {code}")

        def sink_probe() -> tuple[bool, str]:
            assert st.sink is not None
            alive = st.sink.thread.is_alive() and st.sink.error is None
            return alive, f"{st.sink.sink.stats.batches} batches"

        def clickhouse_probe() -> tuple[bool, str]:
            assert st.store is not None
            st.store.ping()
            return True, "chdb"

        st.health = HealthMonitor(
            settings,
            broker.bootstrap,
            [
                Component("clickhouse", clickhouse_probe),
                Component("processor", processor_probe),
                Component("sink", sink_probe),
            ],
        ).start()
        st.demo = DemoRunner(settings, broker.bootstrap, signers, policy)
        st.ctx = ConsoleContext(
            settings=settings,
            store=st.store,
            hub=hub,
            health=st.health,
            demo=st.demo,
            mode="up",
            bootstrap=broker.bootstrap,
            token=TOKEN,
        )
        st.app = create_app(st.ctx)
    except BaseException:
        st.stop()
        raise
    return st


_shared: dict[str, Any] = {}


def acquire_stack(client: Any, tmp_path_factory: Any) -> ConsoleStack:
    """One stack per test session, shared by tests/console and tests/browser (refcounted)."""
    if "stack" not in _shared:
        _shared["stack"] = start_stack(client, tmp_path_factory.mktemp("console"))
        _shared["users"] = 0
    _shared["users"] += 1
    stack: ConsoleStack = _shared["stack"]
    return stack


def release_stack() -> None:
    _shared["users"] -= 1
    if _shared["users"] == 0:
        _shared.pop("stack").stop()


@dataclass
class Served:
    url: str
    server: Any
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def serve(app: Any) -> Served:
    """Run ``app`` with uvicorn on a free loopback port in a thread."""
    import uvicorn

    from infra.embedded import free_port

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 20, "uvicorn to start")
    return Served(f"http://127.0.0.1:{port}", server, thread)

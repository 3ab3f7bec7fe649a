"""``lineage up``: the embedded stack plus the console in one process, until Ctrl-C.

chDB lets one process open a data directory, so the sink and the web app share this process
(and one client, serialised by the sink's lock); the processor is a child process. While it runs,
``<data dir>/console.json`` (0600) tells ``lineage query/export/verify`` where to send their
queries (lineage_cli/remote.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from lineage.config import Settings
from lineage_cli.remote import LOCK_NAME


def lock_path(settings: Settings) -> Path:
    return settings.data_dir / LOCK_NAME


def write_lock(settings: Settings, url: str, token: str, mode: str) -> Path:
    """Record who serves this data directory (pid, URL, token), readable by its owner only."""
    path = lock_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(
            {"pid": os.getpid(), "url": url, "token": token, "mode": mode, "started": time.time()},
            f,
        )
    os.replace(tmp, path)
    return path


def remove_lock(settings: Settings) -> None:
    path = lock_path(settings)
    with contextlib.suppress(OSError):
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()


def begin_epoch(settings: Settings) -> Path | None:
    """Archive an earlier run's chDB data as the next log epoch; return its directory.

    The embedded broker keeps topics (the processor's state changelog among them) in memory, so
    a restarted processor starts with empty state: its partition logs would begin again at index
    0 under the same origins and continuing workflows again at ``chain_seq`` 0. Writing that into
    the same tables would fork logs and re-use ``(workflow, chain_seq)``. Instead each run is an
    epoch: the previous tables move, intact and verifiable, to ``<data dir>/epochs/<n>/`` with a
    copy of the public key registry, and this run starts new tables.
    """
    chdb = settings.chdb_path
    if settings.clickhouse_url or not chdb.exists() or not any(chdb.iterdir()):
        return None
    epochs = settings.data_dir / "epochs"
    n = 1 + max((int(p.name) for p in epochs.glob("*") if p.name.isdigit()), default=0)
    target = epochs / str(n)
    target.mkdir(parents=True)
    shutil.move(str(chdb), str(target / "clickhouse"))
    for local in settings.data_dir.glob("faust-*"):
        shutil.move(str(local), str(target / local.name))
    witness = settings.data_dir / "witness"
    for view in ("state", "refusals"):  # the witness's view of this epoch's logs goes with them
        if (witness / view).exists():
            (target / "witness").mkdir(exist_ok=True)
            shutil.move(str(witness / view), str(target / "witness" / view))
    registry = settings.resolved_keys_file
    if registry.exists():
        (target / "keys").mkdir()
        shutil.copy2(registry, target / "keys" / "registry.json")
    (target / "EPOCH.json").write_text(
        json.dumps({"epoch": n, "archived_at": time.time(), "reason": "lineage up restarted"})
    )
    return target


STORE_MARKER = "lineage-snapshot-marker"


def claim_resume(settings: Settings, console: Console) -> Path | None:
    """The broker snapshot the previous run saved, if this run can resume from it.

    It can when the embedded broker and chDB are in use and the chDB directory still holds the
    marker the snapshot names (the store is the one the snapshot goes with). The snapshot is
    claimed either way: it is never loaded twice, so a run that crashes before saving its own
    comes back as a new epoch, not as a state older than its store.
    """
    from infra import broker_snapshot

    if settings.clickhouse_url or not settings.embedded_broker:
        return None
    claimed = broker_snapshot.take(settings.data_dir)
    if claimed is None:
        return None
    marker = settings.chdb_path / STORE_MARKER
    try:
        manifest = broker_snapshot.read_manifest(claimed)
    except broker_snapshot.SnapshotError as exc:
        console.print(f"[yellow]cannot resume:[/] {exc}")
        return None
    found = marker.read_text().strip() if marker.exists() else None
    if found is None or manifest.store.get("marker") != found:
        console.print(
            f"[yellow]cannot resume:[/] the broker snapshot {claimed.name} does not go with the "
            "stored lineage (its store marker is missing or another)"
        )
        return None
    marker.unlink()
    return claimed


def _resume_into(stack: Any, claimed: Path, console: Console) -> None:
    from infra import broker_snapshot

    started = time.monotonic()
    manifest = broker_snapshot.load(stack.bootstrap, claimed)
    records = manifest.record_count
    shutil.rmtree(claimed, ignore_errors=True)  # loaded once, never again (a failed load stays)
    console.print(
        f"resumed: {records:,} records of {len(manifest.topics)} topics and the offsets of "
        f"{len(manifest.groups)} consumer groups loaded into the broker from {claimed.name} in "
        f"{time.monotonic() - started:.1f} s; workflows continue their chains (docs/console.md)",
        soft_wrap=True,
    )


def save_on_stop(settings: Settings, stack: Any, processor: Any, console: Console) -> None:
    """Stop the processor, then copy the broker's topics to disk for the next run to resume.

    Runs after the sink and the web app have stopped and before the broker does. A failure is
    reported, not raised: the next run then starts a new log epoch.
    """
    from infra import broker_snapshot
    from infra.embedded import stop_process

    stop_process(processor, timeout=20)
    started = time.monotonic()
    token = secrets.token_hex(16)
    try:
        manifest = broker_snapshot.save(stack.bootstrap, settings.data_dir, store={"marker": token})
        (settings.chdb_path / STORE_MARKER).write_text(token + "\n")
    except Exception as exc:  # reported: the broker is about to stop either way
        console.print(
            f"[red]could not save the broker's topics:[/] {exc!r}; the next lineage up starts a "
            "new log epoch",
            soft_wrap=True,
        )
        return
    records = manifest.record_count
    console.print(
        f"saved {records:,} records of {len(manifest.topics)} topics to "
        f"{settings.data_dir / broker_snapshot.SNAPSHOT_DIR} in "
        f"{time.monotonic() - started:.1f} s; the next lineage up resumes from them",
        soft_wrap=True,
    )


def _announce_epoch(settings: Settings, console: Console) -> None:
    archived = begin_epoch(settings)
    if archived is not None:
        console.print(
            f"new log epoch: the previous run's lineage is kept, verifiable, in {archived} "
            f"(lineage verify --clickhouse --data-dir {archived} --registry REGISTRY); "
            "see docs/console.md"
        )


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        # as a listener does: connections of the previous run may linger in TIME_WAIT
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _open_stack_on_saved_port(settings: Settings, console: Console) -> Any:
    """The embedded broker on the port the previous run used (so services can reconnect)."""
    from infra.embedded import Stack, StackError, create_topics, free_port, open_stack, start_broker

    if not settings.embedded_broker:
        return open_stack(settings)
    saved = settings.data_dir / "kafka-port"
    port = None
    with contextlib.suppress(OSError, ValueError):
        port = int(saved.read_text().strip())
    log_dir = settings.data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    if port is not None and not _port_free(port):
        console.print(f"Kafka port {port} of the previous run is taken; using another")
        port = None
    try:
        broker = start_broker(log_dir / "broker.log", port=port or free_port())
    except StackError as exc:
        if port is None:
            raise
        console.print(f"Kafka port {port} of the previous run failed ({exc}); using another")
        broker = start_broker(log_dir / "broker.log")
    saved.write_text(str(broker.port))
    stack = Stack(settings, broker.bootstrap, broker)
    try:
        create_topics(broker.bootstrap, settings.topics.all(), settings.partitions)
    except Exception:
        stack.stop()
        raise
    return stack


@dataclass
class Served:
    """Everything ``lineage up`` started, stopped in reverse order by ``close``."""

    closers: list[Any] = field(default_factory=list)

    def add(self, closer: Any) -> None:
        self.closers.append(closer)

    def close(self) -> None:
        for closer in reversed(self.closers):
            with contextlib.suppress(Exception):
                closer()
        self.closers.clear()


def _last_log_line(path: Path) -> str:
    with contextlib.suppress(OSError):
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
        for ln in reversed(lines[-200:]):
            if "ERROR" in ln or "Error" in ln or "Traceback" in ln:
                return ln[-300:]
        return lines[-1][-300:] if lines else ""
    return ""


def _start_metrics(settings: Settings, served: Served) -> Any:
    """The web app's /metrics on LINEAGE_METRICS_PORT (None when unset); an in-process sink
    reports into it too. docs/operations.md "Metrics" says which process gets which port."""
    from console.metrics import start
    from sinks import metrics as sink_metrics

    metrics, server = start(settings, "web")
    if server is not None:
        sink_metrics.install(metrics)
        served.add(lambda: sink_metrics.install(None))
        served.add(server.shutdown)
    return metrics


def run_up(
    settings: Settings,
    *,
    host: str,
    port: int,
    demo: bool,
    console: Console,
    ready: threading.Event | None = None,
    keys: str = "file",
    token_label: str = "lineage-demo",
) -> int:
    """Start broker, processor, sink and the console; serve until interrupted; stop everything.

    ``keys="pkcs11"`` keeps every signing key (the registry's and the witness's) in the PKCS#11
    token labelled ``token_label``, as ``lineage demo --keys pkcs11`` does.
    """
    import uvicorn

    from console.app import ConsoleContext, create_app
    from console.demo import DemoRunner
    from console.health import Component, HealthMonitor
    from console.live import AlertFeed, LiveHub
    from console.store import Store
    from infra.demo import SinkThread, demo_signers, start_processor
    from infra.demo_witness import DemoWitness
    from infra.embedded import terminate_on_signals
    from lineage.policy import PolicySet
    from lineage_cli.remote import refuse_if_served
    from sinks.clickhouse import open_client

    refuse_if_served(settings)
    # A shell starting us in the background ignores SIGINT; Ctrl-C and `kill -INT` must stop us.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    resume = claim_resume(settings, console)
    if resume is None:
        _announce_epoch(settings, console)
    signers = demo_signers(settings, keys, token_label)
    policy = PolicySet.load(settings.resolved_policy_file)
    token = settings.console_token.get_secret_value() if settings.console_token else None
    token = token or secrets.token_urlsafe(24)
    served = Served()
    try:
        with terminate_on_signals():
            stack = _open_stack_on_saved_port(settings, console)
            if resume is not None:
                try:
                    _resume_into(stack, resume, console)
                except Exception as exc:  # a partly loaded broker is dropped, not used
                    stack.stop()
                    console.print(f"[yellow]cannot resume from {resume.name}:[/] {exc}")
                    _announce_epoch(settings, console)
                    stack = _open_stack_on_saved_port(settings, console)
            served.add(stack.stop)
            metrics = _start_metrics(settings, served)  # the processor child serves port + 1
            processor = start_processor(stack, settings, "w0")
            if settings.embedded_broker and not settings.clickhouse_url:
                served.add(lambda: save_on_stop(settings, stack, processor, console))
            proc_log = settings.data_dir / "logs" / "processor-w0.log"
            client = open_client(settings)
            sink = SinkThread(
                settings, stack.bootstrap, client, on_outage=lambda m: console.print(f"sink: {m}")
            )
            served.add(sink.close)
            witness = DemoWitness(
                stack, settings, client, sink.sink.lock, keys=keys, token=token_label
            )
            served.add(witness.close)
            store = Store(client, settings.clickhouse_database, sink.sink.lock)
            hub = LiveHub()
            feed = AlertFeed(settings, stack.bootstrap, hub)
            served.add(feed.close)

            def processor_probe() -> tuple[bool, str]:
                code = processor.poll()
                if code is None:
                    return True, f"pid {processor.pid}"
                return False, f"exited with code {code}: {_last_log_line(proc_log)}"

            def sink_probe() -> tuple[bool, str]:
                if sink.error is not None:
                    return False, f"failed: {sink.error}"
                if not sink.thread.is_alive():
                    return False, "sink thread stopped"
                last = sink.sink.stats.last_error
                return True, f"{sink.sink.stats.batches} batches" + (
                    f"; last error: {last}" if last else ""
                )

            def clickhouse_probe() -> tuple[bool, str]:
                store.ping()
                return True, settings.clickhouse_dsn

            health = HealthMonitor(
                settings,
                stack.bootstrap,
                [
                    Component("clickhouse", clickhouse_probe),
                    Component("processor", processor_probe),
                    Component("sink", sink_probe),
                ],
                metrics=metrics,
            ).start()
            served.add(health.close)
            runner = None
            if demo:
                runner = DemoRunner(settings, stack.bootstrap, signers, policy)
                served.add(runner.close)
            ctx = ConsoleContext(
                settings=settings,
                store=store,
                hub=hub,
                health=health,
                demo=runner,
                mode="up",
                bootstrap=stack.bootstrap,
                token=token,
                extra_status=lambda: {
                    "processor_pid": processor.pid,
                    "kafka_bootstrap": stack.bootstrap,
                    "data_dir": str(settings.data_dir.resolve()),
                },
            )
            app = create_app(ctx)
            config = uvicorn.Config(
                app, host=host, port=port, log_level="warning", access_log=False, lifespan="off"
            )
            server = uvicorn.Server(config)
            thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
            thread.start()
            deadline = time.monotonic() + 30
            while not server.started:
                if not thread.is_alive() or time.monotonic() > deadline:
                    console.print(f"[red]the web server did not start on {host}:{port}[/]")
                    return 1
                time.sleep(0.05)
            bound = server.servers[0].sockets[0].getsockname()[1] if server.servers else port
            shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
            url = f"http://{shown}:{bound}"
            write_lock(settings, url, token, "up")
            served.add(lambda: remove_lock(settings))

            def stop_server() -> None:
                server.should_exit = True
                thread.join(10)

            served.add(stop_server)
            console.print(f"[bold]lineage up[/]: data in {settings.data_dir.resolve()}")
            console.print(f"  console          {url}/")
            if host in ("127.0.0.1", "localhost", "::1"):
                console.print(f"  operator login   {url}/login?token={token}", soft_wrap=True)
            else:
                console.print(
                    "  operator login   with LINEAGE_CONSOLE_TOKEN (not printed off loopback)"
                )
            console.print(
                f"  Kafka bootstrap  {stack.bootstrap}  (topics {settings.topic_prefix}.*)"
            )
            console.print(f"  ClickHouse       {settings.clickhouse_dsn}")
            console.print(f"  witness          {witness.url}  (key {witness.vkey})", soft_wrap=True)
            console.print("  demo actions     " + ("on" if demo else "off (--demo to enable)"))
            console.print("Ctrl-C stops everything.")
            if ready is not None:
                ready.set()
            while thread.is_alive():
                thread.join(0.5)
            return 0
    except KeyboardInterrupt:
        console.print("stopping…")
        return 0
    finally:
        served.close()


def run_console(settings: Settings, *, host: str, port: int, demo: bool, console: Console) -> int:
    """Only the web app, against the configured Kafka and ClickHouse server."""
    import uvicorn

    from console.app import ConsoleContext, create_app
    from console.demo import DemoRunner
    from console.health import Component, HealthMonitor
    from console.live import AlertFeed, LiveHub
    from console.store import Store
    from lineage.policy import PolicySet
    from sinks.clickhouse import open_client

    if settings.kafka_bootstrap is None:
        console.print("[red]error:[/] set LINEAGE_KAFKA_BOOTSTRAP (or use `lineage up`)")
        return 2
    if settings.clickhouse_url is None:
        console.print(
            "[red]error:[/] set LINEAGE_CLICKHOUSE_URL: `lineage console` reads a ClickHouse "
            "server; for the embedded chDB use `lineage up`"
        )
        return 2
    bootstrap = str(settings.kafka_bootstrap)
    store = Store(open_client(settings), settings.clickhouse_database)
    hub = LiveHub()
    feed = AlertFeed(settings, bootstrap, hub)

    def clickhouse_probe() -> tuple[bool, str]:
        store.ping()
        return True, settings.clickhouse_dsn

    metrics = _start_metrics(settings, Served())
    health = HealthMonitor(
        settings, bootstrap, [Component("clickhouse", clickhouse_probe)], metrics=metrics
    ).start()
    runner = None
    if demo:
        from infra.demo import demo_signers

        runner = DemoRunner(
            settings,
            bootstrap,
            demo_signers(settings),
            PolicySet.load(settings.resolved_policy_file),
        )
    token = settings.console_token.get_secret_value() if settings.console_token else None
    if token is None:
        console.print(
            "[yellow]warning:[/] LINEAGE_CONSOLE_TOKEN is not set: only the public surfaces work"
        )
    ctx = ConsoleContext(
        settings=settings,
        store=store,
        hub=hub,
        health=health,
        demo=runner,
        token=token,
        bootstrap=bootstrap,
    )
    console.print(f"[bold]lineage console[/] on http://{host}:{port}/ (Kafka {bootstrap})")
    try:
        uvicorn.run(create_app(ctx), host=host, port=port, log_level="warning", lifespan="off")
    finally:
        if runner:
            runner.close()
        health.close()
        feed.close()
    return 0

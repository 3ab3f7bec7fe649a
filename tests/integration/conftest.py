"""Integration fixtures: one embedded broker per session, unique topics/groups/databases per test."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from infra.demo import DEMO_SUBJECTS, SinkThread
from infra.embedded import Broker, child_env, create_topics, spawn, start_broker, stop_process
from lineage.config import Settings
from lineage.keys import Signer, ensure_demo_keys
from lineage.policy import PolicySet
from producers.emitter import Emitter

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """The real Kafka-protocol broker (Tansu), started once for the session."""
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    b = start_broker(log)
    yield b
    b.stop()


def wait_for(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.1
) -> None:
    """Poll ``predicate`` until true; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@dataclass
class Pipeline:
    """A processor worker subprocess and an in-process sink on unique topics and database."""

    settings: Settings
    bootstrap: str
    client: Any
    database: str
    signers: dict[str, Signer]
    policy: PolicySet
    workers: dict[str, Any] = field(default_factory=dict)
    sink: SinkThread | None = None

    def start_worker(self, worker_id: str = "w0") -> Any:
        env = child_env(
            self.settings,
            LINEAGE_KAFKA_BOOTSTRAP=self.bootstrap,
            LINEAGE_PROCESSOR_GROUP=self.settings.processor_group,
            LINEAGE_CHECKPOINT_EVERY_S=str(self.settings.checkpoint_every_s),
        )
        log = self.settings.data_dir / f"processor-{worker_id}.log"
        proc = spawn(
            [
                sys.executable,
                "-m",
                "lineage_cli",
                "process",
                "--worker-id",
                worker_id,
                "--log-level",
                "INFO",
            ],
            log,
            env=env,
        )
        self.workers[worker_id] = proc
        return proc

    def start_sink(self) -> SinkThread:
        self.sink = SinkThread(self.settings, self.bootstrap, self.client)
        return self.sink

    def emitter(self, subject: str = "tool-runner", **kw: Any) -> Emitter:
        return Emitter(
            bootstrap=self.bootstrap,
            topic=self.settings.topics.events,
            signer=self.signers[subject],
            **kw,
        )

    def count(self, table: str, where: str = "1") -> int:
        assert self.sink is not None
        with self.sink.sink.lock:
            return int(
                self.client.query(
                    f"SELECT count() FROM {self.database}.{table} FINAL WHERE {where}"
                ).result_rows[0][0]
            )

    def rows(self, sql: str) -> list[Any]:
        """Rows of ``sql`` ({db} is the test database); String columns come back as bytes."""
        assert self.sink is not None
        with self.sink.sink.lock:
            result = self.client.query(
                sql.format(db=self.database), query_formats={"String": "bytes"}
            )
            return list(result.result_rows)

    def worker_log(self, worker_id: str = "w0") -> str:
        path = self.settings.data_dir / f"processor-{worker_id}.log"
        return path.read_text()[-3000:] if path.exists() else ""

    def stop(self) -> None:
        for proc in self.workers.values():
            stop_process(proc)
        if self.sink:
            self.sink.close()


def make_pipeline(broker: Broker, chdb_client: Any, database: str, data_dir: Path) -> Pipeline:
    """A pipeline with a unique topic prefix and consumer groups on ``database``."""
    uid = uuid.uuid4().hex[:10]
    settings = Settings(
        data_dir=data_dir,
        kafka_bootstrap=broker.bootstrap,
        topic_prefix=f"t{uid}",
        processor_group=f"proc-{uid}",
        sink_group=f"sink-{uid}",
        clickhouse_database=database,
        partitions=4,
        checkpoint_every_s=0.5,
    )
    create_topics(broker.bootstrap, settings.topics.all(), settings.partitions)
    keys = settings.resolved_keys_file
    signers = ensure_demo_keys(keys.parent, keys, DEMO_SUBJECTS)
    return Pipeline(
        settings,
        broker.bootstrap,
        chdb_client,
        database,
        signers,
        PolicySet.load(settings.resolved_policy_file),
    )


@pytest.fixture
def pipeline(
    broker: Broker, chdb_client: Any, ch_database: str, tmp_path: Path
) -> Iterator[Pipeline]:
    """A fresh pipeline: unique topic prefix, consumer groups and ClickHouse database."""
    p = make_pipeline(broker, chdb_client, ch_database, tmp_path)
    yield p
    p.stop()

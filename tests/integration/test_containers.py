"""The same end-to-end check on Apache Kafka and a ClickHouse server in containers, when Docker exists."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.embedded import create_topics
from lineage.config import Settings
from lineage.keys import ensure_demo_keys
from lineage.policy import PolicySet

pytestmark = pytest.mark.docker


def _docker_or_skip() -> None:
    try:
        import docker

        docker.from_env().ping()
    except Exception as exc:
        pytest.skip(
            f"no Docker engine reachable ({type(exc).__name__}); the embedded broker and chDB "
            "tests cover the same path"
        )


@pytest.fixture(scope="module")
def kafka_container() -> Iterator[str]:
    _docker_or_skip()
    from testcontainers.kafka import KafkaContainer

    with KafkaContainer("confluentinc/cp-kafka:7.6.1").with_kraft() as kafka:
        yield kafka.get_bootstrap_server()


@pytest.fixture(scope="module")
def clickhouse_container() -> Iterator[Any]:
    _docker_or_skip()
    import clickhouse_connect
    from testcontainers.clickhouse import ClickHouseContainer

    with ClickHouseContainer("clickhouse/clickhouse-server:24.8") as ch:
        yield clickhouse_connect.get_client(
            host=ch.get_container_host_ip(),
            port=int(ch.get_exposed_port(8123)),
            username=ch.username,
            password=ch.password,
        )


def test_end_to_end_on_containers(
    kafka_container: str, clickhouse_container: Any, tmp_path: Path
) -> None:
    from infra.demo import DEMO_SUBJECTS
    from tests.integration.conftest import Pipeline, wait_for
    from tests.integration.test_end_to_end import emit_workflows

    uid = uuid.uuid4().hex[:8]
    settings = Settings(
        data_dir=tmp_path,
        kafka_bootstrap=kafka_container,
        topic_prefix=f"c{uid}",
        processor_group=f"proc-{uid}",
        sink_group=f"sink-{uid}",
        clickhouse_database=f"c{uid}",
    )
    create_topics(kafka_container, settings.topics.all(), settings.partitions)
    keys = settings.resolved_keys_file
    p = Pipeline(
        settings,
        kafka_container,
        clickhouse_container,
        settings.clickhouse_database,
        ensure_demo_keys(keys.parent, keys, DEMO_SUBJECTS),
        PolicySet.load(settings.resolved_policy_file),
    )
    try:
        p.start_worker()
        p.start_sink()
        order = emit_workflows(p, workflows=10, steps=4)
        total = sum(len(v) for v in order.values())
        wait_for(
            lambda: p.count("lineage_entries") >= total, 180, f"{total} entries on the containers"
        )
        assert p.count("lineage_entries") == total
    finally:
        p.stop()

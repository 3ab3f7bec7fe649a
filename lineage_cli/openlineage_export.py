"""Completed workflows as OpenLineage RunEvents, sent through openlineage-python's transports.

Each completed workflow whose entries a signed checkpoint covers becomes a START and a COMPLETE
(or FAIL) RunEvent: job ← the root agent, run ← a UUID derived from the workflow id, inputs and
outputs ← the systems it touched, and the ``executionLineage_evidence`` run facet points at the
evidence (schemas/openlineage-evidence-run-facet.json). Mapping: docs/otel.md.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import attr
from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import parent_run
from openlineage.client.generated.base import RunFacet
from openlineage.client.serde import Serde
from openlineage.client.transport.kafka import KafkaConfig, KafkaTransport

from lineage.errors import ConfigError, LineageError

PRODUCER = "https://github.com/execution-lineage/execution-lineage/tree/v0.1.0/lineage_cli"
FACET_KEY = "executionLineage_evidence"
FACET_SCHEMA_URL = (
    "https://github.com/execution-lineage/execution-lineage/blob/v0.1.0/schemas/"
    "openlineage-evidence-run-facet.json#/$defs/ExecutionLineageEvidenceRunFacet"
)
TRANSPORTS = ("console", "file", "http", "kafka")
KAFKA_DELIVERY_TIMEOUT_S = 30.0
"""How long the kafka transport tries to deliver one run event before the export fails."""
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WRITES = re.compile(
    r"(^|[^a-z])(write|delete|update|insert|upsert|create|send|post|put|patch|merge|drop)",
    re.IGNORECASE,
)
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@attr.define
class ExecutionLineageEvidenceRunFacet(RunFacet):
    """Where the evidence of this run is, and how to check it offline."""

    workflowId: str
    chainLength: int
    chainHead: str
    policyDigests: list[str]
    log: dict[str, Any]
    checkpointSize: int
    verified: bool
    violations: int
    verify: str

    _additional_skip_redact: ClassVar[list[str]] = ["workflowId", "chainHead", "log"]

    @staticmethod
    def _get_schema() -> str:
        return FACET_SCHEMA_URL


@dataclass(frozen=True)
class Access:
    """One system a workflow touched, and whether any access wrote to it."""

    resource: str
    writes: bool


@dataclass(frozen=True)
class CompletedWorkflow:
    """What the export needs of one completed, checkpointed workflow."""

    workflow_id: str
    started_us: int
    ended_us: int
    job: str
    principal: str
    parent_workflow_id: str | None
    chain_length: int
    chain_head: str
    policy_digests: tuple[str, ...]
    origin: str
    partition: int
    log_index: int
    checkpoint_size: int
    verified: bool
    violations: int
    failed: bool
    systems: tuple[Access, ...] = field(default=())


RUN_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:execution-lineage:workflow")


def run_id(workflow_id: str) -> str:
    """The run's UUID: UUIDv5 of the workflow id, so a called workflow can name its caller's run."""
    return str(uuid.uuid5(RUN_NAMESPACE, workflow_id))


def dataset_of(resource: str) -> tuple[str, str]:
    """(namespace, name) of a resource ``<system>:<path>``; a bare system names itself."""
    system, sep, path = resource.partition(":")
    return (system, path.lstrip("/") or system) if sep and path else (resource, resource)


def is_write(action: str, method: str, db_operation: str) -> bool:
    """Whether an access changed its system, judged by HTTP method, DB operation or action name."""
    if method.upper() in _WRITE_METHODS:
        return True
    if db_operation and not db_operation.upper().startswith(("SELECT", "FIND", "GET", "SCAN")):
        return True
    return bool(_WRITES.search(action.rpartition(":")[2] or action))


def run_events(wf: CompletedWorkflow, namespace: str) -> list[RunEvent]:
    """The START and COMPLETE/FAIL events of one workflow."""
    evidence = ExecutionLineageEvidenceRunFacet(
        producer=PRODUCER,
        workflowId=wf.workflow_id,
        chainLength=wf.chain_length,
        chainHead=wf.chain_head,
        policyDigests=list(wf.policy_digests),
        log={"origin": wf.origin, "partition": wf.partition, "lastLogIndex": wf.log_index},
        checkpointSize=wf.checkpoint_size,
        verified=wf.verified,
        violations=wf.violations,
        verify=(
            f"lineage export --workflow {wf.workflow_id} --out bundle.json && "
            "lineage verify bundle.json --registry <key registry you trust>"
        ),
    )
    facets: dict[str, RunFacet] = {FACET_KEY: evidence}
    if wf.parent_workflow_id:
        facets["parent"] = parent_run.ParentRunFacet(
            run=parent_run.Run(runId=run_id(wf.parent_workflow_id)),
            job=parent_run.Job(namespace=namespace, name=wf.parent_workflow_id),
            producer=PRODUCER,
        )
    run = Run(runId=run_id(wf.workflow_id), facets=facets)
    job = Job(namespace=namespace, name=wf.job)
    inputs = [InputDataset(*dataset_of(a.resource)) for a in wf.systems if not a.writes]
    outputs = [OutputDataset(*dataset_of(a.resource)) for a in wf.systems if a.writes]

    def at(us: int) -> str:
        return datetime.fromtimestamp(us / 1_000_000, UTC).isoformat()

    end = RunState.FAIL if wf.failed else RunState.COMPLETE
    return [
        RunEvent(
            eventType=state,
            eventTime=at(us),
            run=run,
            job=job,
            producer=PRODUCER,
            inputs=inputs,
            outputs=outputs,
        )
        for state, us in ((RunState.START, wf.started_us), (end, wf.ended_us))
    ]


def _db(database: str) -> str:
    if not _IDENT.fullmatch(database):
        raise ConfigError(f"database name: expected an identifier, found {database!r}")
    return f"`{database}`"


def completed_workflows(
    client: Any, database: str, *, skip: Iterable[str] = (), limit: int = 1000
) -> list[CompletedWorkflow]:
    """Workflows with a WORKFLOW_COMPLETED entry that a signed checkpoint covers, oldest end first.

    A workflow whose last entry no checkpoint covers yet is left for a later call.
    """
    db = _db(database)
    done = list(skip)
    rows = client.query(
        f"""
        SELECT workflow_id,
            toUnixTimestamp64Micro(min(event_time)), toUnixTimestamp64Micro(max(event_time)),
            argMinIf(agent_id, chain_seq, kind = 'WORKFLOW_STARTED'),
            argMinIf(action, chain_seq, kind = 'WORKFLOW_STARTED'),
            argMinIf(principal, chain_seq, kind = 'WORKFLOW_STARTED'),
            argMinIf(parent_workflow_id, chain_seq, kind = 'WORKFLOW_STARTED'),
            count(), hex(argMax(entry_hash, chain_seq)),
            arraySort(groupUniqArray(hex(policy_digest))),
            any(source_partition), max(log_index),
            countIf(verification != 'VERIFIED'),
            maxIf(attributes['error.type'], kind = 'WORKFLOW_COMPLETED') != ''
        FROM {db}.lineage_entries FINAL
        WHERE workflow_id NOT IN {{done:Array(String)}}
        GROUP BY workflow_id
        HAVING countIf(kind = 'WORKFLOW_COMPLETED') > 0
        ORDER BY max(event_time), workflow_id
        LIMIT {{limit:UInt32}}
        """,
        parameters={"done": done, "limit": limit},
    ).result_rows
    if not rows:
        return []
    ids = [r[0] for r in rows]
    checkpoints: dict[int, list[tuple[int, str]]] = {}
    for origin, partition, size in client.query(
        f"SELECT origin, partition, tree_size FROM {db}.checkpoints FINAL "
        "WHERE partition IN {ps:Array(UInt16)} ORDER BY partition, tree_size",
        parameters={"ps": sorted({int(r[10]) for r in rows})},
    ).result_rows:
        checkpoints.setdefault(int(partition), []).append((int(size), str(origin)))
    violations = dict(
        client.query(
            f"SELECT workflow_id, count() FROM {db}.violations FINAL "
            "WHERE workflow_id IN {ids:Array(String)} GROUP BY workflow_id",
            parameters={"ids": ids},
        ).result_rows
    )
    systems: dict[str, dict[str, bool]] = {}
    for wf, resource, action, method, op in client.query(
        f"SELECT DISTINCT workflow_id, resource, action, attributes['http.request.method'], "
        f"attributes['db.operation.name'] FROM {db}.lineage_entries FINAL "
        "WHERE workflow_id IN {ids:Array(String)} AND resource != '' "
        "AND kind IN ('EXECUTION_STARTED', 'RESOURCE_ACCESS')",
        parameters={"ids": ids},
    ).result_rows:
        seen = systems.setdefault(wf, {})
        seen[resource] = seen.get(resource, False) or is_write(action, method, op)
    out = []
    for r in rows:
        partition, last_index = int(r[10]), int(r[11])
        covering = [(s, o) for s, o in checkpoints.get(partition, []) if s > last_index]
        if not covering:
            continue
        size, origin = covering[0]
        wf = r[0]
        out.append(
            CompletedWorkflow(
                workflow_id=wf,
                started_us=int(r[1]),
                ended_us=int(r[2]),
                job=r[3] or r[4] or "workflow",
                principal=r[5],
                parent_workflow_id=r[6] or None,
                chain_length=int(r[7]),
                chain_head=r[8].lower(),
                policy_digests=tuple(d.lower() for d in r[9]),
                origin=origin,
                partition=partition,
                log_index=last_index,
                checkpoint_size=size,
                verified=int(r[12]) == 0,
                violations=int(violations.get(wf, 0)),
                failed=bool(r[13]),
                systems=tuple(Access(k, v) for k, v in sorted(systems.get(wf, {}).items())),
            )
        )
    return out


def transport_config(
    kind: str,
    *,
    file: Path | None = None,
    url: str | None = None,
    kafka_bootstrap: str | None = None,
    kafka_topic: str | None = None,
) -> dict[str, Any]:
    """The openlineage-python ``transport`` config for one of console, file, http, kafka."""
    if kind == "console":
        return {"type": "console"}
    if kind == "file":
        if file is None:
            raise ConfigError("--transport file: expected --file PATH, found none")
        return {"type": "file", "log_file_path": str(file), "append": True}
    if kind == "http":
        if not url:
            raise ConfigError(
                "--transport http: expected --url (e.g. a Marquez server), found none"
            )
        return {"type": "http", "url": url}
    if kind == "kafka":
        if not kafka_bootstrap or not kafka_topic:
            raise ConfigError("--transport kafka: expected --kafka-topic and a bootstrap server")
        return {
            "type": "kafka",
            "topic": kafka_topic,
            "config": {
                "bootstrap.servers": kafka_bootstrap,
                "acks": "all",
                "message.timeout.ms": str(int(KAFKA_DELIVERY_TIMEOUT_S * 1000)),
            },
        }
    raise ConfigError(f"--transport: expected one of {', '.join(TRANSPORTS)}, found {kind!r}")


class DeliveryError(LineageError):
    """A run event was not acknowledged by the transport's destination."""


class CheckedKafkaTransport(KafkaTransport):
    """openlineage-python's Kafka transport (same key, value and producer config), except that an
    event the broker did not acknowledge raises: the stock transport only logs the failure, and the
    export would record the workflow as sent."""

    def emit(self, event: Any) -> None:
        if self.producer is None:
            self._setup_producer(self.kafka_config.config)
        assert self.producer is not None
        failed: list[Any] = []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                failed.append(err)

        self.producer.produce(
            topic=self.topic,
            key=self.message_key or self._get_message_key(event),
            value=Serde.to_json(event).encode("utf-8"),
            on_delivery=delivered,
        )
        left = self.producer.flush(KAFKA_DELIVERY_TIMEOUT_S + 5)
        if failed or left:
            why = (
                failed[0] if failed else f"not acknowledged after {KAFKA_DELIVERY_TIMEOUT_S:.0f} s"
            )
            raise DeliveryError(f"run event not delivered to Kafka topic {self.topic}: {why}")


def make_client(config: dict[str, Any]) -> OpenLineageClient:
    """An OpenLineage client on the transport ``config`` (from ``transport_config``); Kafka
    deliveries are checked (``CheckedKafkaTransport``)."""
    if config["type"] == "kafka":
        return OpenLineageClient(
            transport=CheckedKafkaTransport(KafkaConfig.from_dict(dict(config)))
        )
    return OpenLineageClient(config={"transport": config})


class ExportState:
    """Workflow ids already exported, one a line (append-only), so a restart does not resend."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.done: set[str] = set()
        if path is not None and path.exists():
            self.done = {line for line in path.read_text("utf-8").splitlines() if line}

    def add(self, workflow_id: str) -> None:
        self.done.add(workflow_id)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(workflow_id + "\n")


def export(
    client: Any,
    database: str,
    ol: OpenLineageClient,
    state: ExportState,
    *,
    namespace: str,
    batch: int = 500,
) -> Iterator[CompletedWorkflow]:
    """Send every completed workflow not in ``state``; yields each one once it was sent."""
    while True:
        found = completed_workflows(client, database, skip=sorted(state.done), limit=batch)
        if not found:
            return
        for wf in found:
            for event in run_events(wf, namespace):
                ol.emit(event)
            state.add(wf.workflow_id)
            yield wf
        if len(found) < batch:
            return


def facet_schema() -> dict[str, Any]:
    """The evidence facet's JSON schema (schemas/openlineage-evidence-run-facet.json)."""
    path = (
        Path(__file__).resolve().parent.parent / "schemas" / "openlineage-evidence-run-facet.json"
    )
    loaded: dict[str, Any] = json.loads(path.read_text("utf-8"))
    return loaded

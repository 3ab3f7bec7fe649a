"""Read-only queries the console runs against the lineage tables (parameterised, never string-built)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lineage import codec
from lineage.errors import LineageError
from sinks.schema import quote_database

STATUSES = ("any", "clean", "violations", "contained", "completed", "open")
EVENT_COLUMNS = (
    "chain_seq",
    "event_id",
    "kind",
    "event_time",
    "principal",
    "agent_id",
    "action",
    "resource",
    "decision",
    "attestation_type",
    "parent_event_id",
    "parent_workflow_id",
    "authorization_id",
    "verification",
    "flags",
)
_SELECT_EVENT = ", ".join(
    "toUnixTimestamp64Micro(event_time) AS event_time" if c == "event_time" else c
    for c in EVENT_COLUMNS
)


_BYTES = {"event_bytes": "bytes", "seal_bytes": "bytes"}


class NotFound(LineageError):
    """The workflow or event asked for is not in the tables."""


def _hex(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {k: _hex(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_hex(v) for v in value]
    return value


def iso_us(us: int | None) -> str | None:
    """Microseconds since the epoch as an ISO-8601 UTC string."""
    if us is None:
        return None
    return datetime.fromtimestamp(us / 1_000_000, UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Store:
    """One clickhouse-connect client and the lock that serialises its use (shared with the sink)."""

    client: Any
    database: str
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.db = quote_database(self.database)

    def _query(
        self, sql: str, params: dict[str, Any] | None = None, formats: dict[str, str] | None = None
    ) -> Any:
        with self.lock:
            return self.client.query(
                sql.replace("{db}", self.db), parameters=params or None, column_formats=formats
            )

    def rows(
        self, sql: str, params: dict[str, Any] | None = None, formats: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Rows of ``sql`` as dicts (``{db}`` is the quoted database)."""
        result = self._query(sql, params, formats)
        names = list(result.column_names)
        return [dict(zip(names, r, strict=True)) for r in result.result_rows]

    def ping(self) -> bool:
        self._query("SELECT 1")
        return True

    # -- explorer ---------------------------------------------------------------------------

    def search_workflows(
        self,
        *,
        agent: str | None = None,
        principal: str | None = None,
        system: str | None = None,
        since_us: int | None = None,
        until_us: int | None = None,
        violation_type: str | None = None,
        status: str = "any",
        text: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> dict[str, Any]:
        """Workflows matching every given filter, newest first, with a total count."""
        where = ["1"]
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if agent:
            where.append("arrayExists(x -> positionCaseInsensitive(x, {agent:String}) > 0, agents)")
            params["agent"] = agent
        if principal:
            where.append(
                "arrayExists(x -> positionCaseInsensitive(x, {principal:String}) > 0, principals)"
            )
            params["principal"] = principal
        if system:
            where.append(
                "arrayExists(x -> positionCaseInsensitive(x, {system:String}) > 0, systems)"
            )
            params["system"] = system
        if text:
            where.append("positionCaseInsensitive(workflow_id, {text:String}) > 0")
            params["text"] = text
        if since_us is not None:
            where.append("ended_at >= fromUnixTimestamp64Micro({since:Int64}, 'UTC')")
            params["since"] = since_us
        if until_us is not None:
            where.append("started_at <= fromUnixTimestamp64Micro({until:Int64}, 'UTC')")
            params["until"] = until_us
        if violation_type:
            where.append(
                "workflow_id IN (SELECT workflow_id FROM {db}.violations "
                "WHERE violation_type = {vt:String})"
            )
            params["vt"] = violation_type
        if status == "clean":
            where.append("violations = 0")
        elif status == "violations":
            where.append("violations > 0")
        elif status == "contained":
            where.append("contained")
        elif status == "completed":
            where.append("completed")
        elif status == "open":
            where.append("NOT completed")
        base = (
            "SELECT *, workflow_id IN (SELECT workflow_id FROM {db}.violations "
            "WHERE severity = 'CRITICAL') AS contained, "
            "workflow_id IN (SELECT workflow_id FROM {db}.lineage_entries "
            "WHERE kind = 'WORKFLOW_COMPLETED') AS completed "
            "FROM {db}.workflow_summary"
        )
        cond = " AND ".join(where)
        rows = self.rows(
            f"SELECT workflow_id, toUnixTimestamp64Micro(started_at) AS started_us, "
            f"toUnixTimestamp64Micro(ended_at) AS ended_us, events, principals, agents, systems, "
            f"violations, verified, contained, completed FROM ({base}) WHERE {cond} "
            f"ORDER BY started_at DESC, workflow_id LIMIT {{limit:UInt32}} OFFSET {{offset:UInt32}}",
            params,
        )
        total = self.rows(f"SELECT count() AS n FROM ({base}) WHERE {cond}", params)[0]["n"]
        for r in rows:
            r["started_at"] = iso_us(r.pop("started_us"))
            r["ended_at"] = iso_us(r.pop("ended_us"))
            r["verified"] = bool(r["verified"])
            r["contained"] = bool(r["contained"])
            r["completed"] = bool(r["completed"])
        return {"total": int(total), "limit": limit, "offset": offset, "workflows": rows}

    def workflow(self, workflow_id: str) -> dict[str, Any]:
        """Summary of one workflow, its parent and child workflows and its violations by type."""
        rows = self.rows(
            "SELECT count() AS events, toUnixTimestamp64Micro(min(event_time)) AS started_us, "
            "toUnixTimestamp64Micro(max(event_time)) AS ended_us, "
            "arraySort(groupUniqArray(principal)) AS principals, "
            "arraySort(groupUniqArrayIf(agent_id, agent_id != '')) AS agents, "
            "arraySort(groupUniqArrayIf(resource, resource != '')) AS systems, "
            "anyIf(parent_workflow_id, parent_workflow_id != '') AS parent_workflow_id, "
            "countIf(kind = 'WORKFLOW_COMPLETED') > 0 AS completed, "
            "arraySort(groupUniqArray(source_partition)) AS partitions "
            "FROM {db}.lineage_entries FINAL WHERE workflow_id = {wf:String}",
            {"wf": workflow_id},
        )
        if not rows or rows[0]["events"] == 0:
            raise NotFound(f"no workflow {workflow_id!r}")
        w = rows[0]
        w["workflow_id"] = workflow_id
        w["started_at"] = iso_us(w.pop("started_us"))
        w["ended_at"] = iso_us(w.pop("ended_us"))
        w["completed"] = bool(w["completed"])
        kids = [
            r["workflow_id"]
            for r in self.rows(
                "SELECT DISTINCT workflow_id FROM {db}.lineage_entries "
                "WHERE parent_workflow_id = {wf:String} ORDER BY workflow_id LIMIT 500",
                {"wf": workflow_id},
            )
        ]
        sizes = self._sizes(kids)
        w["children"] = [{"workflow_id": k, "events": sizes.get(k, 0)} for k in kids]
        w["violations"] = self.rows(
            "SELECT violation_type, severity, count() AS count FROM {db}.violations FINAL "
            "WHERE workflow_id = {wf:String} GROUP BY violation_type, severity "
            "ORDER BY violation_type",
            {"wf": workflow_id},
        )
        w["contained"] = any(v["severity"] == "CRITICAL" for v in w["violations"])
        return w

    def _sizes(self, workflow_ids: list[str]) -> dict[str, int]:
        if not workflow_ids:
            return {}
        return {
            r["workflow_id"]: int(r["n"])
            for r in self.rows(
                "SELECT workflow_id, count() AS n FROM {db}.lineage_entries FINAL "
                "WHERE workflow_id IN {ids:Array(String)} GROUP BY workflow_id",
                {"ids": workflow_ids},
            )
        }

    def _event_violations(self, workflow_id: str) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for v in self.rows(
            "SELECT violation_id, violation_type, severity, rule, event_id, explanation "
            "FROM {db}.violations FINAL WHERE workflow_id = {wf:String} LIMIT 10000",
            {"wf": workflow_id},
        ):
            out.setdefault(v["event_id"], []).append(v)
        return out

    def exists(self, workflow_id: str) -> None:
        """Raise NotFound unless ``workflow_id`` has an entry."""
        rows = self.rows(
            "SELECT 1 AS x FROM {db}.lineage_entries WHERE workflow_id = {wf:String} LIMIT 1",
            {"wf": workflow_id},
        )
        if not rows:
            raise NotFound(f"no workflow {workflow_id!r}")

    def events(self, workflow_id: str, offset: int, limit: int) -> list[dict[str, Any]]:
        """One page of a workflow's events in chain order."""
        rows = self.rows(
            f"SELECT {_SELECT_EVENT} FROM {{db}}.lineage_entries FINAL "
            "WHERE workflow_id = {wf:String} ORDER BY chain_seq "
            "LIMIT {limit:UInt32} OFFSET {offset:UInt32}",
            {"wf": workflow_id, "limit": limit, "offset": offset},
        )
        for r in rows:
            r["event_time"] = iso_us(r["event_time"])
        return rows

    def graph(self, workflow_id: str, offset: int, limit: int, detail: str) -> dict[str, Any]:
        """The causal DAG of one page of events; parents outside the page become collapsed nodes.

        ``detail="executions"`` folds each authorization's events (decision, start, accesses,
        completion) into one node, so a page covers four times as much of a large workflow.
        """
        total = int(
            self.rows(
                "SELECT count() AS n FROM {db}.lineage_entries FINAL WHERE workflow_id = {wf:String}",
                {"wf": workflow_id},
            )[0]["n"]
        )
        if total == 0:
            raise NotFound(f"no workflow {workflow_id!r}")
        events = self.events(workflow_id, offset, limit)
        violations = self._event_violations(workflow_id)
        group_of: dict[str, str] = {}
        nodes: dict[str, dict[str, Any]] = {}
        for e in events:
            vs = violations.get(e["event_id"], [])
            key = e["event_id"]
            if detail == "executions" and e["authorization_id"]:
                key = e["authorization_id"]
            group_of[e["event_id"]] = key
            node = nodes.get(key)
            if node is None:
                node = {
                    "id": key,
                    "type": "event",
                    "events": [],
                    "kind": e["kind"],
                    "actor": e["agent_id"] or e["principal"],
                    "action": e["action"],
                    "resource": e["resource"],
                    "decision": e["decision"],
                    "attestation": e["attestation_type"],
                    "chain_seq": e["chain_seq"],
                    "violations": [],
                    "contained": False,
                }
                nodes[key] = node
            node["events"].append(e["event_id"])
            if e["decision"]:
                node["decision"] = e["decision"]
            if e["attestation_type"]:
                node["attestation"] = e["attestation_type"]
            node["violations"].extend(v["violation_type"] for v in vs)
            if "CONTAINED" in e["flags"] or e["verification"] == "CONTAINED":
                node["contained"] = True
        edges: set[tuple[str, str]] = set()
        outside: dict[str, str] = {}
        for e in events:
            child = group_of[e["event_id"]]
            parent_id = e["parent_event_id"]
            if not parent_id:
                continue
            parent = group_of.get(parent_id)
            if parent is None:
                if e["parent_workflow_id"] and e["parent_workflow_id"] != workflow_id:
                    parent = "wf:" + e["parent_workflow_id"]
                    nodes.setdefault(
                        parent,
                        {
                            "id": parent,
                            "type": "parent_workflow",
                            "workflow_id": e["parent_workflow_id"],
                        },
                    )
                else:
                    parent = "out:" + parent_id
                    outside[parent_id] = parent
            if parent != child:
                edges.add((parent, child))
        if outside:
            for p in self.rows(
                "SELECT event_id, chain_seq, kind, action FROM {db}.lineage_entries FINAL "
                "WHERE workflow_id = {wf:String} AND event_id IN {ids:Array(String)}",
                {"wf": workflow_id, "ids": list(outside)},
            ):
                nodes[outside[p["event_id"]]] = {
                    "id": outside[p["event_id"]],
                    "type": "outside",
                    "event_id": p["event_id"],
                    "chain_seq": p["chain_seq"],
                    "kind": p["kind"],
                    "action": p["action"],
                }
            for parent_id, nid in outside.items():
                nodes.setdefault(nid, {"id": nid, "type": "outside", "event_id": parent_id})
        on_page = set(group_of)
        subs = self.rows(
            "SELECT workflow_id, any(parent_event_id) AS link "
            "FROM {db}.lineage_entries FINAL WHERE parent_workflow_id = {wf:String} "
            "AND parent_event_id IN {ids:Array(String)} GROUP BY workflow_id LIMIT 500",
            {"wf": workflow_id, "ids": list(on_page)},
        )
        sizes = self._sizes([sub["workflow_id"] for sub in subs])
        for sub in subs:
            nid = "wf:" + sub["workflow_id"]
            nodes[nid] = {
                "id": nid,
                "type": "child_workflow",
                "workflow_id": sub["workflow_id"],
                "events": sizes.get(sub["workflow_id"], 0),
            }
            edges.add((group_of[sub["link"]], nid))
        return {
            "workflow_id": workflow_id,
            "total_events": total,
            "offset": offset,
            "limit": limit,
            "detail": detail,
            "page_events": len(events),
            "events": events,
            "nodes": list(nodes.values()),
            "edges": [{"source": s, "target": t} for s, t in sorted(edges)],
        }

    def timeline(self, workflow_id: str, bins: int = 60) -> dict[str, Any]:
        """Events per time bin over the workflow's span, split by kind."""
        span = self.rows(
            "SELECT toUnixTimestamp64Micro(min(event_time)) AS lo, "
            "toUnixTimestamp64Micro(max(event_time)) AS hi, count() AS n "
            "FROM {db}.lineage_entries FINAL WHERE workflow_id = {wf:String}",
            {"wf": workflow_id},
        )[0]
        if not span["n"]:
            raise NotFound(f"no workflow {workflow_id!r}")
        lo, hi = int(span["lo"]), int(span["hi"])
        width = max((hi - lo) // bins + 1, 1)
        rows = self.rows(
            "SELECT intDiv(toUnixTimestamp64Micro(event_time) - {lo:Int64}, {w:Int64}) AS bin, "
            "countIf(kind = 'AUTHORIZATION_DECISION' AND decision = 'DENY') AS denied, "
            "countIf(kind = 'AUTHORIZATION_DECISION' AND decision = 'ALLOW') AS allowed, "
            "count() AS events FROM {db}.lineage_entries FINAL WHERE workflow_id = {wf:String} "
            "GROUP BY bin ORDER BY bin",
            {"wf": workflow_id, "lo": lo, "w": width},
        )
        by_bin = {int(r["bin"]): r for r in rows}
        n = (hi - lo) // width + 1
        return {
            "start_us": lo,
            "bin_us": width,
            "t": [(lo + i * width) / 1e6 for i in range(n)],
            "events": [int(by_bin.get(i, {}).get("events", 0)) for i in range(n)],
            "allowed": [int(by_bin.get(i, {}).get("allowed", 0)) for i in range(n)],
            "denied": [int(by_bin.get(i, {}).get("denied", 0)) for i in range(n)],
        }

    def event(self, event_id: str) -> dict[str, Any]:
        """One event: decoded fields, raw hashes and seal, and its authorization lineage."""
        rows = self.rows(
            "SELECT workflow_id, chain_seq, event_id, entry_hash, prev_hash, event_digest, "
            "policy_digest, event_bytes, seal_bytes, seal_index, source_partition, source_offset, "
            "log_index, verification, flags, authorization_id, emitter_id, emitter_seq "
            "FROM {db}.lineage_entries FINAL WHERE event_id = {id:String} LIMIT 1",
            {"id": event_id},
            _BYTES,
        )
        if not rows:
            raise NotFound(f"no event {event_id!r}")
        r = rows[0]
        event_bytes = _raw(r.pop("event_bytes"))
        seal_bytes = _raw(r.pop("seal_bytes"))
        out: dict[str, Any] = _hex(r)
        try:
            _, record = codec.decode(event_bytes)
            out["decoded"] = _hex(record)
        except Exception as exc:
            out["decoded"] = None
            out["decode_error"] = str(exc)
        try:
            _, seal = codec.decode(seal_bytes)
            out["seal"] = _hex(seal)
        except Exception as exc:
            out["seal"] = None
            out["seal_error"] = str(exc)
        out["event_bytes_len"] = len(event_bytes)
        out["violations"] = self.rows(
            "SELECT violation_id, violation_type, severity, rule, explanation "
            "FROM {db}.violations FINAL WHERE workflow_id = {wf:String} AND event_id = {id:String}",
            {"wf": r["workflow_id"], "id": event_id},
        )
        out["authorization"] = None
        auth_id = r["authorization_id"] or (
            event_id if out.get("decoded") and out["decoded"].get("authorization") else ""
        )
        if auth_id:
            auth = self.rows(
                "SELECT event_id, workflow_id, chain_seq, decision, auth_policy_id, "
                "auth_policy_digest, determining_policies, "
                "toUnixTimestamp64Micro(expires_at) AS expires_us, emitter_id, seal_bytes, "
                "principal, action, resource FROM {db}.lineage_entries FINAL "
                "WHERE event_id = {id:String} LIMIT 1",
                {"id": auth_id},
                {"seal_bytes": "bytes"},
            )
            if auth:
                a = auth[0]
                a_seal = _raw(a.pop("seal_bytes"))
                a["expires_at"] = iso_us(a.pop("expires_us"))
                try:
                    _, s = codec.decode(a_seal)
                    a["signing_key_id"] = s["key_id"]
                except Exception:
                    a["signing_key_id"] = None
                out["authorization"] = a
            else:
                out["authorization"] = {"event_id": auth_id, "missing": True}
        return out

    # -- governance -------------------------------------------------------------------------

    def latest_checkpoints(self) -> list[dict[str, Any]]:
        return self.rows(
            "SELECT origin, partition, tree_size, note, key_name FROM {db}.checkpoints FINAL "
            "ORDER BY partition, tree_size DESC LIMIT 1 BY partition"
        )

    def policy_digests_seen(self) -> list[dict[str, Any]]:
        return self.rows(
            "SELECT auth_policy_id AS policy_id, auth_policy_digest AS digest, count() AS decisions "
            "FROM {db}.lineage_entries WHERE auth_policy_digest != '' "
            "GROUP BY policy_id, digest ORDER BY decisions DESC LIMIT 50"
        )

    def violation_counts(self, hours: int) -> list[dict[str, Any]]:
        rows = self.rows(
            "SELECT violation_type, toUnixTimestamp(hour) AS hour, count FROM {db}.violations_hourly "
            "WHERE hour >= toStartOfHour(now('UTC')) - toIntervalHour({h:UInt32}) "
            "ORDER BY hour, violation_type",
            {"h": hours},
        )
        return [
            {
                "violation_type": r["violation_type"],
                "hour": int(r["hour"]),
                "count": int(r["count"]),
            }
            for r in rows
        ]

    def recent_violations(self, limit: int, violation_type: str | None) -> list[dict[str, Any]]:
        cond = "WHERE violation_type = {vt:String}" if violation_type else ""
        rows = self.rows(
            "SELECT violation_id, violation_type, severity, rule, workflow_id, event_id, "
            "explanation, toUnixTimestamp64Micro(event_time) AS t FROM {db}.violations FINAL "
            f"{cond} ORDER BY event_time DESC LIMIT {{limit:UInt32}}",
            {"vt": violation_type, "limit": limit},
        )
        for r in rows:
            r["event_time"] = iso_us(r.pop("t"))
        return rows

    def table_counts(self) -> dict[str, int]:
        row = self.rows(
            "SELECT (SELECT count() FROM {db}.lineage_entries) AS entries, "
            "(SELECT count() FROM {db}.violations) AS violations, "
            "(SELECT count() FROM {db}.quarantine) AS quarantine, "
            "(SELECT count() FROM {db}.checkpoints) AS checkpoints"
        )[0]
        return {k: int(v) for k, v in row.items()}


def _raw(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("latin-1", "surrogateescape")
    return bytes(value)

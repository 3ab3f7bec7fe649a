"""The console's HTTP API against a real stack: every endpoint, access control and bad input."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from tests.console.stack import HOSTILE_AGENT, TOKEN, ConsoleStack, wait_for

pytestmark = pytest.mark.integration
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PUBLIC = {
    "/api/public/policies",
    "/api/public/keys",
    "/api/public/registry.json",
    "/api/public/checkpoints",
    "/api/public/violations/counts",
    "/api/public/stream",
    "/api/openapi.json",
    "/api/docs",
    "/",
    "/governance",
    "/proof",
    "/login",
    "/logout",
}


@pytest.fixture(scope="module")
def client(console_stack: ConsoleStack) -> Iterator[TestClient]:
    with TestClient(console_stack.app, raise_server_exceptions=False) as c:
        yield c


def _no_traceback(r: httpx.Response) -> None:
    assert "Traceback" not in r.text and 'File "' not in r.text, r.text[:500]


def _concrete(path: str, st: ConsoleStack) -> str:
    wf = st.workflows[0]
    return path.replace("{workflow_id:path}", wf).replace("{event_id}", "nope")


def test_every_non_public_endpoint_needs_the_token(
    client: TestClient, console_stack: ConsoleStack
) -> None:
    routes = [r for r in console_stack.app.routes if isinstance(r, APIRoute)]
    checked = 0
    for route in routes:
        if route.path in PUBLIC:
            continue
        for method in route.methods:
            path = _concrete(route.path, console_stack)
            r = client.request(method, path, params={"id": "x"} if "workflow" in path else None)
            assert r.status_code == 401, (method, route.path, r.status_code, r.text[:200])
            r = client.request(
                method, path, headers={"Authorization": "Bearer wrong-token"}, params={"id": "x"}
            )
            assert r.status_code == 401, (method, route.path, "wrong token")
            _no_traceback(r)
            checked += 1
    assert checked >= 18  # explorer, demo, health, stream, cli and pages
    # the same pages and APIs work with the token, as a header or as the login cookie
    assert client.get("/api/workflows", headers=AUTH).status_code == 200
    login = client.get(f"/login?token={TOKEN}", follow_redirects=False)
    assert login.status_code == 303 and "httponly" in login.headers["set-cookie"].lower()
    assert client.get("/explorer", cookies={"lineage_console": TOKEN}).status_code == 200
    assert client.get("/login?token=wrong").status_code == 401


def test_public_surfaces_show_only_publishable_data(
    client: TestClient, console_stack: ConsoleStack
) -> None:
    pol = client.get("/api/public/policies").json()
    p = pol["in_force"][0]
    assert p["policy_id"] == "lineage-demo" and p["digest"].startswith("sha256:")
    assert "permit" in p["cedar_text"]
    assert pol["seen_in_decisions"] and pol["seen_in_decisions"][0]["digest"] == p["digest"]
    keys = client.get("/api/public/keys").json()["keys"]
    assert {k["role"] for k in keys} >= {"authorizer", "emitter", "processor"}
    assert all("private" not in json.dumps(k).lower() for k in keys)
    reg = client.get("/api/public/registry.json").json()
    assert len(reg["keys"]) == len(keys)
    cps = client.get("/api/public/checkpoints").json()["checkpoints"]
    assert {c["partition"] for c in cps} == {0, 1}
    assert all(c["note"].count("\n\n") == 1 and "— " in c["note"] for c in cps)
    counts = client.get("/api/public/violations/counts").json()
    assert sum(h["count"] for h in counts["hourly"]) > 0
    for item in counts["live"]["recent"]:
        assert set(item) <= {"kind", "violation_type", "severity", "rule", "received_at"}
    body = json.dumps([pol, keys, cps, counts])
    for wf in console_stack.workflows:
        assert wf not in body


def test_search_filters(client: TestClient, console_stack: ConsoleStack) -> None:
    def search(**q: Any) -> dict[str, Any]:
        r = client.get("/api/workflows", params=q, headers=AUTH)
        assert r.status_code == 200, r.text
        return dict(r.json())

    everything = search(limit=500)
    found = {w["workflow_id"] for w in everything["workflows"]}
    assert found >= {*console_stack.workflows, console_stack.hostile_workflow}
    assert everything["total"] == len(found)  # (demo workflows of other tests may add to it)
    assert search(agent="researcher")["total"] > 0
    assert all(
        any("researcher" in a for a in w["agents"]) for w in search(agent="researcher")["workflows"]
    )
    assert search(principal="nobody-like-this")["total"] == 0
    sys_hits = search(system="prod-db", limit=500)["workflows"]
    assert sys_hits and all(any("prod-db" in s for s in w["systems"]) for w in sys_hits)
    contained = search(status="contained")["workflows"]
    assert contained and all(w["contained"] for w in contained)
    assert all(w["violations"] == 0 for w in search(status="clean", limit=500)["workflows"])
    assert all(w["completed"] for w in search(status="completed", limit=500)["workflows"])
    vt = {w["workflow_id"] for w in search(violation_type="UNTRUSTED_AUTHORIZER")["workflows"]}
    untrusted = next(
        w for w, how in console_stack.misbehaving.items() if how == "untrusted_authorizer"
    )
    clean = set(console_stack.workflows) - set(console_stack.misbehaving)
    assert untrusted in vt and not (vt & clean)
    assert search(since="2999-01-01T00:00:00")["total"] == 0
    assert search(until="2000-01-01T00:00:00Z")["total"] == 0
    assert search(q=console_stack.workflows[0][:20])["total"] >= 1
    page = search(limit=2, offset=1)
    assert len(page["workflows"]) == 2 and page["offset"] == 1


def test_workflow_graph_events_timeline_and_event_detail(
    client: TestClient, console_stack: ConsoleStack
) -> None:
    parent = next(w for w in console_stack.workflows if "/" in w).split("/")[0]
    r = client.get(f"/api/workflows/{parent}", headers=AUTH)
    assert r.status_code == 200
    summary = r.json()
    assert summary["children"], "the scenario's sub-workflow is listed under its parent"
    g = client.get(f"/api/workflows/{parent}/graph", headers=AUTH).json()
    ids = {n["id"] for n in g["nodes"]}
    assert all(e["source"] in ids and e["target"] in ids for e in g["edges"])
    child_nodes = [n for n in g["nodes"] if n["type"] == "child_workflow"]
    assert child_nodes and child_nodes[0]["events"] > 0
    kinds = {n.get("kind") for n in g["nodes"]}
    assert {"WORKFLOW_STARTED", "AUTHORIZATION_DECISION", "EXECUTION_STARTED"} <= kinds
    # a sub-workflow shows its parent as a node
    child = child_nodes[0]["workflow_id"]
    cg = client.get(f"/api/workflows/{child}/graph", headers=AUTH).json()
    assert any(n["type"] == "parent_workflow" and n["workflow_id"] == parent for n in cg["nodes"])
    # paging: a later page collapses parents that are on an earlier page
    p2 = client.get(f"/api/workflows/{parent}/graph?offset=10&limit=5", headers=AUTH).json()
    assert p2["page_events"] == 5 and any(n["type"] == "outside" for n in p2["nodes"])
    folded = client.get(f"/api/workflows/{parent}/graph?detail=executions", headers=AUTH).json()
    assert len(folded["nodes"]) < len(g["nodes"])
    ev = client.get(f"/api/workflows/{parent}/events?limit=10", headers=AUTH).json()["events"]
    assert [e["chain_seq"] for e in ev] == sorted(e["chain_seq"] for e in ev)
    t = client.get(f"/api/workflows/{parent}/timeline?bins=10", headers=AUTH).json()
    assert sum(t["events"]) == summary["events"]
    started = next(e for e in ev if e["kind"] == "EXECUTION_STARTED")
    d = client.get(f"/api/events/{started['event_id']}", headers=AUTH).json()
    assert d["decoded"]["event_id"] == started["event_id"]
    assert len(d["entry_hash"]) == 64 and len(d["prev_hash"]) == 64
    assert len(d["event_digest"]) == 64 and d["seal"]["key_id"]
    a = d["authorization"]
    assert a["decision"] == "ALLOW" and a["auth_policy_digest"].startswith("sha256:")
    assert a["signing_key"]["role"] == "authorizer"


def test_bundle_download_verifies_with_the_cli_verifier(
    client: TestClient, console_stack: ConsoleStack
) -> None:
    from lineage.bundle import loads_bundle
    from lineage.keys import KeyRegistry
    from lineage.verify import verify_bundle

    wf = console_stack.workflows[0]
    r = client.get(f"/api/workflows/{wf}/bundle", headers=AUTH)
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    registry = KeyRegistry.load(console_stack.settings.resolved_keys_file)
    report = verify_bundle(loads_bundle(r.content), registry=registry)
    assert report.ok, report.failure


def test_unknown_ids_are_404_and_bad_params_422(client: TestClient) -> None:
    for path in (
        "/api/workflows/wf-does-not-exist",
        "/api/workflows/wf-does-not-exist/graph",
        "/api/workflows/wf-does-not-exist/events",
        "/api/workflows/wf-does-not-exist/timeline",
        "/api/workflows/wf-does-not-exist/bundle",
        "/api/events/no-such-event",
    ):
        r = client.get(path, headers=AUTH)
        assert r.status_code == 404, (path, r.status_code, r.text)
        assert "detail" in r.json()
        _no_traceback(r)
    for path, params in (
        ("/api/workflows", {"limit": 0}),
        ("/api/workflows", {"limit": "many"}),
        ("/api/workflows", {"offset": -1}),
        ("/api/workflows", {"status": "exploded"}),
        ("/api/workflows", {"since": "yesterday-ish"}),
        ("/api/workflows", {"violation_type": "drop table"}),
        ("/api/workflows", {"agent": "a" * 5000}),
        ("/api/workflows/x/graph", {"detail": "everything"}),
        ("/api/workflows/x/graph", {"limit": 100000}),
        ("/api/workflows/x/timeline", {"bins": 0}),
        ("/api/public/violations/counts", {"hours": 0}),
        ("/api/violations", {"limit": "x"}),
        ("/api/demo/log", {"since": -5}),
    ):
        r = client.get(path, params=params, headers=AUTH)
        assert r.status_code == 422, (path, params, r.status_code, r.text[:300])
        _no_traceback(r)
    for path, body in (
        ("/api/demo/scenario", {"events": 10**9}),
        ("/api/demo/step", {"workflow_id": ""}),
        ("/api/demo/misbehave", {"workflow_id": "w", "root_event_id": "e", "how": "rm -rf"}),
        ("/api/cli/query", {"sql": ""}),
    ):
        r = client.post(path, json=body, headers=AUTH)
        assert r.status_code == 422, (path, r.status_code, r.text[:300])
        _no_traceback(r)
    r = client.post("/api/demo/step", content=b"{not json", headers=AUTH)
    assert r.status_code == 422
    _no_traceback(r)


def test_cli_route_is_read_only_and_round_trips_values(
    client: TestClient, console_stack: ConsoleStack
) -> None:
    from lineage_cli.remote import _decode

    db = console_stack.database
    r = client.post("/api/cli/query", json={"sql": f"DROP TABLE {db}.violations"}, headers=AUTH)
    assert r.status_code == 403 and "read-only" in r.json()["detail"]
    r = client.post(
        "/api/cli/query",
        json={
            "sql": f"SELECT entry_hash, attributes, event_time, [1, 2] AS xs FROM {db}.lineage_entries "
            "WHERE workflow_id = {wf:String} LIMIT 1",
            "parameters": {"wf": console_stack.workflows[0]},
        },
        headers=AUTH,
    )
    assert r.status_code == 200, r.text
    row = _decode(r.json()["result_rows"][0])
    assert isinstance(row[0], bytes) and len(row[0]) == 32
    assert isinstance(row[1], dict) and row[3] == [1, 2]
    bad = client.post("/api/cli/query", json={"sql": "SELECT nonsense("}, headers=AUTH)
    assert bad.status_code == 400 and "query failed" in bad.json()["detail"]
    _no_traceback(bad)
    assert console_stack.count("lineage_entries") >= console_stack.emitted  # sink unaffected


def test_health_reports_partitions_and_components(client: TestClient) -> None:
    wait_for(
        lambda: client.get("/api/health", headers=AUTH).json().get("partitions"), 20, "a sample"
    )
    h = client.get("/api/health", headers=AUTH).json()
    assert h["components"]["broker"]["ok"] and h["components"]["clickhouse"]["ok"]
    assert h["components"]["processor"]["ok"]
    assert [p["partition"] for p in h["partitions"]] == [0, 1]
    for key in (
        "processor_lag",
        "sink_lag",
        "in_per_s",
        "out_per_s",
        "checkpoint_age_s",
        "violations_per_s",
        "quarantine_per_s",
        "last_error",
    ):
        assert key in h["partitions"][0]
    assert h["series"]["t"] and h["tables"]["entries"] > 0


def test_demo_gate_alert_containment_and_refusal(
    client: TestClient, console_stack: ConsoleStack
) -> None:
    hub = console_stack.ctx.hub if console_stack.ctx else None
    assert hub is not None
    wf = client.post("/api/demo/workflow", headers=AUTH).json()
    step = {"workflow_id": wf["workflow_id"], "root_event_id": wf["root_event_id"]}
    ok = client.post("/api/demo/step", json=step, headers=AUTH).json()
    assert ok["decision"] == "ALLOW" and ok["policies"] == ["agents-call-tools"]
    denied = client.post(
        "/api/demo/step",
        json={**step, "action": "tool.call:delete_records", "resource": "prod-db:crm/accounts"},
        headers=AUTH,
    ).json()
    assert denied["decision"] == "DENY"
    t0 = time.monotonic()
    client.post("/api/demo/misbehave", json={**step, "how": "self_authorized"}, headers=AUTH)

    def seen(kind: str) -> bool:
        return any(i["workflow_id"] == wf["workflow_id"] and i["kind"] == kind for i in hub.recent)

    wait_for(lambda: seen("violation"), 10, "the alert")
    alert_s = time.monotonic() - t0
    wait_for(lambda: seen("containment"), 10, "the containment")
    wait_for(
        lambda: (
            console_stack.demo is not None
            and console_stack.demo.watcher.is_contained(wf["workflow_id"]) is not None
        ),
        10,
        "the gate to learn of the containment",
    )
    refused = client.post("/api/demo/step", json=step, headers=AUTH).json()
    assert refused["decision"] == "REFUSED" and "contained" in refused["reason"]
    print(f"\nalert after the unauthorized call: {alert_s * 1000:.0f} ms")
    log = client.get("/api/demo/log", headers=AUTH).json()
    assert [i["decision"] for i in log["items"] if i["kind"] == "step"][-3:] == [
        "ALLOW",
        "DENY",
        "REFUSED",
    ]


def test_demo_is_off_without_the_flag(console_stack: ConsoleStack) -> None:
    from dataclasses import replace

    from console.app import create_app

    assert console_stack.ctx is not None
    app = create_app(replace(console_stack.ctx, demo=None))
    with TestClient(app) as c:
        r = c.post("/api/demo/workflow", headers=AUTH)
        assert r.status_code == 403 and "lineage up" in r.json()["detail"]


def test_no_token_configured_means_operator_surfaces_are_closed(
    console_stack: ConsoleStack,
) -> None:
    from dataclasses import replace

    from console.app import create_app

    assert console_stack.ctx is not None
    app = create_app(replace(console_stack.ctx, token=None))
    with TestClient(app) as c:
        r = c.get("/api/workflows", headers={"Authorization": "Bearer "})
        assert r.status_code == 401 and "LINEAGE_CONSOLE_TOKEN" in r.json()["detail"]
        assert c.get("/governance").status_code == 200


def test_hostile_fields_come_back_as_data(client: TestClient, console_stack: ConsoleStack) -> None:
    wf = console_stack.hostile_workflow
    r = client.get(f"/api/workflows/{wf}", headers=AUTH)
    assert r.status_code == 200
    assert HOSTILE_AGENT in r.json()["agents"]
    page = client.get(f"/explorer/workflow?id={wf}<script>", headers=AUTH)
    assert (
        page.status_code == 200
        and "<script>" not in page.text.split("<main>")[1].split("</main>")[0]
    )
    assert "Content-Security-Policy" in page.headers
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]


def test_public_sse_stream_sends_only_publishable_fields(console_stack: ConsoleStack) -> None:
    from tests.console.stack import serve

    assert console_stack.demo is not None
    served = serve(console_stack.app)
    try:
        with httpx.stream("GET", f"{served.url}/api/public/stream", timeout=20) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            lines = r.iter_lines()
            found = False
            assert next(lines) == "event: snapshot"
            wf = console_stack.demo.start_workflow()
            console_stack.demo.misbehave(wf["workflow_id"], wf["root_event_id"], "bypass_gate")
            for line in lines:
                if line.startswith("data: ") and '"violation_type"' in line:
                    item = json.loads(line[6:])
                    if "received_at" in item and item.get("kind") == "violation":
                        assert set(item) <= {
                            "kind",
                            "violation_type",
                            "severity",
                            "rule",
                            "received_at",
                        }
                        assert wf["workflow_id"] not in line
                        found = True
                        break
            assert found, "no violation arrived on the public stream"
    finally:
        served.stop()


def test_lineage_console_needs_a_cluster(tmp_path: Any) -> None:
    from rich.console import Console

    from lineage.config import Settings
    from lineage_cli.up import run_console

    out = Console(record=True, width=200)
    assert (
        run_console(Settings(data_dir=tmp_path), host="127.0.0.1", port=0, demo=False, console=out)
        == 2
    )
    assert "LINEAGE_KAFKA_BOOTSTRAP" in out.export_text()
    s = Settings(data_dir=tmp_path, kafka_bootstrap="127.0.0.1:9")
    assert run_console(s, host="127.0.0.1", port=0, demo=False, console=out) == 2
    assert "LINEAGE_CLICKHOUSE_URL" in out.export_text()

"""The console web app: five surfaces (Jinja2 pages) on one JSON HTTP API with OpenAPI docs."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hmac
import json
import logging
import mimetypes
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from console.live import LiveHub, public_view
from console.store import STATUSES, NotFound, Store
from lineage.config import Settings
from lineage.errors import ConfigError, LineageError

log = logging.getLogger("lineage.console")
HERE = Path(__file__).resolve().parent
COOKIE = "lineage_console"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
PROOF_CSP = CSP.replace("script-src 'self'", "script-src 'self' 'wasm-unsafe-eval'")
"""The Proof Viewer compiles the vendored Cedar engine (WebAssembly): 'wasm-unsafe-eval' allows
WebAssembly compilation only, not JavaScript eval."""
mimetypes.add_type("application/wasm", ".wasm")
READ_ONLY_STATEMENTS = frozenset(
    {"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS"}
)
"""First keywords `/api/cli/query` accepts. A per-query ``readonly`` setting would stick to the
shared chDB session (and stop the sink), so statements are screened instead."""
WorkflowId = Annotated[str, PathParam(min_length=1, max_length=512)]
EventId = Annotated[str, PathParam(min_length=1, max_length=256)]


@dataclass
class ConsoleContext:
    """What the app serves from; built by ``lineage up`` / ``lineage console`` or by tests."""

    settings: Settings
    store: Store | None
    hub: LiveHub = field(default_factory=LiveHub)
    health: Any = None
    demo: Any = None
    mode: str = "console"
    bootstrap: str = ""
    token: str | None = None
    extra_status: Callable[[], dict[str, Any]] | None = None


class Unauthorized(Exception):
    pass


def key_custody(settings: Settings, at_us: int | None = None) -> dict[str, Any]:
    """Where the registry's keys in use are held, for the health surface.

    ``in_use`` counts keys not revoked and not past ``not_after`` by custody (``file``,
    ``pkcs11``, ...). ``file_backed`` lists the file-backed ones only when the deployment claims
    to be production (``LINEAGE_PRODUCTION``): there a copied key file signs as its subject.
    """
    from lineage.keys import KeyRegistry, file_backed_keys

    now = _now_us() if at_us is None else at_us
    registry = KeyRegistry.load(settings.resolved_keys_file)
    in_use: dict[str, int] = {}
    for r in registry.records():
        if r.revoked_at_us is None and (r.not_after_us is None or r.not_after_us >= now):
            in_use[r.custody] = in_use.get(r.custody, 0) + 1
    flagged = file_backed_keys(registry, production=settings.production, at_us=now)
    return {
        "production": settings.production,
        "in_use": dict(sorted(in_use.items())),
        "file_backed": [
            {"subject": r.subject, "role": r.role.value, "key_id": r.key_id} for r in flagged
        ],
    }


def _now_us() -> int:
    return int(time.time() * 1_000_000)


class ScenarioIn(BaseModel):
    events: int = Field(default=400, ge=10, le=20_000)
    workflows: int = Field(default=10, ge=1, le=500)


class StepIn(BaseModel):
    workflow_id: str = Field(min_length=1, max_length=512)
    root_event_id: str = Field(min_length=1, max_length=256)
    action: str = Field(default="tool.call:search", min_length=1, max_length=256)
    resource: str = Field(default="web:search", min_length=1, max_length=512)


class MisbehaveIn(BaseModel):
    workflow_id: str = Field(min_length=1, max_length=512)
    root_event_id: str = Field(min_length=1, max_length=256)
    how: Literal["bypass_gate", "self_authorized"] = "self_authorized"


class SqlIn(BaseModel):
    sql: str = Field(min_length=1, max_length=200_000)
    parameters: dict[str, Any] | None = None
    column_formats: dict[str, str] | None = None


def create_app(ctx: ConsoleContext) -> FastAPI:
    """Build the FastAPI app for ``ctx``; operator surfaces need ``ctx.token``."""
    app = FastAPI(
        title="lineage console",
        version="1",
        description="Execution Lineage Explorer, Public Governance Console, Runtime Governance "
        "Demo, Infrastructure Health Dashboard and Public Governance Proof Viewer. Endpoints "
        "under /api/public are publishable; every other /api endpoint needs the operator token "
        "(Authorization: Bearer <LINEAGE_CONSOLE_TOKEN>).",
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    def authorized(request: Request) -> bool:
        if not ctx.token:
            return False
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else ""
        given = given or request.cookies.get(COOKIE, "")
        return bool(given) and hmac.compare_digest(given.encode(), ctx.token.encode())

    def operator(request: Request) -> None:
        if not authorized(request):
            raise Unauthorized()

    Operator = Depends(operator)

    def store() -> Store:
        if ctx.store is None:
            raise HTTPException(503, "ClickHouse is not configured for this console")
        return ctx.store

    @app.middleware("http")
    async def headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        proof = request.url.path == "/proof"
        response.headers["Content-Security-Policy"] = PROOF_CSP if proof else CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    @app.exception_handler(Unauthorized)
    async def on_unauthorized(request: Request, exc: Unauthorized) -> Response:
        why = (
            "operator token required (Authorization: Bearer <token> or the login link)"
            if ctx.token
            else "no operator token is configured (set LINEAGE_CONSOLE_TOKEN)"
        )
        if request.url.path.startswith("/api/"):
            return JSONResponse(
                {"detail": why}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
            )
        return templates.TemplateResponse(
            request, "login.html", {"why": why, "next": request.url.path}, status_code=401
        )

    @app.exception_handler(NotFound)
    async def on_not_found(request: Request, exc: NotFound) -> Response:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(LineageError)
    async def on_lineage_error(request: Request, exc: LineageError) -> Response:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> Response:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def on_error(request: Request, exc: Exception) -> Response:
        log.exception("console request %s failed", request.url.path)
        return JSONResponse(
            {"detail": f"internal error ({type(exc).__name__}); see the console log"},
            status_code=500,
        )

    def page(request: Request, name: str, **values: Any) -> HTMLResponse:
        values.setdefault("operator", authorized(request))
        values.setdefault("mode", ctx.mode)
        values.setdefault("demo_enabled", ctx.demo is not None)
        return templates.TemplateResponse(request, name, values)

    # -- pages ------------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index(request: Request) -> HTMLResponse:
        return page(request, "index.html", title="lineage console")

    @app.get("/governance", response_class=HTMLResponse, include_in_schema=False)
    def governance_page(request: Request) -> HTMLResponse:
        return page(request, "governance.html", title="Public Governance Console")

    @app.get("/proof", response_class=HTMLResponse, include_in_schema=False)
    def proof_page(request: Request) -> HTMLResponse:
        return page(request, "proof.html", title="Public Governance Proof Viewer")

    @app.get("/explorer", response_class=HTMLResponse, include_in_schema=False)
    def explorer_page(request: Request, _: None = Operator) -> HTMLResponse:
        return page(request, "explorer.html", title="Execution Lineage Explorer", statuses=STATUSES)

    @app.get("/explorer/workflow", response_class=HTMLResponse, include_in_schema=False)
    def workflow_page(
        request: Request,
        id: Annotated[str, Query(min_length=1, max_length=512)],
        _: None = Operator,
    ) -> HTMLResponse:
        return page(request, "workflow.html", title=f"workflow {id}", workflow_id=id)

    @app.get("/demo", response_class=HTMLResponse, include_in_schema=False)
    def demo_page(request: Request, _: None = Operator) -> HTMLResponse:
        from console.demo import MISBEHAVIOURS

        return page(
            request, "demo.html", title="Runtime Governance Demo", misbehaviours=MISBEHAVIOURS
        )

    @app.get("/health", response_class=HTMLResponse, include_in_schema=False)
    def health_page(request: Request, _: None = Operator) -> HTMLResponse:
        return page(request, "health.html", title="Infrastructure Health Dashboard")

    @app.get("/api/docs", response_class=HTMLResponse, include_in_schema=False)
    def docs_page(request: Request) -> HTMLResponse:
        return page(request, "apidocs.html", title="API")

    @app.get("/login", include_in_schema=False)
    def login(
        request: Request,
        token: Annotated[str | None, Query(max_length=512)] = None,
        next: Annotated[str, Query(max_length=512)] = "/explorer",
    ) -> Response:
        target = next if next.startswith("/") and not next.startswith("//") else "/explorer"
        if token and ctx.token and hmac.compare_digest(token.encode(), ctx.token.encode()):
            response = RedirectResponse(target, status_code=303)
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
            return response
        why = "wrong token" if token else "enter the operator token"
        return templates.TemplateResponse(
            request, "login.html", {"why": why, "next": target}, status_code=401 if token else 200
        )

    @app.get("/logout", include_in_schema=False)
    def logout() -> Response:
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    # -- public API -------------------------------------------------------------------------

    @app.get("/api/public/policies", tags=["public"])
    def policies() -> dict[str, Any]:
        """The policy set in force (id, version, digest, Cedar text) and digests seen in decisions."""
        from lineage.policy import PolicySet

        p = PolicySet.load(ctx.settings.resolved_policy_file)
        seen = ctx.store.policy_digests_seen() if ctx.store else []
        return {
            "in_force": [
                {
                    "policy_id": p.policy_id,
                    "version": p.version,
                    "digest": p.digest_hex,
                    "cedar_text": p.cedar_text,
                    "cedar_policy_ids": list(p.cedar_policy_ids),
                    "forbidden_resources": list(p.forbidden_resources),
                    "max_depth": p.max_depth,
                    "max_fanout": p.max_fanout,
                    "critical_contains": p.critical_contains,
                }
            ],
            "seen_in_decisions": seen,
        }

    @app.get("/api/public/keys", tags=["public"])
    def keys() -> dict[str, Any]:
        """The key registry: subjects, roles, validity and revocations (public keys only)."""
        from lineage.keys import KeyRegistry, format_time_us

        path = ctx.settings.resolved_keys_file
        registry = KeyRegistry.load(path)
        now = _now_us()
        return {
            "keys": [
                {
                    "key_id": r.key_id,
                    "subject": r.subject,
                    "role": r.role.value,
                    "public_key": base64.b64encode(r.public_key).decode(),
                    "not_before": format_time_us(r.not_before_us),
                    "not_after": format_time_us(r.not_after_us) if r.not_after_us else None,
                    "revoked_at": format_time_us(r.revoked_at_us) if r.revoked_at_us else None,
                    "revocation_reason": r.revocation_reason,
                    "status": r.status(now),
                    "custody": r.custody,
                }
                for r in sorted(registry.records(), key=lambda r: (r.subject, r.not_before_us))
            ]
        }

    @app.get("/api/public/registry.json", tags=["public"])
    def registry_json() -> dict[str, Any]:
        """The key registry file as published, for pinning in the Proof Viewer or `--registry`."""
        from lineage.keys import KeyRegistry

        return KeyRegistry.load(ctx.settings.resolved_keys_file).to_json()

    @app.get("/api/public/checkpoints", tags=["public"])
    def checkpoints() -> dict[str, Any]:
        """The latest signed checkpoint of each partition log, as C2SP signed-note text."""
        rows = store().latest_checkpoints()
        return {"checkpoints": rows}

    @app.get("/api/public/violations/counts", tags=["public"])
    def violation_counts(
        hours: Annotated[int, Query(ge=1, le=24 * 90)] = 24,
    ) -> dict[str, Any]:
        """Violations by type per hour (stored), plus per-minute counts seen live by this console."""
        return {
            "hourly": store().violation_counts(hours),
            "live": ctx.hub.snapshot(public=True),
        }

    @app.get("/api/public/stream", tags=["public"])
    async def public_stream(request: Request) -> StreamingResponse:
        """Server-sent events: each violation and containment, publishable fields only."""
        return _sse(request, ctx.hub, public=True)

    # -- operator API -----------------------------------------------------------------------

    @app.get("/api/stream", tags=["operator"], dependencies=[Operator])
    async def stream(request: Request) -> StreamingResponse:
        """Server-sent events: each violation and containment with workflow, event and reason."""
        return _sse(request, ctx.hub, public=False)

    @app.get("/api/workflows", tags=["explorer"], dependencies=[Operator])
    def workflows(
        agent: Annotated[str | None, Query(max_length=256)] = None,
        principal: Annotated[str | None, Query(max_length=256)] = None,
        system: Annotated[str | None, Query(max_length=256)] = None,
        q: Annotated[str | None, Query(max_length=512, description="part of a workflow id")] = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        violation_type: Annotated[str | None, Query(max_length=64, pattern="^[A-Z_]+$")] = None,
        status: Literal["any", "clean", "violations", "contained", "completed", "open"] = "any",
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    ) -> dict[str, Any]:
        """Search workflows by agent, principal, system touched, time, violation type and status."""

        def us(t: dt.datetime | None) -> int | None:
            if t is None:
                return None
            if t.tzinfo is None:
                t = t.replace(tzinfo=dt.UTC)
            return int(t.timestamp() * 1_000_000)

        return store().search_workflows(
            agent=agent,
            principal=principal,
            system=system,
            text=q,
            since_us=us(since),
            until_us=us(until),
            violation_type=violation_type,
            status=status,
            limit=limit,
            offset=offset,
        )

    @app.get("/api/workflows/{workflow_id:path}/graph", tags=["explorer"], dependencies=[Operator])
    def graph(
        workflow_id: WorkflowId,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 250,
        detail: Literal["events", "executions"] = "events",
    ) -> dict[str, Any]:
        """One page of the causal DAG (parents outside the page are collapsed nodes)."""
        return store().graph(workflow_id, offset, limit, detail)

    @app.get("/api/workflows/{workflow_id:path}/events", tags=["explorer"], dependencies=[Operator])
    def events(
        workflow_id: WorkflowId,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """One page of the workflow's events in chain order (the timeline table)."""
        s = store()
        s.exists(workflow_id)
        return {"offset": offset, "limit": limit, "events": s.events(workflow_id, offset, limit)}

    @app.get(
        "/api/workflows/{workflow_id:path}/timeline", tags=["explorer"], dependencies=[Operator]
    )
    def timeline(
        workflow_id: WorkflowId, bins: Annotated[int, Query(ge=1, le=500)] = 60
    ) -> dict[str, Any]:
        """Events (and ALLOW/DENY decisions) per time bin over the workflow's span."""
        return store().timeline(workflow_id, bins)

    @app.get("/api/workflows/{workflow_id:path}/bundle", tags=["explorer"], dependencies=[Operator])
    def bundle(workflow_id: WorkflowId) -> Response:
        """The workflow's evidence bundle (what `lineage export` writes)."""
        store().exists(workflow_id)
        doc = build_bundle(ctx, workflow_id)
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in workflow_id)[:120]
        return Response(
            json.dumps(doc, indent=1, sort_keys=True),
            media_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="{name}.bundle.json"'},
        )

    @app.get("/api/workflows/{workflow_id:path}", tags=["explorer"], dependencies=[Operator])
    def workflow(workflow_id: WorkflowId) -> dict[str, Any]:
        """Summary of one workflow: span, actors, systems, parent and child workflows, violations."""
        return store().workflow(workflow_id)

    @app.get("/api/events/{event_id}", tags=["explorer"], dependencies=[Operator])
    def event(event_id: EventId) -> dict[str, Any]:
        """One event: decoded fields, raw hashes, seal and its authorization lineage."""
        out = store().event(event_id)
        auth = out.get("authorization")
        if auth and auth.get("signing_key_id"):
            from lineage.keys import KeyRegistry

            rec = KeyRegistry.load(ctx.settings.resolved_keys_file).get(auth["signing_key_id"])
            auth["signing_key"] = (
                {"subject": rec.subject, "role": rec.role.value, "status": rec.status(_now_us())}
                if rec
                else None
            )
        return out

    @app.get("/api/violations", tags=["explorer"], dependencies=[Operator])
    def violations(
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        violation_type: Annotated[str | None, Query(max_length=64, pattern="^[A-Z_]+$")] = None,
    ) -> dict[str, Any]:
        """The most recent stored violations, with workflow, event and explanation."""
        return {
            "violations": store().recent_violations(limit, violation_type),
            "live": ctx.hub.snapshot(public=False),
        }

    @app.get("/api/health", tags=["health"], dependencies=[Operator])
    def health() -> dict[str, Any]:
        """Component status, per-partition lag/rates/checkpoint age/errors and 15-minute series."""
        snap: dict[str, Any] = ctx.health.snapshot() if ctx.health else {"components": {}}
        if ctx.store is not None:
            try:
                last = ctx.store.rows(
                    "SELECT source_partition AS p, argMax(reason, source_offset) AS reason, "
                    "count() AS n FROM {db}.quarantine WHERE source_topic = {t:String} "
                    "GROUP BY p",
                    {"t": ctx.settings.topics.events},
                )
                by_p = {int(r["p"]): r for r in last}
                for row in snap.get("partitions", []):
                    r = by_p.get(row["partition"])
                    row["quarantined"] = int(r["n"]) if r else 0
                    row["last_error"] = r["reason"] if r else ""
                snap["tables"] = ctx.store.table_counts()
            except Exception as exc:
                snap.setdefault("errors", {})["clickhouse"] = str(exc)
        try:
            snap["keys"] = key_custody(ctx.settings)
        except ConfigError as exc:  # an unreadable registry is a health finding, not a 500
            snap.setdefault("errors", {})["keys"] = str(exc)
        else:
            if snap["keys"]["file_backed"]:
                names = ", ".join(
                    f"{k['subject']} ({k['role']})" for k in snap["keys"]["file_backed"]
                )
                snap.setdefault("errors", {})["keys"] = (
                    "production deployment with file-backed signing keys: " + names
                )
        if ctx.extra_status:
            snap["stack"] = ctx.extra_status()
        return snap

    # -- demo (only under `lineage up` or --demo) ---------------------------------------------

    def demo() -> Any:
        if ctx.demo is None:
            raise HTTPException(
                403, "demo actions are off: they exist only under `lineage up` or `--demo`"
            )
        return ctx.demo

    @app.post("/api/demo/scenario", tags=["demo"], dependencies=[Operator])
    def demo_scenario(body: ScenarioIn) -> dict[str, Any]:
        """Run the multi-agent scenario (with its injected misbehaviour) in the background."""
        from producers.gate import GateError

        try:
            return dict(demo().run_scenario(body.events, body.workflows))
        except GateError as exc:
            raise HTTPException(409, str(exc)) from None

    @app.post("/api/demo/workflow", tags=["demo"], dependencies=[Operator])
    def demo_workflow() -> dict[str, Any]:
        """Start a demo workflow (WORKFLOW_STARTED and an attestation)."""
        return dict(demo().start_workflow())

    @app.post("/api/demo/step", tags=["demo"], dependencies=[Operator])
    def demo_step(body: StepIn) -> dict[str, Any]:
        """One agent step through the gate: ALLOW runs it; DENY or a contained workflow refuse it."""
        return dict(demo().step(body.workflow_id, body.root_event_id, body.action, body.resource))

    @app.post("/api/demo/misbehave", tags=["demo"], dependencies=[Operator])
    def demo_misbehave(body: MisbehaveIn) -> dict[str, Any]:
        """A tool service acting behind the gate's back."""
        return dict(demo().misbehave(body.workflow_id, body.root_event_id, body.how))

    @app.get("/api/demo/log", tags=["demo"], dependencies=[Operator])
    def demo_log(since: Annotated[int, Query(ge=0)] = 0) -> dict[str, Any]:
        """What the demo did since item ``since``."""
        return {
            "enabled": ctx.demo is not None,
            "running": bool(ctx.demo and ctx.demo.scenario_running),
            "items": ctx.demo.log.since(since) if ctx.demo else [],
        }

    # -- the CLI's route to chDB while `lineage up` owns it -------------------------------------

    @app.post("/api/cli/query", tags=["cli"], dependencies=[Operator])
    def cli_query(body: SqlIn) -> dict[str, Any]:
        """Run one read-only query for `lineage query/export/verify` on this data directory."""
        s = store()
        first = body.sql.lstrip(" \t\r\n(").split(None, 1)[0].upper() if body.sql.strip() else ""
        if first not in READ_ONLY_STATEMENTS:
            raise HTTPException(
                403,
                f"only read-only statements go through the console "
                f"({', '.join(sorted(READ_ONLY_STATEMENTS))}), found {first[:20]!r}",
            )
        try:
            with s.lock:
                s.client.database = s.database
                result = s.client.query(
                    body.sql,
                    parameters=body.parameters or None,
                    column_formats=body.column_formats,
                )
        except Exception as exc:
            raise HTTPException(400, f"query failed: {exc}") from None
        return {
            "column_names": list(result.column_names),
            "result_rows": [[encode_value(v) for v in row] for row in result.result_rows],
        }

    return app


def build_bundle(ctx: ConsoleContext, workflow_id: str) -> dict[str, Any]:
    """The evidence bundle of ``workflow_id``, built by the same code as `lineage export`."""
    from lineage.bundle import BundleError
    from lineage.keys import KeyRegistry
    from lineage.policy import PolicySet
    from lineage_cli.evidence import export_bundle

    assert ctx.store is not None
    registry = KeyRegistry.load(ctx.settings.resolved_keys_file)
    # v2 bundles carry the policy sets their decisions name, as `lineage export` does by default
    policy_sets = [PolicySet.files(ctx.settings.resolved_policy_file)]
    try:
        with ctx.store.lock:
            return export_bundle(
                ctx.store.client, ctx.store.database, workflow_id, registry, policy_sets=policy_sets
            )
    except BundleError as exc:
        raise HTTPException(409, f"cannot export {workflow_id}: {exc}") from None


def encode_value(v: Any) -> Any:
    """A ClickHouse value as JSON, with bytes and times tagged so the CLI gets them back exactly."""
    if isinstance(v, bytes | bytearray):
        return {"$b": base64.b64encode(bytes(v)).decode()}
    if isinstance(v, dt.datetime):
        return {"$dt": v.isoformat()}
    if isinstance(v, dt.date):
        return {"$d": v.isoformat()}
    if isinstance(v, list | tuple):
        return [encode_value(x) for x in v]
    if isinstance(v, dict):
        return {"$m": [[encode_value(k), encode_value(x)] for k, x in v.items()]}
    return v


def _sse(request: Request, hub: LiveHub, *, public: bool) -> StreamingResponse:
    async def events() -> AsyncIterator[str]:
        queue = hub.subscribe()
        try:
            snap = hub.snapshot(public)
            yield f"event: snapshot\ndata: {json.dumps(snap)}\n\n"
            while True:
                if await request.is_disconnected():
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), 10.0)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                body = public_view(item) if public else item
                yield f"event: {item['kind']}\ndata: {json.dumps(body)}\n\n"
        finally:
            hub.unsubscribe(queue)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )

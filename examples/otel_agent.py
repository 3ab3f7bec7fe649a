"""An agent instrumented only with the OpenTelemetry API and GenAI attributes, run through the bridge.

``run_agent`` is what a team already has: an orchestrator, two tools, a sub-agent with a tool
of its own, and one failing tool call, as spans of the tracer it is given (the example leaves
OpenTelemetry's global provider alone). Authorization goes through the callable it is given
(``Gate.authorize`` here), which reads its workflow, parent and trace from the current span.
``main`` is the setup: one line adds the lineage bridge to the tracer provider.

    python -m examples.otel_agent --bootstrap 127.0.0.1:9092 --key <authorizer key.pem>
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

Authorize = Callable[..., Any]
TRACER_NAME = "examples.otel_agent"

ORCHESTRATOR = "orchestrator"
RESEARCHER = "researcher"
POLICY_FILE = Path(__file__).resolve().parent / "otel_policy.toml"
"""The default policy plus a permit for ``agent.invoke:*`` (the bridge's sub-agent action)."""


class DatabaseTimeout(Exception):
    """The failing tool call's error."""


def _tool(tracer: Tracer, name: str, **attrs: Any) -> Any:
    return tracer.start_as_current_span(
        f"execute_tool {name}",
        attributes={
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
            "gen_ai.tool.type": "function",
            "gen_ai.tool.call.id": f"call_{name}",
            **attrs,
        },
    )


def _http(tracer: Tracer, host: str, path: str) -> None:
    with tracer.start_as_current_span(
        "GET",
        kind=SpanKind.CLIENT,
        attributes={
            "http.request.method": "GET",
            "server.address": host,
            "url.full": f"https://{host}{path}",
            "http.response.status_code": 200,
        },
    ):
        pass


def search(tracer: Tracer, authorize: Authorize, agent: str, query: str) -> str:
    with _tool(tracer, "search", **{"server.address": "search.example.com"}):
        authorize(principal=agent, action="tool.call:search", resource="search.example.com")
        _http(tracer, "search.example.com", "/v1/search")
        return f"results for {query}"


def read_report(tracer: Tracer, authorize: Authorize, agent: str) -> str:
    with _tool(tracer, "read_report", **{"server.address": "docs.example.com"}):
        authorize(principal=agent, action="tool.call:read_report", resource="docs.example.com")
        _http(tracer, "docs.example.com", "/reports/q3.pdf")
        return "q3 report"


def query_db(tracer: Tracer, authorize: Authorize, agent: str) -> str:
    """The failing tool call: the database times out, the span records the error."""
    db = {"db.system.name": "postgresql", "db.namespace": "crm", "db.collection.name": "accounts"}
    with _tool(tracer, "query_db", **db):
        authorize(principal=agent, action="tool.call:query_db", resource="postgresql:crm/accounts")
        with tracer.start_as_current_span(
            "SELECT crm.accounts",
            kind=SpanKind.CLIENT,
            attributes={**db, "db.operation.name": "SELECT"},
        ) as span:
            span.set_attribute("error.type", "timeout")
            span.set_status(Status(StatusCode.ERROR, "statement timeout"))
            raise DatabaseTimeout("statement timeout after 5 s")


def researcher(tracer: Tracer, authorize: Authorize, agent: str) -> str:
    """A sub-agent invoked by the orchestrator; it calls a tool of its own."""
    with tracer.start_as_current_span(
        f"invoke_agent {RESEARCHER}",
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": RESEARCHER,
            "gen_ai.agent.id": "asst_researcher_01",
            "gen_ai.provider.name": "anthropic",
            "gen_ai.request.model": "claude-sonnet-4-5",
        },
    ):
        authorize(principal=agent, action=f"agent.invoke:{RESEARCHER}")
        me = f"agent:{RESEARCHER}"
        with _tool(tracer, "fetch_paper", **{"server.address": "arxiv.example.org"}):
            authorize(principal=me, action="tool.call:fetch_paper", resource="arxiv.example.org")
            _http(tracer, "arxiv.example.org", "/abs/2501.00001")
        return "summary"


def misbehave(tracer: Tracer, authorize: Authorize, agent: str, how: str) -> None:
    """What the integration test injects: a tool run with no authorization, or after a DENY."""
    if how == "unauthorized":
        with _tool(tracer, "search", **{"server.address": "search.example.com"}):
            _http(tracer, "search.example.com", "/v1/search")  # never asked the gate
    elif how == "after_deny":
        with (
            _tool(
                tracer, "delete_records", **{"db.system.name": "postgresql", "db.namespace": "crm"}
            ),
            contextlib.suppress(Exception),  # the DENY is swallowed and the tool runs anyway
        ):
            authorize(principal=agent, action="tool.call:delete_records", resource="postgresql:crm")
    else:
        raise ValueError(f"misbehaviour: expected unauthorized or after_deny, found {how!r}")


def run_agent(tracer: Tracer, authorize: Authorize, *, misbehaviours: tuple[str, ...] = ()) -> str:
    """One run of the agent on ``tracer``; returns the W3C trace id (workflow ``otel-<trace id>``)."""
    agent = f"agent:{ORCHESTRATOR}"
    with tracer.start_as_current_span(
        f"invoke_agent {ORCHESTRATOR}",
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": ORCHESTRATOR,
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4.1",
            "gen_ai.response.model": "gpt-4.1-2025-04-14",
            "gen_ai.input.messages": '[{"role": "user", "content": "Summarise Q3 risk"}]',
        },
    ) as root:
        search(tracer, authorize, agent, "q3 risk")
        read_report(tracer, authorize, agent)
        researcher(tracer, authorize, agent)
        with contextlib.suppress(DatabaseTimeout):
            query_db(tracer, authorize, agent)
        for how in misbehaviours:
            misbehave(tracer, authorize, agent, how)
        root.set_attribute("gen_ai.output.messages", '[{"role": "assistant", "content": "…"}]')
        return f"{root.get_span_context().trace_id:032x}"


def main() -> None:
    """Run the agent once against a broker, with the lineage bridge on the tracer provider."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    from lineage.keys import KeyRegistry, Signer, key_id_for, load_private_key
    from lineage.policy import PolicySet
    from producers.emitter import Emitter
    from producers.gate import Gate
    from producers.otel import LineageSpanProcessor

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", default="lineage.events")
    ap.add_argument("--registry", type=Path, default=Path(".lineage/keys/registry.json"))
    ap.add_argument("--key", type=Path, required=True, help="private key of an authorizer")
    args = ap.parse_args()
    public = load_private_key(args.key).public_key().public_bytes_raw()
    record = KeyRegistry.load(args.registry).get(key_id_for(public))
    if record is None:
        raise SystemExit(f"{args.key} is not in {args.registry}")
    signer = Signer.from_file(args.key, record)
    emitter = Emitter(bootstrap=args.bootstrap, topic=args.topic, signer=signer)
    provider = TracerProvider(
        resource=Resource.create({"service.name": "support-agent", "host.name": "node-1"})
    )
    bridge = LineageSpanProcessor(emitter, owns_emitter=True)
    provider.add_span_processor(bridge)  # the one line
    gate = Gate(emitter, PolicySet.load(POLICY_FILE), context=bridge)
    trace_id = run_agent(provider.get_tracer(TRACER_NAME), gate.authorize)
    provider.shutdown()
    print(f"workflow otel-{trace_id}: {bridge.report()}")


if __name__ == "__main__":
    main()

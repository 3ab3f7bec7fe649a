"""CPU cost of the OpenTelemetry bridge per span, next to the SDK's per event (``python -m bench.otel_bench``).

One run, one process, one embedded broker: the same ``Emitter`` (seals, Ed25519, librdkafka)
takes (1) events built by hand through ``Emitter.emit``, (2) GenAI tool spans through
``LineageSpanProcessor`` (two events per span), and (3) the same spans with no processor, the
cost of OpenTelemetry itself. CPU is this process's (all threads, librdkafka's included), from
the first emit to the broker's acknowledgement of the last record. Run from the repository root.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from infra.embedded import create_topics, start_broker
from lineage.keys import Role, Signer
from lineage.model import EventKind, Runtime
from producers.emitter import Emitter
from producers.otel import LineageSpanProcessor

RESOURCE = Resource.create(
    {
        "service.name": "bench-agent",
        "host.name": "node-1",
        "container.image.id": "sha256:" + "cd" * 32,
        "lineage.attestation.measurement": "sha256:" + "ab" * 32,
    }
)
RUNTIME = Runtime(
    host="node-1", image_digest="sha256:" + "cd" * 32, measurement="sha256:" + "ab" * 32
)
SPANS_PER_TRACE = 50


def _timed(run: Callable[[], None]) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    run()
    return time.process_time() - cpu, time.perf_counter() - wall


def sdk_events(emitter: Emitter, n: int) -> None:
    """n EXECUTION_STARTED/COMPLETED-like events with the fields the bridge fills."""
    wf = f"wf-{uuid.uuid4()}"
    parent = None
    for i in range(n):
        ev = emitter.emit(
            workflow_id=wf if i % SPANS_PER_TRACE else (wf := f"wf-{uuid.uuid4()}"),
            kind=EventKind.EXECUTION_STARTED,
            principal="agent:orchestrator",
            agent_id="agent:orchestrator",
            action="tool.call:search",
            resource="search.example.com",
            parent_event_id=parent if i % SPANS_PER_TRACE else None,
            runtime=RUNTIME,
            trace_id="0" * 31 + "1",
            span_id="0" * 15 + "1",
            attributes={
                "otel.span_name": "execute_tool search",
                "gen_ai.tool.call.id": f"call_{i}",
                "traceparent": "00-" + "0" * 31 + "1-" + "0" * 15 + "1-01",
            },
        )
        parent = ev.event_id
    report = emitter.flush(60)
    assert report.ok, report


def spans(provider: TracerProvider, n: int, flush: Callable[[], None]) -> None:
    """n execute_tool spans, SPANS_PER_TRACE under each orchestrator span."""
    tracer = provider.get_tracer("bench")
    done = 0
    while done < n:
        with tracer.start_as_current_span(
            "invoke_agent orchestrator",
            attributes={
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": "orchestrator",
                "gen_ai.request.model": "gpt-4.1",
            },
        ):
            for _ in range(min(SPANS_PER_TRACE - 1, n - done)):
                with tracer.start_as_current_span(
                    "execute_tool search",
                    attributes={
                        "gen_ai.operation.name": "execute_tool",
                        "gen_ai.tool.name": "search",
                        "gen_ai.tool.call.id": f"call_{done}",
                        "server.address": "search.example.com",
                    },
                ):
                    pass
                done += 1
        done += 1
    flush()


def run(n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        broker = start_broker(Path(tmp) / "broker.log")
        try:
            topic = f"bench-{uuid.uuid4().hex[:6]}.events"
            create_topics(broker.bootstrap, [topic], 4)
            signer, _ = Signer.generate_ephemeral("bench", Role.EMITTER)
            with Emitter(bootstrap=broker.bootstrap, topic=topic, signer=signer) as em:
                sdk_events(em, 500)  # warm-up: connections, schema caches
                sdk_cpu, sdk_wall = _timed(lambda: sdk_events(em, n))

                bare = TracerProvider(resource=RESOURCE)
                spans(bare, 500, lambda: None)
                otel_cpu, otel_wall = _timed(lambda: spans(bare, n, lambda: None))

                provider = TracerProvider(resource=RESOURCE)
                bridge = LineageSpanProcessor(em)
                provider.add_span_processor(bridge)
                spans(provider, 500, lambda: None)
                em.flush(60)
                before = bridge.stats.events

                def flush() -> None:
                    assert provider.force_flush(60_000), bridge.report()

                bridge_cpu, bridge_wall = _timed(lambda: spans(provider, n, flush))
                events = bridge.stats.events - before
                assert bridge.report().ok, bridge.report()
                provider.shutdown()
                bare.shutdown()
        finally:
            broker.stop()
    us = 1e6
    return {
        "spans": n,
        "sdk_cpu_us_per_event": round(sdk_cpu / n * us, 1),
        "sdk_events_per_s": round(n / sdk_wall),
        "otel_only_cpu_us_per_span": round(otel_cpu / n * us, 1),
        "bridge_cpu_us_per_span": round(bridge_cpu / n * us, 1),
        "bridge_cpu_us_per_event": round(bridge_cpu / events * us, 1),
        "bridge_events_per_span": round(events / n, 2),
        "bridge_overhead_cpu_us_per_span": round((bridge_cpu - otel_cpu) / n * us, 1),
        "bridge_spans_per_s": round(n / bridge_wall),
        "otel_only_spans_per_s": round(n / otel_wall),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--spans", type=int, default=5000, help="spans (and SDK events) to time")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    figures = run(args.spans)
    if args.json:
        print(json.dumps(figures))
        return
    print(f"{args.spans} spans / events, one process, embedded broker")
    print(
        f"  SDK     Emitter.emit            {figures['sdk_cpu_us_per_event']:>8} µs CPU per event"
    )
    print(
        f"  bridge  span → events           {figures['bridge_cpu_us_per_span']:>8} µs CPU per span"
    )
    print(
        f"          per event ({figures['bridge_events_per_span']}/span)     {figures['bridge_cpu_us_per_event']:>8} µs CPU per event"
    )
    print(
        f"  OTel    spans, no processor     {figures['otel_only_cpu_us_per_span']:>8} µs CPU per span"
    )
    print(
        f"  bridge overhead over bare OTel  {figures['bridge_overhead_cpu_us_per_span']:>8} µs CPU per span"
    )


if __name__ == "__main__":
    main()

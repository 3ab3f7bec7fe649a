"""The README's "Instrument a service" snippets run as written against the embedded broker."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

from infra.embedded import Broker, create_topics
from lineage.keys import Role, Signer
from producers.emitter import Emitter

ROOT = Path(__file__).resolve().parents[2]


def snippets() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Instrument a service", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_sdk_and_otel_snippets_run(broker: Broker, tmp_path: Path, monkeypatch: Any) -> None:
    sdk, otel = snippets()
    for code in (sdk, otel):
        lines = [line for line in code.splitlines() if line.strip()]
        code_lines = [x for x in lines if not x.startswith(("from ", "import "))]
        assert len(code_lines) <= 10, f"a README snippet grew to {len(code_lines)} lines"
    topic = f"readme-{uuid.uuid4().hex[:8]}.events"
    create_topics(broker.bootstrap, [topic], 2)
    monkeypatch.chdir(ROOT)
    keys = str(tmp_path / "keys")
    sdk = (
        sdk.replace("127.0.0.1:9092", broker.bootstrap)
        .replace('"lineage.events"', repr(topic))
        .replace('".lineage/keys"', repr(keys))
        .replace('".lineage/keys/registry.json"', repr(keys + "/registry.json"))
    )
    scope: dict[str, Any] = {}
    exec(compile(sdk, "README.md (SDK)", "exec"), scope)
    report = scope["emitter"].close()
    assert report.ok and scope["emitter"].emitted == 3, report  # decision, started, completed
    assert scope["grant"].decision.decision.value == "ALLOW"

    signer, _ = Signer.generate_ephemeral("svc", Role.EMITTER)
    emitter = Emitter(bootstrap=broker.bootstrap, topic=topic, signer=signer)
    scope = {"emitter": emitter}
    exec(compile(otel, "README.md (OTel)", "exec"), scope)
    tracer = scope["provider"].get_tracer("readme")
    with (
        tracer.start_as_current_span("invoke_agent a", attributes={"gen_ai.agent.name": "a"}),
        tracer.start_as_current_span("t", attributes={"gen_ai.operation.name": "execute_tool"}),
    ):
        pass
    scope["provider"].shutdown()  # the bridge owns the emitter and closes it
    assert emitter.emitted == 4 and emitter.delivered_events == 4  # in sealed-batch records

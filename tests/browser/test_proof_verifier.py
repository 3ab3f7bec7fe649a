"""The in-browser verifier (console/static/verifier/) against `lineage verify`, case by case.

Every case of the conformance corpus (tests/conformance/expected.json) runs through the browser
verifier in headless Chromium and through the CLI (`lineage verify ... --json`, in process); both
must report the same verdict and failure kind, and both must match the corpus. The browser re-runs
recorded policy decisions with the vendored Cedar engine (cedar-wasm), as the CLI does with
cedarpy. A summary line prints the number of cases, how many agreed, and the count by kind.

Needs no stack: the verifier is static JavaScript, served here by a small loopback HTTP server
together with the corpus files (the harness fetches them; the Proof Viewer page itself reads
files locally and is tested in test_console_browser.py).
"""

from __future__ import annotations

import collections
import functools
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from lineage_cli.main import app as cli_app

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "console" / "static"
CONFORMANCE = ROOT / "tests" / "conformance"
EXPECTED = json.loads((CONFORMANCE / "expected.json").read_text())
CASES: list[dict[str, Any]] = EXPECTED["cases"]
CORPUS_BUDGET_S = 120.0
CEDAR_WASM = STATIC / "vendor" / "cedar-wasm"


class _Handler(http.server.SimpleHTTPRequestHandler):
    scratch = ROOT / "nonexistent"  # a test's own files, served under /scratch/

    def translate_path(self, path: str) -> str:
        path = path.split("?", 1)[0]
        roots = (
            ("/static/", STATIC),
            ("/conformance/", CONFORMANCE),
            ("/scratch/", _Handler.scratch),
        )
        for prefix, base in roots:
            if path.startswith(prefix):
                target = (base / path[len(prefix) :]).resolve()
                if base in target.parents:
                    return str(target)
        return str(ROOT / "nonexistent")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def static_url() -> Iterator[str]:
    handler = functools.partial(_Handler, directory=str(STATIC))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def verifier_page(browser: Any, static_url: str) -> Iterator[Any]:
    context = browser.new_context()
    p = context.new_page()
    p.set_default_timeout(60_000)
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    p.goto(f"{static_url}/static/verifier/schemas.js")
    yield p
    context.close()
    assert not errors, errors


_RUN_CASES = """
async (cases) => {
  const m = await import("/static/verifier/index.js");
  const tc = performance.now();
  const cedar = await m.loadCedar();
  const cedarMs = performance.now() - tc;
  const out = [];
  for (const c of cases) {
    const bytes = c.b64 !== undefined ? Uint8Array.from(atob(c.b64), (x) => x.charCodeAt(0))
      : new Uint8Array(await (await fetch(c.url || "/conformance/" + c.file)).arrayBuffer());
    const registry = c.registry === null ? null : c.registry_doc ? c.registry_doc
      : JSON.parse(await (await fetch("/conformance/" + c.registry)).text());
    const t0 = performance.now();
    let checks, error = null;
    try {
      checks = await m.verify(bytes, { registry, checkpointKeys: c.checkpoint_keys,
                                       witnessKeys: c.witness_keys || [],
                                       witnessesRequired: c.witnesses_required ?? 1,
                                       workflow: c.workflow });
    } catch (e) { error = String(e && e.stack || e); checks = []; }
    const o = m.outcome(checks);
    const failed = checks.find((x) => x.status === "fail");
    out.push({ name: c.name, verdict: o.verdict, exit_code: o.exitCode, failure_kind: o.failureKind,
               detail: failed ? failed.detail : null, error, ms: performance.now() - t0,
               statuses: checks.map((x) => x.id + ":" + x.status),
               failed_check: failed ? failed.id : null,
               cedar: cedar.ok ? cedar.version : "unavailable: " + cedar.reason, cedar_ms: cedarMs });
  }
  return out;
}
"""


def _cli(case: dict[str, Any]) -> dict[str, Any]:
    args = ["verify", str(CONFORMANCE / case["file"]), "--json"]
    if "path" in case:
        args[1] = case["path"]
    if case["registry"] is not None:
        args += ["--registry", str(CONFORMANCE / case["registry"])]
    for key in case["checkpoint_keys"]:
        args += ["--checkpoint-key", key]
    for key in case.get("witness_keys", []):
        args += ["--witness-key", key]
    if case.get("witnesses_required") is not None:
        args += ["--witnesses-required", str(case["witnesses_required"])]
    if case["workflow"] is not None:
        args += ["--workflow", case["workflow"]]
    result = CliRunner().invoke(cli_app, args)
    report = json.loads(result.output)
    return {
        "verdict": report["verdict"],
        "exit_code": result.exit_code,
        "failure_kind": (report.get("failure") or {}).get("kind"),
    }


def run_in_browser(page: Any, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = page.evaluate(_RUN_CASES, cases)
    return results


def test_schemas_embedded_in_the_verifier_are_the_repository_schemas() -> None:
    text = (STATIC / "verifier" / "schemas.js").read_text()
    doc = json.loads(text[text.index("= {") + 2 : text.rindex(";")])
    for name, value in doc.items():
        assert value == json.loads((ROOT / "schemas" / f"{name}.avsc").read_text()), name


def _cedar_dependent(result: dict[str, Any]) -> bool:
    """The browser's answer rests on Cedar: a decision was re-run, or a policy set's loading failed."""
    statuses = dict(s.split(":") for s in result["statuses"])
    return statuses.get("decisions.rerun") == "pass" or result["failed_check"] in {
        "policies",
        "decisions.rerun",
    }


def test_browser_and_cli_agree_on_every_conformance_case(
    verifier_page: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LINEAGE_TRUST_FILE", raising=False)
    t0 = time.monotonic()
    browser = {r["name"]: r for r in run_in_browser(verifier_page, CASES)}
    browser_s = time.monotonic() - t0
    t1 = time.monotonic()
    cli = {c["name"]: _cli(c) for c in CASES}
    cli_s = time.monotonic() - t1
    disagreements = []
    by_kind: collections.Counter[str] = collections.Counter()
    cedar_cases = 0
    for case in CASES:
        b, c = browser[case["name"]], cli[case["name"]]
        assert b["error"] is None, f"{case['name']}: the browser verifier threw: {b['error']}"
        by_kind[case["failure_kind"] or case["verdict"]] += 1
        cedar_cases += _cedar_dependent(b)
        same = (b["verdict"], b["failure_kind"]) == (c["verdict"], c["failure_kind"])
        if not same or c["verdict"] != case["verdict"] or c["failure_kind"] != case["failure_kind"]:
            disagreements.append(
                f"{case['name']}: expected {case['verdict']}/{case['failure_kind']}, "
                f"browser {b['verdict']}/{b['failure_kind']} ({b['detail']}), "
                f"CLI {c['verdict']}/{c['failure_kind']}"
            )
    agreed = len(CASES) - len(disagreements)
    legacy = sum(1 for case in CASES if case["name"].startswith("legacy-v1"))
    slowest = max(browser.values(), key=lambda r: r["ms"])
    first = next(iter(browser.values()))
    print(
        f"\nbrowser/CLI verdict comparison: {len(CASES)} cases ({legacy} legacy v1), {agreed} "
        f"agreed exactly (verdict and failure kind), {len(disagreements)} disagreed; "
        f"{cedar_cases} rest on Cedar in the browser ({first['cedar']}, loaded in "
        f"{first['cedar_ms']:.0f} ms); genuine v2 bundle verified in {browser['genuine']['ms']:.0f} "
        "ms; by kind: "
        + ", ".join(f"{k} {n}" for k, n in sorted(by_kind.items()))
        + f"; browser {browser_s:.1f} s (slowest {slowest['name']} {slowest['ms']:.0f} ms),"
        f" CLI {cli_s:.1f} s"
    )
    assert not disagreements, "\n".join(disagreements)
    assert agreed == len(CASES)
    # nothing falls back to "not fully verified": the engine loaded and every check ran
    assert all(r["verdict"] != "NOT_FULLY_VERIFIED" for r in browser.values())
    assert first["cedar"] == _cedarpy_engine_version()
    # the genuine v2 bundle: every check runs and passes, the Cedar re-run included
    genuine = dict(s.split(":") for s in browser["genuine"]["statuses"])
    assert genuine.pop("workflow.expected") == "skipped"
    assert set(genuine.values()) == {"pass"}, genuine
    assert {"partition.binding", "findings", "policies", "decisions", "decisions.rerun"} <= set(
        genuine
    )
    lied = browser["policy-decision-lied"]
    assert (lied["failed_check"], lied["failure_kind"]) == (
        "decisions.rerun",
        "POLICY_DECISION_MISMATCH",
    )
    assert "Cedar gives ALLOW" in lied["detail"], lied["detail"]
    assert cedar_cases >= 14, cedar_cases
    assert browser_s < CORPUS_BUDGET_S


def _cedarpy_engine_version() -> str:
    """The cedar-policy crate cedarpy was built with, from the SBOM its wheel ships."""
    from importlib.metadata import distribution

    dist = distribution("cedarpy")
    sbom = next(f for f in dist.files or [] if f.name.endswith(".cyclonedx.json"))
    doc = json.loads(sbom.read_text())
    return str(next(c["version"] for c in doc["components"] if c["name"] == "cedar-policy"))


def test_vendored_cedar_is_the_engine_cedarpy_embeds() -> None:
    """cedar-wasm's version is the Cedar engine's: the same as cedarpy's cedar-policy crate."""
    engine = _cedarpy_engine_version()
    notice = (CEDAR_WASM / "NOTICE").read_text()
    assert f"@cedar-policy/cedar-wasm {engine}" in notice, (engine, notice)
    wasm = (CEDAR_WASM / "cedar_wasm_bg.wasm").read_bytes()
    assert wasm[:4] == b"\0asm"
    # the engine reports its version from the binary itself (getCedarVersion)
    assert engine.encode() in wasm
    for vendored in (STATIC / "vendor").iterdir():
        assert (vendored / "LICENSE").is_file(), f"{vendored.name}: no LICENSE"
    docs = (ROOT / "docs" / "console.md").read_text()
    assert f"| @cedar-policy/cedar-wasm | {engine} |" in docs


def test_wasm_is_served_as_application_wasm_and_the_proof_page_may_compile_it() -> None:
    from fastapi.testclient import TestClient

    from console.app import ConsoleContext, create_app
    from lineage.config import Settings

    client = TestClient(create_app(ConsoleContext(settings=Settings(), store=None)))
    r = client.get("/static/vendor/cedar-wasm/cedar_wasm_bg.wasm")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/wasm"
    assert r.content == (CEDAR_WASM / "cedar_wasm_bg.wasm").read_bytes()
    js = client.get("/static/vendor/cedar-wasm/cedar_wasm.js")
    assert js.headers["content-type"].startswith("text/javascript")
    # only the Proof Viewer may compile WebAssembly; no page may eval JavaScript
    proof = client.get("/proof").headers["content-security-policy"]
    assert "script-src 'self' 'wasm-unsafe-eval';" in proof
    other = client.get("/governance").headers["content-security-policy"]
    assert "wasm-unsafe-eval" not in other and "script-src 'self';" in other
    assert "unsafe-eval'" not in proof.replace("'wasm-unsafe-eval'", "")


# --- the Proof Viewer page itself, against the served console ---------------------------------


def _shot(page: Any, name: str) -> None:
    from tests.browser.conftest import ARTIFACTS

    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _verify_on_page(page: Any, bundle: Path) -> list[dict[str, str]]:
    page.set_input_files("#file", str(bundle))
    page.wait_for_function("document.body.dataset.bundle === '1' && !document.body.dataset.verdict")
    page.click("#verify")
    page.wait_for_function("document.body.dataset.verdict !== undefined")
    rows: list[dict[str, str]] = page.locator("#checks tbody tr").evaluate_all(
        "rs => rs.map(r => ({id: r.dataset.id, status: r.dataset.status,"
        " detail: r.cells[2].textContent}))"
    )
    return rows


def _flip_event_byte(doc: dict[str, Any], entry: int) -> None:
    import base64
    import hashlib

    raw = bytearray(base64.b64decode(doc["entries"][entry]["event"]))
    raw[-3] ^= 0x01
    doc["entries"][entry]["event"] = base64.b64encode(bytes(raw)).decode()
    # the stated digest is left alone: the page must find the bytes no longer hash to it
    assert hashlib.sha256(b"\x10" + bytes(raw)).hexdigest() != doc["entries"][entry]["event_digest"]


@pytest.mark.integration
def test_proof_viewer_page_verifies_genuine_and_tampered_without_uploading(
    page: Any, browser_stack: Any, tmp_path: Path
) -> None:
    from console.app import build_bundle

    st, served = browser_stack
    assert st.ctx is not None
    workflow = st.workflows[0]
    doc = build_bundle(st.ctx, workflow)
    text = json.dumps(doc)
    genuine = tmp_path / "genuine.json"
    genuine.write_text(text)
    requests: list[Any] = []
    page.on("request", lambda r: requests.append(r))
    page.goto(f"{served.url}/proof")
    page.wait_for_function("document.body.dataset.ready === '1'")
    loaded = len(requests)
    # the auditor's registry: a file they hold (here: the deployment's registry file, copied)
    registry = tmp_path / "auditor-registry.json"
    registry.write_bytes(st.settings.resolved_keys_file.read_bytes())
    page.set_input_files("#registry-file", str(registry))
    page.wait_for_function("document.body.dataset.pinned === '1'")
    page.fill("#expect", workflow)

    rows = _verify_on_page(page, genuine)
    # every check the browser can run passes; the Cedar re-run of the recorded decisions cannot
    # run here, so the page says "not fully verified", never "verified" (the CLI: exit 0)
    assert page.locator("#verdict").inner_text() == "NOT FULLY VERIFIED"
    assert "not a VERIFIED verdict" in page.locator("#verdict-meaning").inner_text()
    statuses = {r["id"]: r["status"] for r in rows}
    assert statuses.pop("decisions.rerun") == "not-checked"
    assert set(statuses.values()) == {"pass"}, statuses
    details = {r["id"]: r["detail"] for r in rows}
    assert details["decisions.rerun"].startswith("NOT CHECKED HERE")
    # the CLI, given the same file and keys, re-runs the decisions and exits 0
    case = {
        "file": "",
        "path": str(genuine),
        "registry": str(registry),
        "checkpoint_keys": [],
        "workflow": workflow,
    }
    assert _cli(case) == {"verdict": "VERIFIED", "exit_code": 0, "failure_kind": None}
    assert "complete as of" in details["tail"]
    assert "your registry" in details["trust.keys"]
    assert workflow in details["workflow.expected"]
    _shot(page, "proof-viewer-genuine")

    tampered_doc = json.loads(text)
    _flip_event_byte(tampered_doc, 2)
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(tampered_doc))
    rows = _verify_on_page(page, tampered)
    assert page.locator("#verdict").inner_text() == "FAILED"
    assert page.evaluate("document.body.dataset.failureKind") == "EVENT_DIGEST_MISMATCH"
    failed = [r for r in rows if r["status"] == "fail"]
    assert [r["id"] for r in failed] == ["entries.events"]
    assert failed[0]["detail"].startswith(
        "EVENT_DIGEST_MISMATCH: entries[2]: the event bytes hash to"
    )
    after = [r["status"] for r in rows[[r["id"] for r in rows].index("entries.events") + 1 :]]
    assert set(after) == {"skipped"}, "checks after the first failure are not run"
    assert {r["id"]: r["status"] for r in rows}["logs.checkpoints"] == "pass"
    _shot(page, "proof-viewer-tampered")

    # file mode: nothing left the page after it loaded, and no request carried bundle bytes
    later = requests[loaded:]
    assert later == [], [f"{r.method} {r.url}" for r in later]
    for r in requests:
        body = r.post_data or ""
        assert (
            workflow not in body
            and doc["entries"][0]["event"] not in body
            and workflow not in r.url
        )

    # the console's own registry is the operator's: consistent but untrusted, like the CLI's
    # "operator's own registry (not independent)"
    page.click("#registry-console")
    page.wait_for_function(
        "document.getElementById('pinned').textContent.includes('not independent')"
    )
    _verify_on_page(page, genuine)
    assert page.locator("#verdict").inner_text() == "CONSISTENT BUT UNTRUSTED"


@pytest.mark.integration
def test_proof_viewer_shows_evidence_strings_as_text(
    page: Any, browser_stack: Any, tmp_path: Path
) -> None:
    _, served = browser_stack
    hostile = (
        '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>\u202eDEIFIREV'
        + "W" * 5000
    )
    doc = json.loads((CONFORMANCE / "cases" / "genuine.json").read_text())
    doc["entries"][0]["event_id"] = hostile
    bundle = tmp_path / "hostile.json"
    bundle.write_text(json.dumps(doc))
    page.goto(f"{served.url}/proof")
    page.wait_for_function("document.body.dataset.ready === '1'")
    page.set_input_files("#registry-file", str(CONFORMANCE / "keys" / "auditor-registry.json"))
    page.wait_for_function("document.body.dataset.pinned === '1'")
    rows = _verify_on_page(page, bundle)
    failed = next(r for r in rows if r["status"] == "fail")
    assert failed["detail"].startswith("EVENT_ID_MISMATCH")
    assert "<img src=x" in failed["detail"] and "<script>" in failed["detail"]
    # a right-to-left override is shown as an escape, and 5,000 characters are shortened
    assert "\u202e" not in failed["detail"] and "\\u202eDEIFIREV" in failed["detail"]
    assert "(5076 characters)" in failed["detail"]
    assert page.locator("#checks img, #checks script").count() == 0
    assert page.evaluate("typeof window.__xss") == "undefined"
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 2, f"the page is {overflow} px wider than the window"
    _shot(page, "proof-viewer-hostile")


# --- v2 claims: tampered variants of the genuine v2 bundle, through both verifiers --------------
# (the corpus has no v2-specific tamper case yet; these derive from its genuine bundle without
# re-signing anything). Each names what docs/findings.md says the verdict is.


def _v2_variants() -> list[tuple[str, str, Any, str, str | None]]:
    def drop(member: str) -> Any:
        return lambda d: d.pop(member)

    def setv(path: list[Any], value: Any) -> Any:
        def edit(d: dict[str, Any]) -> None:
            for key in path[:-1]:
                d = d[key]
            d[path[-1]] = value

        return edit

    def flip_and_drop(d: dict[str, Any]) -> None:
        d.pop("policies")
        _flip_event_byte(d, 3)

    def downgrade(d: dict[str, Any]) -> None:
        d["format"] = "lineage-evidence-bundle/v1"
        d.pop("policies")
        d.pop("findings")

    return [
        (
            "v2-policies-empty",
            "the policy sets removed",
            setv(["policies"], []),
            "FAILED",
            "POLICY_SET_MISSING",
        ),
        (
            "v2-findings-null",
            "findings null, the checkpoint commits to a findings log",
            setv(["findings"], None),
            "FAILED",
            "FINDINGS_MISMATCH",
        ),
        (
            "v2-findings-size",
            "findings.tree_size changed",
            setv(["findings", "tree_size"], 1),
            "FAILED",
            "FINDINGS_MISMATCH",
        ),
        (
            "v2-downgraded-to-v1",
            "relabelled v1, policies and findings dropped",
            downgrade,
            "FAILED",
            "FINDINGS_MISMATCH",
        ),
        (
            "v2-findings-missing",
            "a v2 bundle without its findings member",
            drop("findings"),
            "UNUSABLE_INPUT",
            "UNUSABLE_INPUT",
        ),
        (
            "v2-policy-set-unreadable",
            "a policy set's TOML is not base64: it does not load (step 9)",
            setv(["policies", 0, "toml"], "not base64!"),
            "FAILED",
            "POLICY_SET_MISSING",
        ),
        (
            "v2-policies-missing-and-event-flipped",
            "no policies member (step 7) and an event byte flipped (step 4, first)",
            flip_and_drop,
            "FAILED",
            "EVENT_DIGEST_MISMATCH",
        ),
    ]


def test_browser_and_cli_agree_on_v2_claim_tampering(
    verifier_page: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import base64

    monkeypatch.delenv("LINEAGE_TRUST_FILE", raising=False)
    genuine = json.loads((CONFORMANCE / "cases" / "genuine.json").read_text())
    assert genuine["format"] == "lineage-evidence-bundle/v2"
    cases: list[dict[str, Any]] = []
    for name, description, edit, verdict, kind in _v2_variants():
        doc = json.loads(json.dumps(genuine))
        edit(doc)
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(doc))
        cases.append(
            {
                "name": name,
                "description": description,
                "file": "",
                "path": str(path),
                "b64": base64.b64encode(path.read_bytes()).decode(),
                "registry": "keys/auditor-registry.json",
                "checkpoint_keys": [],
                "workflow": None,
                "verdict": verdict,
                "failure_kind": kind,
            }
        )
    browser = {r["name"]: r for r in run_in_browser(verifier_page, cases)}
    wrong = []
    for case in cases:
        b, c = browser[case["name"]], _cli(case)
        got = [(b["verdict"], b["failure_kind"]), (c["verdict"], c["failure_kind"])]
        if got != [(case["verdict"], case["failure_kind"])] * 2:
            wrong.append(
                f"{case['name']}: expected {case['verdict']}/{case['failure_kind']}, "
                f"browser {got[0]} ({b['detail']}), CLI {got[1]}"
            )
    assert not wrong, "\n".join(wrong)


# Where the CLI departs from the spec: NaN is not JSON (RFC 8259; the spec: "UTF-8 JSON"), but
# Python's json module reads it, so the CLI verifies a bundle with NaN in an unknown member. The
# browser refuses it as unusable input. This test pins both answers so a fix on either side shows
# up here (reported to the lead, not bent to match).
SPEC_DISAGREEMENTS = [
    ("nan-in-an-unknown-member", "UNUSABLE_INPUT", ("VERIFIED", None)),
]


def test_where_the_cli_departs_from_the_spec(
    verifier_page: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import base64

    monkeypatch.delenv("LINEAGE_TRUST_FILE", raising=False)
    genuine = json.loads((CONFORMANCE / "cases" / "genuine.json").read_text())
    nan = json.loads(json.dumps(genuine))
    nan["x-note"] = float("nan")
    cases = []
    for (name, spec_kind, cli_answer), doc in zip(SPEC_DISAGREEMENTS, (nan,), strict=True):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(doc))
        case: dict[str, Any] = {
            "name": name,
            "file": "",
            "path": str(path),
            "b64": base64.b64encode(path.read_bytes()).decode(),
            "registry": "keys/auditor-registry.json",
            "checkpoint_keys": [],
            "workflow": None,
        }
        cases.append((case, spec_kind, cli_answer))
    browser = {r["name"]: r for r in run_in_browser(verifier_page, [c for c, _, _ in cases])}
    for case, spec_kind, cli_answer in cases:
        b, c = browser[case["name"]], _cli(case)
        assert (b["verdict"], b["failure_kind"]) == ("UNUSABLE_INPUT", spec_kind), b
        assert (c["verdict"], c["failure_kind"]) == cli_answer, (
            f"{case['name']}: the CLI now answers {c}; if it follows the spec, drop the case here"
        )


# --- witness cosignatures (docs/witness.md; c2sp.org/tlog-cosignature) --------------------------
# The corpus runs witness cases through both verifiers; these add, for the browser alone, the
# specification's test vectors and against the genuine bundle cosigned here by a test witness.

RFC8032_TEST1_SEED = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
SPEC_CHECKPOINT = (
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
)
SPEC_WITNESS_KEY = "witness.example.com/w1+7e6f4aaa+BNdamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea"
SPEC_WITNESS_LINE = (
    "\u2014 witness.example.com/w1 fm9KqgAAAABkGFDL+TPmh4BYuAjsYRoqMJCWb/gWJaeRF/kmm5tlCr9sJ57DLEru"
    "r7K0yDXc2ArN+TIuotuB/HbuL3AJsp3bv/aNCQ=="
)


def _witness(seed: bytes, name: str) -> tuple[str, Any]:
    import base64
    import hashlib

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = Ed25519PrivateKey.from_private_bytes(seed)
    pk = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    key_id = hashlib.sha256(name.encode() + b"\n\x04" + pk).digest()[:4]
    material = base64.b64encode(b"\x04" + pk).decode()
    vkey = f"{name}+{key_id.hex()}+{material}"

    def cosign(text: str, ts: int) -> str:
        sig = key.sign(f"cosignature/v1\ntime {ts}\n".encode() + text.encode())
        body = key_id + ts.to_bytes(8, "big") + sig
        return f"\u2014 {name} {base64.b64encode(body).decode()}"

    return vkey, cosign


def test_witness_cosignature_test_vectors(verifier_page: Any) -> None:
    vkey, cosign = _witness(bytes.fromhex(RFC8032_TEST1_SEED), "witness.example.com/w1")
    assert vkey == SPEC_WITNESS_KEY
    assert cosign(SPEC_CHECKPOINT, 1679315147) == SPEC_WITNESS_LINE
    got = verifier_page.evaluate(
        """async ([k, text, line]) => {
          const m = await import("/static/verifier/index.js");
          const good = await m.cosignatureTime(k, text, line);
          const other = await m.cosignatureTime(k, text.replace("20852163", "20852164"), line);
          return [good === null ? null : String(good), other];
        }""",
        [SPEC_WITNESS_KEY, SPEC_CHECKPOINT, SPEC_WITNESS_LINE],
    )
    assert got == ["1679315147", None]


def test_browser_verifies_witness_cosignatures_of_a_bundle(verifier_page: Any) -> None:
    import base64

    genuine = json.loads((CONFORMANCE / "cases" / "genuine.json").read_text())
    vkey, cosign = _witness(bytes(range(32)), "witness.lineage.test/w1")
    vkey2, _ = _witness(bytes(range(1, 33)), "witness.lineage.test/w2")
    now = 1_800_000_000

    def bundle(ts: int | None, flip: bool = False) -> str:
        doc = json.loads(json.dumps(genuine))
        for log in doc["logs"]:
            cp = log["checkpoints"][-1]
            text = cp["note"][: cp["note"].index("\n\n") + 1]
            if ts is not None:
                line = cosign(text, ts)
                if flip:
                    raw = bytearray(base64.b64decode(line.split(" ")[2]))
                    raw[-1] ^= 1
                    line = " ".join([*line.split(" ")[:2], base64.b64encode(bytes(raw)).decode()])
                cp["note"] += line + "\n"
        return base64.b64encode(json.dumps(doc).encode()).decode()

    def case(name: str, b64: str, keys: list[str], required: int = 1) -> dict[str, Any]:
        return {
            "name": name,
            "file": "",
            "b64": b64,
            "registry": "keys/auditor-registry.json",
            "checkpoint_keys": [],
            "workflow": None,
            "witness_keys": keys,
            "witnesses_required": required,
        }

    cases = [
        case("cosigned", bundle(now - 60), [vkey]),
        case("cosigned-ignored-without-witness-keys", bundle(now - 60), []),
        case("not-cosigned", bundle(None), [vkey]),
        case("cosignature-flipped", bundle(now - 60, flip=True), [vkey]),
        case("cosigned-in-the-future", bundle(now + 301), [vkey]),
        case("two-required-one-cosigned", bundle(now - 60), [vkey, vkey2], 2),
        case("more-required-than-keys", bundle(now - 60), [vkey], 2),
    ]
    # the processor key retired before the witness cosigned: its checkpoint does not count
    retired = json.loads((CONFORMANCE / "keys" / "auditor-registry.json").read_text())
    for record in retired["keys"]:
        if record["role"] == "processor":
            record["not_after"] = "2026-01-01T00:00:00Z"
    cases.append(case("cosigned-after-processor-key-retired", bundle(now - 60), [vkey]))
    cases[-1]["registry_doc"] = retired
    cases.append(case("cosigned-while-processor-key-valid", bundle(1_700_000_000), [vkey]))
    cases[-1]["registry_doc"] = retired
    page_now = verifier_page.evaluate(
        "async (cases) => { const m = await import('/static/verifier/index.js');"
        " const out = {}; for (const c of cases) { const bytes = Uint8Array.from(atob(c.b64),"
        " (x) => x.charCodeAt(0)); const reg = c.registry_doc || await (await fetch('/conformance/' + c.registry))"
        ".json(); const checks = await m.verify(bytes, {registry: reg, checkpointKeys: [],"
        f" witnessKeys: c.witness_keys, witnessesRequired: c.witnesses_required, now: {now}}});"
        " const w = checks.find((x) => x.id === 'witness');"
        " out[c.name] = [m.outcome(checks).failureKind, w ? w.status : null,"
        " w ? w.detail : null]; } return out; }",
        cases,
    )
    kinds = {name: r[0] for name, r in page_now.items()}
    assert kinds == {
        "cosigned": None,
        "cosigned-ignored-without-witness-keys": None,
        "not-cosigned": "WITNESS_COSIGNATURES",
        "cosignature-flipped": "WITNESS_COSIGNATURES",
        "cosigned-in-the-future": "WITNESS_COSIGNATURES",
        "two-required-one-cosigned": "WITNESS_COSIGNATURES",
        "more-required-than-keys": "UNUSABLE_INPUT",
        "cosigned-after-processor-key-retired": "KEY_EXPIRED",
        "cosigned-while-processor-key-valid": None,
    }, page_now
    assert page_now["cosigned"][1] == "pass" and "60 s ago" in page_now["cosigned"][2]
    assert page_now["cosigned-ignored-without-witness-keys"][1] is None


BIG_STEPS = 2_500
"""Four events a step: a 10,002-entry bundle (27 MB), as the Explorer's big workflow."""
BIG_BUDGET_S = 120.0


def test_browser_verifies_a_10000_entry_bundle(
    verifier_page: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.lineage_builder import build_dataset

    monkeypatch.delenv("LINEAGE_TRUST_FILE", raising=False)
    ds = build_dataset(
        workflows=1,
        steps=2,
        partitions=2,
        seal_every=50,
        checkpoint_every=1000,
        long_workflow_steps=BIG_STEPS,
    )
    wid = max(set(ds.workflows), key=lambda w: sum(e.workflow_id == w for e in ds.entries))
    doc = ds.bundle(wid)
    path = tmp_path / "big.json"
    path.write_text(json.dumps(doc))
    registry = tmp_path / "registry.json"
    ds.registry.save(registry)
    monkeypatch.setattr(_Handler, "scratch", tmp_path)
    case = {
        "name": "big",
        "file": "",
        "url": "/scratch/big.json",
        "path": str(path),
        "registry": str(registry),
        "registry_doc": json.loads(registry.read_text()),
        "checkpoint_keys": [],
        "workflow": wid,
    }
    result = run_in_browser(verifier_page, [case])[0]
    t0 = time.monotonic()
    cli = _cli(case)
    cli_s = time.monotonic() - t0
    print(
        f"\n{len(doc['entries'])}-entry bundle ({path.stat().st_size / 1e6:.1f} MB): browser "
        f"{result['ms'] / 1000:.1f} s ({result['verdict']}), CLI {cli_s:.1f} s ({cli['verdict']})"
    )
    assert result["error"] is None, result["error"]
    assert (result["verdict"], cli["verdict"]) in {
        ("VERIFIED", "VERIFIED"),
        ("NOT_FULLY_VERIFIED", "VERIFIED"),
    }, (result, cli)
    assert result["ms"] / 1000 < BIG_BUDGET_S


def test_murmur2_matches_kafka_test_vectors(verifier_page: Any) -> None:
    from tests.unit.producers.test_partitioner import KAFKA_UTILS_TEST, LIBRDKAFKA

    vectors = [[list(key), expected] for key, expected in KAFKA_UTILS_TEST + LIBRDKAFKA]
    got = verifier_page.evaluate(
        """async (vectors) => {
          const m = await import("/static/verifier/index.js");
          return vectors.map(([key, _]) => m.murmur2(new Uint8Array(key)));
        }""",
        vectors,
    )
    assert got == [expected for _, expected in vectors]

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
               not_checked: checks.filter((x) => x.status === "not-checked").map((x) => x.detail),
               rerun: (checks.find((x) => x.id === "decisions.rerun") || {}).detail || null,
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


# --- the Proof Viewer page under the console's own CSP (no stack needed) ------------------------


@pytest.fixture(scope="module")
def public_console() -> Iterator[str]:
    """The console app with no store: the public pages and /static, as `lineage console` serves them."""
    from console.app import ConsoleContext, create_app
    from lineage.config import Settings
    from tests.console.stack import serve

    served = serve(create_app(ConsoleContext(settings=Settings(), store=None)))
    yield served.url
    served.stop()


def _wait(page: Any, selector: str) -> None:
    # locator waits run outside the page's CSP (wait_for_function would need eval)
    page.locator(selector).wait_for(state="attached")


def test_proof_viewer_reruns_decisions_with_cedar_under_the_consoles_csp(
    browser: Any, public_console: str, tmp_path: Path
) -> None:
    from tests.browser.conftest import ARTIFACTS

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1400, "height": 900})  # CSP enforced
    page = context.new_page()
    page.set_default_timeout(60_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda m: (
            errors.append(f"{m.text} ({m.location.get('url')})")
            if m.type in ("error", "warning")
            and not m.location.get("url", "").endswith("/favicon.ico")
            else None
        ),
    )
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(f"{public_console}/proof")
    _wait(page, "body[data-ready='1']")
    assert page.locator("body").get_attribute("data-cedar") == _cedarpy_engine_version()
    assert "Cedar 4.12.0 loaded" in page.locator("#engine").inner_text()
    assert any(u.endswith("/static/vendor/cedar-wasm/cedar_wasm_bg.wasm") for u in requests)
    loaded = len(requests)
    page.set_input_files("#registry-file", str(CONFORMANCE / "keys" / "auditor-registry.json"))
    _wait(page, "body[data-pinned='1']")

    def verify(bundle: Path) -> tuple[dict[str, str], dict[str, str], float]:
        page.set_input_files("#file", str(bundle))
        _wait(page, "body[data-bundle='1']:not([data-verdict])")
        t0 = time.monotonic()
        page.click("#verify")
        _wait(page, "body[data-verdict]")
        seconds = time.monotonic() - t0
        rows = page.locator("#checks tbody tr")
        statuses, details = {}, {}
        for k in range(rows.count()):
            row = rows.nth(k)
            check = str(row.get_attribute("data-id"))
            statuses[check] = str(row.get_attribute("data-status"))
            details[check] = row.locator("td").nth(2).inner_text()
        return statuses, details, seconds

    statuses, details, genuine_s = verify(CONFORMANCE / "cases" / "genuine.json")
    assert page.locator("#verdict").inner_text() == "VERIFIED"
    assert statuses.pop("workflow.expected") == "skipped"
    assert set(statuses.values()) == {"pass"}, statuses
    assert details["decisions.rerun"].startswith("2 decision(s) re-run with Cedar 4.12.0"), details
    assert "each loads with Cedar 4.12.0" in details["policies"]
    page.locator("tr[data-id='decisions.rerun']").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "proof-viewer-cedar-verified.png"), full_page=True)

    statuses, details, lied_s = verify(CONFORMANCE / "cases" / "policy-decision-lied.json")
    assert page.locator("#verdict").inner_text() == "FAILED"
    assert page.locator("body").get_attribute("data-failure-kind") == "POLICY_DECISION_MISMATCH"
    assert statuses["decisions.rerun"] == "fail" and statuses["decisions"] == "skipped"
    assert "Cedar gives ALLOW" in details["decisions.rerun"], details["decisions.rerun"]
    page.screenshot(path=str(ARTIFACTS / "proof-viewer-cedar-lied.png"), full_page=True)
    print(
        f"\nProof Viewer (console CSP, Cedar {page.locator('body').get_attribute('data-cedar')}): "
        f"genuine v2 bundle with 2 re-run decisions verified in {genuine_s * 1000:.0f} ms, "
        f"the lying gate's bundle refuted in {lied_s * 1000:.0f} ms (click to verdict)"
    )
    # file mode: nothing was requested after the page (and the engine) loaded
    assert requests[loaded:] == []
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 2, f"the page is {overflow} px wider than the window"
    context.close()
    assert not errors, (errors, failed)


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
    # every check passes, the Cedar re-run of the recorded decisions included: VERIFIED, as the
    # CLI says for the same file and keys
    assert page.locator("#verdict").inner_text() == "VERIFIED"
    statuses = {r["id"]: r["status"] for r in rows}
    assert set(statuses.values()) == {"pass"}, statuses
    details = {r["id"]: r["detail"] for r in rows}
    assert " re-run with Cedar 4.12.0 " in details["decisions.rerun"], details["decisions.rerun"]
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


# --- policy decisions: lying gates (genuine keys) and edited policy sets, through both ----------
# A gate that holds a genuine authorizer key can record any decision; only re-running the request
# under the policy set refutes it. The policy sets travel unsigned in the bundle, bound to the
# decisions by their digest. Each case names the check the browser fails at and the kind both say.

LIE_POLICY_ID, LIE_DETERMINING, LIE_NO_REASON, BIG_CONTEXT, HUGE_CONTEXT, HONEST = range(6)
NOT_A_DOUBLE = 2**62 + 1
"""An integer Cedar's 64-bit Long holds but a JavaScript double does not."""
assert float(NOT_A_DOUBLE) != NOT_A_DOUBLE


def _lying_gates() -> Any:
    import dataclasses
    import hashlib

    from lineage.model import ExecutionEvent
    from lineage.policy import REQUEST_ATTRIBUTE, canonical_request
    from tests.support.lineage_builder import WorkflowShape, build_dataset

    def auth(**changes: Any) -> Any:
        def tamper(event: ExecutionEvent) -> ExecutionEvent:
            assert event.authorization is not None
            changed = dataclasses.replace(event.authorization, **changes)
            return dataclasses.replace(event, authorization=changed)

        return tamper

    def context(extra: dict[str, int]) -> Any:
        """The gate records a request with one more context value (the policy ignores it)."""

        def tamper(event: ExecutionEvent) -> ExecutionEvent:
            assert event.authorization is not None
            request = json.loads(event.attributes[REQUEST_ATTRIBUTE])
            text = canonical_request(
                principal=request["principal"],
                action=request["action"],
                resource=request["resource"],
                context={**request["context"], **extra},
            )
            digest = "sha256:" + hashlib.sha256(text).hexdigest()
            changed = dataclasses.replace(event.authorization, input_digest=digest)
            attributes = {**event.attributes, REQUEST_ATTRIBUTE: text.decode()}
            return dataclasses.replace(event, authorization=changed, attributes=attributes)

        return tamper

    return build_dataset(
        workflows=6,
        steps=2,
        seed=b"lineage-browser-lying-gates",
        shapes={
            LIE_POLICY_ID: WorkflowShape(tamper=auth(policy_id="lineage-demo-strict")),
            LIE_DETERMINING: WorkflowShape(tamper=auth(determining_policies=("no-secrets",))),
            LIE_NO_REASON: WorkflowShape(tamper=auth(determining_policies=())),
            BIG_CONTEXT: WorkflowShape(tamper=context({"n": NOT_A_DOUBLE})),
            HUGE_CONTEXT: WorkflowShape(tamper=context({"n": 2**63})),
        },
    )


def _policy_cases(ds: Any) -> list[tuple[str, dict[str, Any], str, str | None, str | None]]:
    """(name, bundle, verdict, failure kind, the check the browser fails at)."""
    import base64

    def bundle(index: int) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(json.dumps(ds.bundle(ds.workflows[index])))
        return doc

    def edited(edit: Any) -> dict[str, Any]:
        doc = bundle(HONEST)
        edit(doc["policies"])
        return doc

    def set_member(toml: bytes, cedar: bytes) -> dict[str, str]:
        return {"toml": base64.b64encode(toml).decode(), "cedar": base64.b64encode(cedar).decode()}

    toml, cedar = ds.policy_files
    mismatch = ("FAILED", "POLICY_DECISION_MISMATCH", "decisions.rerun")
    missing_at_load = ("FAILED", "POLICY_SET_MISSING", "policies")

    def replace_cedar(old: bytes, new: bytes) -> Any:
        def edit(policies: list[dict[str, str]]) -> None:
            assert cedar.count(old) == 1, old
            policies[0] = set_member(toml, cedar.replace(old, new))

        return edit

    def append(extra_toml: bytes, extra_cedar: bytes) -> Any:
        return lambda policies: policies.append(set_member(extra_toml, extra_cedar))

    only_forbids = (
        b'@id("no-secrets")\nforbid (principal, action, resource in Resource::"secrets");\n'
    )
    duplicate = cedar + b'\n@id("no-secrets")\npermit (principal, action, resource);\n'
    return [
        ("honest-gate", bundle(HONEST), "VERIFIED", None, None),
        ("gate-lied-policy-id", bundle(LIE_POLICY_ID), *mismatch),
        ("gate-lied-determining-policy", bundle(LIE_DETERMINING), *mismatch),
        ("gate-lied-no-determining-policy", bundle(LIE_NO_REASON), *mismatch),
        ("request-context-outside-64-bits", bundle(HUGE_CONTEXT), *mismatch),
        # beyond a double, inside Cedar's Long: handed to Cedar digit for digit (JSON.rawJSON)
        ("request-context-beyond-a-double", bundle(BIG_CONTEXT), "VERIFIED", None, None),
        # one byte of the Cedar text: the set still loads, but it is no longer the set the
        # decisions name (its digest changed)
        (
            "cedar-text-one-byte-edited",
            edited(replace_cedar(b'Action::"tool.call"', b'Action::"tool.calm"')),
            "FAILED",
            "POLICY_SET_MISSING",
            "decisions",
        ),
        (
            "cedar-text-unparseable",
            edited(replace_cedar(b'@id("no-secrets")\nforbid (', b'@id("no-secrets")\nforbid ((')),
            *missing_at_load,
        ),
        (
            "toml-unknown-key",
            edited(lambda p: p.__setitem__(0, set_member(toml + b"\n[extra]\nx = 1\n", cedar))),
            *missing_at_load,
        ),
        (
            "toml-max-depth-zero",
            edited(
                lambda p: p.__setitem__(
                    0, set_member(toml.replace(b"max_depth = 8", b"max_depth = 0"), cedar)
                )
            ),
            *missing_at_load,
        ),
        ("extra-set-without-permit", edited(append(toml, only_forbids)), *missing_at_load),
        ("extra-set-duplicate-id", edited(append(toml, duplicate)), *missing_at_load),
        (
            "extra-set-template",
            edited(
                append(
                    toml,
                    cedar + b'\n@id("t")\npermit (principal == ?principal, action, resource);\n',
                )
            ),
            *missing_at_load,
        ),
        (
            "extra-set-loads",
            edited(append(toml.replace(b"8", b"9", 1), cedar)),
            "VERIFIED",
            None,
            None,
        ),
    ]


def test_browser_and_cli_agree_on_policy_decision_tampering(
    verifier_page: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import base64

    monkeypatch.delenv("LINEAGE_TRUST_FILE", raising=False)
    ds = _lying_gates()
    registry = tmp_path / "registry.json"
    ds.registry.save(registry)
    toml, _ = ds.policy_files
    assert b"max_depth = 8" in toml
    cases, expected = [], {}
    for name, doc, verdict, kind, check in _policy_cases(ds):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(doc))
        expected[name] = (verdict, kind, check)
        cases.append(
            {
                "name": name,
                "file": "",
                "path": str(path),
                "b64": base64.b64encode(path.read_bytes()).decode(),
                "registry": str(registry),
                "registry_doc": json.loads(registry.read_text()),
                "checkpoint_keys": [],
                "workflow": None,
            }
        )
    browser = {r["name"]: r for r in run_in_browser(verifier_page, cases)}
    wrong = []
    for case in cases:
        b, c = browser[case["name"]], _cli(case)
        verdict, kind, check = expected[case["name"]]
        got = (
            (b["verdict"], b["failure_kind"], b["failed_check"]),
            (c["verdict"], c["failure_kind"]),
        )
        if got != ((verdict, kind, check), (verdict, kind)):
            wrong.append(
                f"{case['name']}: expected {verdict}/{kind} at {check}, browser {got[0]} ({b['detail']}), CLI {got[1]}"
            )
    assert not wrong, "\n".join(wrong)
    honest = dict(s.split(":") for s in browser["honest-gate"]["statuses"])
    assert honest["decisions.rerun"] == "pass" and honest["policies"] == "pass"
    assert (
        'Cedar gives ALLOW by "lineage-demo" ["agents-call-tools"]'
        in browser["gate-lied-policy-id"]["detail"]
    )
    assert "Cedar gives no decision" in browser["request-context-outside-64-bits"]["detail"]


def _fallback_page(browser: Any, static_url: str, init: str | None, block_wasm: bool) -> Any:
    context = browser.new_context()
    if init is not None:
        context.add_init_script(init)
    if block_wasm:
        context.route("**/cedar_wasm_bg.wasm", lambda route: route.fulfill(status=404, body="gone"))
    p = context.new_page()
    p.set_default_timeout(60_000)
    p.goto(f"{static_url}/static/verifier/schemas.js")
    return p


def test_honest_fallbacks_when_cedar_cannot_run(
    browser: Any, static_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the engine cannot be used, the page never claims VERIFIED: NOT FULLY VERIFIED, the
    check "not checked here" with the reason; failures it can still establish keep their kind."""
    import base64

    monkeypatch.delenv("LINEAGE_TRUST_FILE", raising=False)

    # 1. the wasm does not load (here: 404): every bundle with policy sets is at best NOT FULLY
    # VERIFIED; the tamper classes that need no Cedar still fail with the CLI's kind
    page = _fallback_page(browser, static_url, None, block_wasm=True)
    names = ["genuine", "event-byte-flipped", "policy-set-missing", "legacy-v1-wf-0000"]
    results = {r["name"]: r for r in run_in_browser(page, [c for c in CASES if c["name"] in names])}
    page.context.close()
    assert results["genuine"]["cedar"].startswith("unavailable: cedar_wasm_bg.wasm: HTTP 404")
    genuine = dict(s.split(":") for s in results["genuine"]["statuses"])
    assert results["genuine"]["verdict"] == "NOT_FULLY_VERIFIED"
    assert genuine["policies"] == genuine["decisions.rerun"] == "not-checked"
    assert all("could not be loaded" in d for d in results["genuine"]["not_checked"])
    assert [results[n]["failure_kind"] for n in names[1:3]] == [
        "EVENT_DIGEST_MISMATCH",
        "POLICY_SET_MISSING",
    ]
    # a v1 bundle whose decisions predate recorded requests needs no Cedar: VERIFIED, as the CLI
    assert results["legacy-v1-wf-0000"]["verdict"] == "VERIFIED"

    # 2. a browser without JSON.rawJSON cannot hand Cedar a context integer beyond ±2^53 exactly
    ds = _lying_gates()
    registry = tmp_path / "registry.json"
    ds.registry.save(registry)
    path = tmp_path / "big-context.json"
    path.write_text(json.dumps(ds.bundle(ds.workflows[BIG_CONTEXT])))
    case = {
        "name": "big-context",
        "file": "",
        "path": str(path),
        "b64": base64.b64encode(path.read_bytes()).decode(),
        "registry": str(registry),
        "registry_doc": json.loads(registry.read_text()),
        "checkpoint_keys": [],
        "workflow": None,
    }
    page = _fallback_page(browser, static_url, "delete JSON.rawJSON;", block_wasm=False)
    b = run_in_browser(page, [case])[0]
    page.context.close()
    statuses = dict(s.split(":") for s in b["statuses"])
    assert (b["verdict"], statuses["decisions.rerun"]) == ("NOT_FULLY_VERIFIED", "not-checked"), b
    assert str(NOT_A_DOUBLE) in b["not_checked"][0] and "JSON.rawJSON" in b["not_checked"][0]
    assert _cli(case) == {"verdict": "VERIFIED", "exit_code": 0, "failure_kind": None}


# --- the policy engine in the page against lineage/policy.py, input by input --------------------
# Policy-set loading and request evaluation are where the browser depends on other code (smol-toml,
# cedar-wasm) than the CLI (tomllib, cedarpy); these feed both the same inputs, including edge cases
# of TOML and Cedar syntax, and compare the outcomes.

_TOML = b'[policy]\nid = "p"\nversion = "1"\n\n[limits]\nmax_depth = 8\nmax_fanout = 20\n'
_CEDAR = b'@id("allow-all")\npermit (principal, action, resource);\n'


def _toml_variants() -> list[bytes]:
    t = _TOML
    return [
        t,
        b"\xef\xbb\xbf" + t,  # a byte order mark
        t.replace(b"\n", b"\r\n"),
        b'policy.id = "p"\npolicy.version = "1"\nlimits = { max_depth = 8, max_fanout = 20 }\n',
        t.replace(b"max_depth = 8", b"max_depth = 0x10"),
        t.replace(b"max_depth = 8", b"max_depth = 1_000"),
        t.replace(b"max_depth = 8", b"max_depth = +5"),
        t.replace(b"max_depth = 8", b"max_depth = 8.0"),
        t.replace(b"max_depth = 8", b"max_depth = true"),
        t.replace(b"max_depth = 8", b"max_depth = 0"),
        t.replace(b"max_depth = 8", b"max_depth = 99999999999999999999999"),
        t.replace(b"max_depth = 8", b"max_depth = 1979-05-27"),
        t.replace(b"max_depth = 8\n", b""),
        t.replace(b'id = "p"', b"id = ''"),
        t.replace(b'id = "p"', b"id = 'p'"),
        t.replace(b'id = "p"', b'id = """p"""'),
        t.replace(b'id = "p"', b'id = "\\u00e9"'),
        t.replace(b'id = "p"', b'id = "p"\nid = "q"'),
        t + b"[limits]\n",
        t + b"[extra]\n",
        t + b"[policy.sub]\nx = 1\n",
        t + b"[__proto__]\n",
        t + b'[severity]\nFANOUT_EXCEEDED = "CRITICAL"\n',
        t + b'[severity]\nFANOUT_EXCEEDED = "SEVERE"\n',
        t + b'[severity]\nNOT_A_TYPE = "LOW"\n',
        t + b'[severity]\nconstructor = "LOW"\n',
        t + b"[containment]\ncritical_contains = false\n",
        t + b'[containment]\ncritical_contains = "no"\n',
        t.replace(
            b"max_fanout = 20",
            b'max_fanout = 20\nauthorization_required_for = ["RESOURCE_ACCESS", "ATTESTATION"]',
        ),
        t.replace(
            b"max_fanout = 20",
            b'max_fanout = 20\nauthorization_required_for = ["AUTHORIZATION_DECISION"]',
        ),
        t.replace(b"max_fanout = 20", b"max_fanout = 20\nauthorization_required_for = []"),
        t.replace(
            b"max_fanout = 20", b'max_fanout = 20\nauthorization_required_for = "EXECUTION_STARTED"'
        ),
        t + b'[attestation]\nrequired_for_agents = ["agent:*", ""]\n',
        t + b'[resources]\nforbidden = [\n  "a", # a comment\n  "b",\n]\n',
        t + b"[resources]\nforbidden = [1]\n",
        t + b'[[resources]]\nforbidden = ["a"]\n',
        t + b"# only a comment\n",
        t + b"x = \n",
        b"\xff" + t,
        b"",
        # TOML 1.0 corners, and TOML 1.1 additions tomllib (1.0) refuses
        t.replace(b'id = "p"', b'id = "p\x7f"'),
        t.replace(b'id = "p"', b'id = "p\x01"'),
        t.replace(b'id = "p"', b'id = "p" # comment \x01'),
        t.replace(b'id = "p"', b'id = "p" # comment'),
        t.replace(b'id = "p"', b'id = "\\U0001F600"'),
        t.replace(b'id = "p"', b'id = "\\x41"'),
        t.replace(b'id = "p"', b'id = "\\e"'),
        t.replace(b'id = "p"', b"id = '''\np'''"),
        t.replace(b'id = "p"', b'id = "p"\r'),
        t.replace(b"[policy]", b'["policy"]'),
        t.replace(b"[policy]", b"[ policy ]  "),
        t.replace(b"[policy]", b"[[policy]]"),
        t.replace(b"max_depth = 8", b"max_depth = 08"),
        t.replace(b"max_depth = 8", b"max_depth = 0o17"),
        t.replace(b"max_depth = 8", b"max_depth = 0b1"),
        t.replace(b"max_depth = 8", b"max_depth = inf"),
        t.replace(b"max_depth = 8", b"max_depth = 1e3"),
        t.replace(b"max_depth = 8", b"max_depth = 9223372036854775808"),
        t.replace(b"max_depth = 8", b"max_depth = 07:32"),
        b'[policy]\nid = "p"\nversion = "1"\nlimits = { max_depth = 8, max_fanout = 20, }\n',
        b'[policy]\nid = "p"\nversion = "1"\nlimits = {\n max_depth = 8,\n max_fanout = 20 }\n',
        b'policy = { id = "p", version = "1" }\n[limits]\nmax_depth = 8\nmax_fanout = 20\n',
        t + b"[policy.x]\n",
        b'[policy]\nid = "p"\nversion = "1"\n[limits]\nmax_depth = 8\nmax_fanout = 20\n[policy]\n',
        t.replace(b"[limits]", b"[limits]\n[limits.sub]"),
        # what the scan for TOML 1.1 escapes must not take for one, and must find
        t.replace(b'id = "p"', b"id = 'p\\x41'"),
        t.replace(b'id = "p"', b"id = '''p\\e'''"),
        t.replace(b'id = "p"', b'id = "p\\\\x41"'),
        t.replace(b'id = "p"', b'id = "p\\"\\x41"'),
        t.replace(b'id = "p"', b'id = """p""\\e"""'),
        t.replace(b'id = "p"', b'id = """p\\x41"""'),
        t.replace(b'id = "p"', b'id = """p"""" # \\x41'),
        t.replace(b'id = "p"', b'id = "p" # "\\x41"'),
        t.replace(b'id = "p"', b"id = '''p''''' # \"\\x41\""),
        t.replace(b"[policy]", b'["p\\x6flicy"]'),
    ]


def _cedar_variants() -> list[bytes]:
    c = _CEDAR
    return [
        c,
        b"\xef\xbb\xbf" + c,
        b"// nothing but a comment\n",
        b"",
        b'@id("a") forbid (principal, action, resource);\n',
        b"permit (principal, action, resource);\n",
        b"@id permit (principal, action, resource);\n",
        b'@id("") permit (principal, action, resource);\n',
        c + c,
        c + b'@id("t") permit (principal == ?principal, action, resource);\n',
        c + b'@id("b") @other("x") forbid (principal, action, resource) when { context.n > 1 };\n',
        c + b'@id("b") @id("c") forbid (principal, action, resource);\n',
        c + b'@id("b") forbid (principal, action, resource) when { principal.nope };\n',
        c + b'@id("b") forbid (principal, action, resource) when { unknownfn(1) };\n',
        c + b'@id("b") permit (principal, action, resource',
        c.replace(b"allow-all", "d\u00e9j\u00e0".encode()),
        c + b"\xff",
    ]


_LOAD = """
async (variants) => {
  const p = await import("/static/verifier/policy.js");
  const cedar = await p.loadCedar();
  const b = (s) => Uint8Array.from(atob(s), (x) => x.charCodeAt(0));
  return variants.map(([t, c], k) => {
    try {
      const set = p.loadPolicySet(b(t), b(c), cedar.engine, "v" + k, "v" + k);
      return [true, set.cedarIds];
    } catch (e) {
      if (e instanceof p.PolicyConfigError) return [false, e.message];
      return [false, "UNEXPECTED " + e];
    }
  });
}
"""


def test_policy_sets_load_in_the_browser_exactly_when_they_load_in_the_cli(
    verifier_page: Any,
) -> None:
    import base64

    from lineage.errors import ConfigError
    from lineage.policy import PolicySet

    variants = [(t, _CEDAR) for t in _toml_variants()] + [(_TOML, c) for c in _cedar_variants()]
    browser = verifier_page.evaluate(
        _LOAD,
        [[base64.b64encode(t).decode(), base64.b64encode(c).decode()] for t, c in variants],
    )
    differ = []
    loads = 0
    for (toml, cedar), (ok, what) in zip(variants, browser, strict=True):
        try:
            cli: Any = (True, list(PolicySet.parse(toml, cedar).cedar_policy_ids))
        except ConfigError as exc:
            cli = (False, str(exc))
        loads += cli[0]
        assert not str(what).startswith("UNEXPECTED"), what
        if ok != cli[0] or (ok and what != cli[1]):
            differ.append(f"{toml!r} / {cedar!r}: browser {ok} ({what}), CLI {cli}")
    assert not differ, "\n".join(differ)
    assert 0 < loads < len(variants)  # both outcomes are exercised


_EVALUATE = """
async ([cedarText, requests]) => {
  const p = await import("/static/verifier/policy.js");
  const cedar = await p.loadCedar();
  const toml = new TextEncoder().encode('[policy]\\nid = "p"\\nversion = "1"\\n[limits]\\nmax_depth = 1\\nmax_fanout = 1\\n');
  const set = p.loadPolicySet(toml, new TextEncoder().encode(cedarText), cedar.engine, "e", "eval-" + cedarText.length);
  return requests.map((r) => {
    const context = Object.create(null);
    for (const [k, v] of Object.entries(r.context)) context[k] = typeof v === "number" ? BigInt(v) : v;
    try {
      const d = p.evaluate(set, { ...r, context });
      return [d.decision, d.determining];
    } catch (e) {
      return [e instanceof p.PolicyEvaluationError ? "ERROR" : "UNEXPECTED " + e, []];
    }
  });
}
"""

_EVAL_CEDAR = """
@id("tools") permit (principal is Agent, action in Action::"tool.call", resource);
@id("zebra") permit (principal, action == Action::"read", resource) when { resource.system == "docs" };
@id("\u00e9t\u00e9") permit (principal, action == Action::"read", resource) when { resource.path like "a*" };
@id("\U0001f600") permit (principal, action == Action::"read", resource) when { resource.path like "ab*" };
@id("\uffee") permit (principal, action == Action::"read", resource) when { resource.path like "abc*" };
@id("no-secrets") forbid (principal, action, resource in Resource::"secrets");
@id("needs-n") forbid (principal, action == Action::"count", resource) unless { context.n < 3 };
@id("none") permit (principal, action == Action::"ping", resource == Resource::"none")
  when { resource.system == "none" && resource.path == "" };
"""


def test_decisions_in_the_browser_are_the_clis_decisions(verifier_page: Any) -> None:
    from lineage.policy import PolicyEvaluationError, PolicySet, evaluate

    requests: list[dict[str, Any]] = [
        {"principal": "agent:a", "action": "tool.call:search", "resource": "web:x", "context": {}},
        {"principal": "agent:a", "action": "tool.call", "resource": "web:x", "context": {}},
        {"principal": "agent:a", "action": "tool.call:x", "resource": "secrets:k", "context": {}},
        {"principal": "agent:a", "action": "read", "resource": "docs:abcd", "context": {}},
        {"principal": "agent:a", "action": "read", "resource": "docs:b", "context": {}},
        {"principal": "agent:a", "action": "read", "resource": "web:abc", "context": {}},
        {"principal": "agent:a", "action": "read", "resource": "docs", "context": {}},
        {"principal": "agent:a", "action": "read", "resource": ":abc", "context": {}},
        {"principal": "agent:a", "action": ":read", "resource": "docs:a", "context": {}},
        {"principal": "agent:a", "action": "ping", "resource": None, "context": {}},
        {"principal": "agent:a", "action": "ping", "resource": "none", "context": {}},
        {"principal": "agent:a", "action": "count", "resource": "c:d", "context": {"n": 2}},
        {"principal": "agent:a", "action": "count", "resource": "c:d", "context": {"n": 3}},
        {"principal": "agent:a", "action": "count", "resource": "c:d", "context": {}},
        {"principal": "agent:a", "action": "count", "resource": "c:d", "context": {"n": "2"}},
        {"principal": "agent:a", "action": "count", "resource": "c:d", "context": {"n": True}},
        {"principal": "agent:a", "action": "count", "resource": "c:d", "context": {"n": -(2**53)}},
        {
            "principal": '\u00e9\U0001f600\n"',
            "action": "read",
            "resource": "docs:\u00e9",
            "context": {"__proto__": 1},
        },
    ]
    browser = verifier_page.evaluate(_EVALUATE, [_EVAL_CEDAR, requests])
    policy = PolicySet.parse(
        b'[policy]\nid = "p"\nversion = "1"\n[limits]\nmax_depth = 1\nmax_fanout = 1\n',
        _EVAL_CEDAR.encode(),
    )
    differ = []
    for request, got in zip(requests, browser, strict=True):
        try:
            d = evaluate(policy, **request)
            cli: list[Any] = [d.decision.value, list(d.determining_policies)]
        except PolicyEvaluationError:
            cli = ["ERROR", []]
        if got != cli:
            differ.append(f"{request}: browser {got}, CLI {cli}")
    assert not differ, "\n".join(differ)
    # the sorted @ids of several determining policies: Python sorts by code point
    assert browser[3] == ["ALLOW", ["zebra", "\u00e9t\u00e9", "\uffee", "\U0001f600"]]


def test_policy_files_base64_is_read_as_python_reads_it(verifier_page: Any) -> None:
    """The policies member is read with Python's b64decode(validate=True) (binascii strict mode),
    more lenient than canonical base64 in two ways; the page reads it the same way."""
    import base64
    import binascii

    texts = [
        "YWJj==",
        "YWJj=",
        "YQ",
        "YQ=",
        "YQ==",
        "YR==",
        "YWJjZA=",
        "YWJjZA==",
        "",
        "=",
        "==",
        "YWJ=",
        "YWI=",
        "YWJjZ",
        "YWJjZ==",
        "Y",
        "YQ==YQ==",
        "YWJjZA==a",
        "YQ=a",
        "YW Jj",
        "YWJj\n",
        "YQ==\n",
        "YW-j",
        "YWJ\u00e9",
        "////",
        "+/+/",
        "YQ===",
        "YWJjYQ==",
        base64.b64encode(bytes(range(256))).decode(),
    ]
    browser = verifier_page.evaluate(
        """async (texts) => { const m = await import("/static/verifier/index.js");
             return texts.map((t) => { const b = m.pyB64decode(t); return b === null ? null : Array.from(b); }); }""",
        texts,
    )
    for text, got in zip(texts, browser, strict=True):
        try:
            want: Any = list(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError):
            want = None
        assert got == want, (text, got, want)


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
        f"{result['ms'] / 1000:.1f} s ({result['verdict']}; {result['rerun']}), "
        f"CLI {cli_s:.1f} s ({cli['verdict']})"
    )
    assert result["error"] is None, result["error"]
    assert (result["verdict"], cli["verdict"]) == ("VERIFIED", "VERIFIED"), (result, cli)
    statuses = dict(s.split(":") for s in result["statuses"])
    assert statuses["decisions.rerun"] == "pass"
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

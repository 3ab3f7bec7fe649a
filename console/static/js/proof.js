import { verify, verdict, outcome, loadCedar } from "/static/verifier/index.js";

// Everything taken from a bundle or a registry reaches the DOM through textContent only (L.el's
// "text" and text children), never innerHTML.
const $ = (id) => document.getElementById(id);
let bundleBytes = null, registry = null, registryIndependent = true;

function loaded(bytes, source) {
  bundleBytes = bytes;
  const info = L.clear($("bundle-info"));
  try {
    const doc = JSON.parse(new TextDecoder().decode(bytes));
    info.append(L.kv([["source", source], ["size", `${bytes.length} bytes`], ["format", String(doc.format || "")], ["workflow (as claimed)", String(doc.workflow_id || "")],
      ["entries (as claimed)", String(doc.entry_count ?? "")], ["logs", Array.isArray(doc.logs) ? doc.logs.length : ""]]));
    info.append(L.el("p", { class: "muted", text: "These values are what the bundle claims; only the checks below can establish them." }));
  } catch (err) { info.append(L.kv([["source", source], ["size", `${bytes.length} bytes`]]), L.el("p", { class: "notice bad", text: `not JSON: ${err.message}` })); }
  $("verify").disabled = false;
  L.clear(document.querySelector("#checks tbody"));
  L.clear($("verdict")); L.clear($("verdict-meaning"));
  delete document.body.dataset.verdict;
  document.body.dataset.bundle = "1";
}
async function readFile(file) { loaded(new Uint8Array(await file.arrayBuffer()), `file ${file.name} (read locally, not uploaded)`); }
$("file").addEventListener("change", (e) => { if (e.target.files[0]) readFile(e.target.files[0]); });
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); if (e.dataTransfer.files[0]) readFile(e.dataTransfer.files[0]); });
$("by-id").addEventListener("submit", async (e) => {
  e.preventDefault();
  const id = $("workflow").value.trim();
  if (!id) return;
  const r = await fetch("/api/workflows/" + encodeURIComponent(id).replace(/%2F/g, "/") + "/bundle", { credentials: "same-origin" });
  if (!r.ok) { L.clear($("bundle-info")).append(L.el("p", { class: "notice bad", text: `HTTP ${r.status}: ${(await r.text()).slice(0, 300)}` })); return; }
  loaded(new Uint8Array(await r.arrayBuffer()), `this system, workflow ${id}`);
});
function pin(doc, source, independent) {
  registry = doc;
  registryIndependent = independent;
  const n = doc && Array.isArray(doc.keys) ? doc.keys.length : "?";
  L.clear($("pinned")).append(L.el("span", { text: `pinned: ${source} (${n} keys)${independent ? "" : " — the operator's own registry, not independent"}` }));
  document.body.dataset.pinned = "1";
}
$("registry-file").addEventListener("change", async (e) => {
  const f = e.target.files[0];
  if (!f) return;
  try { pin(JSON.parse(await f.text()), `file ${f.name}`, true); } catch (err) { L.clear($("pinned")).append(L.el("span", { class: "notice bad", text: `not JSON: ${err.message}` })); }
});
$("registry-console").addEventListener("click", async () => pin(await L.api("/api/public/registry.json"), "this console's published registry", false));

const lines = (id) => $(id).value.split("\n").map((s) => s.trim()).filter(Boolean);
const MEANING = {
  VERIFIED: () => "Every check passed with keys you pinned: what `lineage verify` reports as VERIFIED (exit code 0).",
  FAILED: (o) => `An integrity check failed (${o.failureKind}): what \`lineage verify\` reports as FAILED (exit code 1). The failed check says exactly what.`,
  UNUSABLE_INPUT: () => "The input cannot be checked: what `lineage verify` reports as UNUSABLE_INPUT (exit code 2).",
  CONSISTENT_BUT_UNTRUSTED: () => "Consistent, but only under keys you did not name independently (the bundle's own, or the operator's registry): CONSISTENT_BUT_UNTRUSTED (exit code 3). A forger can reach this.",
  NOT_FULLY_VERIFIED: () => "Every check this page could run passed, but a check marked “not checked here” could not run in this browser (see its row): this is not a VERIFIED verdict. Run `lineage verify` for it.",
};
const BADGE = { pass: "ok", warn: "warn", fail: "bad", untrusted: "warn", "not-checked": "warn", skipped: "neutral" };
$("verify").addEventListener("click", async () => {
  const trust = {
    registry,
    independent: registryIndependent,
    checkpointKeys: lines("vkeys"),
    witnessKeys: lines("wkeys"),
    witnessesRequired: Number($("wrequired").value || 1),
    workflow: $("expect").value.trim() || null,
  };
  const body = L.clear(document.querySelector("#checks tbody"));
  let checks;
  try { checks = await verify(bundleBytes, trust); } catch (err) { checks = [{ id: "verifier.error", title: "verifier", status: "fail", failureKind: "UNUSABLE_INPUT", detail: `the verifier stopped: ${String(err.message || err)}` }]; }
  for (const c of checks) {
    const detail = L.el("td", { class: "wrap" });
    if (c.failureKind) detail.append(L.el("strong", { text: c.failureKind }), ": ");
    detail.append(c.detail);
    body.append(L.el("tr", { class: "check", dataset: { status: c.status, id: c.id } }, L.td(c.title, "wrap"), L.el("td", {}, L.badge(c.status, BADGE[c.status] || "neutral")), detail));
  }
  const o = outcome(checks);
  const v = verdict(checks);
  L.clear($("verdict")).append(L.badge(v.toUpperCase(), o.verdict === "VERIFIED" ? "ok" : o.exitCode === 1 || o.exitCode === 2 ? "bad" : "warn"));
  L.clear($("verdict-meaning")).append(MEANING[o.verdict](o));
  document.body.dataset.verdict = v;
  document.body.dataset.failureKind = o.failureKind || "";
});
const wanted = new URLSearchParams(location.search).get("workflow");
if (wanted) $("workflow").value = wanted;
// The Cedar engine (WebAssembly) is fetched once, now, so verifying a file later sends nothing
const engine = await loadCedar();
const engineInfo = L.clear($("engine"));
if (engine.ok) engineInfo.append(L.el("span", { text: `Cedar ${engine.version} loaded (the official WebAssembly build, @cedar-policy/cedar-wasm): recorded decisions are re-run here.` }));
else engineInfo.append(L.el("span", { class: "notice bad", text: `The Cedar engine could not be loaded in this browser (${engine.reason}): recorded decisions cannot be re-run here, so bundles that carry them are at best “not fully verified”.` }));
document.body.dataset.cedar = engine.ok ? engine.version : "unavailable";
document.body.dataset.ready = "1";

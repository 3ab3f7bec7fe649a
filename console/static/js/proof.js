import { verify, verdict } from "/static/verifier/index.js";

const $ = (id) => document.getElementById(id);
let bundleBytes = null, registry = null;

function loaded(bytes, source) {
  bundleBytes = bytes;
  const info = L.clear($("bundle-info"));
  try {
    const doc = JSON.parse(new TextDecoder().decode(bytes));
    info.append(L.kv([["source", source], ["size", `${bytes.length} bytes`], ["format", String(doc.format || "")], ["workflow (as claimed)", String(doc.workflow_id || "")],
      ["entries (as claimed)", String(doc.entry_count ?? "")], ["logs", Array.isArray(doc.logs) ? doc.logs.length : ""]]));
    info.append(L.el("p", { class: "muted", text: "These values are what the bundle claims; only the checks below can establish them." }));
  } catch (err) { info.append(L.el("p", { class: "notice bad", text: `not JSON: ${err.message}` })); }
  $("verify").disabled = false;
  document.body.dataset.bundle = "1";
}
async function readFile(file) { loaded(new Uint8Array(await file.arrayBuffer()), `file ${file.name}`); }
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
function pin(doc, source) {
  registry = doc;
  const n = doc && Array.isArray(doc.keys) ? doc.keys.length : "?";
  L.clear($("pinned")).append(L.el("span", { text: `pinned: ${source} (${n} keys)` }));
  document.body.dataset.pinned = "1";
}
$("registry-file").addEventListener("change", async (e) => {
  const f = e.target.files[0];
  if (!f) return;
  try { pin(JSON.parse(await f.text()), `file ${f.name}`); } catch (err) { L.clear($("pinned")).append(L.el("span", { class: "notice bad", text: `not JSON: ${err.message}` })); }
});
$("registry-console").addEventListener("click", async () => pin(await L.api("/api/public/registry.json"), "this console's published registry"));
$("verify").addEventListener("click", async () => {
  const trust = { registry, checkpointKeys: $("vkeys").value.split("\n").map((s) => s.trim()).filter(Boolean) };
  const body = L.clear(document.querySelector("#checks tbody"));
  let checks;
  try { checks = await verify(bundleBytes, trust); } catch (err) { checks = [{ id: "verifier.error", title: "verifier", status: "fail", detail: String(err.message || err) }]; }
  for (const c of checks) {
    const kind = c.status === "pass" ? "ok" : c.status === "fail" ? "bad" : "warn";
    body.append(L.el("tr", { class: "check", dataset: { status: c.status, id: c.id } }, L.td(c.title), L.el("td", {}, L.badge(c.status, kind)),
      L.td((c.failureKind ? c.failureKind + ": " : "") + c.detail, "wrap")));
  }
  const v = verdict(checks);
  L.clear($("verdict")).append(L.badge(v.toUpperCase(), v === "verified" ? "ok" : "bad"));
  document.body.dataset.verdict = v;
});
const wanted = new URLSearchParams(location.search).get("workflow");
if (wanted) $("workflow").value = wanted;
document.body.dataset.ready = "1";

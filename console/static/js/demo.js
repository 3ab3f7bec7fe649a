"use strict";
(() => {
  let wf = null, lastN = 0, misbehavedAt = null;
  const $ = (id) => document.getElementById(id);
  function badgeFor(d) { return L.badge(d, d === "ALLOW" ? "ok" : d === "DENY" || d === "REFUSED" ? "bad" : "neutral"); }
  function addLog(i) {
    const what = i.kind === "step" ? "agent step" : i.kind;
    const decision = i.decision || i.status || (i.kind === "misbehaviour" ? "UNGATED" : "");
    const target = i.action ? `${i.action} on ${i.resource}` : (i.workflow_id || "");
    const detail = i.reason || i.explanation || (i.policies ? `policies: ${i.policies.join(", ")}` : "") || (i.events ? `${i.events} events, ${i.workflows} workflows` : "") || i.error || "";
    $("log").querySelector("tbody").prepend(L.el("tr", { class: "log-item", dataset: { kind: i.kind, decision } }, L.td(new Date(i.at * 1000).toISOString().slice(11, 19)), L.td(what),
      L.el("td", {}, decision ? badgeFor(decision) : ""), L.td(target), L.td(detail + (i.ms != null ? ` (${i.ms} ms)` : ""), "wrap")));
  }
  async function poll() {
    try {
      const r = await L.api("/api/demo/log?since=" + lastN);
      for (const i of r.items) { lastN = Math.max(lastN, i.n); addLog(i); }
      $("scenario").disabled = r.running || !r.enabled;
    } catch (err) { /* shown on action */ }
  }
  async function act(path, json) {
    try { const r = await L.api(path, { json: json || {} }); await poll(); return r; }
    catch (err) { $("latency").textContent = String(err.message); throw err; }
  }
  $("scenario").addEventListener("click", () => act("/api/demo/scenario", { events: +$("sc-events").value, workflows: +$("sc-workflows").value }));
  $("start").addEventListener("click", async () => {
    wf = await act("/api/demo/workflow");
    $("current").textContent = wf.workflow_id;
    $("step").disabled = false; $("misbehave").disabled = false;
    $("open-explorer").href = "/explorer/workflow?id=" + encodeURIComponent(wf.workflow_id);
    $("open-proof").href = "/proof?workflow=" + encodeURIComponent(wf.workflow_id);
    document.body.dataset.workflow = wf.workflow_id;
  });
  $("step").addEventListener("click", () => {
    const [action, resource] = $("step-target").value.split("|");
    return act("/api/demo/step", { workflow_id: wf.workflow_id, root_event_id: wf.root_event_id, action, resource });
  });
  $("misbehave").addEventListener("click", async () => {
    misbehavedAt = performance.now();
    $("latency").textContent = "waiting for the alert…";
    await act("/api/demo/misbehave", { workflow_id: wf.workflow_id, root_event_id: wf.root_event_id, how: $("how").value });
  });
  const es = new EventSource("/api/stream");
  es.addEventListener("snapshot", () => { $("alert-status").textContent = "live (server-sent events)"; document.body.dataset.live = "1"; });
  function onAlert(e) {
    const a = JSON.parse(e.data);
    const mine = wf && a.workflow_id === wf.workflow_id;
    const li = L.el("li", { class: "alert-item", dataset: { kind: a.kind, type: a.violation_type, mine: mine ? "1" : "0" } },
      L.badge(a.kind === "containment" ? "CONTAINED" : a.violation_type, a.kind === "containment" || a.severity === "CRITICAL" ? "bad" : "warn"), " ",
      L.el("span", { class: "mono", text: L.short(a.workflow_id, 60) }), " ", L.el("span", { class: "muted", text: L.short(a.explanation, 200) }));
    $("alerts").prepend(li);
    while ($("alerts").children.length > 200) $("alerts").lastChild.remove();
    if (mine && misbehavedAt !== null && a.kind === "violation") {
      const ms = Math.round(performance.now() - misbehavedAt);
      $("latency").textContent = `alert ${a.violation_type} arrived ${ms} ms after the click`;
      document.body.dataset.alertMs = String(ms);
      misbehavedAt = null;
    }
    if (mine && a.kind === "containment") document.body.dataset.contained = "1";
  }
  es.addEventListener("violation", onAlert);
  es.addEventListener("containment", onAlert);
  es.onerror = () => { $("alert-status").textContent = "disconnected; retrying…"; };
  poll(); setInterval(poll, 1500);
  document.body.dataset.ready = "1";
})();

"use strict";
(() => {
  const t0 = performance.now();
  const wid = document.getElementById("wf").dataset.workflow;
  const enc = encodeURIComponent(wid).replace(/%2F/g, "/");
  const base = "/api/workflows/" + enc;
  const PAGE = 100, TPAGE = 50;
  let gOffset = 0, tOffset = 0, tShown = 0, total = 0, cy = null;
  window.cytoscape.use(window.cytoscapeDagre);

  function summary(w) {
    const box = L.clear(document.getElementById("summary"));
    const v = w.violations.map((x) => L.badge(`${x.violation_type} ×${x.count}`, x.severity === "CRITICAL" ? "bad" : "warn"));
    const dl = L.el("a", { href: base + "/bundle", download: "", id: "bundle", text: "⬇ evidence bundle" });
    const verify = L.el("a", { href: "/proof?workflow=" + encodeURIComponent(wid), text: "verify in the Proof Viewer" });
    const links = [];
    if (w.parent_workflow_id) links.push("parent: ", L.el("a", { href: "/explorer/workflow?id=" + encodeURIComponent(w.parent_workflow_id), text: w.parent_workflow_id }));
    const kids = w.children.map((c) => L.el("a", { href: "/explorer/workflow?id=" + encodeURIComponent(c.workflow_id), text: `${c.workflow_id} (${c.events})`, class: "mono" }));
    box.append(
      L.el("div", { class: "row" }, w.contained ? L.badge("contained", "bad") : (w.violations.length ? L.badge("violations", "warn") : L.badge("no violations", "ok")),
        L.badge(w.completed ? "completed" : "open", "neutral"), dl, " · ", verify),
      L.kv([["events", w.events], ["span (UTC)", `${L.time(w.started_at)} … ${L.time(w.ended_at)}`], ["principals", w.principals.join(", ")],
        ["agents", w.agents.join(", ")], ["systems", w.systems.join(", ")], ["partitions", w.partitions.join(", ")],
        ["violations", L.el("span", {}, v.length ? v : "none")], ["workflows", L.el("span", {}, links, kids.length ? [" sub-workflows: ", ...kids.flatMap((k) => [k, " "])] : "")]]));
  }

  function nodeLabel(n) {
    if (n.type === "child_workflow") return `sub-workflow\n${L.short(n.workflow_id, 34)}\n${n.events} events`;
    if (n.type === "parent_workflow") return `parent workflow\n${L.short(n.workflow_id, 34)}`;
    if (n.type === "outside") return `… earlier: ${n.kind || "event"}\n${L.short(n.action || "", 30)}${n.chain_seq != null ? " #" + n.chain_seq : ""}`;
    const lines = [`#${n.chain_seq} ${n.kind}`, L.short(n.actor, 30), L.short(n.action, 30)];
    if (n.resource) lines.push(L.short(n.resource, 30));
    if (n.decision) lines.push(n.decision);
    if (n.attestation) lines.push("attested: " + L.short(n.attestation, 20));
    if (n.events.length > 1) lines.push(`${n.events.length} events`);
    if (n.violations.length) lines.push("⚠ " + L.short([...new Set(n.violations)].join(","), 30));
    return lines.join("\n");
  }

  async function loadGraph() {
    const started = performance.now();
    const detail = document.getElementById("detail").value;
    const g = await L.api(`${base}/graph?offset=${gOffset}&limit=${PAGE}&detail=${detail}`);
    total = g.total_events;
    const elements = [];
    for (const n of g.nodes) {
      const cls = [n.type];
      if (n.violations && n.violations.length) cls.push("violation");
      if (n.contained) cls.push("contained");
      if (n.decision === "DENY") cls.push("deny");
      elements.push({ data: { id: n.id, label: nodeLabel(n), raw: n }, classes: cls.join(" ") });
    }
    for (const e of g.edges) elements.push({ data: { id: e.source + "->" + e.target, source: e.source, target: e.target } });
    if (cy) cy.destroy();
    cy = window.cytoscape({
      container: document.getElementById("cy"), elements, wheelSensitivity: 0.3,
      textureOnViewport: true, hideEdgesOnViewport: elements.length > 400, minZoom: 0.05,
      style: [
        { selector: "node", style: { shape: "round-rectangle", "background-color": "#1c2733", "border-width": 1, "border-color": "#3b4b5c", label: "data(label)", color: "#e6edf3", "font-size": 11, "text-wrap": "wrap", "text-max-width": 180, "text-valign": "center", width: 190, height: 70, padding: 4, "min-zoomed-font-size": 4 } },
        { selector: "node.violation", style: { "border-color": "#e5534b", "border-width": 3 } },
        { selector: "node.deny", style: { "background-color": "#3b1d1d" } },
        { selector: "node.contained", style: { "background-color": "#3a2150" } },
        { selector: "node.outside, node.parent_workflow, node.child_workflow", style: { "border-style": "dashed", "background-color": "#121a22" } },
        { selector: "node:selected", style: { "border-color": "#58a6ff", "border-width": 3 } },
        { selector: "edge", style: { width: 1, "line-color": "#4b5c6e", "target-arrow-color": "#4b5c6e", "target-arrow-shape": "triangle", "curve-style": "bezier", "arrow-scale": 0.7 } },
      ],
      layout: { name: "dagre", rankDir: "LR", nodeSep: 8, rankSep: 40, animate: false },
    });
    if (cy.zoom() < 0.6) {  // keep labels readable: start at the root, pan/zoom for the rest
      const root = cy.nodes().roots().first();
      cy.zoom(0.6);
      cy.center(root.length ? root : cy.nodes().first());
      cy.panBy({ x: -(cy.width() / 2 - 130), y: 0 });
    }
    cy.on("tap", "node", (ev) => select(ev.target.data("raw")));
    window.lineageGraph = cy;
    const pages = Math.max(1, Math.ceil(total / PAGE));
    document.getElementById("g-page").textContent = `events ${gOffset + 1}–${gOffset + g.page_events} of ${total} (page ${Math.floor(gOffset / PAGE) + 1}/${pages}, ${g.nodes.length} nodes)`;
    document.getElementById("g-prev").disabled = gOffset === 0;
    document.getElementById("g-next").disabled = gOffset + PAGE >= total;
    document.getElementById("g-time").textContent = `drawn in ${Math.round(performance.now() - started)} ms`;
    return g;
  }

  async function select(n) {
    const box = L.clear(document.getElementById("details"));
    if (n.type === "child_workflow" || n.type === "parent_workflow") { location.href = "/explorer/workflow?id=" + encodeURIComponent(n.workflow_id); return; }
    const id = n.type === "outside" ? n.event_id : n.events[0];
    box.append(L.el("h2", { text: "Event" }));
    if (n.events && n.events.length > 1) {
      const pick = L.el("div", { class: "row" }, "events in this node: ", n.events.map((e) => L.el("button", { class: "secondary", type: "button", text: L.short(e, 12), title: e, onclick: () => show(e) })));
      box.append(pick);
    }
    const holder = L.el("div", { id: "event-detail" });
    box.append(holder);
    async function show(eid) {
      L.clear(holder).append(L.el("p", { class: "muted", text: "loading…" }));
      try { renderEvent(L.clear(holder), await L.api("/api/events/" + encodeURIComponent(eid))); } catch (err) { L.showError(holder, err); }
    }
    await show(id);
  }

  function renderEvent(box, e) {
    const d = e.decoded || {};
    box.append(L.el("h2", { text: `${d.kind || ""} #${e.chain_seq}` }));
    box.append(L.kv([["event id", e.event_id], ["time (UTC)", typeof d.event_time === "number" ? new Date(d.event_time / 1000).toISOString() : d.event_time], ["principal", d.principal], ["agent", d.agent_id || ""], ["action", d.action], ["resource", d.resource || ""],
      ["parent event", d.parent_event_id || ""], ["parent workflow", d.parent_workflow_id || ""], ["emitter", `${e.emitter_id} #${e.emitter_seq}`],
      ["verification", e.verification], ["flags", (e.flags || []).join(", ")]]));
    if (e.violations.length) {
      box.append(L.el("h2", { text: "Violations" }));
      for (const v of e.violations) box.append(L.el("p", { class: "notice bad wrap" }, L.el("strong", { text: `${v.violation_type} (${v.severity}) ` }), v.explanation));
    }
    box.append(L.el("h2", { text: "Authorization lineage" }));
    const a = e.authorization;
    if (!a) box.append(L.el("p", { class: "muted", text: "no authorization referenced" }));
    else if (a.missing) box.append(L.el("p", { class: "notice bad", text: `referenced decision ${a.event_id} is not in the store` }));
    else box.append(L.kv([["decision", a.decision], ["decision event", a.event_id], ["policy", a.auth_policy_id], ["policy digest", a.auth_policy_digest],
      ["determining", (a.determining_policies || []).join(", ")], ["expires", a.expires_at || ""], ["recorded by", a.emitter_id],
      ["signing key", a.signing_key_id || ""], ["key subject / role", a.signing_key ? `${a.signing_key.subject} / ${a.signing_key.role} (${a.signing_key.status})` : "not in the registry"]]));
    box.append(L.el("h2", { text: "Hashes" }));
    const s = e.seal || {};
    box.append(L.kv([["event digest", e.event_digest], ["entry hash", e.entry_hash], ["prev hash", e.prev_hash], ["policy digest", e.policy_digest],
      ["log", `partition ${e.source_partition}, index ${e.log_index}`], ["source offset", e.source_offset],
      ["seal", `${s.emitter_id || ""} seq ${s.first_seq}…${s.last_seq}, key ${s.key_id || ""}`], ["seal root", s.merkle_root || ""], ["seal signature", s.signature || ""], ["seal index", e.seal_index]]));
    box.append(L.el("h2", { text: "Decoded event" }));
    box.append(L.el("pre", { text: JSON.stringify(d, null, 1) }));
  }

  async function loadEvents(given) {
    const r = given ? { events: given } : await L.api(`${base}/events?offset=${tOffset}&limit=${TPAGE}`);
    const body = L.clear(document.querySelector("#events tbody"));
    for (const e of r.events) {
      const tr = L.el("tr", { class: "clickable" }, L.td(e.chain_seq), L.td(L.time(e.event_time)), L.td(e.kind), L.td(e.agent_id || e.principal),
        L.td(e.action), L.td(e.resource), L.td(e.decision), L.td((e.flags || []).join(",")));
      tr.addEventListener("click", () => select({ type: "event", events: [e.event_id] }));
      body.append(tr);
    }
    tShown = r.events.length;
    tPager();
  }
  function tPager() {
    document.getElementById("t-page").textContent = `${tOffset + 1}–${tOffset + tShown} of ${total || "…"}`;
    document.getElementById("t-prev").disabled = tOffset === 0;
    document.getElementById("t-next").disabled = !total || tOffset + TPAGE >= total;
  }

  async function loadTimeline() {
    const t = await L.api(`${base}/timeline?bins=80`);
    const box = L.clear(document.getElementById("timeline"));
    new window.uPlot({ width: Math.max(300, box.clientWidth), height: 180, scales: { x: { time: true } },
      axes: [{ stroke: "#8b98a5", grid: { stroke: "#2a3642" } }, { stroke: "#8b98a5", grid: { stroke: "#2a3642" } }],
      series: [{}, { label: "events", stroke: "#58a6ff" }, { label: "ALLOW", stroke: "#2ea043" }, { label: "DENY", stroke: "#e5534b" }] },
      [t.t, t.events, t.allowed, t.denied], box);
  }

  document.getElementById("g-prev").addEventListener("click", () => { gOffset = Math.max(0, gOffset - PAGE); loadGraph(); });
  document.getElementById("g-next").addEventListener("click", () => { gOffset += PAGE; loadGraph(); });
  document.getElementById("detail").addEventListener("change", () => { gOffset = 0; loadGraph(); });
  document.getElementById("t-prev").addEventListener("click", () => { tOffset = Math.max(0, tOffset - TPAGE); loadEvents(); });
  document.getElementById("t-next").addEventListener("click", () => { tOffset += TPAGE; loadEvents(); });

  // The graph and the event table make the page usable; the timeline plot follows on its own.
  const summaryDone = L.api(base).then(summary);
  // The graph's page already holds the table's first rows: one request fewer on the way in.
  const firstPage = loadGraph().then((g) => loadEvents(g.events.slice(0, TPAGE)));
  Promise.all([firstPage, summaryDone]).then(() => {
    tPager();
    document.body.dataset.interactiveMs = String(Math.round(performance.now()));
    document.body.dataset.ready = "1";
    return loadTimeline();
  }).then(() => { document.body.dataset.timeline = "1"; })
    .catch((err) => { L.showError(document.getElementById("summary"), err); document.body.dataset.ready = "error"; });
})();

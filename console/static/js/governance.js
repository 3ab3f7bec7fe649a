"use strict";
(() => {
  const totals = {};
  const perMinute = new Map();
  let plot = null;

  async function policies() {
    const box = document.getElementById("policies");
    try {
      const r = await L.api("/api/public/policies");
      for (const p of r.in_force) {
        box.append(L.kv([["policy id", p.policy_id], ["version", p.version], ["digest", p.digest], ["Cedar policy ids", p.cedar_policy_ids.join(", ")],
          ["forbidden resources", p.forbidden_resources.join(", ")], ["limits", `depth ≤ ${p.max_depth}, fan-out ≤ ${p.max_fanout}`], ["critical contains", String(p.critical_contains)]]));
        box.append(L.el("pre", { class: "cedar", text: p.cedar_text }));
      }
      if (r.seen_in_decisions.length) {
        box.append(L.el("h2", { text: "Policy digests recorded in decisions" }));
        const t = L.el("table", {}, L.el("thead", {}, L.el("tr", {}, L.el("th", { text: "policy" }), L.el("th", { text: "digest" }), L.el("th", { text: "decisions" }))));
        const tb = L.el("tbody");
        for (const s of r.seen_in_decisions) tb.append(L.el("tr", {}, L.td(s.policy_id), L.td(s.digest), L.td(s.decisions)));
        t.append(tb); box.append(t);
      }
    } catch (err) { L.showError(box, err); }
  }
  async function keys() {
    const body = document.querySelector("#keys tbody");
    try {
      const r = await L.api("/api/public/keys");
      for (const k of r.keys) {
        const st = k.revoked_at ? L.badge(`revoked ${k.revoked_at}: ${k.revocation_reason || ""}`, "bad") : L.badge(k.status, k.status === "active" ? "ok" : "warn");
        body.append(L.el("tr", {}, L.td(k.subject), L.td(k.role), L.td(k.key_id), L.td(k.not_before), L.td(k.not_after || "—"), L.el("td", {}, st)));
      }
    } catch (err) { L.showError(body, err); }
  }
  async function checkpoints() {
    const box = document.getElementById("checkpoints");
    try {
      const r = await L.api("/api/public/checkpoints");
      if (!r.checkpoints.length) box.append(L.el("p", { class: "muted", text: "no checkpoint yet" }));
      for (const c of r.checkpoints) {
        box.append(L.el("h2", { text: `partition ${c.partition}: tree size ${c.tree_size}` }));
        box.append(L.el("pre", { class: "note", text: c.note }));
      }
    } catch (err) { L.showError(box, err); }
  }
  async function hourly() {
    const body = document.querySelector("#hourly tbody");
    try {
      const r = await L.api("/api/public/violations/counts?hours=24");
      const by = {};
      for (const h of r.hourly) by[h.violation_type] = (by[h.violation_type] || 0) + h.count;
      for (const [t, n] of Object.entries(by).sort()) body.append(L.el("tr", {}, L.td(t), L.td(n)));
      if (!Object.keys(by).length) body.append(L.el("tr", {}, L.td("none"), L.td("0")));
      for (const m of r.live.per_minute) perMinute.set(m.minute, Object.values(m.counts).reduce((a, b) => a + b, 0));
      const now = Math.floor(Date.now() / 3600000) * 3600;
      const hours = []; for (let h = now - 23 * 3600; h <= now; h += 3600) hours.push(h);
      const types = Object.keys(by).sort();
      const palette = ["#e5534b", "#d29922", "#58a6ff", "#2ea043", "#a371f7", "#f778ba", "#8b98a5", "#39c5cf"];
      const data = [hours, ...types.map((t) => hours.map((h) => { const x = r.hourly.find((v) => v.violation_type === t && v.hour === h); return x ? x.count : 0; }))];
      const holder = document.getElementById("hourly-plot");
      if (types.length) new window.uPlot({ width: Math.max(300, holder.clientWidth), height: 170, scales: { x: { time: true } },
        axes: [{ stroke: "#8b98a5", grid: { stroke: "#2a3642" } }, { stroke: "#8b98a5", grid: { stroke: "#2a3642" } }],
        series: [{}, ...types.map((t, i) => ({ label: t, stroke: palette[i % palette.length], points: { show: true } }))] }, data, holder);
    } catch (err) { L.showError(body, err); }
  }
  function drawTotals() {
    const box = L.clear(document.getElementById("totals"));
    for (const [t, n] of Object.entries(totals).sort()) box.append(L.badge(`${t}: ${n}`, t === "CONTAINMENT" ? "bad" : "warn"), " ");
    const now = Math.floor(Date.now() / 60000) * 60;
    const xs = [], ys = [];
    for (let m = now - 29 * 60; m <= now; m += 60) { xs.push(m); ys.push(perMinute.get(m) || 0); }
    const holder = document.getElementById("live-plot");
    if (!plot) plot = new window.uPlot({ width: Math.max(300, holder.clientWidth), height: 160, scales: { x: { time: true } },
      axes: [{ stroke: "#8b98a5", grid: { stroke: "#2a3642" } }, { stroke: "#8b98a5", grid: { stroke: "#2a3642" } }],
      series: [{}, { label: "violations+containments / min", stroke: "#e5534b", fill: "rgba(229,83,75,0.15)" }] }, [xs, ys], holder);
    else plot.setData([xs, ys]);
  }
  function onItem(item) {
    const label = item.kind === "containment" ? "CONTAINMENT" : item.violation_type;
    totals[label] = (totals[label] || 0) + 1;
    const m = Math.floor(item.received_at / 60) * 60;
    perMinute.set(m, (perMinute.get(m) || 0) + 1);
    const feed = document.getElementById("feed");
    feed.prepend(L.el("li", { class: "live-item", dataset: { kind: item.kind } },
      L.badge(label, item.kind === "containment" || item.severity === "CRITICAL" ? "bad" : "warn"), " ", item.severity || "", " ", item.rule || "",
      L.el("span", { class: "muted", text: " " + new Date(item.received_at * 1000).toISOString().slice(11, 19) })));
    while (feed.children.length > 200) feed.lastChild.remove();
    drawTotals();
  }
  function live() {
    const status = document.getElementById("live-status");
    const es = new EventSource("/api/public/stream");
    es.addEventListener("snapshot", (e) => {
      const s = JSON.parse(e.data);
      status.textContent = "live (server-sent events)";
      Object.assign(totals, s.totals);
      for (const m of s.per_minute) perMinute.set(m.minute, Object.values(m.counts).reduce((a, b) => a + b, 0));
      drawTotals();
      document.body.dataset.live = "1";
    });
    es.addEventListener("violation", (e) => onItem(JSON.parse(e.data)));
    es.addEventListener("containment", (e) => onItem(JSON.parse(e.data)));
    es.onerror = () => { status.textContent = "disconnected; retrying…"; };
  }
  Promise.all([policies(), keys(), checkpoints(), hourly()]).then(() => { drawTotals(); live(); document.body.dataset.ready = "1"; });
})();

"use strict";
(() => {
  const plots = {};
  const axes = [{ stroke: "#8b98a5", grid: { stroke: "#2a3642" } }, { stroke: "#8b98a5", grid: { stroke: "#2a3642" } }];
  function plot(id, series, data) {
    const holder = document.getElementById(id);
    if (!plots[id]) plots[id] = new window.uPlot({ width: Math.max(300, holder.clientWidth), height: 170, scales: { x: { time: true } }, axes, series: [{}, ...series] }, data, holder);
    else plots[id].setData(data);
  }
  function age(s) { return s >= 120 ? `${Math.round(s / 60)} min` : `${Math.round(s)} s`; }
  async function tick() {
    try {
      const h = await L.api("/api/health");
      const comps = L.clear(document.getElementById("components"));
      let allOk = true;
      for (const [name, c] of Object.entries(h.components)) {
        allOk = allOk && c.ok;
        comps.append(L.el("span", { class: "component", dataset: { name, ok: c.ok ? "1" : "0" }, title: c.detail }, L.badge(`${name}: ${c.ok ? "up" : "DOWN"}`, c.ok ? "ok" : "bad")), " ");
      }
      document.body.dataset.allOk = allOk ? "1" : "0";
      document.getElementById("sampled").textContent = h.sampled_at ? `sampled ${new Date(h.sampled_at * 1000).toISOString().slice(11, 19)} UTC, every ${h.interval_s} s` : "no sample yet";
      const body = L.clear(document.querySelector("#partitions tbody"));
      for (const p of h.partitions || []) {
        body.append(L.el("tr", {}, L.td(p.partition), L.td(p.processor_lag), L.td(p.sink_lag), L.td(p.in_per_s), L.td(p.out_per_s),
          L.td(age(p.checkpoint_age_s)), L.td(p.violations_per_s), L.td(p.quarantine_per_s), L.td(p.quarantined ?? ""), L.td(p.last_error || "", "wrap")));
      }
      const errs = L.clear(document.getElementById("errors"));
      for (const [name, c] of Object.entries(h.components)) if (!c.ok) errs.append(L.el("li", { class: "wrap" }, L.badge(name, "bad"), " ", c.detail));
      for (const [k, v] of Object.entries(h.errors || {})) errs.append(L.el("li", { class: "wrap" }, L.badge(k, "warn"), " ", v));
      if (!errs.children.length) errs.append(L.el("li", { class: "muted", text: "none" }));
      const stack = L.clear(document.getElementById("stack"));
      if (h.tables) stack.append(L.kv(Object.entries(h.tables).map(([k, v]) => ["rows: " + k, v])));
      const custody = L.clear(document.getElementById("custody"));
      if (h.keys) {
        const k = h.keys;
        custody.append(L.kv([["deployment", k.production ? "production (LINEAGE_PRODUCTION)" : "development"],
          ...Object.entries(k.in_use).map(([c, n]) => ["keys in use: " + c, n])]));
        if (k.file_backed.length) {
          const list = L.el("ul", { class: "feed", id: "file-backed" });
          for (const f of k.file_backed) list.append(L.el("li", { class: "wrap" }, L.badge("file key", "bad"), " ", `${f.subject} (${f.role}) ${f.key_id}`));
          custody.append(list);
        } else if (k.production) custody.append(L.el("p", { class: "muted", text: "every key in use is held outside a file" }));
      } else custody.append(L.el("span", { class: "muted", text: "key registry not readable (see Errors)" }));
      const s = h.series;
      if (s && s.t.length) {
        plot("p-lag", [{ label: "processor lag", stroke: "#d29922" }, { label: "sink lag", stroke: "#58a6ff" }], [s.t, s.processor_lag, s.sink_lag]);
        plot("p-rate", [{ label: "events/s in", stroke: "#58a6ff" }, { label: "entries/s out", stroke: "#2ea043" }, { label: "violations/s", stroke: "#e5534b" }], [s.t, s.in_per_s, s.out_per_s, s.violations_per_s]);
        const colors = { broker: "#58a6ff", clickhouse: "#2ea043", processor: "#d29922", sink: "#a371f7" };
        const names = Object.keys(colors).filter((n) => s[n + "_up"]);
        plot("p-up", names.map((n) => ({ label: n, stroke: colors[n] })), [s.t, ...names.map((n) => s[n + "_up"])]);
      }
      document.body.dataset.ready = "1";
    } catch (err) { L.showError(document.getElementById("components"), err); }
  }
  tick();
  setInterval(tick, 2000);
})();

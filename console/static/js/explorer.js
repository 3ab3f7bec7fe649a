"use strict";
(() => {
  const form = document.getElementById("filters");
  const body = document.querySelector("#results tbody");
  const count = document.getElementById("count");
  const limit = 50;
  let offset = 0, seq = 0;
  const params = new URLSearchParams(location.search);
  for (const [k, v] of params) if (form.elements[k]) form.elements[k].value = v;

  async function search() {
    const q = new URLSearchParams();
    for (const e of form.elements) if (e.name && e.value) q.set(e.name, e.value);
    const shown = q.toString();
    history.replaceState(null, "", "?" + shown);
    q.set("limit", limit); q.set("offset", offset);
    const mine = ++seq;
    try {
      const r = await L.api("/api/workflows?" + q.toString());
      if (mine !== seq) return;  // a newer search superseded this one
      L.clear(body);
      count.textContent = `${r.total} workflows · ${r.total ? offset + 1 : 0}–${offset + r.workflows.length}`;
      for (const w of r.workflows) {
        const status = [];
        if (w.contained) status.push(L.badge("contained", "bad"));
        else if (w.violations) status.push(L.badge(`${w.violations} violations`, "warn"));
        else status.push(L.badge("clean", "ok"));
        status.push(" ", L.badge(w.completed ? "completed" : "open", "neutral"));
        const link = L.el("a", { href: "/explorer/workflow?id=" + encodeURIComponent(w.workflow_id), text: w.workflow_id, title: w.workflow_id });
        const tr = L.el("tr", { class: "clickable", dataset: { workflow: w.workflow_id } },
          L.el("td", {}, link), L.td(L.time(w.started_at)), L.td(w.events),
          L.td(w.agents.join(", ")), L.td(w.systems.join(", ")), L.el("td", {}, status));
        tr.addEventListener("click", (ev) => { if (ev.target.tagName !== "A") location.href = link.href; });
        body.append(tr);
      }
      document.body.dataset.query = shown;
      document.body.dataset.ready = "1";
    } catch (err) { count.textContent = String(err.message); }
  }
  form.addEventListener("submit", (e) => { e.preventDefault(); offset = 0; search(); });
  document.getElementById("prev").addEventListener("click", () => { offset = Math.max(0, offset - limit); search(); });
  document.getElementById("next").addEventListener("click", () => { offset += limit; search(); });
  search();
})();

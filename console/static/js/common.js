"use strict";
// Helpers shared by every page. Data from the API is attacker-controlled: it only ever reaches
// the DOM through textContent / attribute setters, never through innerHTML.
const L = (() => {
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = String(v);
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.assign(node.dataset, v);
      else node.setAttribute(k, String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }
  async function api(path, opts) {
    const o = Object.assign({ credentials: "same-origin", headers: {} }, opts || {});
    if (o.json !== undefined) { o.method = o.method || "POST"; o.body = JSON.stringify(o.json); o.headers["Content-Type"] = "application/json"; delete o.json; }
    const r = await fetch(path, o);
    let body = null;
    try { body = await r.json(); } catch (e) { body = null; }
    if (!r.ok) {
      const d = body && body.detail;
      const msg = typeof d === "string" ? d : JSON.stringify(d);
      const err = new Error(`HTTP ${r.status}: ${msg}`); err.status = r.status; throw err;
    }
    return body;
  }
  function short(s, n) { s = String(s == null ? "" : s); return s.length > n ? s.slice(0, n - 1) + "…" : s; }
  function time(s) { return s ? String(s).replace("T", " ").replace("Z", "").slice(0, 23) : ""; }
  function badge(text, kind) { return el("span", { class: "badge " + (kind || "neutral"), text, title: text }); }
  function td(text, cls) { return el("td", { class: cls, text: text == null ? "" : text, title: text == null ? "" : String(text) }); }
  function kv(pairs) {
    const dl = el("dl", { class: "kv" });
    for (const [k, v] of pairs) dl.append(el("dt", { text: k }), el("dd", { class: "mono" }, v instanceof Node ? v : String(v == null ? "" : v)));
    return dl;
  }
  function showError(where, err) { clear(where).append(el("p", { class: "notice bad", text: String(err.message || err) })); }
  return { el, clear, api, short, time, badge, td, kv, showError };
})();

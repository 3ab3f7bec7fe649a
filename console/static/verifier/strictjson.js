// A strict JSON reader for evidence bundles (RFC 8259 plus the limits of docs/evidence-bundle.md).
//
// Why not JSON.parse: it silently keeps the last of duplicate members (which could hide a
// `revoked_at`), turns integers above 2^53 into approximations, accepts lone surrogates, and has
// no nesting limit. This reader returns
//   objects as null-prototype objects (no "__proto__" surprises), arrays as arrays,
//   integers (no fraction, no exponent) as BigInt, other numbers as Number,
//   strings, true, false, null,
// and throws JsonError for anything else.

export class JsonError extends Error {}

export const MAX_DEPTH = 32;
export const MAX_INT_DIGITS = 4300;

const WS = new Set([0x20, 0x09, 0x0a, 0x0d]);

export function parseStrict(text) {
  let i = 0;
  const n = text.length;
  const fail = (what) => {
    throw new JsonError(`${what} at character ${i}`);
  };
  const ws = () => {
    while (i < n && WS.has(text.charCodeAt(i))) i++;
  };
  function value(depth) {
    ws();
    if (i >= n) fail("unexpected end of input");
    const c = text[i];
    if (c === "{") return object(depth + 1);
    if (c === "[") return array(depth + 1);
    if (c === '"') return string();
    if (c === "t" && text.startsWith("true", i)) { i += 4; return true; }
    if (c === "f" && text.startsWith("false", i)) { i += 5; return false; }
    if (c === "n" && text.startsWith("null", i)) { i += 4; return null; }
    if (c === "-" || (c >= "0" && c <= "9")) return number();
    fail(`unexpected character ${JSON.stringify(c)}`);
  }
  function object(depth) {
    if (depth > MAX_DEPTH) fail(`JSON nested deeper than ${MAX_DEPTH} levels`);
    i++;
    const out = Object.create(null);
    ws();
    if (text[i] === "}") { i++; return out; }
    for (;;) {
      ws();
      if (text[i] !== '"') fail("expected a member name");
      const key = string();
      if (Object.prototype.hasOwnProperty.call(out, key)) fail(`duplicate member ${JSON.stringify(key)}`);
      ws();
      if (text[i] !== ":") fail("expected ':'");
      i++;
      out[key] = value(depth);
      ws();
      if (text[i] === ",") { i++; continue; }
      if (text[i] === "}") { i++; return out; }
      fail("expected ',' or '}'");
    }
  }
  function array(depth) {
    if (depth > MAX_DEPTH) fail(`JSON nested deeper than ${MAX_DEPTH} levels`);
    i++;
    const out = [];
    ws();
    if (text[i] === "]") { i++; return out; }
    for (;;) {
      out.push(value(depth));
      ws();
      if (text[i] === ",") { i++; continue; }
      if (text[i] === "]") { i++; return out; }
      fail("expected ',' or ']'");
    }
  }
  function string() {
    i++; // opening quote
    let out = "";
    let start = i;
    for (;;) {
      if (i >= n) fail("unterminated string");
      const code = text.charCodeAt(i);
      if (code === 0x22) { out += text.slice(start, i); i++; break; }
      if (code < 0x20) fail("raw control character in a string");
      if (code >= 0xd800 && code <= 0xdfff) {
        // raw surrogates cannot come from valid UTF-8 input, but a caller may pass any string
        const hi = code <= 0xdbff, next = text.charCodeAt(i + 1);
        if (!hi || !(next >= 0xdc00 && next <= 0xdfff)) fail("lone surrogate in a string");
        i += 2;
        continue;
      }
      if (code !== 0x5c) { i++; continue; }
      out += text.slice(start, i);
      i++;
      const e = text[i];
      const simple = { '"': '"', "\\": "\\", "/": "/", b: "\b", f: "\f", n: "\n", r: "\r", t: "\t" }[e];
      if (simple !== undefined) { out += simple; i++; start = i; continue; }
      if (e !== "u") fail("invalid escape");
      const u = hex4(i + 1);
      i += 5;
      if (u >= 0xd800 && u <= 0xdbff) {
        if (text[i] === "\\" && text[i + 1] === "u") {
          const lo = hex4(i + 2);
          if (lo >= 0xdc00 && lo <= 0xdfff) {
            out += String.fromCharCode(u, lo);
            i += 6;
            start = i;
            continue;
          }
        }
        fail("lone surrogate escape in a string");
      }
      if (u >= 0xdc00 && u <= 0xdfff) fail("lone surrogate escape in a string");
      out += String.fromCharCode(u);
      start = i;
    }
    return out;
  }
  function hex4(at) {
    const h = text.slice(at, at + 4);
    if (!/^[0-9a-fA-F]{4}$/.test(h)) { i = at; fail("invalid \\u escape"); }
    return parseInt(h, 16);
  }
  function number() {
    const m = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/.exec(text.slice(i, i + MAX_INT_DIGITS + 2));
    if (!m) fail("invalid number");
    if (!m[2] && !m[3]) {
      const digits = m[1].length;
      if (digits > MAX_INT_DIGITS || (digits === MAX_INT_DIGITS && /[0-9]/.test(text[i + m[0].length] || "")))
        fail(`integer longer than ${MAX_INT_DIGITS} digits`);
      if (/[0-9]/.test(text[i + m[0].length] || "")) fail(`integer longer than ${MAX_INT_DIGITS} digits`);
      i += m[0].length;
      return BigInt(m[0]);
    }
    // a fraction or exponent: not an integer anywhere the format needs one; keep as Number
    const all = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/.exec(text.slice(i));
    i += all[0].length;
    return Number(all[0]);
  }
  const v = value(0);
  ws();
  if (i !== n) fail("trailing data after the JSON value");
  return v;
}

export const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

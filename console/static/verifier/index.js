// The in-browser evidence-bundle verifier: a second, independent implementation of the bundle
// format, written from docs/evidence-bundle.md, docs/integrity.md and docs/keys.md (not translated
// from the Python verifier). It must agree with `lineage verify` on every verdict and failure
// kind of the conformance corpus (tests/conformance/); tests/browser/test_proof_verifier.py runs
// every case through both.
//
// Crypto is WebCrypto only: SHA-256 (crypto.subtle.digest) and Ed25519 (importKey "raw" + verify).
// Policy sets are loaded and recorded decisions re-run with the Cedar engine itself, its official
// WebAssembly build (policy.js; the same Cedar version as the CLI's cedarpy).
//
// Interface
//   verify(bundleBytes: Uint8Array, trust: Trust) -> Promise<Check[]>
//   loadCedar() -> Promise<{ ok, version } | { ok: false, reason }>  (verify awaits it; a page may
//                                     call it early so that verifying sends no request)
//   Trust  = { registry: object | null,         // a key registry document the person pinned (R)
//              checkpointKeys: string[],         // C2SP verifier keys "name+keyid+base64" (V)
//              witnessKeys?: string[],           // witness verifier keys (cosignature/v1)
//              witnessesRequired?: number,       // distinct trusted witnesses required, default 1
//              workflow?: string | null,         // the workflow the person expects (--workflow)
//              independent?: boolean,            // false: the registry is the operator's own (e.g.
//                                                //   pinned from the console that served the bundle):
//                                                //   at best CONSISTENT_BUT_UNTRUSTED, like the CLI's
//                                                //   "operator's own registry (not independent)"
//              now?: number }                    // verifier clock, POSIX seconds (tests); default Date.now()
//   Check  = { id: string,                       // stable id, e.g. "bundle.parse", "chain.links"
//              title: string,                    // what is checked, for people
//              status: "pass" | "warn" | "fail" | "untrusted" | "not-checked" | "skipped",
//                                                // warn: passed, with a warning (older evidence)
//              detail: string,                   // what was proven, or exactly what failed
//              failureKind?: string }            // on "fail": the FailureKind `lineage verify` reports
//   outcome(checks) -> { verdict, exitCode, failureKind } in the CLI's terms:
//     a "fail" check            -> FAILED (1), or UNUSABLE_INPUT (2) when its kind is UNUSABLE_INPUT
//     else an "untrusted" check -> CONSISTENT_BUT_UNTRUSTED (3): it rests on the bundle's own keys
//     else a "not-checked" one  -> NOT_FULLY_VERIFIED: every check this page could run passed, but
//                                  one the CLI runs could not run here (the Cedar module did not
//                                  load; the check says why); never shown as verified
//     else                      -> VERIFIED (0)
//   The bundle's own keys are never trusted: trust comes only from `trust`.

import { parseStrict, JsonError, isObject } from "./strictjson.js";
import { decodeSingleObject, fingerprint, AvroError } from "./avro.js";
import { SCHEMAS } from "./schemas.js";
import { loadCedar, loadPolicySet, evaluate, PolicyConfigError, PolicyEvaluationError, NotCheckable } from "./policy.js";

export { loadCedar };

export const IMPLEMENTED = true;
export const FORMAT = "lineage-evidence-bundle/v1";
export const FORMAT_V2 = "lineage-evidence-bundle/v2";
const MAX_FINDINGS = 1_000_000;
const MAX_POLICY_SETS = 64; // lineage/policy_replay.py
const MAX_POLICY_FILE_BYTES = 1 << 20;
const MAX_REQUEST_BYTES = 8 * 1024; // docs/policy.md

// ---------------------------------------------------------------------------------------------
// limits (docs/evidence-bundle.md, "Limits")
const LIMITS = {
  fileBytes: 2 ** 30,
  entries: 1_000_000,
  logs: 1024,
  checkpoints: 100_000,
  path: 64,
  consistencyPath: 128,
  recordBytes: 1 << 20,
  text: 65_535,
  maxTimeUs: 253402300799999999n,
};
const U64 = 1n << 64n;
const U32 = 1n << 32n;
const U31 = 1n << 31n;

class Failure extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind;
  }
}
const unusable = (msg) => new Failure("UNUSABLE_INPUT", msg);

// Evidence strings in messages: quoted, shortened, and with every control, format (bidi
// override), private-use, unassigned or surrogate code point shown as an escape, so what the page
// shows is what the bundle holds and cannot reorder or hide text around it.
const MAX_SHOWN = 160;
function q(s) {
  const chars = [...String(s)];
  const shown = chars.slice(0, MAX_SHOWN).map((c) => {
    if (c === '"' || c === "\\") return "\\" + c;
    if (!/[\p{Cc}\p{Cf}\p{Co}\p{Cn}\p{Cs}]/u.test(c)) return c;
    const cp = c.codePointAt(0);
    return cp > 0xffff ? "\\U" + cp.toString(16).padStart(8, "0") : cp < 0x100 ? "\\x" + cp.toString(16).padStart(2, "0") : "\\u" + cp.toString(16).padStart(4, "0");
  });
  return `"${shown.join("")}"` + (chars.length > MAX_SHOWN ? `… (${chars.length} characters)` : "");
}

// ---------------------------------------------------------------------------------------------
// bytes, hex, base64, hashing
const enc = new TextEncoder();
const utf8 = (s) => enc.encode(s);
function concat(...parts) {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}
const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
function fromHex(s) {
  const out = new Uint8Array(s.length / 2);
  for (let k = 0; k < out.length; k++) out[k] = parseInt(s.substr(2 * k, 2), 16);
  return out;
}
function eq(a, b) {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let k = 0; k < a.length; k++) d |= a[k] ^ b[k];
  return d === 0;
}
function u64be(v) {
  const out = new Uint8Array(8);
  let x = BigInt(v);
  for (let k = 7; k >= 0; k--) { out[k] = Number(x & 0xffn); x >>= 8n; }
  return out;
}
const u32be = (v) => u64be(v).subarray(4);
const u16be = (v) => u64be(v).subarray(6);

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64V = new Map([...B64].map((c, k) => [c, k]));
function b64encode(bytes) {
  let s = "";
  for (let k = 0; k < bytes.length; k += 3) {
    const a = bytes[k], b = bytes[k + 1], c = bytes[k + 2];
    s += B64[a >> 2] + B64[((a & 3) << 4) | ((b ?? 0) >> 4)];
    s += b === undefined ? "=" : B64[((b & 15) << 2) | ((c ?? 0) >> 6)];
    s += c === undefined ? "=" : B64[c & 63];
  }
  return s;
}
// standard base64 with padding (RFC 4648 §4); returns null when it is not
function b64decode(s) {
  if (typeof s !== "string" || s.length % 4 !== 0) return null;
  const pad = s.endsWith("==") ? 2 : s.endsWith("=") ? 1 : 0;
  const out = new Uint8Array((s.length / 4) * 3 - pad);
  let o = 0;
  for (let k = 0; k < s.length; k += 4) {
    const last = k + 4 === s.length;
    const v = [];
    for (let j = 0; j < 4; j++) {
      const c = s[k + j];
      if (c === "=" && last && j >= 4 - pad) { v.push(0); continue; }
      const x = B64V.get(c);
      if (x === undefined) return null;
      v.push(x);
    }
    const n = (v[0] << 18) | (v[1] << 12) | (v[2] << 6) | v[3];
    if (o < out.length) out[o++] = n >> 16;
    if (o < out.length) out[o++] = (n >> 8) & 255;
    if (o < out.length) out[o++] = n & 255;
  }
  return out;
}
// Python's base64.b64decode(s, validate=True), i.e. CPython's binascii.a2b_base64 in strict
// mode, which lineage/policy_replay.py reads the policy files with (it is more lenient than
// b64decode above: padding after a complete quad, unused bits set); null where Python raises
export function pyB64decode(s) {
  if (typeof s !== "string" || s[0] === "=") return null; // leading padding
  const out = [];
  let quad = 0, left = 0, pads = 0, padding = false;
  for (let i = 0; i < s.length; i++) {
    if (s[i] === "=") {
      padding = true;
      if (quad >= 2 && quad + ++pads >= 4) return i + 1 < s.length ? null : Uint8Array.from(out); // excess data after padding
      continue;
    }
    const v = B64V.get(s[i]);
    if (v === undefined || padding) return null; // not base64, or discontinuous padding
    pads = 0;
    if (quad === 0) { left = v; quad = 1; }
    else if (quad === 1) { out.push(((left << 2) | (v >> 4)) & 255); left = v & 0x0f; quad = 2; }
    else if (quad === 2) { out.push(((left << 4) | (v >> 2)) & 255); left = v & 0x03; quad = 3; }
    else { out.push(((left << 6) | v) & 255); left = 0; quad = 0; }
  }
  return quad === 0 ? Uint8Array.from(out) : null; // a partial quad: incorrect padding
}
// canonical: decoding and re-encoding gives the same text (so unused bits are zero)
function b64canonical(s) {
  const b = b64decode(s);
  return b !== null && b64encode(b) === s ? b : null;
}

async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}
const H = (...parts) => sha256(concat(...parts));
const P = (x) => new Uint8Array([x]);
const leafHash = (data) => H(P(0x00), data);
const nodeHash = (l, r) => H(P(0x01), l, r);

const edKeys = new Map();
async function ed25519Verify(publicKey, signature, message) {
  if (signature.length !== 64 || publicKey.length !== 32) return false;
  const id = hex(publicKey);
  let key = edKeys.get(id);
  if (key === undefined) {
    try {
      key = await crypto.subtle.importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
    } catch {
      key = null; // not a point on the curve: nothing verifies under it
    }
    edKeys.set(id, key);
  }
  if (key === null) return false;
  try {
    return await crypto.subtle.verify({ name: "Ed25519" }, key, signature, message);
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// RFC 9162 Merkle proofs (§2.1.3.2 inclusion, §2.1.4.2 consistency), indices as BigInt
const lsb = (x) => (x & 1n) === 1n;

async function inclusionRoot(leafData, index, size, path) {
  // returns the root the path leads to, or null when the path has the wrong shape
  if (index >= size) return null;
  let fn = index, sn = size - 1n;
  let r = await leafHash(leafData);
  for (const p of path) {
    if (sn === 0n) return null;
    if (lsb(fn) || fn === sn) {
      r = await nodeHash(p, r);
      if (!lsb(fn)) while (!lsb(fn) && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
    } else {
      r = await nodeHash(r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  return sn === 0n ? r : null;
}

async function consistent(first, second, firstHash, secondHash, path) {
  if (first === second) return path.length === 0 && eq(firstHash, secondHash);
  if (first === 0n || first > second || path.length === 0) return false;
  const p = [...path];
  if ((first & (first - 1n)) === 0n) p.unshift(firstHash);
  let fn = first - 1n, sn = second - 1n;
  while (lsb(fn)) { fn >>= 1n; sn >>= 1n; }
  let fr = p[0], sr = p[0];
  for (const c of p.slice(1)) {
    if (sn === 0n) return false;
    if (lsb(fn) || fn === sn) {
      fr = await nodeHash(c, fr);
      sr = await nodeHash(c, sr);
      if (!lsb(fn)) while (!lsb(fn) && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
    } else {
      sr = await nodeHash(sr, c);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  return sn === 0n && eq(fr, firstHash) && eq(sr, secondHash);
}

// a compact range: perfect-subtree roots covering [0, size), largest first
async function rangeAppend(range, leaf) {
  let s = range.size;
  range.roots.push(leaf);
  while (lsb(s)) {
    const right = range.roots.pop(), left = range.roots.pop();
    range.roots.push(await nodeHash(left, right));
    s >>= 1n;
  }
  range.size += 1n;
}
async function rangeRoot(range) {
  if (!range.roots.length) return sha256(new Uint8Array(0));
  let r = range.roots[range.roots.length - 1];
  for (let k = range.roots.length - 2; k >= 0; k--) r = await nodeHash(range.roots[k], r);
  return r;
}
const popcount = (x) => { let c = 0; for (; x; x >>= 1n) c += Number(x & 1n); return c; };

// ---------------------------------------------------------------------------------------------
// parse: member types, encodings and limits (step 1)
const codePoints = (s) => { let n = 0; for (const _ of s) n++; return n; };

function req(o, name, where) {
  if (!Object.prototype.hasOwnProperty.call(o, name)) throw unusable(`${where}: missing member '${name}'`);
  return o[name];
}
function obj(v, where) {
  if (!isObject(v)) throw unusable(`${where}: expected an object, found ${typeName(v)}`);
  return v;
}
function list(v, where, max) {
  if (!Array.isArray(v)) throw unusable(`${where}: expected a list, found ${typeName(v)}`);
  if (v.length > max) throw unusable(`${where}: ${v.length} items, more than the limit of ${max}`);
  return v;
}
function int(v, where, bound = U64) {
  if (typeof v !== "bigint") throw unusable(`${where}: expected an integer, found ${typeName(v)}`);
  if (v < 0n || v >= bound) throw unusable(`${where}: ${v} is outside [0, ${bound})`);
  return v;
}
function str(v, where, max = LIMITS.text) {
  if (typeof v !== "string") throw unusable(`${where}: expected a string, found ${typeName(v)}`);
  if (v.length > max && codePoints(v) > max) throw unusable(`${where}: longer than ${max} characters`);
  return v;
}
function hash(v, where) {
  if (typeof v !== "string" || !/^[0-9a-f]{64}$/.test(v)) throw unusable(`${where}: expected 64 lowercase hex digits`);
  return fromHex(v);
}
function b64(v, where, max) {
  if (typeof v !== "string") throw unusable(`${where}: expected base64, found ${typeName(v)}`);
  const b = b64canonical(v);
  if (b === null) throw unusable(`${where}: not canonical standard base64 with padding`);
  if (max !== undefined && b.length > max) throw unusable(`${where}: ${b.length} bytes decoded, more than ${max}`);
  return b;
}
function typeName(v) {
  if (v === null) return "null";
  if (Array.isArray(v)) return "a list";
  if (typeof v === "bigint") return "an integer";
  if (typeof v === "number") return "a non-integer number";
  if (typeof v === "object") return "an object";
  return `a ${typeof v}`;
}

// C2SP verifier key: <name>+<hex key id>+<base64(type ‖ public key)>, split at the first two '+'
async function parseVerifierKey(s, type, where) {
  if (typeof s !== "string") throw unusable(`${where}: expected a verifier key string`);
  const i = s.indexOf("+"), j = i < 0 ? -1 : s.indexOf("+", i + 1);
  if (i <= 0 || j < 0) throw unusable(`${where}: not a verifier key 'name+keyid+base64'`);
  const name = s.slice(0, i), idHex = s.slice(i + 1, j), body = b64decode(s.slice(j + 1));
  if (/[\s]/u.test(name)) throw unusable(`${where}: the key name contains white space`);
  if (!/^[0-9a-fA-F]{8}$/.test(idHex)) throw unusable(`${where}: the key id is not 8 hex digits`);
  if (body === null || body.length !== 33 || body[0] !== type)
    throw unusable(`${where}: the key is not base64 of 0x${type.toString(16).padStart(2, "0")} followed by a 32-byte Ed25519 public key`);
  const pk = body.subarray(1);
  const id = (await H(utf8(name), P(0x0a), P(type), pk)).subarray(0, 4);
  if (!eq(id, fromHex(idHex.toLowerCase()))) throw unusable(`${where}: the key id ${idHex} does not match the key (computed ${hex(id)})`);
  return { name, id, pk, text: s };
}

// RFC 3339 timestamp -> microseconds since the epoch (BigInt), or null
function rfc3339us(s) {
  const m = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?([Zz]|([+-])(\d{2}):(\d{2}))$/.exec(s);
  if (!m) return null;
  const [y, mo, d, h, mi, se] = m.slice(1, 7).map(Number);
  if (mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || se > 59) return null;
  const dt = new Date(0);
  dt.setUTCFullYear(y, mo - 1, d);
  dt.setUTCHours(h, mi, se, 0);
  if (dt.getUTCDate() !== d || dt.getUTCMonth() !== mo - 1) return null;
  let us = BigInt(dt.getTime()) * 1000n + BigInt((m[7] || "").padEnd(6, "0") || "0");
  if (m[9]) {
    const oh = Number(m[10]), om = Number(m[11]);
    if (oh > 23 || om > 59) return null;
    const off = BigInt((oh * 60 + om) * 60) * 1_000_000n;
    us = m[9] === "+" ? us - off : us + off;
  }
  return us;
}

const REG_V1 = ["key_id", "public_key", "role", "subject", "not_before", "not_after", "revoked_at", "revocation_reason"];
const REG_V2 = [...REG_V1, "compromised_at", "custody", "key_uri"];
const ROLES = new Set(["emitter", "authorizer", "processor"]);

// a key registry document (docs/keys.md); throws UNUSABLE_INPUT naming the problem
async function parseRegistry(doc, label) {
  if (!isObject(doc)) throw unusable(`${label}: not a key registry object`);
  for (const k of Object.keys(doc))
    if (k !== "format" && k !== "keys") throw unusable(`${label}: unknown member '${k}'`);
  const format = doc.format;
  if (format !== "lineage-key-registry/v1" && format !== "lineage-key-registry/v2")
    throw unusable(`${label}: unsupported format ${q(String(format))}`);
  const v2 = format.endsWith("/v2");
  const keys = list(req(doc, "keys", label), `${label}: keys`, Infinity);
  const out = new Map();
  for (let k = 0; k < keys.length; k++) {
    const w = `${label}: keys[${k}]`;
    const e = obj(keys[k], w);
    for (const f of Object.keys(e)) {
      if (!(v2 ? REG_V2 : REG_V1).includes(f))
        throw unusable(REG_V2.includes(f) ? `${w}: field '${f}' is v2 only, in a v1 document` : `${w}: unknown field '${f}'`);
    }
    for (const f of ["key_id", "public_key", "role", "subject", "not_before"]) {
      if (!(f in e)) throw unusable(`${w}: missing field '${f}'`);
      if (typeof e[f] !== "string") throw unusable(`${w}: field '${f}' is not a string`);
    }
    const optStr = (f) => {
      const v = e[f] ?? null;
      if (v !== null && typeof v !== "string") throw unusable(`${w}: field '${f}' is not a string or null`);
      return v;
    };
    const time = (f, v) => {
      if (v === null) return null;
      const t = rfc3339us(v);
      if (t === null) throw unusable(`${w}: field '${f}' is not an RFC 3339 time: ${q(v)}`);
      return t;
    };
    const pk = b64decode(e.public_key);
    if (pk === null || pk.length !== 32) throw unusable(`${w}: public_key is not base64 of 32 bytes`);
    const expectId = "ed25519:" + hex(await sha256(pk)).slice(0, 16);
    if (e.key_id !== expectId) throw unusable(`${w}: key_id ${e.key_id} does not match the public key (${expectId})`);
    if (out.has(e.key_id)) throw unusable(`${w}: duplicate key id ${e.key_id}`);
    if (!ROLES.has(e.role)) throw unusable(`${w}: unknown role ${q(e.role)}`);
    const notBefore = time("not_before", e.not_before);
    const notAfter = time("not_after", optStr("not_after"));
    const revokedAt = time("revoked_at", optStr("revoked_at"));
    const reason = optStr("revocation_reason");
    const compromisedAt = time("compromised_at", optStr("compromised_at"));
    const custody = optStr("custody") ?? "file";
    const keyUri = optStr("key_uri");
    if (notAfter !== null && notAfter < notBefore) throw unusable(`${w}: not_after is before not_before`);
    if (reason !== null && revokedAt === null) throw unusable(`${w}: revocation_reason without revoked_at`);
    if (compromisedAt !== null && (revokedAt === null || compromisedAt > revokedAt))
      throw unusable(`${w}: compromised_at must come with revoked_at and not after it`);
    if (!/^[a-z][a-z0-9_.-]*$/.test(custody)) throw unusable(`${w}: custody ${q(custody)} is not a lowercase name`);
    if (custody === "pkcs11" && !(keyUri || "").startsWith("pkcs11:")) throw unusable(`${w}: pkcs11 custody without a pkcs11: URI`);
    out.set(e.key_id, { keyId: e.key_id, pk, role: e.role, subject: e.subject, notBefore, notAfter, revokedAt, compromisedAt, reason });
  }
  return out;
}

async function processorVkeys(registry) {
  // the unrevoked processor keys of a registry, each named by its subject
  const out = [];
  for (const r of registry.values()) {
    if (r.role !== "processor" || r.revokedAt !== null) continue;
    const id = (await H(utf8(r.subject), P(0x0a), P(0x01), r.pk)).subarray(0, 4);
    out.push({ name: r.subject, id, pk: r.pk, text: `${r.subject}+${hex(id)}+${b64encode(concat(P(1), r.pk))}`, record: r });
  }
  return out;
}

function parseOrigin(origin, where) {
  const parts = origin.split("/");
  if (parts.length < 3 || parts.some((p) => p === ""))
    throw unusable(`${where}: origin ${q(origin)} is not <base>/<topic>/<partition>`);
  const last = parts[parts.length - 1];
  if (!/^(0|[1-9][0-9]*)$/.test(last)) throw unusable(`${where}: origin's partition ${q(last)} is not ASCII decimal digits without leading zeros`);
  return { topic: parts[parts.length - 2], partition: BigInt(last) };
}

async function parseBundle(bytes) {
  if (bytes.length > LIMITS.fileBytes) throw unusable(`the file is ${bytes.length} bytes, more than 2^30`);
  let text;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    throw unusable("the file is not UTF-8");
  }
  let doc;
  try {
    doc = parseStrict(text);
  } catch (e) {
    if (e instanceof JsonError) throw unusable(`not a JSON bundle: ${e.message}`);
    throw e;
  }
  const top = obj(doc, "the bundle");
  const format = req(top, "format", "the bundle");
  if (format !== FORMAT && format !== FORMAT_V2) {
    const m = typeof format === "string" ? /^lineage-evidence-bundle\/(.*)$/s.exec(format) : null;
    throw unusable(m ? `format '${m[1]}' no longer supported or not yet known` : `not an evidence bundle: format ${q(String(format))}`);
  }
  const b = {};
  b.workflowId = str(req(top, "workflow_id", "the bundle"), "workflow_id");
  b.entryCount = int(req(top, "entry_count", "the bundle"), "entry_count");
  if (b.entryCount < 1n) throw unusable("entry_count: must be at least 1");
  b.policyDigests = list(req(top, "policy_digests", "the bundle"), "policy_digests", LIMITS.entries).map((h, k) => ({ hex: (hash(h, `policy_digests[${k}]`), h) }));
  const entries = list(req(top, "entries", "the bundle"), "entries", LIMITS.entries);
  if (!entries.length) throw unusable("entries: empty");
  b.entries = entries.map((raw, k) => {
    const w = `entries[${k}]`;
    const e = obj(raw, w);
    const out = {
      chainSeq: int(req(e, "chain_seq", w), `${w}.chain_seq`),
      eventId: str(req(e, "event_id", w), `${w}.event_id`),
      event: b64(req(e, "event", w), `${w}.event`, LIMITS.recordBytes),
      eventDigest: hash(req(e, "event_digest", w), `${w}.event_digest`),
      prevHash: hash(req(e, "prev_hash", w), `${w}.prev_hash`),
      entryHash: hash(req(e, "entry_hash", w), `${w}.entry_hash`),
      policyDigest: hash(req(e, "policy_digest", w), `${w}.policy_digest`),
      policyHex: e.policy_digest,
      partition: int(req(e, "partition", w), `${w}.partition`, U31),
      logIndex: int(req(e, "log_index", w), `${w}.log_index`),
    };
    const seal = req(e, "seal", w);
    if (seal === null) out.seal = null;
    else {
      obj(seal, `${w}.seal`);
      out.seal = {
        record: b64(req(seal, "record", `${w}.seal`), `${w}.seal.record`, LIMITS.recordBytes),
        index: int(req(seal, "index", `${w}.seal`), `${w}.seal.index`),
        path: list(req(seal, "path", `${w}.seal`), `${w}.seal.path`, LIMITS.path).map((h, j) => hash(h, `${w}.seal.path[${j}]`)),
      };
    }
    const inc = obj(req(e, "inclusion", w), `${w}.inclusion`);
    out.inclusion = {
      treeSize: int(req(inc, "tree_size", `${w}.inclusion`), `${w}.inclusion.tree_size`),
      path: list(req(inc, "path", `${w}.inclusion`), `${w}.inclusion.path`, LIMITS.path).map((h, j) => hash(h, `${w}.inclusion.path[${j}]`)),
    };
    return out;
  });
  const logs = list(req(top, "logs", "the bundle"), "logs", LIMITS.logs);
  const seen = new Set();
  b.logs = logs.map((raw, k) => {
    const w = `logs[${k}]`;
    const l = obj(raw, w);
    const partition = int(req(l, "partition", w), `${w}.partition`, U31);
    if (seen.has(partition)) throw unusable(`${w}: a second section for partition ${partition}`);
    seen.add(partition);
    const origin = str(req(l, "origin", w), `${w}.origin`);
    const parsedOrigin = parseOrigin(origin, w);
    const cps = list(req(l, "checkpoints", w), `${w}.checkpoints`, LIMITS.checkpoints).map((c, j) =>
      str(req(obj(c, `${w}.checkpoints[${j}]`), "note", `${w}.checkpoints[${j}]`), `${w}.checkpoints[${j}].note`));
    const cons = list(req(l, "consistency", w), `${w}.consistency`, LIMITS.checkpoints).map((c, j) => {
      const cw = `${w}.consistency[${j}]`;
      obj(c, cw);
      return {
        oldSize: int(req(c, "old_size", cw), `${cw}.old_size`),
        newSize: int(req(c, "new_size", cw), `${cw}.new_size`),
        path: list(req(c, "path", cw), `${cw}.path`, LIMITS.consistencyPath).map((h, q) => hash(h, `${cw}.path[${q}]`)),
      };
    });
    if (cons.length !== cps.length - 1)
      throw unusable(`${w}: ${cons.length} consistency proofs for ${cps.length} checkpoints (expected ${cps.length - 1})`);
    return { partition, origin, topic: parsedOrigin.topic, originPartition: parsedOrigin.partition, notes: cps, consistency: cons };
  });
  const t = obj(req(top, "tail", "the bundle"), "tail");
  b.tail = {
    partition: int(req(t, "partition", "tail"), "tail.partition", U31),
    logIndex: int(req(t, "log_index", "tail"), "tail.log_index"),
    treeSize: int(req(t, "tree_size", "tail"), "tail.tree_size"),
    prefix: list(req(t, "prefix", "tail"), "tail.prefix", LIMITS.path).map((h, k) => hash(h, `tail.prefix[${k}]`)),
    following: b64(req(t, "following", "tail"), "tail.following"),
  };
  if (b.tail.prefix.length !== popcount(b.tail.logIndex))
    throw unusable(`tail.prefix: ${b.tail.prefix.length} hashes, but log_index ${b.tail.logIndex} needs ${popcount(b.tail.logIndex)}`);
  if (b.tail.following.length % 104 !== 0) throw unusable(`tail.following: ${b.tail.following.length} bytes, not a multiple of 104`);
  b.v2 = format === FORMAT_V2;
  // v2's `policies` and `findings` are checked where docs/evidence-bundle.md checks them: their
  // presence at step 7 (UNUSABLE_INPUT), the findings member at step 8 (FINDINGS_MISMATCH), the
  // policy sets at step 9 (a set that does not load: POLICY_SET_MISSING)
  b.raw = top;
  b.bundleKeys = await parseRegistry(req(top, "keys", "the bundle"), "the bundle's keys");
  const cks = list(req(top, "checkpoint_keys", "the bundle"), "checkpoint_keys", Infinity);
  b.bundleCheckpointKeys = [];
  for (let k = 0; k < cks.length; k++) b.bundleCheckpointKeys.push(await parseVerifierKey(cks[k], 0x01, `checkpoint_keys[${k}]`));
  return b;
}

// ---------------------------------------------------------------------------------------------
// signed notes (c2sp.org/signed-note) and checkpoints (c2sp.org/tlog-checkpoint)
function splitNote(note) {
  const k = note.lastIndexOf("\n\n");
  if (k < 0 || !note.endsWith("\n")) return null;
  const text = note.slice(0, k + 1);
  const sigs = [];
  for (const line of note.slice(k + 2, -1).split("\n")) {
    const m = /^\u2014 (\S+) (\S+)$/u.exec(line);
    if (!m) return null;
    const raw = b64decode(m[2]);
    if (raw === null || raw.length < 5) return null;
    sigs.push({ name: m[1], id: raw.subarray(0, 4), body: raw.subarray(4) });
  }
  return sigs.length ? { text, sigs } : null;
}

function parseCheckpoint(text) {
  const lines = text.split("\n");
  lines.pop(); // the text ends with a newline
  if (lines.length < 3 || lines[0] === "") return null;
  if (!/^(0|[1-9][0-9]{0,19})$/.test(lines[1])) return null;
  const size = BigInt(lines[1]);
  if (size >= U64) return null;
  const root = b64decode(lines[2]);
  if (root === null || root.length !== 32) return null;
  return { origin: lines[0], size, root, extensions: lines.slice(3) };
}

async function verifyNote(note, vkeys, what) {
  const parsed = splitNote(note);
  if (!parsed) throw new Failure("CHECKPOINT_SIGNATURE", `${what} is not a signed note (text, blank line, signature lines)`);
  const msg = utf8(parsed.text);
  let good = null;
  for (const s of parsed.sigs) {
    for (const k of vkeys) {
      if (s.name !== k.name || !eq(s.id, k.id)) continue;
      if (!(await ed25519Verify(k.pk, s.body, msg)))
        throw new Failure("CHECKPOINT_SIGNATURE", `${what}: the signature by trusted key ${k.name}+${hex(k.id)} does not verify`);
      good = good || k;
    }
  }
  if (!good) {
    const names = parsed.sigs.map((s) => `${s.name}+${hex(s.id)}`).join(", ");
    throw new Failure("CHECKPOINT_SIGNATURE", `${what}: no signature by a trusted processor key (signed by: ${names}; trusted: ${vkeys.map((k) => `${k.name}+${hex(k.id)}`).join(", ")})`);
  }
  return { text: parsed.text, sigs: parsed.sigs, key: good };
}

// ---------------------------------------------------------------------------------------------
// key trust for seals (docs/keys.md, "When a key vouches for a signature")
function sealKeyTrust(registry, keyId, emitterId, atUs) {
  const r = registry.get(keyId);
  if (!r) return new Failure("UNKNOWN_KEY", `key ${keyId} is not in the trusted registry`);
  if (r.revokedAt !== null) {
    if (r.compromisedAt === null) return new Failure("REVOKED_KEY", `key ${keyId} is revoked (${r.reason ?? "no reason given"})`);
    if (atUs >= r.compromisedAt) return new Failure("KEY_COMPROMISED", `key ${keyId} is compromised since ${fmtUs(r.compromisedAt)}; the event claims ${fmtUs(atUs)}`);
  }
  const subject = emitterId.split("#")[0];
  if (r.role !== "emitter" && r.role !== "authorizer") return new Failure("KEY_SCOPE", `key ${keyId} has role ${r.role}, expected emitter or authorizer`);
  if (r.subject !== subject) return new Failure("KEY_SCOPE", `key ${keyId} speaks for ${q(r.subject)}, the emitter is ${q(subject)}`);
  if (atUs < r.notBefore || (r.notAfter !== null && atUs > r.notAfter))
    return new Failure("KEY_EXPIRED", `key ${keyId} is valid ${fmtUs(r.notBefore)} … ${r.notAfter === null ? "" : fmtUs(r.notAfter)}, the event claims ${fmtUs(atUs)}`);
  return r;
}
function fmtUs(us) {
  const ms = Number(us / 1000n);
  const d = new Date(ms);
  return isNaN(d) ? `${us} µs` : d.toISOString().replace(".000Z", "Z");
}

// ---------------------------------------------------------------------------------------------
// the checks

async function precompute(entries, sections) {
  const digests = new Array(entries.length), logRoots = new Array(entries.length);
  const BATCH = 512;
  for (let start = 0; start < entries.length; start += BATCH) {
    const jobs = [];
    for (let i = start; i < Math.min(entries.length, start + BATCH); i++) {
      const e = entries[i];
      jobs.push(H(P(0x10), e.event).then((d) => { digests[i] = d; }));
      const sec = sections.get(e.partition);
      const cp = sec && sec.bySize.get(e.inclusion.treeSize);
      // only meaningful when the checkpoint exists and covers the index; otherwise the check
      // fails before it reads this value
      if (cp && cp.size > e.logIndex)
        jobs.push(inclusionRoot(e.entryHash, e.logIndex, cp.size, e.inclusion.path).then((r) => { logRoots[i] = r; }));
    }
    await Promise.all(jobs);
  }
  return { digests, logRoots };
}
const EVENT_FP = fingerprint(SCHEMAS.execution_event);
const SEAL_FP = fingerprint(SCHEMAS.seal);
const VIOLATION_FP = fingerprint(SCHEMAS.violation);

const TITLES = {
  "bundle.parse": "bundle format, encodings and limits",
  "trust.keys": "keys that decide (yours, never silently the bundle's)",
  "workflow.expected": "the workflow you expect",
  "logs.checkpoints": "checkpoint signatures, origins and consistency (append-only logs)",
  "entries.events": "event bytes: digests and decoding",
  "entries.seals": "emitter seals: key trust, Ed25519 signatures, seal Merkle inclusion",
  "chain.links": "workflow chain: sequence, links, entry hashes",
  "entries.log": "log inclusion of every entry under a signed checkpoint",
  "counts": "policy digests and entry count",
  "tail": "tail proof: nothing later in the signed log extends the chain",
  "partition.binding": "partition binding: the workflow's chain is in the partition its id maps to (v2)",
  "findings": "findings log: every violation recorded about the workflow, as signed (v2)",
  "policies": "policy sets: each loads (TOML limits, Cedar rules) (v2)",
  "decisions": "authorization decisions: recorded requests and the policy sets they name",
  "decisions.rerun": "re-running each decision with Cedar: same decision, policy and determining policies",
  "witness": "witness cosignatures (cosignature/v1)",
  "trust.anchored": "every signature chains to keys you named",
};

export async function verify(bundleBytes, trust) {
  if (!(bundleBytes instanceof Uint8Array)) throw new TypeError("bundleBytes must be a Uint8Array");
  if (!trust || typeof trust !== "object") throw new TypeError("trust must be an object");
  const checks = [];
  const order = ["bundle.parse", "trust.keys", "workflow.expected", "logs.checkpoints", "entries.events", "entries.seals",
    "chain.links", "entries.log", "counts", "tail", "partition.binding", "findings", "policies", "decisions", "decisions.rerun"];
  const witnessKeys = trust.witnessKeys || [];
  if (witnessKeys.length) order.push("witness");
  order.push("trust.anchored");
  const done = new Map();
  const pass = (id, detail) => done.set(id, { id, title: TITLES[id], status: "pass", detail });
  const finish = (failure, partial) => {
    for (const id of order) {
      if (done.has(id)) checks.push(done.get(id));
      else if (failure && failure.id === id)
        checks.push({ id, title: TITLES[id], status: "fail", detail: failure.message, failureKind: failure.kind });
      else if (partial && partial.has(id)) checks.push({ id, title: TITLES[id], status: "skipped", detail: partial.get(id) });
      else checks.push({ id, title: TITLES[id], status: "skipped", detail: failure ? "not run: an earlier check failed" : "not run" });
    }
    return checks;
  };
  const fail = (id, err, partial) => {
    if (!(err instanceof Failure)) throw err;
    err.id = id;
    return finish(err, partial);
  };

  // 1. parse
  let b;
  try {
    b = await parseBundle(bundleBytes);
  } catch (e) {
    return fail("bundle.parse", e);
  }
  pass("bundle.parse", `${bundleBytes.length} bytes: workflow ${q(b.workflowId)}, ${b.entries.length} entries, ${b.logs.length} log section(s); every member present, typed, encoded canonically and within the limits`);

  // choose the keys that decide (the table in "Inputs and trust"; no other fallback)
  let sealKeys, vkeys, anchored, trustDetail;
  try {
    const given = [];
    for (let k = 0; k < (trust.checkpointKeys || []).length; k++)
      given.push(await parseVerifierKey(trust.checkpointKeys[k], 0x01, `your checkpoint key ${k + 1}`));
    if (trust.registry !== null && trust.registry !== undefined) {
      sealKeys = await parseRegistry(trust.registry, "your registry");
      if (given.length) vkeys = given;
      else {
        vkeys = await processorVkeys(sealKeys);
        if (!vkeys.length) throw unusable("your registry has no unrevoked processor key, and you named no checkpoint key: no checkpoint can be trusted");
      }
      anchored = true;
      trustDetail = `seal keys: your registry (${sealKeys.size} keys); checkpoint keys: ${given.length ? "the ones you named" : "your registry's unrevoked processor keys"} (${vkeys.map((k) => k.name + "+" + hex(k.id)).join(", ")}). The bundle's own keys were not consulted.`;
    } else {
      sealKeys = b.bundleKeys;
      vkeys = given.length ? given : b.bundleCheckpointKeys;
      anchored = false;
      trustDetail = `no registry pinned: seal keys are THE BUNDLE'S OWN (${sealKeys.size} keys); checkpoint keys: ${given.length ? "the ones you named" : "the bundle's own"}. At best "consistent but untrusted".`;
      if (!vkeys.length) throw unusable("no checkpoint key: you named none and the bundle names none");
    }
  } catch (e) {
    return fail("trust.keys", e);
  }
  pass("trust.keys", trustDetail);

  // 2. expected workflow
  if (trust.workflow !== null && trust.workflow !== undefined && trust.workflow !== "") {
    if (b.workflowId !== trust.workflow)
      return fail("workflow.expected", new Failure("UNEXPECTED_WORKFLOW", `you expect workflow ${q(trust.workflow)}, the bundle proves ${q(b.workflowId)}`));
    pass("workflow.expected", `the bundle proves workflow ${q(b.workflowId)}, the one you named`);
  } else done.set("workflow.expected", { id: "workflow.expected", title: TITLES["workflow.expected"], status: "skipped", detail: "you named no workflow: the bundle's own workflow id is what was verified" });

  // 3. logs
  const sections = new Map();
  try {
    let nCheckpoints = 0;
    for (let k = 0; k < b.logs.length; k++) {
      const log = b.logs[k];
      if (log.originPartition !== log.partition)
        throw new Failure("CHECKPOINT_ORIGIN", `logs[${k}]: origin ${q(log.origin)} names partition ${log.originPartition}, the section is partition ${log.partition}`);
      const cps = [];
      for (let j = 0; j < log.notes.length; j++) {
        const what = `logs[${k}].checkpoints[${j}]`;
        const signed = await verifyNote(log.notes[j], vkeys, what);
        const cp = parseCheckpoint(signed.text);
        if (!cp) throw new Failure("CHECKPOINT_ORIGIN", `${what}: the signed note is not a checkpoint (origin, size, base64 root)`);
        if (cp.origin !== log.origin) throw new Failure("CHECKPOINT_ORIGIN", `${what}: origin ${q(cp.origin)}, the section's is ${q(log.origin)}`);
        cp.note = log.notes[j];
        cp.signed = signed;
        if (j > 0) {
          const prev = cps[j - 1];
          if (cp.size <= prev.size) throw unusable(`${what}: size ${cp.size} does not follow ${prev.size} (sizes must be strictly ascending)`);
          const c = log.consistency[j - 1];
          if (c.oldSize !== prev.size || c.newSize !== cp.size)
            throw new Failure("CHECKPOINT_INCONSISTENT", `logs[${k}].consistency[${j - 1}] names sizes ${c.oldSize} → ${c.newSize}, the checkpoints are ${prev.size} → ${cp.size}`);
          if (!(await consistent(prev.size, cp.size, prev.root, cp.root, c.path)))
            throw new Failure("CHECKPOINT_INCONSISTENT", `${what}: size ${cp.size} is not an extension of size ${prev.size} (the consistency proof does not verify): a fork or rewritten history`);
        }
        cps.push(cp);
        nCheckpoints++;
      }
      sections.set(log.partition, { log, cps, bySize: new Map(cps.map((c) => [c.size, c])) });
    }
    pass("logs.checkpoints", `${nCheckpoints} checkpoint(s) in ${b.logs.length} log(s), each signed by a trusted processor key, naming its log; consecutive checkpoints proven consistent (RFC 9162): ` +
      [...sections.values()].map((s) => `${s.log.origin} sizes ${s.cps.map((c) => c.size).join(" → ")}`).join("; "));
  } catch (e) {
    return fail("logs.checkpoints", e);
  }

  // 4. entries. The hashes that depend only on the bundle's stated values (event digests, log
  // inclusion roots from the stated entry hash) are computed ahead, many WebCrypto calls in
  // flight at once; the checks below still run entry by entry, in the documented order.
  const ahead = await precompute(b.entries, sections);
  const ENTRY_IDS = ["entries.events", "entries.seals", "chain.links", "entries.log"];
  let head = await H(P(0x12), utf8(b.workflowId));
  const sealCache = new Map();
  let signatures = 0, authorizations = 0;
  const times = [];
  const evs = [];
  for (let i = 0; i < b.entries.length; i++) {
    const e = b.entries[i];
    const at = `entries[${i}]`;
    let stage = "entries.events";
    try {
      // 4.1
      if (e.partition !== b.entries[0].partition)
        throw new Failure("PARTITION_MISMATCH", `${at}: partition ${e.partition}, the workflow's first entry is in partition ${b.entries[0].partition}`);
      const sec = sections.get(e.partition);
      if (!sec) throw new Failure("MISSING_CHECKPOINT", `${at}: no log section for partition ${e.partition}`);
      // 4.2
      const digest = ahead.digests[i];
      if (!eq(digest, e.eventDigest))
        throw new Failure("EVENT_DIGEST_MISMATCH", `${at}: the event bytes hash to ${hex(digest)}, the entry states ${hex(e.eventDigest)}`);
      // 4.3
      let ev;
      try {
        ev = decodeSingleObject(e.event, SCHEMAS.execution_event, EVENT_FP);
      } catch (err) {
        if (err instanceof AvroError) throw new Failure("EVENT_MALFORMED", `${at}: the event is not one complete single-object ExecutionEvent: ${err.message}`);
        throw err;
      }
      if (ev.event_time < 0n || ev.event_time > LIMITS.maxTimeUs) throw unusable(`${at}: event_time ${ev.event_time} µs is outside 1970-01-01 … 9999-12-31`);
      if (ev.event_id !== e.eventId) throw new Failure("EVENT_ID_MISMATCH", `${at}: the entry names event ${q(e.eventId)}, its bytes hold ${q(ev.event_id)}`);
      if (ev.workflow_id !== b.workflowId) throw new Failure("WORKFLOW_MISMATCH", `${at}: the event belongs to workflow ${q(ev.workflow_id)}, the bundle claims ${q(b.workflowId)}`);
      if (BigInt(ev.partition) !== e.partition) throw new Failure("PARTITION_MISMATCH", `${at}: the event names partition ${ev.partition}, the entry ${e.partition}`);
      if (ev.topic !== sec.log.topic) throw new Failure("PARTITION_MISMATCH", `${at}: the event names topic ${q(ev.topic)}, its log ${q(sec.log.origin)} is of topic ${q(sec.log.topic)}`);
      times.push(ev.event_time);
      evs.push(ev);
      // 4.4
      stage = "entries.seals";
      if (e.seal === null) throw new Failure("MISSING_SEAL", `${at}: no seal`);
      const sealKey = hex(e.seal.record);
      let seal = sealCache.get(sealKey);
      if (seal === undefined) {
        try {
          seal = decodeSingleObject(e.seal.record, SCHEMAS.seal, SEAL_FP);
        } catch (err) {
          if (err instanceof AvroError) throw new Failure("SEAL_MALFORMED", `${at}: the seal is not a single-object Seal record: ${err.message}`);
          throw err;
        }
        sealCache.set(sealKey, seal);
      }
      if (seal.partition < 0) throw unusable(`${at}: seal partition ${seal.partition} cannot be encoded in the seal message (u32)`);
      if (seal.first_seq < 0n || seal.last_seq < 0n) throw unusable(`${at}: seal sequence numbers ${seal.first_seq}…${seal.last_seq} cannot be encoded (u64)`);
      for (const f of ["emitter_id", "key_id", "topic"])
        if (utf8(seal[f]).length > 65535) throw unusable(`${at}: seal ${f} is longer than 65,535 UTF-8 bytes (u16 length)`);
      if (seal.emitter_id !== ev.emitter_id || seal.topic !== ev.topic || seal.partition !== ev.partition)
        throw new Failure("SEAL_MISMATCH", `${at}: the seal is ${q(seal.emitter_id)}'s over ${q(seal.topic)}/${seal.partition}, the event is ${q(ev.emitter_id)}'s over ${q(ev.topic)}/${ev.partition}`);
      const count = seal.last_seq - seal.first_seq + 1n;
      if (seal.first_seq + e.seal.index !== ev.emitter_seq || e.seal.index >= count)
        throw new Failure("SEAL_MISMATCH", `${at}: seal covers ${seal.first_seq}…${seal.last_seq}, index ${e.seal.index} does not give the event's emitter_seq ${ev.emitter_seq}`);
      const trusted = sealKeyTrust(sealKeys, seal.key_id, seal.emitter_id, ev.event_time);
      if (trusted instanceof Failure) { trusted.message = `${at}: ${trusted.message}`; throw trusted; }
      if (seal.verified === undefined) {
        const message = concat(P(0x13), u16be(utf8(seal.emitter_id).length), utf8(seal.emitter_id), u16be(utf8(seal.key_id).length), utf8(seal.key_id),
          u16be(utf8(seal.topic).length), utf8(seal.topic), u32be(seal.partition), u64be(seal.first_seq), u64be(seal.last_seq), seal.merkle_root, seal.prev_seal_hash);
        seal.verified = await ed25519Verify(trusted.pk, seal.signature, message);
        signatures++;
      }
      if (!seal.verified) throw new Failure("BAD_SEAL_SIGNATURE", `${at}: the seal's Ed25519 signature by ${seal.key_id} does not verify`);
      const root = await inclusionRoot(e.eventDigest, e.seal.index, count, e.seal.path);
      if (root === null || !eq(root, seal.merkle_root))
        throw new Failure("SEAL_INCLUSION", `${at}: seal.path does not lead from the event digest at index ${e.seal.index} of ${count} to the seal's merkle_root ${hex(seal.merkle_root)}`);
      if (ev.kind === "AUTHORIZATION_DECISION") {
        if (trusted.role !== "authorizer")
          throw new Failure("AUTHORIZER_ROLE", `${at}: an AUTHORIZATION_DECISION sealed by ${seal.key_id}, of role ${trusted.role}: it is not an authorization`);
        authorizations++;
      }
      // 4.5
      stage = "chain.links";
      if (e.chainSeq !== BigInt(i)) throw new Failure("CHAIN_SEQUENCE", `${at}: chain_seq ${e.chainSeq}, expected ${i}`);
      if (!eq(e.prevHash, head)) throw new Failure("CHAIN_LINK", `${at}: prev_hash ${hex(e.prevHash)}, expected ${hex(head)} (${i ? "the previous entry's hash" : "the workflow's genesis hash"})`);
      const entryHash = await H(P(0x11), e.prevHash, e.eventDigest, u64be(e.chainSeq), e.policyDigest);
      if (!eq(entryHash, e.entryHash)) throw new Failure("ENTRY_HASH_MISMATCH", `${at}: the fields hash to ${hex(entryHash)}, the entry states ${hex(e.entryHash)}`);
      head = entryHash;
      // 4.6
      stage = "entries.log";
      const cp = sec.bySize.get(e.inclusion.treeSize);
      if (!cp) throw new Failure("MISSING_CHECKPOINT", `${at}: inclusion names a checkpoint of size ${e.inclusion.treeSize}, the section has ${sec.cps.map((c) => c.size).join(", ")}`);
      if (cp.size <= e.logIndex) throw new Failure("STALE_CHECKPOINT", `${at}: log_index ${e.logIndex} is not covered by the checkpoint of size ${cp.size}`);
      const logRoot = ahead.logRoots[i];
      if (logRoot === null || !eq(logRoot, cp.root))
        throw new Failure("LOG_INCLUSION", `${at}: inclusion.path does not lead from the entry hash at log index ${e.logIndex} to the root of ${sec.log.origin} size ${cp.size}`);
    } catch (err) {
      if (!(err instanceof Failure)) throw err;
      const partial = new Map();
      for (const id of ENTRY_IDS) if (id !== stage) partial.set(id, `not completed: verification stopped at entry ${i}${i ? ` (entries 0…${i - 1} passed this check)` : ""}`);
      return fail(stage, err, partial);
    }
  }
  const n = b.entries.length;
  pass("entries.events", `${n} event(s): each hashes to its stated digest, decodes as one complete ExecutionEvent, and names this entry's event id, workflow ${q(b.workflowId)}, partition and topic`);
  pass("entries.seals", `${sealCache.size} seal(s), ${signatures} Ed25519 signature(s) verified with keys valid at each event's time; every event is in its seal's Merkle tree at its sequence number${authorizations ? `; ${authorizations} authorization decision(s) sealed by authorizer keys` : ""}`);
  pass("chain.links", `entries 0…${n - 1} form one gap-free chain from the genesis of ${q(b.workflowId)}; every entry hash recomputed`);
  pass("entries.log", `every entry is in the signed log of partition ${b.entries[0].partition} at its log index`);

  // 5. counts
  try {
    const distinct = [];
    for (const e of b.entries) if (!distinct.includes(e.policyHex)) distinct.push(e.policyHex);
    const stated = b.policyDigests.map((p) => p.hex);
    if (stated.length !== distinct.length || stated.some((h, k) => h !== distinct[k]))
      throw new Failure("POLICY_DIGESTS", `policy_digests lists ${stated.length} digest(s) that are not the entries' ${distinct.length} distinct digest(s) in first-use order`);
    if (b.entryCount !== BigInt(n)) throw new Failure("CHAIN_TRUNCATED", `entry_count is ${b.entryCount}, the bundle holds ${n} entries`);
  } catch (e) {
    return fail("counts", e);
  }
  pass("counts", `policy digests ${b.policyDigests.map((p) => p.hex.slice(0, 12) + "…").join(", ")} in first-use order; entry_count ${b.entryCount} = ${n}`);

  // 6. tail
  let tailDetail, newest;
  try {
    const last = b.entries[n - 1];
    const sec = sections.get(last.partition);
    newest = sec.cps[sec.cps.length - 1];
    if (!newest) throw new Failure("TAIL_PROOF_MISMATCH", `the log of partition ${last.partition} has no checkpoint`);
    const t = b.tail;
    if (t.partition !== last.partition || t.logIndex !== last.logIndex || t.treeSize !== newest.size)
      throw new Failure("TAIL_PROOF_MISMATCH", `the tail names partition ${t.partition}, log index ${t.logIndex}, size ${t.treeSize}; expected the last entry's partition ${last.partition}, log index ${last.logIndex} and the newest checkpoint's size ${newest.size}`);
    const range = { size: t.logIndex, roots: [...t.prefix] };
    await rangeAppend(range, await leafHash(last.entryHash));
    const records = t.following.length / 104;
    const prevHashes = [];
    for (let k = 0; k < records; k++) {
      const r = t.following.subarray(104 * k, 104 * (k + 1));
      prevHashes.push(r.subarray(0, 32));
      await rangeAppend(range, await leafHash(await H(P(0x11), r)));
    }
    if (range.size !== t.treeSize)
      throw new Failure("TAIL_PROOF_MISMATCH", `the tail covers ${range.size} leaves, the newest checkpoint has ${t.treeSize}`);
    const root = await rangeRoot(range);
    if (!eq(root, newest.root))
      throw new Failure("TAIL_PROOF_MISMATCH", `the tail reproduces root ${hex(root)}, the checkpoint of size ${newest.size} signs ${hex(newest.root)}`);
    for (let k = 0; k < records; k++)
      if (eq(prevHashes[k], last.entryHash))
        throw new Failure("CHAIN_TRUNCATED", `the signed log holds a later entry of this chain at log index ${t.logIndex + 1n + BigInt(k)}, which the bundle omits`);
    tailDetail = `complete as of ${sec.log.origin} size ${newest.size}: the last entry (log index ${t.logIndex}) and the ${records} later leaves reproduce the signed root, and none of them links to the last entry`;
  } catch (e) {
    return fail("tail", e);
  }
  pass("tail", tailDetail);

  // v2 claims: steps 7-9 of docs/evidence-bundle.md, after the tail proof (docs/findings.md still
  // says "after step 5 of the v1 algorithm"; the corpus case tail-cut-by-exporter settles it)
  try {
    const r = await checkBinding(b, sections);
    done.set("partition.binding", { id: "partition.binding", title: TITLES["partition.binding"], status: r.warn ? "warn" : "pass", detail: r.detail });
  } catch (e) {
    return fail("partition.binding", e);
  }
  try {
    const r = await checkFindings(b, sections);
    done.set("findings", { id: "findings", title: TITLES.findings, status: r.warn ? "warn" : "pass", detail: r.detail });
  } catch (e) {
    return fail("findings", e);
  }
  // step 9: every policy set loads, then every decision that records its request is re-run
  const cedar = await loadCedar();
  let policySets;
  try {
    policySets = await checkPolicySets(b, cedar);
    done.set("policies", { id: "policies", title: TITLES.policies, status: policySets.notChecked ? "not-checked" : policySets.sets === null ? "skipped" : "pass", detail: policySets.detail });
  } catch (e) {
    return fail("policies", e);
  }
  const rr = { decisions: 0, requests: 0, stage: "decisions", rerun: [], notChecked: [], ms: 0 };
  try {
    await checkDecisions(b, evs, policySets.sets, cedar, rr);
  } catch (e) {
    const other = rr.stage === "decisions" ? "decisions.rerun" : "decisions";
    const n = rr.rerun.length + rr.notChecked.length;
    return fail(rr.stage, e, new Map([[other, `not completed: verification stopped at the decision of ${rr.at ?? "the first entry"}${n ? ` (${n} decision(s) before it passed both checks)` : ""}`]]));
  }
  const old = rr.decisions - rr.requests;
  done.set("decisions", { id: "decisions", title: TITLES.decisions, status: old ? "warn" : rr.requests ? "pass" : "skipped",
    detail: `${rr.decisions} decision(s); ${rr.requests} record their request: each is canonical, hashes to the decision's input_digest, names the event's principal, action and resource, and the bundle carries the policy set its digest names` +
      (old ? `. WARNING: ${old} authorization decision(s) recorded before requests were kept: their policy digest is a claim only, not re-run` : "") });
  if (!rr.requests) done.set("decisions.rerun", { id: "decisions.rerun", title: TITLES["decisions.rerun"], status: "skipped", detail: "no decision records its request: nothing to re-run" });
  else if (rr.notChecked.length) {
    const why = cedar.ok ? rr.notChecked.join("; ") : `the Cedar engine could not be loaded in this browser (${cedar.reason})`;
    done.set("decisions.rerun", { id: "decisions.rerun", title: TITLES["decisions.rerun"], status: "not-checked",
      detail: `NOT CHECKED HERE: ${rr.notChecked.length} of ${rr.requests} decision(s) could not be re-run on this page: ${why}. ${rr.rerun.length ? `${rr.rerun.length} were re-run and agree. ` : ""}Run \`lineage verify\` for them.` });
  } else {
    const allow = rr.rerun.filter((r) => r.decision === "ALLOW").length;
    const by = new Map();
    for (const r of rr.rerun) for (const p of r.determining) by.set(p, (by.get(p) || 0) + 1);
    done.set("decisions.rerun", { id: "decisions.rerun", title: TITLES["decisions.rerun"], status: "pass",
      detail: `${rr.rerun.length} decision(s) re-run with Cedar ${cedar.version} under the policy set their digest names give the recorded decision, policy id and determining policies: ${allow} ALLOW, ${rr.rerun.length - allow} DENY` +
        (by.size ? `; determining: ${[...by.entries()].map(([p, n]) => `${q(p)} ×${n}`).join(", ")}` : "") +
        ` (Cedar: ${Math.round(rr.ms)} ms)` });
  }

  // witness cosignatures (docs/witness.md): after the ordinary verification succeeded
  if (witnessKeys.length) {
    try {
      pass("witness", await checkWitnesses(b, sections, trust, anchored ? sealKeys : null, vkeys));
    } catch (e) {
      return fail("witness", e);
    }
  }

  if (anchored && trust.independent === false)
    done.set("trust.anchored", { id: "trust.anchored", title: TITLES["trust.anchored"], status: "untrusted",
      detail: "CONSISTENT BUT UNTRUSTED: the registry you pinned is the operator's own (published by the system that holds the evidence), not independent of it. Pin a registry you obtained another way." });
  else if (anchored) pass("trust.anchored", "every seal signature chains to your registry and every checkpoint signature to a processor key you named or pinned");
  else done.set("trust.anchored", { id: "trust.anchored", title: TITLES["trust.anchored"], status: "untrusted",
    detail: "CONSISTENT BUT UNTRUSTED: the bundle is consistent under the keys it names itself, which a forger who replaced keys, seals, entries and checkpoints together also reaches. Pin a registry you obtained independently." });
  return finish(null);
}

// ---------------------------------------------------------------------------------------------
// witness cosignatures (c2sp.org/tlog-cosignature, cosignature/v1; docs/witness.md)
async function checkWitnesses(b, sections, trust, registry, vkeys) {
  const wkeys = [];
  for (let k = 0; k < trust.witnessKeys.length; k++) {
    try {
      wkeys.push(await parseVerifierKey(trust.witnessKeys[k], 0x04, `your witness key ${k + 1}`));
    } catch (e) {
      throw e;
    }
  }
  const required = trust.witnessesRequired ?? 1;
  if (!Number.isInteger(required) || required < 1 || required > wkeys.length)
    throw unusable(`witnesses required must be between 1 and the ${wkeys.length} witness key(s) you named, found ${required}`);
  const now = BigInt(Math.floor(trust.now ?? Date.now() / 1000));
  const lines = [];
  for (const { log, cps } of sections.values()) {
    for (let j = 0; j < cps.length; j++) {
      const cp = cps[j];
      const newestCp = j === cps.length - 1;
      const what = `${log.origin} size ${cp.size}`;
      // the cosigned message: "cosignature/v1\ntime T\n" + the checkpoint text without signatures
      const witnesses = new Map();
      for (const s of cp.signed.sigs) {
        for (const w of wkeys) {
          if (s.name !== w.name || !eq(s.id, w.id)) continue;
          if (s.body.length !== 72) throw new Failure("WITNESS_COSIGNATURES", `${what}: the cosignature by ${w.name} is not 8 bytes of time and 64 of signature`);
          let ts = 0n;
          for (let q = 0; q < 8; q++) ts = (ts << 8n) | BigInt(s.body[q]);
          if (ts >= 1n << 63n) throw new Failure("WITNESS_COSIGNATURES", `${what}: cosignature time ${ts} above 2^63 − 1`);
          const msg = concat(utf8(`cosignature/v1\ntime ${ts}\n`), utf8(cp.signed.text));
          if (!(await ed25519Verify(w.pk, s.body.subarray(8), msg)))
            throw new Failure("WITNESS_COSIGNATURES", `${what}: the cosignature by trusted witness ${w.name} does not verify`);
          if (ts > now + 300n) throw new Failure("WITNESS_COSIGNATURES", `${what}: the cosignature by ${w.name} is dated ${ts}, more than 300 s after this computer's clock (${now})`);
          if (!witnesses.has(w.text)) witnesses.set(w.text, { w, ts });
        }
      }
      if (!witnesses.size && !newestCp) continue;
      if (newestCp && witnesses.size < required)
        throw new Failure("WITNESS_COSIGNATURES", `${what}: cosigned by ${witnesses.size} trusted witness(es), ${required} required`);
      if (registry !== null) {
        // a cosignature must be dated inside the validity window of a processor key that signed the note
        const signers = vkeys.filter((k) => cp.signed.sigs.some((s) => s.name === k.name && eq(s.id, k.id)));
        const windows = [...registry.values()].filter((r) => r.role === "processor" && signers.some((k) => eq(k.pk, r.pk)))
          .map((r) => ({ notBefore: r.notBefore,
            // cut at compromised_at; a key revoked without it vouches for no time at all
            notAfter: r.revokedAt === null ? r.notAfter : r.compromisedAt === null ? -1n
              : r.notAfter === null || r.notAfter >= r.compromisedAt ? r.compromisedAt - 1n : r.notAfter }));
        if (windows.length) {
          const inside = [...witnesses.values()].filter(({ ts }) => windows.some((r) => ts * 1_000_000n >= r.notBefore && (r.notAfter === null || ts * 1_000_000n <= r.notAfter)));
          if (!inside.length)
            throw new Failure("KEY_EXPIRED", `${what}: every trusted cosignature is dated outside the validity window of the processor key that signed it (${[...witnesses.values()].map(({ ts }) => fmtUs(ts * 1_000_000n)).join(", ")})`);
        }
      }
      if (newestCp) lines.push(`${what}: ${[...witnesses.values()].map(({ w, ts }) => `${w.name} at ${fmtUs(ts * 1_000_000n)} (${now - ts} s ago)`).join(", ")}`);
    }
  }
  return `the newest checkpoint of every log is cosigned by ${required === 1 ? "a trusted witness" : `${required} distinct trusted witnesses`}: ${lines.join("; ")}`;
}

// ---------------------------------------------------------------------------------------------
// v2: partition binding, findings log, decisions (docs/findings.md)

// Kafka's default partitioner hash (Java-compatible murmur2, seed 0x9747b28c)
export function murmur2(data) {
  const m = 0x5bd1e995, len = data.length;
  let h = (0x9747b28c ^ len) | 0;
  const n4 = len & ~3;
  for (let i = 0; i < n4; i += 4) {
    let k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24);
    k = Math.imul(k, m);
    k ^= k >>> 24;
    k = Math.imul(k, m);
    h = Math.imul(h, m) ^ k;
  }
  switch (len & 3) {
    case 3: h ^= data[n4 + 2] << 16; // falls through
    case 2: h ^= data[n4 + 1] << 8; // falls through
    case 1: h ^= data[n4]; h = Math.imul(h, m);
  }
  h ^= h >>> 13;
  h = Math.imul(h, m);
  h ^= h >>> 15;
  return h | 0;
}

function extensionLines(cp, word) {
  return cp.extensions.filter((line) => line.split(" ")[0] === word);
}

async function checkBinding(b, sections) {
  if (b.v2)
    for (const member of ["policies", "findings"])
      if (!Object.prototype.hasOwnProperty.call(b.raw, member)) throw unusable(`a ${FORMAT_V2} bundle without its '${member}' member`);
  const used = [...new Set(b.entries.map((e) => e.partition))];
  const parts = [];
  let unsigned = 0;
  for (const p of used) {
    const sec = sections.get(p);
    let count = null;
    for (let j = 0; j < sec.cps.length; j++) {
      const what = `${sec.log.origin} size ${sec.cps[j].size}`;
      const lines = extensionLines(sec.cps[j], "partitions");
      if (lines.length > 1) throw new Failure("PARTITION_BINDING", `${what}: ${lines.length} 'partitions' lines in one checkpoint`);
      if (!lines.length) {
        if (count !== null) throw new Failure("PARTITION_BINDING", `${what}: no 'partitions' line, but an earlier checkpoint of this log names ${count}`);
        continue;
      }
      const m = /^partitions ([1-9][0-9]{0,9})$/.exec(lines[0]);
      if (!m || BigInt(m[1]) > U31 - 1n) throw new Failure("PARTITION_BINDING", `${what}: ${q(lines[0])} is not 'partitions N' with 1 ≤ N ≤ 2^31−1`);
      const n = BigInt(m[1]);
      if (count !== null && n !== count) throw new Failure("PARTITION_BINDING", `${what}: names ${n} partitions, an earlier checkpoint of this log ${count}`);
      count = n;
    }
    if (count === null) { unsigned++; continue; }
    const home = BigInt(murmur2(utf8(b.workflowId)) & 0x7fffffff) % count;
    if (home !== p)
      throw new Failure("PARTITION_BINDING", `workflow ${q(b.workflowId)} maps to partition ${home} of ${count} (murmur2), its chain is in partition ${p}: it cannot be the workflow's chain`);
    parts.push(`partition ${p} of ${count}`);
  }
  if (unsigned) return { warn: true, detail: `WARNING: partition binding not signed (older format): the checkpoints of ${unsigned} log(s) name no partition count, so a second chain of this workflow in another partition is not ruled out` };
  return { warn: false, detail: `the signed checkpoints bind the workflow to ${parts.join(", ")}: murmur2(${q(b.workflowId)}) maps there, so this is the only chain an honest processor can have signed` };
}

function parseFindings(raw) {
  const f = obj(raw, "findings");
  const leaves = b64(req(f, "leaves", "findings"), "findings.leaves", MAX_FINDINGS * 64);
  if (leaves.length % 64 !== 0) throw unusable(`findings.leaves: ${leaves.length} bytes, not a multiple of 64`);
  return {
    partition: int(req(f, "partition", "findings"), "findings.partition", U31),
    treeSize: int(req(f, "tree_size", "findings"), "findings.tree_size", BigInt(MAX_FINDINGS) + 1n),
    leaves,
    records: list(req(f, "records", "findings"), "findings.records", MAX_FINDINGS).map((r0, k) => {
      const w = `findings.records[${k}]`;
      const r = obj(r0, w);
      return { index: int(req(r, "index", w), `${w}.index`), record: b64(req(r, "record", w), `${w}.record`, LIMITS.recordBytes) };
    }),
  };
}

// the bundle's policies member (docs/evidence-bundle.md step 9; lineage/policy_replay.py limits):
// every problem here means a policy set that does not load, POLICY_SET_MISSING
function parsePolicies(raw) {
  const M = (msg) => new Failure("POLICY_SET_MISSING", msg);
  if (!Array.isArray(raw) || raw.length > MAX_POLICY_SETS) throw M(`policies: expected a list of at most ${MAX_POLICY_SETS} policy sets, found ${Array.isArray(raw) ? raw.length + " sets" : typeName(raw)}`);
  return raw.map((ps, k) => {
    const w = `policies[${k}]`;
    if (!isObject(ps)) throw M(`${w}: expected an object, found ${typeName(ps)}`);
    const bytes = (member) => {
      const v = ps[member];
      if (typeof v !== "string") throw M(`${w}.${member}: expected base64 text, found ${v === undefined ? "none" : typeName(v)}`);
      const out = pyB64decode(v);
      if (out === null) throw M(`${w}.${member}: expected standard base64`);
      if (out.length > MAX_POLICY_FILE_BYTES) throw M(`${w}.${member}: expected at most ${MAX_POLICY_FILE_BYTES} bytes, found ${out.length}`);
      return out;
    };
    return { toml: bytes("toml"), cedar: bytes("cedar") };
  });
}

async function checkFindings(b, sections) {
  const sec = sections.get(b.tail.partition);
  const c = sec && sec.cps[sec.cps.length - 1];
  const lines = c ? extensionLines(c, "findings") : [];
  const F = (msg) => new Failure("FINDINGS_MISMATCH", msg);
  if (!b.v2) {
    if (lines.length) throw F(`a ${FORMAT} bundle whose newest checkpoint commits to a findings log: the findings cannot be shown (export a v2 bundle)`);
    return { warn: true, detail: "WARNING: findings not committed (older format): a v1 bundle of a log without a findings line; violations raised about the workflow can be neither shown nor ruled out" };
  }
  if (!lines.length) {
    if (b.raw.findings !== null) throw F("the newest checkpoint has no 'findings' line, but the bundle's findings member is not null");
    return { warn: true, detail: "WARNING: findings not committed (older format): the newest checkpoint names no findings log, so violations raised about the workflow can be neither shown nor ruled out" };
  }
  const what = `${sec.log.origin} size ${c.size}`;
  if (lines.length > 1) throw F(`${what}: ${lines.length} 'findings' lines in one checkpoint`);
  const m = /^findings (0|[1-9][0-9]*) (\S+)$/.exec(lines[0]);
  const root = m ? b64decode(m[2]) : null;
  if (!m || root === null || root.length !== 32) throw F(`${what}: ${q(lines[0])} is not 'findings F <base64 root>'`);
  const size = BigInt(m[1]);
  if (b.raw.findings === null || b.raw.findings === undefined) throw F(`the newest checkpoint commits to ${size} findings, the bundle's findings member is null`);
  let f;
  try {
    f = parseFindings(b.raw.findings);
  } catch (e) {
    if (e instanceof Failure) throw F(e.message);
    throw e;
  }
  if (f.partition !== b.tail.partition) throw F(`findings.partition ${f.partition}, the tail's partition is ${b.tail.partition}`);
  if (f.treeSize !== size) throw F(`findings.tree_size ${f.treeSize}, the checkpoint signs ${size}`);
  if (BigInt(f.leaves.length) !== size * 64n) throw F(`findings.leaves holds ${f.leaves.length / 64} leaves, the checkpoint signs ${size}`);
  const range = { size: 0n, roots: [] };
  const n = f.leaves.length / 64;
  for (let k = 0; k < n; k++) await rangeAppend(range, await leafHash(f.leaves.subarray(64 * k, 64 * k + 64)));
  const got = await rangeRoot(range);
  if (!eq(got, root)) throw F(`the ${n} findings leaves have root ${hex(got)}, the checkpoint signs ${hex(root)}`);
  const tag = await H(P(0x16), utf8(b.workflowId));
  const tagged = [];
  for (let k = 0; k < n; k++) if (eq(f.leaves.subarray(64 * k, 64 * k + 32), tag)) tagged.push(BigInt(k));
  const given = f.records.map((r) => r.index);
  for (let k = 0; k < Math.max(tagged.length, given.length); k++) {
    if (tagged[k] !== given[k]) {
      const missing = tagged.find((t) => !given.includes(t));
      throw F(missing !== undefined ? `the findings log holds a finding about this workflow at index ${missing} that the bundle omits` : `findings.records[${k}] names index ${given[k]}, which is not a leaf tagged with this workflow (expected ${tagged[k] ?? "none"})`);
    }
  }
  const shown = [];
  for (let k = 0; k < f.records.length; k++) {
    const r = f.records[k];
    const at = `findings.records[${k}] (index ${r.index})`;
    const leaf = f.leaves.subarray(64 * Number(r.index), 64 * Number(r.index) + 64);
    if (!eq(concat(tag, await H(P(0x15), r.record)), leaf)) throw F(`${at}: the record does not hash to its leaf`);
    let v;
    try {
      v = decodeSingleObject(r.record, SCHEMAS.violation, VIOLATION_FP);
    } catch (err) {
      if (err instanceof AvroError) throw F(`${at}: not a single-object Violation record: ${err.message}`);
      throw err;
    }
    if (v.workflow_id !== b.workflowId) throw F(`${at}: a finding about workflow ${q(v.workflow_id)}`);
    const idm = /^[0-9a-f]{32}-(0|[1-9][0-9]*)$/.exec(v.violation_id);
    if (!idm || BigInt(idm[1]) !== r.index) throw F(`${at}: violation id ${q(v.violation_id)} does not name index ${r.index}`);
    shown.push(`${v.violation_type} (${v.severity}, rule ${q(v.rule)})`);
  }
  return { warn: false, detail: `the findings log of ${what} (${n} finding(s) in the partition, root as signed) holds ${shown.length} finding(s) about this workflow, all in the bundle${shown.length ? ": " + shown.join("; ") : ""}` };
}

// canonical request JSON (docs/policy.md): sorted keys, "," and ":" with no spaces, UTF-8
function canonicalJson(v) {
  if (v === null) return "null";
  if (typeof v === "boolean") return v ? "true" : "false";
  if (typeof v === "bigint") return v.toString();
  if (typeof v === "string") {
    return '"' + v.replace(/["\\\u0000-\u001f]/g, (c) => ({ '"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t" }[c] ?? "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"))) + '"';
  }
  if (Array.isArray(v)) return "[" + v.map(canonicalJson).join(",") + "]";
  if (isObject(v)) {
    const keys = Object.keys(v).sort((a, b) => { const x = [...a].map((c) => c.codePointAt(0)), y = [...b].map((c) => c.codePointAt(0)); for (let k = 0; k < Math.min(x.length, y.length); k++) if (x[k] !== y[k]) return x[k] - y[k]; return x.length - y.length; });
    return "{" + keys.map((k) => canonicalJson(k) + ":" + canonicalJson(v[k])).join(",") + "}";
  }
  return String(v); // a non-integer number: never canonical here
}

// Every policy set of the bundle must load (as `lineage verify` loads them all before re-running
// anything): TOML limits and Cedar rules. Returns the sets by digest hex, or null without a
// policies member (format v1). Without the Cedar engine only the TOML is checked.
async function checkPolicySets(b, cedar) {
  const raw = b.raw.policies;
  if (raw === undefined || raw === null)
    return { sets: null, detail: `the bundle carries no policy sets (its policies member is ${raw === null ? "null" : "absent, as in format v1"})` };
  const parsed = parsePolicies(raw);
  const sets = new Map();
  for (let k = 0; k < parsed.length; k++) {
    const ps = parsed[k];
    const digest = hex(await H(u64be(ps.toml.length), ps.toml, u64be(ps.cedar.length), ps.cedar));
    if (sets.has(digest)) throw new Failure("POLICY_SET_MISSING", `bundle.policies[${k}] (sha256:${digest}) repeats bundle.policies[${[...sets.keys()].indexOf(digest)}]: a bundle carries each policy set once`);
    try {
      sets.set(digest, loadPolicySet(ps.toml, ps.cedar, cedar.ok ? cedar.engine : null, `policies[${k}]`, digest));
    } catch (e) {
      if (e instanceof PolicyConfigError) throw new Failure("POLICY_SET_MISSING", `policies[${k}] (sha256:${digest}) does not load, so no decision under it can be re-run: ${e.message}`);
      throw e;
    }
  }
  const list = [...sets.entries()].map(([d, s]) => `${q(s.policyId)} version ${q(s.version)} (sha256:${d.slice(0, 12)}…${s.cedarIds ? `, Cedar policies ${s.cedarIds.map(q).join(", ")}` : ""})`);
  if (!cedar.ok && sets.size)
    return { sets, notChecked: true, detail: `NOT CHECKED HERE: the Cedar engine could not be loaded in this browser (${cedar.reason}), so whether the Cedar text of ${sets.size} policy set(s) loads is not checked; their TOML loads: ${list.join("; ")}` };
  return { sets, detail: `${sets.size} policy set(s), each loads${cedar.ok ? ` with Cedar ${cedar.version}` : ""} (TOML limits as documented; Cedar text parses, no templates, a unique @id on every policy, at least one permit): ${list.join("; ") || "none"}` };
}

// The decisions that record their request, re-run in chain order, each in the order
// docs/policy.md "Re-running decisions" gives: request form and digest, names, the policy set
// present, then Cedar's decision again. `stage` says which of the two checks a failure belongs to.
async function checkDecisions(b, evs, sets, cedar, result) {
  const D = (msg) => new Failure("POLICY_DECISION_MISMATCH", msg);
  const decisions = evs.map((ev, i) => [ev, i]).filter(([ev]) => ev.kind === "AUTHORIZATION_DECISION");
  const withRequest = decisions.filter(([ev]) => ev.attributes.get("lineage.request") !== undefined);
  result.decisions = decisions.length;
  result.requests = withRequest.length;
  result.stage = "decisions";
  if (withRequest.length && sets === null) {
    const [ev, i] = withRequest[0];
    throw new Failure("POLICY_SET_MISSING", `entries[${i}] (decision ${q(ev.event_id)}): the decisions record their requests but the bundle carries no policy sets (a format v1 bundle of newer evidence: export it again); expected ${q(ev.authorization ? ev.authorization.policy_digest : "")}`);
  }
  for (const [ev, i] of withRequest) {
    result.stage = "decisions";
    const text = ev.attributes.get("lineage.request");
    const at = `entries[${i}] (decision ${q(ev.event_id)})`;
    result.at = `entries[${i}]`;
    const a = ev.authorization;
    if (a === null) throw D(`${at}: records a request but no authorization`);
    const digest = "sha256:" + hex(await sha256(utf8(text)));
    if (digest !== a.input_digest) throw D(`${at}: the request hashes to ${digest}, the decision's input_digest is ${q(a.input_digest)}`);
    if (utf8(text).length > MAX_REQUEST_BYTES) throw D(`${at}: lineage.request is longer than ${MAX_REQUEST_BYTES} bytes`);
    let req;
    try {
      req = parseStrict(text);
    } catch (err) {
      if (err instanceof JsonError) throw D(`${at}: lineage.request is not JSON: ${err.message}`);
      throw err;
    }
    const keys = isObject(req) ? Object.keys(req).sort().join(",") : "";
    const ctxOk = isObject(req) && isObject(req.context) && Object.values(req.context).every((x) => typeof x === "string" || typeof x === "bigint" || typeof x === "boolean");
    if (keys !== "action,context,principal,resource" || typeof req.principal !== "string" || typeof req.action !== "string" ||
      !(req.resource === null || typeof req.resource === "string") || !ctxOk)
      throw D(`${at}: lineage.request is not a request {action, context, principal, resource}`);
    if (canonicalJson(req) !== text) throw D(`${at}: lineage.request is not in canonical form`);
    const names = [["principal", req.principal, ev.principal], ["action", req.action, ev.action], ["resource", req.resource, ev.resource],
      ["authorized_action", req.action, a.authorized_action], ["authorized_resource", req.resource, a.authorized_resource]];
    for (const [field, want, got] of names)
      if (want !== got) throw D(`${at}: the request names ${field === "authorized_action" || field === "authorized_resource" ? "" : "the event's "}${field.replace("authorized_", "")} ${want === null ? "none" : q(want)}, the ${field.startsWith("authorized") ? "authorization's " + field : "event's"} is ${got === null ? "none" : q(got)}`);
    const pd = /^sha256:([0-9a-f]{64})$/.exec(a.policy_digest);
    const set = pd ? sets.get(pd[1]) : undefined;
    if (set === undefined)
      throw new Failure("POLICY_SET_MISSING", `${at}: the bundle does not carry the policy set the decision names: expected ${q(a.policy_digest)}, found ${[...sets.keys()].map((d) => "sha256:" + d.slice(0, 12) + "…").join(", ") || "no policy sets"}`);
    result.stage = "decisions.rerun";
    let again;
    const t0 = performance.now();
    try {
      again = evaluate(set, req);
      result.ms += performance.now() - t0;
    } catch (err) {
      if (err instanceof NotCheckable) { result.notChecked.push(`${at}: ${err.message}`); continue; }
      if (err instanceof PolicyEvaluationError)
        throw D(`${at}: the policy set does not decide the recorded request: ${err.message}; recorded ${a.decision} by ${JSON.stringify(a.determining_policies)}`);
      throw err;
    }
    const recorded = [a.decision, a.policy_id, a.determining_policies];
    const computed = [again.decision, again.policyId, again.determining];
    if (recorded[0] !== computed[0] || recorded[1] !== computed[1] || recorded[2].length !== computed[2].length || recorded[2].some((p, k) => p !== computed[2][k]))
      throw D(`${at}: re-running the request under the named policy set gives another decision: Cedar gives ${computed[0]} by ${q(computed[1])} ${JSON.stringify(computed[2])}, the event records ${recorded[0]} by ${q(recorded[1])} ${JSON.stringify(recorded[2])}`);
    result.rerun.push({ decision: again.decision, determining: again.determining });
  }
}

// One cosignature/v1 line checked against a witness verifier key, for the specification's test
// vectors (docs/witness.md): returns the timestamp (BigInt) or null when it does not verify.
export async function cosignatureTime(witnessKey, noteText, line) {
  const w = await parseVerifierKey(witnessKey, 0x04, "witness key");
  const parsed = splitNote(noteText + "\n" + line + "\n");
  if (!parsed || parsed.sigs.length !== 1) return null;
  const s = parsed.sigs[0];
  if (s.name !== w.name || !eq(s.id, w.id) || s.body.length !== 72) return null;
  let ts = 0n;
  for (let q = 0; q < 8; q++) ts = (ts << 8n) | BigInt(s.body[q]);
  const msg = concat(utf8(`cosignature/v1\ntime ${ts}\n`), utf8(parsed.text));
  return (await ed25519Verify(w.pk, s.body.subarray(8), msg)) ? ts : null;
}

// ---------------------------------------------------------------------------------------------
export function outcome(checks) {
  const failed = checks.find((c) => c.status === "fail");
  if (failed) {
    const unusableInput = failed.failureKind === "UNUSABLE_INPUT";
    return { verdict: unusableInput ? "UNUSABLE_INPUT" : "FAILED", exitCode: unusableInput ? 2 : 1, failureKind: failed.failureKind ?? null };
  }
  if (!checks.length) return { verdict: "NOT_FULLY_VERIFIED", exitCode: null, failureKind: null };
  if (checks.some((c) => c.status === "untrusted")) return { verdict: "CONSISTENT_BUT_UNTRUSTED", exitCode: 3, failureKind: null };
  // "warn" is a pass with a warning (the CLI's exit 0 with warnings)
  if (checks.some((c) => c.status === "not-checked")) return { verdict: "NOT_FULLY_VERIFIED", exitCode: null, failureKind: null };
  return { verdict: "VERIFIED", exitCode: 0, failureKind: null };
}

// the label the page shows
export function verdict(checks) {
  const o = outcome(checks);
  return {
    VERIFIED: "verified",
    FAILED: "failed",
    UNUSABLE_INPUT: "unusable input",
    CONSISTENT_BUT_UNTRUSTED: "consistent but untrusted",
    NOT_FULLY_VERIFIED: "not fully verified",
  }[o.verdict];
}

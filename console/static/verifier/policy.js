// Policy sets and the re-run of recorded authorization decisions, in the browser, with the Cedar
// engine itself (the official WebAssembly build, vendored: console/static/vendor/cedar-wasm/,
// @cedar-policy/cedar-wasm 4.12.0 = Cedar 4.12.0, the engine cedarpy 4.12.2 embeds).
//
// Written from docs/policy.md ("Policy file format", "Pre-execution gate", "Re-running
// decisions"); it must reach the same answer as `lineage verify` on every bundle:
//   - a policy set loads when its TOML is UTF-8 TOML with only the documented sections and keys,
//     typed as documented, and its Cedar text is UTF-8, parses, has no templates, gives every
//     policy a unique non-empty @id and holds at least one permit (else PolicyConfigError:
//     POLICY_SET_MISSING, "does not load");
//   - a request is evaluated with the entities docs/policy.md lists, no schema, and must decide
//     cleanly (no evaluation error) (else PolicyEvaluationError: POLICY_DECISION_MISMATCH);
//   - the decision is ALLOW/DENY, the policy id the TOML's policy.id, the determining policies
//     the sorted @ids of Cedar's reasons.
//
// Interface
//   loadCedar() -> Promise<{ ok: true, engine, version } | { ok: false, reason }>  (once per page)
//   loadPolicySet(tomlBytes, cedarBytes, cedar | null, source, digestHex) -> PolicySet
//       cedar null: the TOML is checked, the Cedar text is not (set.cedarChecked === false)
//   evaluate(set, request) -> { decision: "ALLOW" | "DENY", policyId, determining: string[] }
//       throws PolicyEvaluationError, or NotCheckable when the request cannot be handed to the
//       engine exactly (an integer beyond ±2^53 in a browser without JSON.rawJSON)

import { parse as parseToml, TomlError } from "../vendor/smol-toml/index.js";

export class PolicyConfigError extends Error {}
export class PolicyEvaluationError extends Error {}
export class NotCheckable extends Error {}

export const NO_RESOURCE = "none";
const EVENT_KINDS = ["WORKFLOW_STARTED", "AUTHORIZATION_DECISION", "EXECUTION_STARTED", "EXECUTION_COMPLETED",
  "EXECUTION_FAILED", "RESOURCE_ACCESS", "ATTESTATION", "WORKFLOW_COMPLETED"];
const SEVERITIES = ["LOW", "MEDIUM", "HIGH", "CRITICAL"];
const VIOLATION_TYPES = ["UNAUTHORIZED_EXECUTION", "DENIED_EXECUTION", "EXPIRED_AUTHORIZATION", "SCOPE_MISMATCH",
  "UNTRUSTED_AUTHORIZER", "MISSING_ATTESTATION", "ATTESTATION_CHANGED", "DEPTH_EXCEEDED", "FANOUT_EXCEEDED",
  "FORBIDDEN_RESOURCE", "SEQUENCE_GAP", "DUPLICATE_CONFLICT", "ORPHAN_EVENT", "BAD_SIGNATURE", "UNSEALED_EVENT",
  "UNKNOWN_KEY", "CONTAINED_WORKFLOW"];
const SECTIONS = {
  policy: ["id", "version", "cedar"],
  limits: ["max_depth", "max_fanout", "authorization_required_for"],
  attestation: ["required_for_agents"],
  resources: ["forbidden"],
  severity: VIOLATION_TYPES,
  containment: ["critical_contains"],
};
const I64_MIN = -(1n << 63n), I64_MAX = (1n << 63n) - 1n, MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

// ---------------------------------------------------------------------------------------------
// the engine
const VENDOR = new URL("../vendor/cedar-wasm/", import.meta.url);
let loading = null;
let exactIntegers = false;
export function loadCedar() {
  if (loading === null) {
    loading = (async () => {
      try {
        const engine = await import(new URL("cedar_wasm.js", VENDOR).href);
        const response = await fetch(new URL("cedar_wasm_bg.wasm", VENDOR));
        if (!response.ok) throw new Error(`cedar_wasm_bg.wasm: HTTP ${response.status}`);
        await engine.default({ module_or_path: response });
        // a self-test, which also compiles the engine's hot paths before the first bundle
        const probe = (id) => engine.isAuthorized({
          principal: uid("Agent", "a"), action: uid("Action", id), resource: uid("Resource", "r"), context: {},
          policies: { staticPolicies: '@id("p") permit (principal, action == Action::"yes", resource);' }, entities: [],
        });
        const yes = probe("yes"), no = probe("no");
        if (yes.type !== "success" || yes.response.decision !== "allow" || yes.response.diagnostics.reason.join() !== "policy0" ||
          no.type !== "success" || no.response.decision !== "deny")
          throw new Error(`the engine failed its self-test: ${JSON.stringify([yes, no]).slice(0, 300)}`);
        // cedar-wasm reads its argument as JSON text (JSON.stringify): JSON.rawJSON hands it a
        // 64-bit integer digit for digit, which a JavaScript number cannot hold
        exactIntegers = false;
        if (typeof JSON.rawJSON === "function") {
          const big = (n) => engine.isAuthorized({
            principal: uid("Agent", "a"), action: uid("Action", "a"), resource: uid("Resource", "r"), context: { n: JSON.rawJSON(n) },
            policies: { staticPolicies: "permit (principal, action, resource) when { context.n == 9223372036854775807 };" }, entities: [],
          });
          const max = big("9223372036854775807"), below = big("9223372036854775806");
          exactIntegers = max.type === "success" && max.response.decision === "allow" && below.type === "success" && below.response.decision === "deny";
        }
        return { ok: true, engine, version: engine.getCedarVersion() };
      } catch (e) {
        return { ok: false, reason: String((e && e.message) || e) };
      }
    })();
  }
  return loading;
}

const repr = (v) => (typeof v === "string" ? JSON.stringify(v) : typeof v === "bigint" ? String(v) : v === null ? "null" : Array.isArray(v) ? "a list" : typeof v === "object" ? "a table" : String(v));
const isTable = (v) => v !== null && typeof v === "object" && !Array.isArray(v) && !(v instanceof Date);
const has = (o, k) => Object.prototype.hasOwnProperty.call(o, k);
const messages = (errors) => (errors || []).map((e) => e.message + (e.sourceLocations && e.sourceLocations.length ? ` (at ${e.sourceLocations.map((s) => s.start).join(", ")})` : "")).join("; ");

// ---------------------------------------------------------------------------------------------
// loading a policy set (the TOML limits and the Cedar rules)

// smol-toml reads the escapes TOML 1.1 adds (\xHH, \e); Python's tomllib reads TOML 1.0 and
// refuses them. Returns the position of the first such escape in a basic string, or -1. Only
// strings are scanned (comments and literal strings skipped); smol-toml checks everything else.
export function toml11Escape(text) {
  let k = 0;
  const n = text.length;
  while (k < n) {
    const c = text[k];
    if (c === "#") {
      while (k < n && text[k] !== "\n") k++;
    } else if (c === "'") {
      const ml = text.startsWith("'''", k);
      const end = ml ? text.indexOf("'''", k + 3) : text.indexOf("'", k + 1);
      if (end < 0) return -1; // unterminated: smol-toml refuses it
      k = end + (ml ? 3 : 1);
      if (ml) while (text[k] === "'" && k < n) k++; // up to two quotes before the delimiter
    } else if (c === '"') {
      const ml = text.startsWith('"""', k);
      k += ml ? 3 : 1;
      for (;;) {
        if (k >= n) return -1;
        if (text[k] === "\\") {
          if (text[k + 1] === "x" || text[k + 1] === "e") return k;
          k += 2;
        } else if (ml ? text.startsWith('"""', k) : text[k] === '"') {
          k += ml ? 3 : 1;
          if (ml) while (text[k] === '"' && k < n) k++;
          break;
        } else if (!ml && text[k] === "\n") return -1;
        else k++;
      }
    } else k++;
  }
  return -1;
}

function tomlDoc(bytes, source) {
  let text;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    throw new PolicyConfigError(`${source}: expected a UTF-8 TOML policy file, found bytes that are not UTF-8`);
  }
  // Python's tomllib (TOML 1.0) refuses a byte order mark, where smol-toml skips it
  if (text.startsWith("\ufeff")) throw new PolicyConfigError(`${source}: expected a UTF-8 TOML policy file, found a byte order mark`);
  let doc;
  try {
    doc = parseToml(text, { integersAsBigInt: true, unsafeKeyBehaviour: "throw" });
  } catch (e) {
    if (e instanceof TomlError || e instanceof Error) throw new PolicyConfigError(`${source}: expected a UTF-8 TOML policy file, found: ${e.message}`);
    throw e;
  }
  const escape = toml11Escape(text);
  if (escape >= 0) throw new PolicyConfigError(`${source}: expected a TOML 1.0 policy file, found the TOML 1.1 escape ${JSON.stringify(text.slice(escape, escape + 2))} at character ${escape}`);
  for (const section of Object.keys(doc)) {
    if (!has(SECTIONS, section)) throw new PolicyConfigError(`${source}: unknown section [${section}]; expected one of ${Object.keys(SECTIONS).join(", ")}`);
    if (!isTable(doc[section])) throw new PolicyConfigError(`${source}: ${section}: expected a table, found ${repr(doc[section])}`);
    for (const key of Object.keys(doc[section]))
      if (!SECTIONS[section].includes(key)) throw new PolicyConfigError(`${source}: unknown key ${section}.${key}`);
  }
  return doc;
}
function get(doc, section, key, source) {
  if (!has(doc, section) || !has(doc[section], key)) throw new PolicyConfigError(`${source}: missing required key ${section}.${key}`);
  return doc[section][key];
}
function getStr(doc, section, key, source) {
  const v = get(doc, section, key, source);
  if (typeof v !== "string" || v === "") throw new PolicyConfigError(`${source}: ${section}.${key}: expected a non-empty string, found ${repr(v)}`);
  return v;
}
function getInt(doc, section, key, source) {
  const v = get(doc, section, key, source);
  if (typeof v !== "bigint" || v < 1n) throw new PolicyConfigError(`${source}: ${section}.${key}: expected an integer >= 1, found ${repr(v)}`);
  return v;
}
function getStrList(doc, section, key, source, dflt) {
  const v = has(doc, section) && has(doc[section], key) ? doc[section][key] : undefined;
  if (v === undefined) return dflt;
  if (!Array.isArray(v) || !v.every((x) => typeof x === "string" && x !== ""))
    throw new PolicyConfigError(`${source}: ${section}.${key}: expected a list of non-empty strings, found ${repr(v)}`);
  return v;
}

// Cedar's parser names static policies policy0, policy1, ... in text order; policySetTextToParts
// returns them sorted by that id as a string (policy0, policy1, policy10, policy2, ...)
function positionalIds(n) {
  const ids = Array.from({ length: n }, (_, k) => `policy${k}`);
  return [...ids].sort();
}

function parseCedar(engine, text, source) {
  const check = engine.checkParsePolicySet({ staticPolicies: text });
  if (check.type !== "success") throw new PolicyConfigError(`${source}: expected valid Cedar policies, found: ${messages(check.errors)}`);
  const parts = engine.policySetTextToParts(text);
  if (parts.type !== "success") throw new PolicyConfigError(`${source}: expected valid Cedar policies, found: ${messages(parts.errors)}`);
  if (parts.policy_templates.length) throw new PolicyConfigError(`${source}: Cedar templates are not supported, found ${parts.policy_templates.length}`);
  const sortedIds = positionalIds(parts.policies.length);
  const byPosition = new Array(parts.policies.length);
  for (let k = 0; k < parts.policies.length; k++) {
    const json = engine.policyToJson(parts.policies[k]);
    if (json.type !== "success") throw new PolicyConfigError(`${source}: expected valid Cedar policies, found: ${messages(json.errors)}`);
    byPosition[Number(sortedIds[k].slice("policy".length))] = json.json;
  }
  const ids = [];
  let permits = 0;
  for (let k = 0; k < byPosition.length; k++) {
    const p = byPosition[k];
    const id = p.annotations && has(p.annotations, "id") ? p.annotations.id : null;
    if (!id) throw new PolicyConfigError(`${source}: policy #${k + 1}: expected an @id("...") annotation, found none`);
    if (ids.includes(id)) throw new PolicyConfigError(`${source}: duplicate Cedar policy @id(${JSON.stringify(id)})`);
    ids.push(id);
    if (p.effect === "permit") permits++;
  }
  if (permits === 0)
    throw new PolicyConfigError(`${source}: expected at least one permit policy, found ${ids.length} policies and no permit (an empty policy set would deny everything silently; refusing to load)`);
  return ids;
}

// preparsed Cedar sets by policy digest (the same digest is the same bytes): parsed once per page
const preparsed = new Map();
export function loadPolicySet(tomlBytes, cedarBytes, cedar, source, digestHex) {
  const doc = tomlDoc(tomlBytes, source);
  let text;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(cedarBytes);
  } catch {
    throw new PolicyConfigError(`${source}: Cedar text: expected UTF-8 Cedar text, found bytes that are not UTF-8`);
  }
  const ids = cedar ? parseCedar(cedar, text, `${source}: Cedar text`) : null;
  getInt(doc, "limits", "max_depth", source);
  getInt(doc, "limits", "max_fanout", source);
  for (const name of getStrList(doc, "limits", "authorization_required_for", source, ["EXECUTION_STARTED"]))
    if (!EVENT_KINDS.includes(name) || name === "AUTHORIZATION_DECISION")
      throw new PolicyConfigError(`${source}: limits.authorization_required_for: expected event kinds other than AUTHORIZATION_DECISION, found ${repr(name)}`);
  for (const [name, value] of Object.entries(has(doc, "severity") ? doc.severity : {}))
    if (typeof value !== "string" || !SEVERITIES.includes(value))
      throw new PolicyConfigError(`${source}: severity.${name}: expected one of ${SEVERITIES.join(", ")}, found ${repr(value)}`);
  const contains = has(doc, "containment") && has(doc.containment, "critical_contains") ? doc.containment.critical_contains : true;
  if (typeof contains !== "boolean") throw new PolicyConfigError(`${source}: containment.critical_contains: expected a boolean, found ${repr(contains)}`);
  const policyId = getStr(doc, "policy", "id", source);
  const version = getStr(doc, "policy", "version", source);
  getStrList(doc, "attestation", "required_for_agents", source, []);
  getStrList(doc, "resources", "forbidden", source, []);
  const set = { policyId, version, cedarIds: ids, cedarChecked: ids !== null, text, handle: null, cedar };
  if (cedar) {
    // parse once for every decision under this set (Cedar keeps it in the module's memory)
    set.handle = `lineage-policy-set-${digestHex}`;
    if (!preparsed.has(set.handle)) {
      const r = cedar.preparsePolicySet(set.handle, { staticPolicies: text });
      if (r.type !== "success") throw new PolicyConfigError(`${source}: Cedar text: expected valid Cedar policies, found: ${messages(r.errors)}`);
      preparsed.set(set.handle, true);
    }
  }
  return set;
}

// ---------------------------------------------------------------------------------------------
// evaluating a request (docs/policy.md, "Pre-execution gate")
const uid = (type, id) => ({ type, id });

export function entities(principal, action, resourceId) {
  const out = [{ uid: uid("Agent", principal), attrs: {}, parents: [] }];
  const a = action.indexOf(":");
  const group = a < 0 ? "" : action.slice(0, a);
  if (a >= 0 && group) {
    out.push({ uid: uid("Action", action), attrs: {}, parents: [uid("Action", group)] });
    out.push({ uid: uid("Action", group), attrs: {}, parents: [] });
  } else out.push({ uid: uid("Action", action), attrs: {}, parents: [] });
  const r = resourceId.indexOf(":");
  const system = r < 0 ? resourceId : resourceId.slice(0, r);
  const path = r < 0 ? "" : resourceId.slice(r + 1);
  const attrs = { system, path };
  if (r >= 0 && system) {
    out.push({ uid: uid("Resource", resourceId), attrs, parents: [uid("Resource", system)] });
    out.push({ uid: uid("Resource", system), attrs: {}, parents: [] });
  } else out.push({ uid: uid("Resource", resourceId), attrs, parents: [] });
  return out;
}

export function evaluate(set, request) {
  if (!set.cedar) throw new NotCheckable("the Cedar engine is not loaded");
  const resourceId = request.resource === null ? NO_RESOURCE : request.resource;
  const context = Object.create(null);
  for (const key of Object.keys(request.context)) {
    const v = request.context[key];
    if (typeof v === "bigint") {
      if (-MAX_SAFE <= v && v <= MAX_SAFE) context[key] = Number(v);
      else if (exactIntegers) context[key] = JSON.rawJSON(v.toString()); // Cedar itself refuses one beyond 64 bits
      else if (v < I64_MIN || v > I64_MAX)
        throw new PolicyEvaluationError(`Cedar cannot build the request: context[${JSON.stringify(key)}] = ${v} is outside the 64-bit integer range`);
      else throw new NotCheckable(`context[${JSON.stringify(key)}] = ${v} cannot be handed to the WebAssembly engine exactly (this browser has no JSON.rawJSON, and a JavaScript number does not hold it)`);
    } else context[key] = v;
  }
  let answer;
  try {
    answer = set.cedar.statefulIsAuthorized({
      principal: uid("Agent", request.principal),
      action: uid("Action", request.action),
      resource: uid("Resource", resourceId),
      context,
      preparsedPolicySetId: set.handle,
      entities: entities(request.principal, request.action, resourceId),
    });
  } catch (e) {
    throw new PolicyEvaluationError(`Cedar failed on ${JSON.stringify(request.principal)} ${JSON.stringify(request.action)} ${JSON.stringify(resourceId)}: ${(e && e.message) || e}`);
  }
  if (answer.type !== "success")
    throw new PolicyEvaluationError(`Cedar gives no decision on ${JSON.stringify(request.principal)} ${JSON.stringify(request.action)} ${JSON.stringify(resourceId)}: ${messages(answer.errors)}`);
  const { decision, diagnostics } = answer.response;
  const named = (policyId) => {
    const m = /^policy(\d+)$/.exec(policyId);
    return m && Number(m[1]) < set.cedarIds.length ? set.cedarIds[Number(m[1])] : policyId;
  };
  if (diagnostics.errors.length)
    throw new PolicyEvaluationError(`Cedar evaluation error on ${JSON.stringify(request.principal)} ${JSON.stringify(request.action)} ${JSON.stringify(resourceId)}: ` +
      diagnostics.errors.map((e) => `${named(e.policyId)}: ${e.error.message}`).sort().join("; "));
  if (decision !== "allow" && decision !== "deny") throw new PolicyEvaluationError(`expected allow or deny from Cedar, found ${JSON.stringify(decision)}`);
  const determining = diagnostics.reason.map(named).sort(byCodePoint);
  return { decision: decision === "allow" ? "ALLOW" : "DENY", policyId: set.policyId, determining };
}

// Python's sorted() on strings: by code point (not UTF-16 code unit)
export function byCodePoint(a, b) {
  const x = [...a], y = [...b];
  for (let k = 0; k < Math.min(x.length, y.length); k++) {
    const d = x[k].codePointAt(0) - y[k].codePointAt(0);
    if (d) return d;
  }
  return x.length - y.length;
}

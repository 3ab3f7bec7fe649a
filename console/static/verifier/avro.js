// A small Avro binary decoder for exactly the schemas in schemas/*.avsc, with Avro single-object
// encoding (Avro 1.11 specification: "Single-object encoding", "Parsing Canonical Form",
// "Schema Fingerprints"). Written from the Avro specification, not from any implementation.

export class AvroError extends Error {}

// --- CRC-64-AVRO fingerprint of the Parsing Canonical Form ---------------------------------
const EMPTY = 0xc15d213aa4d7a795n;
const MASK = 0xffffffffffffffffn;
let TABLE = null;
function table() {
  if (TABLE) return TABLE;
  TABLE = new Array(256);
  for (let i = 0; i < 256; i++) {
    let fp = BigInt(i);
    for (let j = 0; j < 8; j++) fp = (fp >> 1n) ^ (EMPTY & -(fp & 1n) & MASK);
    TABLE[i] = fp;
  }
  return TABLE;
}
export function crc64avro(bytes) {
  const t = table();
  let fp = EMPTY;
  for (const b of bytes) fp = (fp >> 8n) ^ t[Number((fp ^ BigInt(b)) & 0xffn)];
  return fp;
}

const PRIMITIVES = new Set(["null", "boolean", "int", "long", "float", "double", "bytes", "string"]);

// Parsing Canonical Form: [PRIMITIVES] [FULLNAMES] [STRIP] [ORDER] [STRINGS] [INTEGERS] [WHITESPACE]
export function canonicalForm(schema) {
  const seen = new Set();
  const fullname = (name, ns) => (name.includes(".") || !ns ? name : `${ns}.${name}`);
  function pcf(s, ns) {
    if (typeof s === "string") {
      if (PRIMITIVES.has(s)) return JSON.stringify(s);
      return JSON.stringify(fullname(s, ns));
    }
    if (Array.isArray(s)) return "[" + s.map((x) => pcf(x, ns)).join(",") + "]";
    const type = s.type;
    if (typeof type === "string" && PRIMITIVES.has(type)) return JSON.stringify(type);
    if (type === "record" || type === "error" || type === "enum" || type === "fixed") {
      const name = fullname(s.name, s.namespace ?? ns);
      if (seen.has(name)) return JSON.stringify(name);
      seen.add(name);
      const inner = name.includes(".") ? name.slice(0, name.lastIndexOf(".")) : ns;
      const parts = [`"name":${JSON.stringify(name)}`, `"type":${JSON.stringify(type)}`];
      if (type === "enum") parts.push(`"symbols":[${s.symbols.map((x) => JSON.stringify(x)).join(",")}]`);
      if (type === "fixed") parts.push(`"size":${s.size}`);
      if (type === "record" || type === "error")
        parts.push(`"fields":[${s.fields.map((f) => `{"name":${JSON.stringify(f.name)},"type":${pcf(f.type, inner)}}`).join(",")}]`);
      return "{" + parts.join(",") + "}";
    }
    if (type === "array") return `{"type":"array","items":${pcf(s.items, ns)}}`;
    if (type === "map") return `{"type":"map","values":${pcf(s.values, ns)}}`;
    return pcf(type, ns);
  }
  return pcf(schema, undefined);
}

export function fingerprint(schema) {
  return crc64avro(new TextEncoder().encode(canonicalForm(schema)));
}

// --- binary decoding -----------------------------------------------------------------------
const UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

class Reader {
  constructor(bytes) {
    this.b = bytes;
    this.i = 0;
  }
  byte() {
    if (this.i >= this.b.length) throw new AvroError(`truncated at byte ${this.i}`);
    return this.b[this.i++];
  }
  // zig-zag varint; an int has at most 5 bytes, a long at most 10
  varint(maxBytes, bits) {
    let v = 0n, shift = 0n;
    for (let k = 0; ; k++) {
      if (k >= maxBytes) throw new AvroError(`varint longer than ${maxBytes} bytes at byte ${this.i}`);
      const b = this.byte();
      v |= BigInt(b & 0x7f) << shift;
      shift += 7n;
      if (!(b & 0x80)) break;
    }
    const z = (v >> 1n) ^ -(v & 1n);
    const lo = -(1n << BigInt(bits - 1)), hi = (1n << BigInt(bits - 1)) - 1n;
    if (z < lo || z > hi) throw new AvroError(`${bits}-bit integer out of range at byte ${this.i}`);
    return z;
  }
  long() { return this.varint(10, 64); }
  int() { return Number(this.varint(5, 32)); }
  bytes() {
    const n = this.long();
    if (n < 0n || n > BigInt(this.b.length - this.i)) throw new AvroError(`byte length ${n} exceeds the record at byte ${this.i}`);
    const out = this.b.subarray(this.i, this.i + Number(n));
    this.i += Number(n);
    return out;
  }
  string() {
    const raw = this.bytes();
    try {
      return UTF8.decode(raw);
    } catch {
      throw new AvroError(`string is not UTF-8 at byte ${this.i}`);
    }
  }
}

function decodeValue(r, s, named, ns) {
  if (typeof s === "string") {
    switch (s) {
      case "null": return null;
      case "boolean": {
        const b = r.byte();
        if (b > 1) throw new AvroError(`boolean byte ${b}`);
        return b === 1;
      }
      case "int": return r.int();
      case "long": return r.long();
      case "bytes": return r.bytes();
      case "string": return r.string();
      case "float": case "double": throw new AvroError(`type ${s} is not used by these schemas`);
      default: {
        const full = s.includes(".") || !ns ? s : `${ns}.${s}`;
        const t = named.get(full);
        if (!t) throw new AvroError(`unknown named type ${s}`);
        return decodeValue(r, t.schema, named, t.ns);
      }
    }
  }
  if (Array.isArray(s)) {
    const k = r.long();
    if (k < 0n || k >= BigInt(s.length)) throw new AvroError(`union branch ${k} out of range`);
    return decodeValue(r, s[Number(k)], named, ns);
  }
  switch (s.type) {
    case "record": {
      const full = s.name.includes(".") ? s.name : `${s.namespace ?? ns}.${s.name}`;
      const inner = full.slice(0, full.lastIndexOf("."));
      named.set(full, { schema: s, ns: inner });
      const out = {};
      for (const f of s.fields) out[f.name] = decodeValue(r, f.type, named, inner);
      return out;
    }
    case "enum": {
      const full = s.name.includes(".") ? s.name : `${s.namespace ?? ns}.${s.name}`;
      named.set(full, { schema: s, ns });
      const k = r.int();
      if (k < 0 || k >= s.symbols.length) throw new AvroError(`enum index ${k} out of range for ${s.name}`);
      return s.symbols[k];
    }
    case "array": case "map": {
      const out = s.type === "array" ? [] : new Map();
      for (;;) {
        let count = r.long();
        if (count === 0n) break;
        if (count < 0n) { count = -count; r.long(); } // block size in bytes, unused
        if (count > BigInt(r.b.length - r.i)) throw new AvroError(`block of ${count} items exceeds the record`);
        for (let k = 0n; k < count; k++) {
          if (s.type === "array") out.push(decodeValue(r, s.items, named, ns));
          else {
            const key = r.string();
            if (out.has(key)) throw new AvroError(`duplicate map key`);
            out.set(key, decodeValue(r, s.values, named, ns));
          }
        }
      }
      return out;
    }
    default:
      if (typeof s.type === "string" && PRIMITIVES.has(s.type)) return decodeValue(r, s.type, named, ns);
      return decodeValue(r, s.type, named, ns);
  }
}

// Decodes one single-object-encoded record: C3 01, 8-byte little-endian fingerprint, body, with
// every byte consumed. Throws AvroError naming what is wrong.
export function decodeSingleObject(bytes, schema, fp = fingerprint(schema)) {
  if (bytes.length < 10 || bytes[0] !== 0xc3 || bytes[1] !== 0x01) throw new AvroError("no single-object header (C3 01)");
  let got = 0n;
  for (let k = 9; k >= 2; k--) got = (got << 8n) | BigInt(bytes[k]);
  if (got !== fp) throw new AvroError(`schema fingerprint ${got.toString(16).padStart(16, "0")} is not ${schema.name}'s ${fp.toString(16).padStart(16, "0")}`);
  const r = new Reader(bytes.subarray(10));
  const value = decodeValue(r, schema, new Map(), schema.namespace);
  if (r.i !== r.b.length) throw new AvroError(`${r.b.length - r.i} trailing bytes after the record`);
  return value;
}

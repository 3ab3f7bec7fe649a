// The in-browser evidence-bundle verifier: a second, independent implementation of the bundle
// format (docs/evidence-bundle.md), to agree with `lineage verify` on every verdict and failure kind.
//
// STATUS: NOT IMPLEMENTED. This module fixes the interface the Proof Viewer calls; a later change
// fills it in (SHA-256 and Ed25519 through WebCrypto, Merkle inclusion and consistency proofs,
// chain links, seal roots, C2SP checkpoint signatures and witness cosignatures). Until then it
// verifies nothing and says so: every check it returns has status "not-implemented".
//
// Interface
//   verify(bundleBytes: Uint8Array, trust: Trust) -> Promise<Check[]>
//   Trust  = { registry: object | null,        // a key registry document the person pinned
//              checkpointKeys: string[] }       // C2SP verifier keys "name+keyid+base64"
//   Check  = { id: string,                      // stable id, e.g. "bundle.parse", "chain.links"
//              title: string,                   // what is checked, for people
//              status: "pass" | "fail" | "not-implemented" | "skipped",
//              detail: string,                  // what was proven, or exactly what failed
//              failureKind?: string }           // on "fail": the FailureKind value `lineage verify` reports
//   The verdict is "verified" only if there is at least one check and every check is "pass".
//   The bundle's own keys are never trusted: trust comes only from `trust`.

export const IMPLEMENTED = false;

export async function verify(bundleBytes, trust) {
  if (!(bundleBytes instanceof Uint8Array)) throw new TypeError("bundleBytes must be a Uint8Array");
  if (!trust || typeof trust !== "object") throw new TypeError("trust must be an object");
  return [
    {
      id: "verifier.missing",
      title: "in-browser verification",
      status: "not-implemented",
      detail: "the browser verifier is not written yet; nothing in this bundle was checked here. Run `lineage verify` with the same keys.",
    },
  ];
}

export function verdict(checks) {
  if (!checks.length) return "not verified";
  if (checks.some((c) => c.status === "fail")) return "failed";
  return checks.every((c) => c.status === "pass") ? "verified" : "not verified";
}

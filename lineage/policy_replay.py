"""Re-running recorded authorization decisions: "allowed by policy P" becomes a checked claim.

A decision event records its policy set digest, its input digest and, since requests are kept, the
canonical request itself (attribute ``lineage.request``). An evidence bundle (v2) carries the
policy sets; the verifier evaluates each request again with the same Cedar engine and compares
the decision, the policy id and the determining policies (docs/policy.md "Re-running decisions").
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lineage.errors import CheckFailure, ConfigError
from lineage.policy import (
    REQUEST_ATTRIBUTE,
    PolicyEvaluationError,
    PolicySet,
    digest_hex,
    evaluate,
    parse_request,
    policy_set_digest,
)

POLICY_DECISION_MISMATCH = "POLICY_DECISION_MISMATCH"
POLICY_SET_MISSING = "POLICY_SET_MISSING"

MAX_POLICY_SETS = 64
MAX_POLICY_FILE_BYTES = 1024 * 1024


class ReplayError(CheckFailure):
    """A decision could not be reproduced; ``kind`` names the verifier's failure kind."""


def policy_set_member(toml_bytes: bytes, cedar_bytes: bytes) -> dict[str, str]:
    """One entry of a bundle's ``policies`` member: the two files' exact bytes, base64."""
    return {
        "toml": base64.b64encode(toml_bytes).decode("ascii"),
        "cedar": base64.b64encode(cedar_bytes).decode("ascii"),
    }


def _b64(value: object, where: str) -> bytes:
    if not isinstance(value, str):
        raise ReplayError(POLICY_SET_MISSING, f"{where}: expected base64 text")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ReplayError(POLICY_SET_MISSING, f"{where}: expected standard base64") from None
    if len(raw) > MAX_POLICY_FILE_BYTES:
        raise ReplayError(
            POLICY_SET_MISSING, f"{where}: expected at most {MAX_POLICY_FILE_BYTES} bytes"
        )
    return raw


def load_policy_sets(member: object) -> dict[str, PolicySet]:
    """The bundle's policy sets by ``sha256:<hex>`` digest, each digest computed from its bytes.

    A set that does not load fails the bundle (POLICY_SET_MISSING, with the load error): the
    exporter only includes sets that decisions or entries name, each once, so a repeated set
    fails it too.
    """
    if not isinstance(member, list) or len(member) > MAX_POLICY_SETS:
        raise ReplayError(
            POLICY_SET_MISSING,
            f"bundle.policies: expected a list of at most {MAX_POLICY_SETS} policy sets",
        )
    sets: dict[str, PolicySet] = {}
    for i, item in enumerate(member):
        where = f"bundle.policies[{i}]"
        if not isinstance(item, dict):
            raise ReplayError(POLICY_SET_MISSING, f"{where}: expected an object")
        toml_bytes = _b64(item.get("toml"), f"{where}.toml")
        cedar_bytes = _b64(item.get("cedar"), f"{where}.cedar")
        digest = digest_hex(policy_set_digest(toml_bytes, cedar_bytes))
        if digest in sets:
            first = list(sets).index(digest)
            raise ReplayError(
                POLICY_SET_MISSING,
                f"{where} ({digest}) repeats bundle.policies[{first}]: a bundle carries each "
                "policy set once",
            )
        try:
            sets[digest] = PolicySet.parse(toml_bytes, cedar_bytes, source=where)
        except ConfigError as exc:
            raise ReplayError(
                POLICY_SET_MISSING,
                f"{where} ({digest}) does not load, so no decision under it can be re-run: {exc}",
            ) from None
    return sets


@dataclass(frozen=True, slots=True)
class Replayed:
    """A decision that was evaluated again and came out as recorded."""

    event_id: str
    decision: str
    policy_digest: str
    determining_policies: tuple[str, ...]


def recorded_request(record: Mapping[str, Any]) -> str | None:
    """The canonical request a decision event records, or None for decisions recorded before."""
    value = (record.get("attributes") or {}).get(REQUEST_ATTRIBUTE)
    return value if isinstance(value, str) else None


def replay(record: Mapping[str, Any], policies: Mapping[str, PolicySet]) -> Replayed:
    """Re-run one decision event (decoded Avro record) that records its request.

    Checks, in order: the request is canonical and hashes to the input digest; it names the
    event's principal, action and resource and the authorization's scope; the policy set the
    decision names is present; Cedar gives the same decision, policy id and determining policies.
    """
    event_id = str(record["event_id"])
    where = {"event_id": event_id}
    auth = record.get("authorization")
    if not isinstance(auth, Mapping):
        raise ReplayError(
            POLICY_DECISION_MISMATCH, "the decision event carries no authorization", where=where
        )
    text = recorded_request(record)
    if text is None:
        raise ReplayError(POLICY_DECISION_MISMATCH, "the decision records no request", where=where)
    digest = digest_hex(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest())
    if digest != auth["input_digest"]:
        raise ReplayError(
            POLICY_DECISION_MISMATCH,
            "the recorded request is not the one the decision's input digest covers",
            where=where,
            expected=auth["input_digest"],
            found=digest,
        )
    try:
        request = parse_request(text)
    except PolicyEvaluationError as exc:
        raise ReplayError(POLICY_DECISION_MISMATCH, str(exc), where=where) from None
    stated = (record["principal"], record["action"], record["resource"])
    scope = (auth["authorized_action"], auth.get("authorized_resource"))
    if (request.principal, request.action, request.resource) != stated or (
        request.action,
        request.resource,
    ) != scope:
        raise ReplayError(
            POLICY_DECISION_MISMATCH,
            "the recorded request is not the event's principal, action and resource",
            where=where,
            expected=f"{stated} authorizing {scope}",
            found=f"{(request.principal, request.action, request.resource)}",
        )
    policy = policies.get(auth["policy_digest"])
    if policy is None:
        raise ReplayError(
            POLICY_SET_MISSING,
            "the bundle does not carry the policy set the decision names",
            where=where,
            expected=auth["policy_digest"],
            found=", ".join(sorted(policies)) or "no policy sets",
        )
    try:
        again = evaluate(
            policy,
            principal=request.principal,
            action=request.action,
            resource=request.resource,
            context=request.context,
        )
    except PolicyEvaluationError as exc:
        raise ReplayError(
            POLICY_DECISION_MISMATCH,
            f"the policy set does not decide the recorded request: {exc}",
            where=where,
            expected=f"{auth['decision']} by {list(auth['determining_policies'])}",
            found="an evaluation error",
        ) from None
    recorded = (auth["decision"], auth["policy_id"], tuple(auth["determining_policies"]))
    computed = (again.decision.value, again.policy_id, again.determining_policies)
    if recorded != computed:
        raise ReplayError(
            POLICY_DECISION_MISMATCH,
            "re-running the request under the named policy set gives another decision",
            where=where,
            expected=f"{computed[0]} by {computed[1]} {list(computed[2])}",
            found=f"{recorded[0]} by {recorded[1]} {list(recorded[2])}",
        )
    return Replayed(event_id, recorded[0], auth["policy_digest"], recorded[2])


@dataclass(slots=True)
class ReplayResult:
    """What the re-run established: decisions reproduced, and warnings for unprovable ones."""

    replayed: list[Replayed]
    warnings: list[str]


def replay_bundle(
    decisions: Sequence[Mapping[str, Any]], policies_member: object | None
) -> ReplayResult:
    """Re-run every decision of a verified bundle.

    ``policies_member`` is the bundle's ``policies`` member, None when it has none (format v1).
    Decisions recorded before requests were kept are reported in a warning; a decision that
    records its request is always re-run, so a bundle carrying one without the policy set fails.
    """
    result = ReplayResult([], [])
    if not decisions:
        return result
    with_request = [d for d in decisions if recorded_request(d) is not None]
    old = len(decisions) - len(with_request)
    if old:
        result.warnings.append(
            f"{old} authorization decision(s) recorded before requests were kept: their "
            "policy digest is a claim only, not re-run"
        )
    if not with_request:
        return result
    if policies_member is None:
        first = with_request[0]
        raise ReplayError(
            POLICY_SET_MISSING,
            "the decisions record their requests but the bundle carries no policy sets "
            "(a format v1 bundle of newer evidence: export it again)",
            where={"event_id": str(first["event_id"])},
            expected=str(first["authorization"]["policy_digest"]),
            found="no policies member",
        )
    policies = load_policy_sets(policies_member)
    for record in with_request:
        result.replayed.append(replay(record, policies))
    return result


def referenced_digests(decisions: Iterable[Mapping[str, Any]]) -> list[str]:
    """The policy digests decisions that record their requests name, in first-use order."""
    out: list[str] = []
    for d in decisions:
        if recorded_request(d) is not None and d["authorization"]["policy_digest"] not in out:
            out.append(d["authorization"]["policy_digest"])
    return out

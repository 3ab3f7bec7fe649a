"""What format v2 of the evidence bundle adds to v1: the policy sets and the workflow's findings.

Builders only; ``lineage.bundle`` places the members, ``lineage.claims`` verifies them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from lineage import codec
from lineage.errors import LineageError
from lineage.policy import digest_hex, policy_set_digest
from lineage.policy_replay import policy_set_member, recorded_request


class BundleV2Error(LineageError):
    """A v2 member cannot be built from what the exporter has."""


def decision_records(events: Iterable[bytes]) -> list[dict[str, Any]]:
    """The decoded AUTHORIZATION_DECISION events among exact event bytes, in order."""
    schema = codec.load("execution_event")
    out = []
    for data in events:
        record = schema.decode_body(data)
        if record["kind"] == "AUTHORIZATION_DECISION":
            out.append(record)
    return out


def policies_member(
    events: Iterable[bytes],
    entry_policy_digests: Iterable[bytes],
    policy_sets: Sequence[tuple[bytes, bytes]],
) -> list[dict[str, str]]:
    """The ``policies`` member: every given set that a decision or a chain entry names.

    A set a decision names but the exporter was not given is left out: the bundle then fails
    verification with POLICY_SET_MISSING naming its digest (``missing_policy_sets`` tells first).
    """
    by_digest = {digest_hex(policy_set_digest(t, c)): (t, c) for t, c in policy_sets}
    wanted: list[str] = [digest_hex(d) for d in entry_policy_digests]
    wanted += [
        r["authorization"]["policy_digest"]
        for r in decision_records(events)
        if recorded_request(r) is not None
    ]
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    for digest in wanted:
        if digest in by_digest and digest not in seen:
            seen.add(digest)
            out.append(policy_set_member(*by_digest[digest]))
    return out


def missing_policy_sets(
    events: Iterable[bytes], policy_sets: Sequence[tuple[bytes, bytes]]
) -> list[str]:
    """Digests of policy sets that re-runnable decisions name and ``policy_sets`` lacks."""
    given = {digest_hex(policy_set_digest(t, c)) for t, c in policy_sets}
    out: list[str] = []
    for r in decision_records(events):
        digest = r["authorization"]["policy_digest"]
        if recorded_request(r) is not None and digest not in given and digest not in out:
            out.append(digest)
    return out

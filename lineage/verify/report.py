"""What a verification run found: failure kinds, the first failure, what was proven, the verdict."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from lineage.keys import format_time_us

EXIT_OK = 0
EXIT_INTEGRITY = 1
EXIT_UNUSABLE = 2
EXIT_UNTRUSTED = 3
"""Consistent, but some key the result rests on was not named by the verifier's caller."""


class Verdict(StrEnum):
    """The one-word outcome; each has its own exit code."""

    VERIFIED = "VERIFIED"
    UNTRUSTED = "CONSISTENT_BUT_UNTRUSTED"
    FAILED = "FAILED"
    UNUSABLE = "UNUSABLE_INPUT"


class FailureKind(StrEnum):
    """What failed; every kind but UNUSABLE_INPUT is an integrity failure (exit code 1).

    The meaning of each is listed in docs/evidence-bundle.md ("Failure kinds").
    """

    UNUSABLE_INPUT = "UNUSABLE_INPUT"
    UNEXPECTED_WORKFLOW = "UNEXPECTED_WORKFLOW"
    EVENT_DIGEST_MISMATCH = "EVENT_DIGEST_MISMATCH"
    EVENT_MALFORMED = "EVENT_MALFORMED"
    EVENT_ID_MISMATCH = "EVENT_ID_MISMATCH"
    WORKFLOW_MISMATCH = "WORKFLOW_MISMATCH"
    PARTITION_MISMATCH = "PARTITION_MISMATCH"
    COLUMN_MISMATCH = "COLUMN_MISMATCH"
    MISSING_SEAL = "MISSING_SEAL"
    SEAL_MALFORMED = "SEAL_MALFORMED"
    SEAL_MISMATCH = "SEAL_MISMATCH"
    UNKNOWN_KEY = "UNKNOWN_KEY"
    REVOKED_KEY = "REVOKED_KEY"
    KEY_COMPROMISED = "KEY_COMPROMISED"
    KEY_SCOPE = "KEY_SCOPE"
    KEY_EXPIRED = "KEY_EXPIRED"
    BAD_SEAL_SIGNATURE = "BAD_SEAL_SIGNATURE"
    AUTHORIZER_ROLE = "AUTHORIZER_ROLE"
    SEAL_INCLUSION = "SEAL_INCLUSION"
    CHAIN_SEQUENCE = "CHAIN_SEQUENCE"
    CHAIN_LINK = "CHAIN_LINK"
    ENTRY_HASH_MISMATCH = "ENTRY_HASH_MISMATCH"
    POLICY_DIGESTS = "POLICY_DIGESTS"
    MISSING_CHECKPOINT = "MISSING_CHECKPOINT"
    STALE_CHECKPOINT = "STALE_CHECKPOINT"
    LOG_INCLUSION = "LOG_INCLUSION"
    CHECKPOINT_SIGNATURE = "CHECKPOINT_SIGNATURE"
    CHECKPOINT_ORIGIN = "CHECKPOINT_ORIGIN"
    CHECKPOINT_ROW_MISMATCH = "CHECKPOINT_ROW_MISMATCH"
    CHECKPOINT_INCONSISTENT = "CHECKPOINT_INCONSISTENT"
    CHAIN_TRUNCATED = "CHAIN_TRUNCATED"
    TAIL_PROOF_MISMATCH = "TAIL_PROOF_MISMATCH"
    LOG_INDEX = "LOG_INDEX"
    LOG_ROOT_MISMATCH = "LOG_ROOT_MISMATCH"
    LOG_TRUNCATED = "LOG_TRUNCATED"
    PARTITION_BINDING = "PARTITION_BINDING"
    FINDINGS_MISMATCH = "FINDINGS_MISMATCH"
    POLICY_DECISION_MISMATCH = "POLICY_DECISION_MISMATCH"
    POLICY_SET_MISSING = "POLICY_SET_MISSING"
    WITNESS_COSIGNATURES = "WITNESS_COSIGNATURES"
    LOG_ROLLED_BACK = "LOG_ROLLED_BACK"
    LOG_MISSING = "LOG_MISSING"
    TRUSTED_CHECKPOINT_MISMATCH = "TRUSTED_CHECKPOINT_MISMATCH"


Where = dict[str, str | int]


_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
MAX_PRINTED = 2_000


def printable(value: object, limit: int = MAX_PRINTED) -> str:
    """Text safe to put on a terminal: control, format (bidi), surrogate, private-use and
    unassigned characters are shown as ``\\xNN``/``\\uNNNN`` escapes, backslashes are doubled,
    and text beyond ``limit`` characters is cut with a note. Evidence strings pass through this
    before any human-readable output; markup escaping (rich, HTML) is the printer's job on top.
    """
    text = value if isinstance(value, str) else str(value)
    cut = len(text) - limit
    if cut > 0:
        text = text[:limit]
    out: list[str] = []
    for c in text:
        if c == "\\":
            out.append("\\\\")
        elif " " <= c <= "~":
            out.append(c)
        elif unicodedata.category(c) in _UNSAFE_CATEGORIES or c == "\x7f":
            n = ord(c)
            out.append(
                f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"
            )
        else:
            out.append(c)
    if cut > 0:
        out.append(f"… (+{cut} characters)")
    return "".join(out)


def time_text(us: int | None) -> str | None:
    """RFC 3339 text for a time in µs, or a plain statement when it is outside the calendar."""
    if us is None:
        return None
    try:
        return format_time_us(us)
    except (OverflowError, ValueError):
        return f"{us} µs since 1970 (outside the calendar)"


@dataclass(frozen=True, slots=True)
class Failure:
    """The first thing that failed: its kind, where it is, and what was expected versus found."""

    kind: FailureKind
    message: str
    where: Where
    expected: str = ""
    found: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "kind": self.kind.value,
            "message": self.message,
            "where": dict(self.where),
            "expected": self.expected,
            "found": self.found,
        }


@dataclass(slots=True)
class Trust:
    """Where the keys the verdict rests on came from.

    ``anchored`` is true only when every key that can make the result pass was named by the
    verifier's caller (an auditor registry, checkpoint keys, a trust file); keys carried by the
    evidence itself, or the operator's own registry, are information and leave it false.
    ``witnesses`` is filled by witness checks: one line per witness key that cosigned.
    ``untrusted`` names, for humans, the keys the result rests on that the caller did not name
    ("the bundle's own keys", "the operator's own registry"); empty when ``anchored``.
    """

    seal_keys: str
    checkpoint_keys: str
    anchored: bool
    witnesses: list[str] = field(default_factory=list)
    untrusted: str = ""

    def describe(self) -> str:
        """One line for humans."""
        text = f"seal keys: {self.seal_keys}; checkpoint keys: {self.checkpoint_keys}"
        if self.witnesses:
            text += "; witnesses: " + ", ".join(self.witnesses)
        return text

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "seal_keys": self.seal_keys,
            "checkpoint_keys": self.checkpoint_keys,
            "anchored": self.anchored,
            "witnesses": list(self.witnesses),
        }


@dataclass(slots=True)
class Proven:
    """What verification established (up to the first failure, if any)."""

    events: int = 0
    workflows: set[str] = field(default_factory=set)
    completed_workflows: set[str] = field(default_factory=set)
    first_event_us: int | None = None
    last_event_us: int | None = None
    principals: set[str] = field(default_factory=set)
    agents: set[str] = field(default_factory=set)
    emitters: set[str] = field(default_factory=set)
    keys: set[str] = field(default_factory=set)
    policy_digests: set[str] = field(default_factory=set)
    checkpoints: list[str] = field(default_factory=list)
    logs: dict[str, tuple[int, str]] = field(default_factory=dict)
    """Per log origin, the newest checkpoint verified: (tree size, root hex)."""
    log_entries: int = 0
    unanchored: int = 0
    complete_as_of: list[str] = field(default_factory=list)
    findings: list[dict[str, Any]] = field(default_factory=list)
    """The workflow's findings (violations) proven by a signed findings log."""
    decisions_rerun: int = 0
    contained_by: str | None = None
    """Violation id of the finding that contained the workflow, if it was contained."""

    def note_log(self, origin: str, size: int, root: bytes) -> None:
        """Record a verified checkpoint of ``origin``; the largest size per log is kept."""
        seen = self.logs.get(origin)
        if seen is None or size > seen[0]:
            self.logs[origin] = (size, root.hex())

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (sets sorted, times in RFC 3339)."""
        return {
            "events": self.events,
            "workflows": len(self.workflows),
            "workflow_ids": sorted(self.workflows),
            "completed_workflows": len(self.completed_workflows),
            "completed_workflow_ids": sorted(self.completed_workflows),
            "first_event_time": time_text(self.first_event_us),
            "last_event_time": time_text(self.last_event_us),
            "principals": sorted(self.principals),
            "agents": sorted(self.agents),
            "emitters": sorted(self.emitters),
            "keys": sorted(self.keys),
            "policy_digests": sorted(self.policy_digests),
            "checkpoints": list(self.checkpoints),
            "logs": [
                {"origin": o, "tree_size": s, "root": r} for o, (s, r) in sorted(self.logs.items())
            ],
            "log_entries": self.log_entries,
            "unanchored_entries": self.unanchored,
            "complete_as_of": list(self.complete_as_of),
            "findings": list(self.findings),
            "decisions_rerun": self.decisions_rerun,
            "contained_by": self.contained_by,
        }


@dataclass(slots=True)
class Report:
    """Outcome of one verification run.

    ``claims`` lists what the checks established under the keys used and ``not_proven`` what
    they could not or did not establish, each as one sentence; every check stage appends its own.
    The claims are proven only when the verdict is VERIFIED (``proven_claims``); under keys the
    caller did not name they are only consistent (``consistent_claims``), and the JSON report
    keeps the two apart.
    """

    source: str
    trust: Trust
    failure: Failure | None
    proven: Proven
    elapsed_s: float = 0.0
    warnings: list[str] = field(default_factory=list)
    expected_workflow: str | None = None
    claims: list[str] = field(default_factory=list)
    not_proven: list[str] = field(default_factory=list)
    size_bytes: int | None = None
    witness: dict[str, Any] | None = None
    """What the witness checks established (``lineage.witnessed.WitnessFindings.to_json``),
    None when no witness key or trusted checkpoint was given."""
    cpu_s: float = 0.0
    """CPU seconds of the verification, this process and its worker processes together
    (stored logs; 0 where not measured)."""
    jobs: int = 1
    """Processes that verified partition logs (1: this one)."""

    @property
    def consistent(self) -> bool:
        """True when no check failed (whatever keys were used)."""
        return self.failure is None

    @property
    def ok(self) -> bool:
        """True only for VERIFIED: nothing failed and every key was named by the caller."""
        return self.failure is None and self.trust.anchored

    @property
    def verdict(self) -> Verdict:
        """VERIFIED, CONSISTENT_BUT_UNTRUSTED, FAILED or UNUSABLE_INPUT."""
        if self.failure is not None:
            if self.failure.kind is FailureKind.UNUSABLE_INPUT:
                return Verdict.UNUSABLE
            return Verdict.FAILED
        return Verdict.VERIFIED if self.trust.anchored else Verdict.UNTRUSTED

    @property
    def exit_code(self) -> int:
        """0 verified, 1 integrity failure, 2 unusable input, 3 consistent but untrusted."""
        return {
            Verdict.VERIFIED: EXIT_OK,
            Verdict.UNTRUSTED: EXIT_UNTRUSTED,
            Verdict.FAILED: EXIT_INTEGRITY,
            Verdict.UNUSABLE: EXIT_UNUSABLE,
        }[self.verdict]

    @property
    def proven_claims(self) -> list[str]:
        """The claims, when they are proven: VERIFIED, every key named by the caller."""
        return list(self.claims) if self.ok else []

    @property
    def consistent_claims(self) -> list[str]:
        """The claims, when they hold only under keys nobody trusted: CONSISTENT_BUT_UNTRUSTED."""
        return list(self.claims) if self.verdict is Verdict.UNTRUSTED else []

    @property
    def entries_per_s(self) -> float:
        """Entries checked per second of verification."""
        n = max(self.proven.log_entries, self.proven.events)
        return n / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def entries_per_cpu_s(self) -> float:
        """Entries checked per CPU second: the rate of one core."""
        n = max(self.proven.log_entries, self.proven.events)
        return n / self.cpu_s if self.cpu_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "verdict": self.verdict.value,
            "ok": self.ok,
            "exit_code": self.exit_code,
            "source": self.source,
            "size_bytes": self.size_bytes,
            "expected_workflow": self.expected_workflow,
            "workflows": sorted(self.proven.workflows),
            "trust": self.trust.to_json(),
            "failure": self.failure.to_json() if self.failure else None,
            "proven": self.proven.to_json(),
            "claims": self.proven_claims,
            "consistent_claims": self.consistent_claims,
            "not_proven": list(self.not_proven),
            "elapsed_s": round(self.elapsed_s, 6),
            "entries_per_s": round(self.entries_per_s, 1),
            # None where the CPU time was not measured (bundle verification)
            "cpu_s": round(self.cpu_s, 6) if self.cpu_s > 0 else None,
            "entries_per_cpu_s": round(self.entries_per_cpu_s, 1) if self.cpu_s > 0 else None,
            "jobs": self.jobs,
            "warnings": list(self.warnings),
            "witness": self.witness,
        }

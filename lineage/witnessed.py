"""Verification against witnesses: cosignature quorum and freshness, trusted checkpoints, key windows.

Three checks, each run after the ordinary verification (``lineage.verify``) succeeded:

- a bundle's newest checkpoint of each log carries cosignatures of at least ``required`` of the
  auditor's witnesses, and every cosigned checkpoint was cosigned while the processor key that
  signed it was valid (notes carry no time; the witness's timestamp does);
- a store holds, for every checkpoint the auditor trusts (kept in a file, or fetched from a
  witness), at least that many entries and the same root at that size: deleting the newest
  rows together with their checkpoints, a partition, or everything no longer verifies;
- how fresh the newest cosigned checkpoint is.

See docs/witness.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from lineage import note
from lineage.bundle import BundleFormatError, LogSection, parse_bundle
from lineage.keys import KeyRecord, KeyRegistry, Role, format_time_us
from lineage.model import Checkpoint
from lineage.verify.report import Failure, FailureKind, Report
from lineage.witness import (
    Cosignature,
    WitnessError,
    add_signature_lines,
    cosigner_key_id,
    parse_cosigner_vkey,
    split_note,
    verify_cosignatures,
)

MAX_FUTURE_SKEW_S = 300
"""Cosignatures dated more than this after the verifier's clock are not counted."""

_US = 1_000_000


@dataclass(frozen=True, slots=True)
class WitnessPolicy:
    """The witnesses an auditor trusts, how many must cosign, and the verifier's clock."""

    witnesses: tuple[tuple[str, bytes], ...]
    required: int
    now: int
    """POSIX seconds."""

    @classmethod
    def from_vkeys(cls, vkeys: Sequence[str], required: int | None, now: int) -> WitnessPolicy:
        """Parse witness verifier keys; ``required`` defaults to 1. WitnessError when unusable."""
        witnesses = tuple(parse_cosigner_vkey(v) for v in vkeys)
        if len({w for w in witnesses}) != len(witnesses):
            raise WitnessError("witness keys: the same key is given twice")
        need = 1 if required is None else required
        if need < 1 or need > len(witnesses):
            raise WitnessError(
                f"witnesses required: expected 1..{len(witnesses)} (the number of witness keys "
                f"given), found {need}"
            )
        return cls(witnesses, need, now)

    @property
    def names(self) -> list[str]:
        """``<name>+<key id>`` of each trusted witness."""
        return [f"{n}+{cosigner_key_id(n, k).hex()}" for n, k in self.witnesses]


@dataclass(slots=True)
class WitnessFindings:
    """What the witness checks established; printed after the main report, and in its JSON."""

    required: int = 0
    witnesses: list[str] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)
    newest: dict[str, Any] | None = None
    now: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def age_s(self) -> int | None:
        """Seconds from the newest cosignature to the verifier's clock."""
        return None if self.newest is None else self.now - int(self.newest["cosigned_at"])

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "witnesses": list(self.witnesses),
            "required": self.required,
            "logs": list(self.logs),
            "newest_cosigned": self.newest,
            "newest_age_s": self.age_s,
            "notes": list(self.notes),
        }

    def lines(self) -> list[str]:
        """Human-readable lines."""
        out = [f"witnesses: {', '.join(self.witnesses) or '-'} ({self.required} required)"]
        for log in self.logs:
            cos = ", ".join(f"{c['witness']} at {c['time']}" for c in log["cosignatures"])
            out.append(f"  {log['origin']} size {log['size']}: {cos or 'no cosignature'}")
        if self.newest is not None:
            n = self.newest
            out.append(
                f"newest cosigned checkpoint: {n['origin']} size {n['size']}, cosigned "
                f"{n['time']} by {n['witness']} ({_age(self.age_s or 0)} before verification)"
            )
        out += self.notes
        return [_clean(line) for line in out]


def _clean(text: str) -> str:
    """``text`` with every non-printable character shown as an escape (never raw on a terminal)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _age(seconds: int) -> str:
    if seconds < 0:
        return f"{-seconds} s in the future"
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"


def _time(ts: int) -> str:
    return format_time_us(min(ts, 253402300799) * _US)


class _Fail(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


def _fail(
    kind: FailureKind,
    message: str,
    where: dict[str, str | int],
    expected: object = "",
    found: object = "",
) -> _Fail:
    return _Fail(Failure(kind, message, where, str(expected), str(found)))


# -- processor key validity -------------------------------------------------------------------


def key_window(record: KeyRecord) -> tuple[int, int | None] | None:
    """The times (µs, inclusive) a processor key may vouch for new checkpoints, None for never.

    ``KeyRecord.trusted_window``: ``not_before`` to ``not_after``, cut before ``compromised_at``,
    empty for a key revoked without it. A key retired by rotation keeps vouching for the
    checkpoints cosigned inside its window (docs/witness.md, docs/keys.md).
    """
    lo, hi = record.trusted_window()
    if lo > hi:
        return None
    return lo, (None if record.not_after_us is None and record.revoked_at_us is None else hi)


def signing_windows(
    registry: KeyRegistry | None, signed: str
) -> list[tuple[str, int, int | None]] | None:
    """Windows of the registry's processor keys whose signature on ``signed`` verifies.

    None when there is no registry to take validity from (keys given as ``--checkpoint-key``).
    """
    if registry is None:
        return None
    out = []
    for r in registry.records():
        if r.role is not Role.PROCESSOR:
            continue
        try:
            note.open_note(signed, [(r.subject, r.public_key)])
        except note.NoteError:
            continue
        window = key_window(r)
        if window is not None:
            out.append((r.key_id, *window))
    return out


def _inside(ts: int, windows: list[tuple[str, int, int | None]] | None) -> bool:
    if windows is None:
        return True
    us = ts * _US
    return any(lo <= us and (hi is None or us <= hi) for _, lo, hi in windows)


@dataclass(slots=True)
class _Counted:
    valid: list[Cosignature]
    outside_window: list[Cosignature]
    future: list[Cosignature]


def _count(
    signed: str,
    policy: WitnessPolicy,
    windows: list[tuple[str, int, int | None]] | None,
    where: dict[str, str | int],
) -> _Counted:
    try:
        _, cosigs = verify_cosignatures(signed, policy.witnesses)
    except WitnessError as exc:
        raise _fail(
            FailureKind.WITNESS_COSIGNATURES, f"invalid cosignature: {exc}", where
        ) from None
    out = _Counted([], [], [])
    for c in cosigs:
        if c.timestamp > policy.now + MAX_FUTURE_SKEW_S:
            out.future.append(c)
        elif not _inside(c.timestamp, windows):
            out.outside_window.append(c)
        else:
            out.valid.append(c)
    return out


def _require(
    counted: _Counted,
    policy: WitnessPolicy,
    windows: list[tuple[str, int, int | None]] | None,
    where: dict[str, str | int],
) -> None:
    """Fail unless ``policy.required`` distinct witnesses cosigned inside the key window."""
    have = {c.signer for c in counted.valid}
    if len(have) >= policy.required:
        return
    late = {c.signer for c in counted.outside_window}
    if len(have | late) >= policy.required:
        spans = ", ".join(
            f"{kid} {format_time_us(lo)} … {'-' if hi is None else format_time_us(hi)}"
            for kid, lo, hi in windows or []
        )
        raise _fail(
            FailureKind.KEY_EXPIRED,
            "the processor key vouched for this checkpoint only outside its validity window "
            "(not_before … not_after, before any compromise; a revoked key has none), as dated "
            "by the witnesses' cosignatures",
            where,
            f"cosignatures inside {spans or 'the key window'}",
            ", ".join(f"{c.signer} at {_time(c.timestamp)}" for c in counted.outside_window),
        )
    detail = sorted(have) + [f"{c.signer} dated in the future" for c in counted.future]
    raise _fail(
        FailureKind.WITNESS_COSIGNATURES,
        "fewer valid witness cosignatures than required",
        where,
        f"{policy.required} of {', '.join(policy.names)}",
        f"{len(have)}: {', '.join(detail) or 'none'}",
    )


def _log_entry(origin: str, size: int, cosigs: list[Cosignature]) -> dict[str, Any]:
    return {
        "origin": origin,
        "size": size,
        "cosignatures": [
            {"witness": c.signer, "cosigned_at": c.timestamp, "time": _time(c.timestamp)}
            for c in sorted(cosigs, key=lambda c: c.timestamp)
        ],
    }


def _newest(findings: WitnessFindings) -> None:
    best: dict[str, Any] | None = None
    for log in findings.logs:
        for c in log["cosignatures"]:
            if best is None or c["cosigned_at"] > best["cosigned_at"]:
                best = {"origin": log["origin"], "size": log["size"], **c}
    findings.newest = best


# -- bundles ----------------------------------------------------------------------------------


class WitnessCheckFailed(Exception):
    """A witness check failed; carries the Failure (raised by ``check_bundle_logs``)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


def check_bundle_logs(
    logs: Sequence[LogSection], policy: WitnessPolicy, registry: KeyRegistry | None
) -> WitnessFindings:
    """Require the newest checkpoint of every log to be cosigned by ``policy.required`` trusted
    witnesses inside the processor key's window; every cosigned checkpoint must have a
    cosignature inside that window. ``logs`` are the sections of a bundle whose processor
    signatures verified. Raises WitnessCheckFailed on the first failure.
    """
    findings = WitnessFindings(policy.required, policy.names, now=policy.now)
    if registry is None:
        findings.notes.append(
            "processor key validity not checked against cosignature times: no registry given"
        )
    try:
        for section in logs:
            last = len(section.checkpoints) - 1
            for i, signed in enumerate(section.checkpoints):
                where: dict[str, str | int] = {
                    "partition": section.partition,
                    "origin": section.origin,
                    "checkpoint": i,
                }
                windows = signing_windows(registry, signed)
                counted = _count(signed, policy, windows, where)
                if i == last:
                    _require(counted, policy, windows, where)
                    size = note.parse_checkpoint(split_note(signed)[0]).size
                    findings.logs.append(_log_entry(section.origin, size, counted.valid))
                elif counted.outside_window and not counted.valid:
                    _require(
                        counted, WitnessPolicy(policy.witnesses, 1, policy.now), windows, where
                    )
    except _Fail as exc:
        raise WitnessCheckFailed(exc.failure) from None
    _newest(findings)
    return findings


def check_bundle(
    bundle: Mapping[str, Any],
    report: Report,
    policy: WitnessPolicy,
    registry: KeyRegistry | None,
) -> WitnessFindings:
    """``check_bundle_logs`` on a bundle document already verified into ``report``; sets
    ``report.failure`` on the first failure. ``lineage verify`` runs the same check as a stage
    (lineage/verify/witnessing.py); this form is for callers holding a finished report.
    """
    if not report.consistent:
        findings = WitnessFindings(policy.required, policy.names, now=policy.now)
        findings.notes.append("witness cosignatures not checked: the bundle did not verify")
        return findings
    try:
        parsed = parse_bundle(bundle)
    except BundleFormatError as exc:  # verify_bundle parsed it already; kept for safety
        report.failure = Failure(FailureKind.UNUSABLE_INPUT, str(exc), {})
        return WitnessFindings(policy.required, policy.names, now=policy.now)
    try:
        return check_bundle_logs(parsed.logs, policy, registry)
    except WitnessCheckFailed as exc:
        report.failure = exc.failure
        return WitnessFindings(policy.required, policy.names, now=policy.now)


# -- trusted checkpoints against a store ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredLog:
    """What a store holds for one partition log: its entry count (log indexes 0 … size−1)."""

    partition: int
    size: int


def origin_partition(origin: str) -> int | None:
    """The partition of a ``<base>/<topic>/<partition>`` origin."""
    last = origin.rsplit("/", 1)[-1]
    if "/" not in origin or not last.isascii() or not last.isdigit() or len(last) > 5:
        return None
    return int(last)


def check_store(
    report: Report,
    trusted_notes: Sequence[str],
    vkeys: Sequence[tuple[str, bytes]],
    stored: Mapping[int, StoredLog],
    root_at: Callable[[int, int], bytes],
    *,
    policy: WitnessPolicy | None,
    registry: KeyRegistry | None,
    now: int,
) -> WitnessFindings:
    """Fail when the store is behind or inconsistent with checkpoints the auditor trusts.

    ``trusted_notes`` are signed checkpoints (a witness's cosigned view, or the auditor's own
    file); each must verify with ``vkeys`` (and, with a ``policy``, carry its cosignatures).
    ``stored`` gives the store's entry count per partition; ``root_at(partition, size)`` the
    root of the store's log at ``size``. Sets ``report.failure`` on the first failure.
    """
    findings = WitnessFindings(
        policy.required if policy else 0, policy.names if policy else [], now=now
    )
    if not report.consistent:
        findings.notes.append("trusted checkpoints not checked: the store did not verify")
        return findings
    newest: dict[int, tuple[note.Checkpoint, str]] = {}
    try:
        if not trusted_notes:
            raise _fail(
                FailureKind.UNUSABLE_INPUT,
                "no trusted checkpoint given",
                {},
                "at least one signed checkpoint",
                "none",
            )
        for i, signed in enumerate(trusted_notes):
            where: dict[str, str | int] = {"trusted_checkpoint": i}
            try:
                text, _ = note.open_note(signed, list(vkeys))
                cp = note.parse_checkpoint(text)
            except note.NoteError as exc:
                raise _fail(
                    FailureKind.CHECKPOINT_SIGNATURE,
                    f"a trusted checkpoint does not verify with the processor keys: {exc}",
                    where,
                ) from None
            p = origin_partition(cp.origin)
            if p is None:
                raise _fail(
                    FailureKind.CHECKPOINT_ORIGIN,
                    "a trusted checkpoint names no partition",
                    where,
                    "<base>/<topic>/<partition>",
                    cp.origin,
                )
            where.update(origin=cp.origin, tree_size=cp.size)
            cosigs: list[Cosignature] = []
            if policy is not None:
                windows = signing_windows(registry, signed)
                counted = _count(signed, policy, windows, where)
                _require(counted, policy, windows, where)
                cosigs = counted.valid
            findings.logs.append(_log_entry(cp.origin, cp.size, cosigs))
            seen = newest.get(p)
            if seen is not None and seen[0].origin != cp.origin:
                raise _fail(
                    FailureKind.CHECKPOINT_ORIGIN,
                    "trusted checkpoints of two logs for one partition",
                    where,
                    seen[0].origin,
                    cp.origin,
                )
            if seen is None or cp.size > seen[0].size:
                newest[p] = (cp, signed)
        missing = sorted(p for p in newest if stored.get(p, StoredLog(p, 0)).size == 0)
        if missing and len(missing) == len(newest):
            raise _fail(
                FailureKind.LOG_MISSING,
                "the store holds none of the logs the trusted checkpoints name",
                {"logs": len(newest)},
                ", ".join(f"{newest[p][0].origin} size {newest[p][0].size}" for p in missing),
                "no entries",
            )
        for p in sorted(newest):
            cp = newest[p][0]
            where = {"partition": p, "origin": cp.origin, "tree_size": cp.size}
            have = stored.get(p, StoredLog(p, 0)).size
            if have == 0:
                raise _fail(
                    FailureKind.LOG_MISSING,
                    "a log the trusted checkpoints name has no entries in the store",
                    where,
                    f"at least {cp.size} entries",
                    "no entries",
                )
            if have < cp.size:
                raise _fail(
                    FailureKind.LOG_ROLLED_BACK,
                    "the store is behind a trusted checkpoint: entries it covered are gone",
                    where,
                    f"at least {cp.size} entries",
                    f"{have} entries",
                )
            root = root_at(p, cp.size)
            if root != cp.root_hash:
                raise _fail(
                    FailureKind.TRUSTED_CHECKPOINT_MISMATCH,
                    "the store's log at the trusted size has another root (rewritten or forked)",
                    where,
                    cp.root_hash.hex(),
                    root.hex(),
                )
    except _Fail as exc:
        report.failure = exc.failure
    _newest(findings)
    return findings


# -- export -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredCosignature:
    """A cosignature line kept by the feeder for one checkpoint (``witness_cosignatures`` row)."""

    partition: int
    tree_size: int
    root_hash: bytes
    line: str


def attach_cosignatures(
    checkpoints: Sequence[Checkpoint],
    cosignatures: Sequence[StoredCosignature],
    entry_index: Mapping[int, int] | None = None,
) -> list[Checkpoint]:
    """The checkpoints with their stored cosignature lines appended to the notes.

    With ``entry_index`` (partition -> highest log index the bundle must cover), checkpoints
    newer than the newest cosigned one that still covers those entries are dropped, so the
    bundle's newest checkpoint of each log is a witnessed one whenever possible.
    """
    lines: dict[tuple[int, int, bytes], list[str]] = {}
    for c in cosignatures:
        lines.setdefault((c.partition, c.tree_size, c.root_hash), []).append(c.line)
    out = [
        replace(cp, note=add_signature_lines(cp.note, lines[key]))
        if (key := (cp.partition, cp.tree_size, cp.root_hash)) in lines
        else cp
        for cp in checkpoints
    ]
    if entry_index is None:
        return out
    keep = []
    for cp in out:
        need = entry_index.get(cp.partition)
        witnessed = [
            c.tree_size
            for c in out
            if c.partition == cp.partition and (c.partition, c.tree_size, c.root_hash) in lines
        ]
        newest_witnessed = max(witnessed, default=None)
        if (
            need is not None
            and newest_witnessed is not None
            and newest_witnessed > need
            and cp.tree_size > newest_witnessed
        ):
            continue
        keep.append(cp)
    return keep

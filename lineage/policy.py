"""The versioned policy set (TOML limits plus Cedar rules), its digest, and the Cedar gate evaluation."""

from __future__ import annotations

import hashlib
import json
import re
import struct
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cedarpy

from lineage.errors import ConfigError, LineageError
from lineage.ids import PolicyDigest
from lineage.model import Authorization, Decision, EventKind, Severity, ViolationType

_u64 = struct.Struct(">Q")

NO_RESOURCE = "none"
"""The Cedar resource id used when a request names no resource."""

REQUEST_ATTRIBUTE = "lineage.request"
"""The AUTHORIZATION_DECISION attribute holding the canonical request its input digest covers."""

MAX_REQUEST_BYTES = 8 * 1024
"""A request larger than this is not evaluated: it could not be recorded in the decision event."""

DEFAULT_SEVERITY: Mapping[ViolationType, Severity] = {
    ViolationType.UNAUTHORIZED_EXECUTION: Severity.HIGH,
    ViolationType.DENIED_EXECUTION: Severity.HIGH,
    ViolationType.EXPIRED_AUTHORIZATION: Severity.MEDIUM,
    ViolationType.SCOPE_MISMATCH: Severity.HIGH,
    ViolationType.UNTRUSTED_AUTHORIZER: Severity.CRITICAL,
    ViolationType.MISSING_ATTESTATION: Severity.MEDIUM,
    ViolationType.ATTESTATION_CHANGED: Severity.HIGH,
    ViolationType.DEPTH_EXCEEDED: Severity.MEDIUM,
    ViolationType.FANOUT_EXCEEDED: Severity.MEDIUM,
    ViolationType.FORBIDDEN_RESOURCE: Severity.HIGH,
    ViolationType.SEQUENCE_GAP: Severity.CRITICAL,
    ViolationType.DUPLICATE_CONFLICT: Severity.CRITICAL,
    ViolationType.ORPHAN_EVENT: Severity.HIGH,
    ViolationType.BAD_SIGNATURE: Severity.CRITICAL,
    ViolationType.UNSEALED_EVENT: Severity.CRITICAL,
    ViolationType.UNKNOWN_KEY: Severity.CRITICAL,
    ViolationType.CONTAINED_WORKFLOW: Severity.HIGH,
}
"""Severity of each violation type unless the policy file's ``[severity]`` table overrides it."""

_SECTIONS: Mapping[str, frozenset[str]] = {
    "policy": frozenset({"id", "version", "cedar"}),
    "limits": frozenset({"max_depth", "max_fanout", "authorization_required_for"}),
    "attestation": frozenset({"required_for_agents"}),
    "resources": frozenset({"forbidden"}),
    "severity": frozenset(ViolationType.__members__),
    "containment": frozenset({"critical_contains"}),
}
_DEFAULT_AUTHORIZATION_REQUIRED_FOR = ("EXECUTION_STARTED",)


class PolicyEvaluationError(LineageError):
    """A gate request could not be evaluated; the caller must not run the action (fail closed)."""


def policy_set_digest(toml_bytes: bytes, cedar_bytes: bytes) -> PolicyDigest:
    """SHA-256(u64be(len(toml)) ‖ toml ‖ u64be(len(cedar)) ‖ cedar) over the files' exact bytes."""
    h = hashlib.sha256()
    for part in (toml_bytes, cedar_bytes):
        h.update(_u64.pack(len(part)))
        h.update(part)
    return PolicyDigest(h.digest())


def digest_hex(digest: bytes) -> str:
    """Render a SHA-256 digest as ``sha256:<hex>``."""
    return f"sha256:{digest.hex()}"


@dataclass(frozen=True)
class PolicySet:
    """A loaded policy set: Cedar gate rules plus the stream rules' limits and patterns."""

    policy_id: str
    version: str
    digest: PolicyDigest
    cedar_text: str
    cedar_policy_ids: tuple[str, ...]
    max_depth: int
    max_fanout: int
    authorization_required_for: frozenset[EventKind]
    attestation_required_for_agents: tuple[str, ...]
    forbidden_resources: tuple[str, ...]
    severities: tuple[tuple[ViolationType, Severity], ...]
    critical_contains: bool
    source: str = field(default="<memory>", compare=False)
    cedar_handle: Any = field(default=None, compare=False, repr=False, hash=False)

    @property
    def digest_hex(self) -> str:
        """The digest as recorded in decisions and violations: ``sha256:<hex>``."""
        return digest_hex(self.digest)

    def severity_for(self, violation_type: ViolationType) -> Severity:
        """The severity this policy set assigns to a violation type."""
        for vt, severity in self.severities:
            if vt is violation_type:
                return severity
        return DEFAULT_SEVERITY[violation_type]

    @classmethod
    def load(cls, path: str | Path) -> PolicySet:
        """Load a policy TOML file and the Cedar file it names; ConfigError on any bad input."""
        toml_path = Path(path)
        toml_bytes = _read(toml_path, "policy file")
        doc = _parse_toml(toml_bytes, str(toml_path))
        cedar_name = _get_str(doc, "policy", "cedar", str(toml_path))
        cedar_path = toml_path.parent / cedar_name
        cedar_bytes = _read(cedar_path, f"Cedar file (policy.cedar in {toml_path})")
        return cls._build(doc, toml_bytes, cedar_bytes, str(toml_path), str(cedar_path))

    @staticmethod
    def files(path: str | Path) -> tuple[bytes, bytes]:
        """The exact (TOML, Cedar) bytes of the policy set at ``path``, as the digest covers them."""
        toml_path = Path(path)
        toml_bytes = _read(toml_path, "policy file")
        cedar_name = _get_str(_parse_toml(toml_bytes, str(toml_path)), "policy", "cedar", str(path))
        return toml_bytes, _read(toml_path.parent / cedar_name, "Cedar file")

    @classmethod
    def parse(cls, toml_bytes: bytes, cedar_bytes: bytes, *, source: str = "<memory>") -> PolicySet:
        """Build a policy set from the two files' bytes (``policy.cedar`` is not opened)."""
        doc = _parse_toml(toml_bytes, source)
        return cls._build(doc, toml_bytes, cedar_bytes, source, f"{source}: Cedar text")

    @classmethod
    def _build(
        cls,
        doc: dict[str, Any],
        toml_bytes: bytes,
        cedar_bytes: bytes,
        source: str,
        cedar_source: str,
    ) -> PolicySet:
        try:
            cedar_text = cedar_bytes.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"{cedar_source}: expected UTF-8 Cedar text, found {e}") from e
        handle, ids = _parse_cedar(cedar_text, cedar_source)
        max_depth = _get_int(doc, "limits", "max_depth", source)
        max_fanout = _get_int(doc, "limits", "max_fanout", source)
        kinds = _get_str_list(
            doc, "limits", "authorization_required_for", source, _DEFAULT_AUTHORIZATION_REQUIRED_FOR
        )
        required_for: set[EventKind] = set()
        for name in kinds:
            if name not in EventKind.__members__ or name == "AUTHORIZATION_DECISION":
                raise ConfigError(
                    f"{source}: limits.authorization_required_for: expected event kinds other "
                    f"than AUTHORIZATION_DECISION, found {name!r}"
                )
            required_for.add(EventKind(name))
        severities = dict(DEFAULT_SEVERITY)
        for name, value in doc.get("severity", {}).items():
            if not isinstance(value, str) or value not in Severity.__members__:
                raise ConfigError(
                    f"{source}: severity.{name}: expected one of {', '.join(Severity)}, "
                    f"found {value!r}"
                )
            severities[ViolationType(name)] = Severity(value)
        contains = doc.get("containment", {}).get("critical_contains", True)
        if not isinstance(contains, bool):
            raise ConfigError(
                f"{source}: containment.critical_contains: expected a boolean, found {contains!r}"
            )
        return cls(
            policy_id=_get_str(doc, "policy", "id", source),
            version=_get_str(doc, "policy", "version", source),
            digest=policy_set_digest(toml_bytes, cedar_bytes),
            cedar_text=cedar_text,
            cedar_policy_ids=ids,
            max_depth=max_depth,
            max_fanout=max_fanout,
            authorization_required_for=frozenset(required_for),
            attestation_required_for_agents=_get_str_list(
                doc, "attestation", "required_for_agents", source, ()
            ),
            forbidden_resources=_get_str_list(doc, "resources", "forbidden", source, ()),
            severities=tuple((vt, severities[vt]) for vt in ViolationType),
            critical_contains=contains,
            source=source,
            cedar_handle=handle,
        )


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read {what}: {e.strerror or e}") from e


def _parse_toml(data: bytes, source: str) -> dict[str, Any]:
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{source}: expected a UTF-8 TOML policy file, found: {e}") from e
    _check_keys(doc, source)
    return doc


def _check_keys(doc: Mapping[str, Any], source: str) -> None:
    for section, value in doc.items():
        if section not in _SECTIONS:
            raise ConfigError(
                f"{source}: unknown section [{section}]; expected one of {', '.join(_SECTIONS)}"
            )
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {section}: expected a table, found {value!r}")
        for key in value:
            if key not in _SECTIONS[section]:
                raise ConfigError(f"{source}: unknown key {section}.{key}")


def _get(doc: Mapping[str, Any], section: str, key: str, source: str) -> Any:
    try:
        return doc[section][key]
    except KeyError:
        raise ConfigError(f"{source}: missing required key {section}.{key}") from None


def _get_str(doc: Mapping[str, Any], section: str, key: str, source: str) -> str:
    value = _get(doc, section, key, source)
    if not isinstance(value, str) or not value:
        raise ConfigError(
            f"{source}: {section}.{key}: expected a non-empty string, found {value!r}"
        )
    return value


def _get_int(doc: Mapping[str, Any], section: str, key: str, source: str) -> int:
    value = _get(doc, section, key, source)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{source}: {section}.{key}: expected an integer >= 1, found {value!r}")
    return value


def _get_str_list(
    doc: Mapping[str, Any], section: str, key: str, source: str, default: tuple[str, ...]
) -> tuple[str, ...]:
    value = doc.get(section, {}).get(key)
    if value is None:
        return default
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(
            f"{source}: {section}.{key}: expected a list of non-empty strings, found {value!r}"
        )
    return tuple(value)


def _position(parser_id: str) -> int:
    """The text position of a policy from the id Cedar's parser gives it (``policy0``, ``policy1``…)."""
    digits = parser_id.removeprefix("policy")
    if not digits.isdigit():
        raise ConfigError(f"Cedar parser: expected a policy id policyN, found {parser_id!r}")
    return int(digits)


def _parse_cedar(text: str, source: str) -> tuple[Any, tuple[str, ...]]:
    """Parse Cedar text; require an @id on every policy and at least one permit (fail closed)."""
    try:
        handle = cedarpy.PolicySet.from_str(text)
        parsed = json.loads(cedarpy.policies_to_json_str(text))
    except ValueError as e:
        raise ConfigError(f"{source}: expected valid Cedar policies, found: {e}") from e
    if parsed.get("templates"):
        raise ConfigError(
            f"{source}: Cedar templates are not supported, found {len(parsed['templates'])}"
        )
    static: dict[str, Any] = parsed.get("staticPolicies", {})
    ids: list[str] = []
    permits = 0
    for key in sorted(static, key=_position):
        policy = static[key]
        policy_id = policy.get("annotations", {}).get("id")
        if not policy_id:
            raise ConfigError(
                f'{source}: policy #{_position(key) + 1}: expected an @id("...") annotation, '
                "found none"
            )
        if policy_id in ids:
            raise ConfigError(f"{source}: duplicate Cedar policy @id({policy_id!r})")
        ids.append(policy_id)
        permits += policy.get("effect") == "permit"
    if permits == 0:
        raise ConfigError(
            f"{source}: expected at least one permit policy, found {len(ids)} policies and no "
            "permit (an empty policy set would deny everything silently; refusing to load)"
        )
    return handle, tuple(ids)


@dataclass(frozen=True)
class GateDecision:
    """The outcome of a pre-execution gate evaluation, ready to be recorded as an authorization."""

    decision: Decision
    policy_id: str
    policy_digest_hex: str
    determining_policies: tuple[str, ...]
    input_digest_hex: str
    reasons: tuple[str, ...]
    action: str = ""
    resource: str | None = None
    request: bytes = b""
    """The canonical request (``canonical_request``) whose SHA-256 is ``input_digest_hex``."""

    @property
    def allowed(self) -> bool:
        """True for ALLOW."""
        return self.decision is Decision.ALLOW

    def to_authorization(self, *, expires_at: int) -> Authorization:
        """The ``authorization`` record of the AUTHORIZATION_DECISION event for this decision."""
        return Authorization(
            decision=self.decision,
            policy_id=self.policy_id,
            policy_digest=self.policy_digest_hex,
            determining_policies=self.determining_policies,
            input_digest=self.input_digest_hex,
            expires_at=expires_at,
            authorized_action=self.action,
            authorized_resource=self.resource,
        )


def canonical_request(
    *, principal: str, action: str, resource: str | None, context: Mapping[str, str | int | bool]
) -> bytes:
    """The request as canonical JSON (sorted keys, no whitespace, UTF-8) — what input_digest covers."""
    request = {
        "principal": principal,
        "action": action,
        "resource": resource,
        "context": dict(context),
    }
    return json.dumps(
        request, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _uid(entity_type: str, entity_id: str) -> dict[str, str]:
    return {"type": entity_type, "id": entity_id}


def _entities(principal: str, action: str, resource_id: str) -> list[dict[str, Any]]:
    """Principal, action and resource entities, with the group memberships docs/policy.md defines."""
    entities: list[dict[str, Any]] = [{"uid": _uid("Agent", principal), "attrs": {}, "parents": []}]
    group, sep, _ = action.partition(":")
    if sep and group:
        entities.append(
            {"uid": _uid("Action", action), "attrs": {}, "parents": [_uid("Action", group)]}
        )
        entities.append({"uid": _uid("Action", group), "attrs": {}, "parents": []})
    else:
        entities.append({"uid": _uid("Action", action), "attrs": {}, "parents": []})
    system, sep, path = resource_id.partition(":")
    attrs = {"system": system, "path": path}
    if sep and system:
        entities.append(
            {
                "uid": _uid("Resource", resource_id),
                "attrs": attrs,
                "parents": [_uid("Resource", system)],
            }
        )
        entities.append({"uid": _uid("Resource", system), "attrs": {}, "parents": []})
    else:
        entities.append({"uid": _uid("Resource", resource_id), "attrs": attrs, "parents": []})
    return entities


def _name_policies(message: str, ids: tuple[str, ...]) -> str:
    """Replace Cedar's positional ids (`policyN`) in a message with the policies' @id values."""

    def name(m: re.Match[str]) -> str:
        index = int(m.group(1))
        return f"`{ids[index]}`" if index < len(ids) else m.group(0)

    return re.sub(r"`policy(\d+)`", name, message)


def evaluate(
    policy: PolicySet,
    *,
    principal: str,
    action: str,
    resource: str | None,
    context: Mapping[str, str | int | bool],
) -> GateDecision:
    """Evaluate one gate request with Cedar; raise PolicyEvaluationError unless it cleanly decides."""
    for key, value in context.items():
        if not isinstance(key, str) or not isinstance(value, str | int | bool):
            raise PolicyEvaluationError(
                f"context[{key!r}]: expected a str, int or bool value, found {type(value).__name__}"
            )
    try:
        input_bytes = canonical_request(
            principal=principal, action=action, resource=resource, context=context
        )
    except (TypeError, ValueError) as e:
        raise PolicyEvaluationError(f"request cannot be canonicalised: {e}") from e
    resource_id = resource if resource is not None else NO_RESOURCE
    request = {
        "principal": _uid("Agent", principal),
        "action": _uid("Action", action),
        "resource": _uid("Resource", resource_id),
        "context": dict(context),
    }
    cedar_policies = policy.cedar_handle
    if cedar_policies is None:
        cedar_policies = policy.cedar_text
    try:
        result = cedarpy.is_authorized(
            request, cedar_policies, _entities(principal, action, resource_id)
        )
        outcome = result.decision
        errors = list(result.diagnostics.errors)
        reasons = list(result.diagnostics.reasons)
        annotations = dict(result.diagnostics.id_annotations_by_reason)
    except Exception as e:  # cedarpy raises untyped errors from Rust; any of them fails closed
        raise PolicyEvaluationError(
            f"policy {policy.policy_id} ({policy.digest_hex}): Cedar failed on "
            f"{principal!r} {action!r} {resource_id!r}: {e}"
        ) from e
    if errors:
        named = sorted(_name_policies(e, policy.cedar_policy_ids) for e in errors)
        raise PolicyEvaluationError(
            f"policy {policy.policy_id} ({policy.digest_hex}): Cedar evaluation error on "
            f"{principal!r} {action!r} {resource_id!r}: {'; '.join(named)}"
        )
    if outcome is cedarpy.Decision.Allow:
        decision = Decision.ALLOW
    elif outcome is cedarpy.Decision.Deny:
        decision = Decision.DENY
    else:
        raise PolicyEvaluationError(
            f"policy {policy.policy_id}: expected Allow or Deny from Cedar, found {outcome}"
        )
    determining = tuple(sorted(annotations.get(r) or r for r in reasons))
    if determining:
        verb = "permitted by" if decision is Decision.ALLOW else "forbidden by"
        explanation = tuple(f"{verb} {p}" for p in determining)
    else:
        explanation = ("no permit policy matched: default deny",)
    return GateDecision(
        decision=decision,
        policy_id=policy.policy_id,
        policy_digest_hex=policy.digest_hex,
        determining_policies=determining,
        input_digest_hex=digest_hex(hashlib.sha256(input_bytes).digest()),
        reasons=explanation,
        action=action,
        resource=resource,
        request=input_bytes,
    )


@dataclass(frozen=True)
class Request:
    """A gate request as recorded in a decision event: enough to evaluate it again."""

    principal: str
    action: str
    resource: str | None
    context: dict[str, str | int | bool]


def parse_request(text: str) -> Request:
    """Parse a recorded request; it must be exactly ``canonical_request`` of its own values.

    Raises PolicyEvaluationError naming what is wrong.
    """
    if len(text.encode("utf-8", "surrogatepass")) > MAX_REQUEST_BYTES:
        raise PolicyEvaluationError(f"request: expected at most {MAX_REQUEST_BYTES} bytes")
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise PolicyEvaluationError(f"request: expected canonical JSON, found: {e}") from e
    keys = {"principal", "action", "resource", "context"}
    if not isinstance(doc, dict) or set(doc) != keys:
        found = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
        raise PolicyEvaluationError(
            f"request: expected an object with {sorted(keys)}, found {found}"
        )
    principal, action, resource, context = (
        doc[k] for k in ("principal", "action", "resource", "context")
    )
    if not isinstance(principal, str) or not isinstance(action, str):
        raise PolicyEvaluationError("request: expected string principal and action")
    if resource is not None and not isinstance(resource, str):
        raise PolicyEvaluationError("request: expected a string or null resource")
    if not isinstance(context, dict) or not all(
        isinstance(v, str | int | bool) and not isinstance(v, float) for v in context.values()
    ):
        raise PolicyEvaluationError("request: expected a context of str, int or bool values")
    request = Request(principal, action, resource, context)
    try:
        again = canonical_request(
            principal=principal, action=action, resource=resource, context=context
        )
    except (TypeError, ValueError) as e:
        raise PolicyEvaluationError(f"request cannot be canonicalised: {e}") from e
    if again != text.encode("utf-8"):
        raise PolicyEvaluationError("request: expected canonical JSON (sorted keys, no spaces)")
    return request

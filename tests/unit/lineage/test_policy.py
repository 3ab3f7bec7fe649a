"""Policy set loading, digest, and Cedar gate evaluation."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from pathlib import Path

import cedarpy
import pytest

from lineage.errors import ConfigError, LineageError
from lineage.model import Decision, EventKind, Severity, ViolationType
from lineage.policy import (
    DEFAULT_SEVERITY,
    PolicyEvaluationError,
    PolicySet,
    canonical_request,
    evaluate,
    policy_set_digest,
)

POLICIES = Path(__file__).resolve().parents[3] / "policies"

TOML = """\
[policy]
id = "test"
version = "1"
cedar = "p.cedar"
[limits]
max_depth = 4
max_fanout = 3
"""

CEDAR = """\
@id("allow-tools")
permit (principal is Agent, action in Action::"tool.call", resource);
"""


def write(tmp_path: Path, toml: str = TOML, cedar: str | bytes = CEDAR) -> Path:
    (tmp_path / "p.cedar").write_bytes(cedar.encode() if isinstance(cedar, str) else cedar)
    path = tmp_path / "p.toml"
    path.write_text(toml)
    return path


@pytest.fixture(scope="module")
def default() -> PolicySet:
    return PolicySet.load(POLICIES / "default.toml")


def test_default_policy_loads(default: PolicySet) -> None:
    assert default.policy_id == "lineage-demo"
    assert default.version == "2026-11-01"
    assert default.max_depth == 8
    assert default.max_fanout == 20
    assert default.authorization_required_for == {
        EventKind.EXECUTION_STARTED,
        EventKind.RESOURCE_ACCESS,
    }
    assert default.attestation_required_for_agents == ("agent:*",)
    assert default.forbidden_resources == ("prod-db:payroll/*", "secrets:*")
    assert default.critical_contains is True
    assert "agents-never-delete-records" in default.cedar_policy_ids
    assert default.cedar_text == (POLICIES / "default.cedar").read_text()


def test_digest_is_length_prefixed_toml_then_cedar(default: PolicySet) -> None:
    toml = (POLICIES / "default.toml").read_bytes()
    cedar = (POLICIES / "default.cedar").read_bytes()
    expected = hashlib.sha256(
        struct.pack(">Q", len(toml)) + toml + struct.pack(">Q", len(cedar)) + cedar
    ).digest()
    assert default.digest == expected
    assert default.digest_hex == "sha256:" + expected.hex()


def test_digest_vector() -> None:
    assert (
        policy_set_digest(b"a", b"b").hex()
        == hashlib.sha256(bytes.fromhex("000000000000000161000000000000000162")).hexdigest()
    )
    assert policy_set_digest(b"", b"").hex() == hashlib.sha256(bytes(16)).hexdigest()


def test_digest_binds_cedar_bytes(tmp_path: Path) -> None:
    base = PolicySet.load(write(tmp_path))
    changed = CEDAR.replace("allow-tools", "allow-tooks")
    assert len(changed) == len(CEDAR)
    (tmp_path / "b").mkdir()
    other = PolicySet.load(write(tmp_path / "b", cedar=changed))
    assert other.digest != base.digest
    assert base.digest == policy_set_digest(TOML.encode(), CEDAR.encode())


def test_digest_binds_toml_bytes_and_boundary() -> None:
    t, c = TOML.encode(), CEDAR.encode()
    assert policy_set_digest(t, c) != policy_set_digest(t.replace(b'"1"', b'"2"'), c)
    assert policy_set_digest(t + c[:1], c[1:]) != policy_set_digest(t, c)


def test_parse_matches_load(tmp_path: Path) -> None:
    loaded = PolicySet.load(write(tmp_path))
    parsed = PolicySet.parse(TOML.encode(), CEDAR.encode())
    assert parsed == loaded


def test_defaults_for_optional_sections(tmp_path: Path) -> None:
    p = PolicySet.load(write(tmp_path))
    assert p.authorization_required_for == {EventKind.EXECUTION_STARTED}
    assert p.attestation_required_for_agents == ()
    assert p.forbidden_resources == ()
    assert p.critical_contains is True
    for vt in ViolationType:
        assert p.severity_for(vt) is DEFAULT_SEVERITY[vt]


def test_severity_defaults_and_override(tmp_path: Path) -> None:
    p = PolicySet.load(write(tmp_path, TOML + '[severity]\nFANOUT_EXCEEDED = "CRITICAL"\n'))
    assert p.severity_for(ViolationType.FANOUT_EXCEEDED) is Severity.CRITICAL
    assert p.severity_for(ViolationType.BAD_SIGNATURE) is Severity.CRITICAL
    assert p.severity_for(ViolationType.DENIED_EXECUTION) is Severity.HIGH
    assert p.severity_for(ViolationType.FORBIDDEN_RESOURCE) is Severity.HIGH
    assert p.severity_for(ViolationType.CONTAINED_WORKFLOW) is Severity.HIGH


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[policy]\nid = 'x'\n", "missing required key policy.cedar"),
        (TOML.replace('id = "test"\n', ""), "missing required key policy.id"),
        (TOML.replace("max_depth = 4\n", ""), "missing required key limits.max_depth"),
        (
            TOML.replace("max_depth = 4", "max_depth = 'deep'"),
            "limits.max_depth: expected an integer",
        ),
        (
            TOML.replace("max_fanout = 3", "max_fanout = 0"),
            "limits.max_fanout: expected an integer >= 1",
        ),
        (TOML.replace("max_fanout = 3", "max_fanout = true"), "limits.max_fanout"),
        (TOML + "[extra]\n", "unknown section [extra]"),
        (
            TOML.replace("max_fanout = 3", "max_fanout = 3\nmax_fan = 3"),
            "unknown key limits.max_fan",
        ),
        (
            TOML + "[severity]\nSCOPE_MISMATCH = 'HUGE'\n",
            "severity.SCOPE_MISMATCH: expected one of",
        ),
        (TOML + "[severity]\nNOT_A_TYPE = 'LOW'\n", "unknown key severity.NOT_A_TYPE"),
        (
            TOML.replace("max_fanout = 3", "max_fanout = 3\nauthorization_required_for = ['RUN']"),
            "limits.authorization_required_for",
        ),
        (
            TOML.replace(
                "max_fanout = 3",
                "max_fanout = 3\nauthorization_required_for = ['AUTHORIZATION_DECISION']",
            ),
            "limits.authorization_required_for",
        ),
        (TOML + "[resources]\nforbidden = 'secrets:*'\n", "resources.forbidden: expected a list"),
        (TOML + "[containment]\ncritical_contains = 1\n", "containment.critical_contains"),
        ("[policy\n", "expected a UTF-8 TOML policy file"),
    ],
)
def test_load_errors_name_file_and_key(tmp_path: Path, toml: str, expected: str) -> None:
    path = write(tmp_path, toml)
    with pytest.raises(ConfigError) as err:
        PolicySet.load(path)
    assert expected in str(err.value)
    assert str(path) in str(err.value)


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read policy file"):
        PolicySet.load(tmp_path / "nope.toml")
    path = write(tmp_path, TOML.replace("p.cedar", "missing.cedar"))
    with pytest.raises(ConfigError, match=r"missing\.cedar: cannot read Cedar file"):
        PolicySet.load(path)


@pytest.mark.parametrize(
    ("cedar", "expected"),
    [
        ("", "expected at least one permit policy, found 0 policies"),
        ("// nothing here\n", "expected at least one permit policy"),
        (
            '@id("no") forbid (principal, action, resource);',
            "expected at least one permit policy, found 1 policies and no permit",
        ),
        ("permit (principal, action, resource);", "expected an @id"),
        (CEDAR + CEDAR, "duplicate Cedar policy @id('allow-tools')"),
        ("permit (principal, action", "expected valid Cedar policies"),
        (b"\xff\xfe", "expected UTF-8 Cedar text"),
    ],
)
def test_bad_cedar_fails_closed(tmp_path: Path, cedar: str | bytes, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        PolicySet.load(write(tmp_path, cedar=cedar))
    assert expected in str(err.value)
    assert "p.cedar" in str(err.value)


def test_allow_names_determining_policy(default: PolicySet) -> None:
    d = evaluate(
        default,
        principal="agent:planner",
        action="tool.call:search",
        resource="docs:faq",
        context={},
    )
    assert d.decision is Decision.ALLOW
    assert d.allowed
    assert d.determining_policies == ("agents-call-tools",)
    assert d.policy_id == "lineage-demo"
    assert d.policy_digest_hex == default.digest_hex
    assert d.reasons == ("permitted by agents-call-tools",)


def test_allow_external_api(default: PolicySet) -> None:
    d = evaluate(
        default, principal="agent:planner", action="api.call", resource="api:weather", context={}
    )
    assert (d.decision, d.determining_policies) == (Decision.ALLOW, ("agents-call-external-apis",))


@pytest.mark.parametrize(
    ("action", "resource", "determining"),
    [
        ("tool.call:delete_records", "crm:customers", ("agents-never-delete-records",)),
        ("tool.call:read", "secrets:db-password", ("no-secrets",)),
        ("tool.call:query", "prod-db:payroll/salaries", ("no-payroll-records",)),
        ("tool.call:delete_records", "secrets:x", ("agents-never-delete-records", "no-secrets")),
    ],
)
def test_deny_names_forbid_policies(
    default: PolicySet, action: str, resource: str, determining: tuple[str, ...]
) -> None:
    d = evaluate(default, principal="agent:planner", action=action, resource=resource, context={})
    assert d.decision is Decision.DENY
    assert d.determining_policies == determining
    assert d.reasons == tuple(f"forbidden by {p}" for p in determining)


def test_default_deny_has_no_determining_policy(default: PolicySet) -> None:
    d = evaluate(
        default, principal="agent:planner", action="api.call", resource="crm:x", context={}
    )
    assert d.decision is Decision.DENY
    assert d.determining_policies == ()
    assert d.reasons == ("no permit policy matched: default deny",)


def test_input_digest_is_canonical_json(default: PolicySet) -> None:
    ctx_a: dict[str, str | int | bool] = {"b": 1, "a": "x", "c": True}
    ctx_b: dict[str, str | int | bool] = {"c": True, "a": "x", "b": 1}
    d1 = evaluate(default, principal="agent:p", action="tool.call:s", resource=None, context=ctx_a)
    d2 = evaluate(default, principal="agent:p", action="tool.call:s", resource=None, context=ctx_b)
    raw = b'{"action":"tool.call:s","context":{"a":"x","b":1,"c":true},"principal":"agent:p","resource":null}'
    assert (
        canonical_request(principal="agent:p", action="tool.call:s", resource=None, context=ctx_a)
        == raw
    )
    assert d1.input_digest_hex == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert d1 == d2
    d3 = evaluate(
        default, principal="agent:p", action="tool.call:s", resource="docs:x", context=ctx_a
    )
    assert d3.input_digest_hex != d1.input_digest_hex
    assert json.loads(raw)["resource"] is None


def test_to_authorization(default: PolicySet) -> None:
    d = evaluate(default, principal="agent:p", action="tool.call:s", resource="docs:x", context={})
    a = d.to_authorization(expires_at=123)
    assert a.decision is Decision.ALLOW
    assert a.policy_digest == default.digest_hex
    assert a.determining_policies == ("agents-call-tools",)
    assert a.input_digest == d.input_digest_hex
    assert (a.authorized_action, a.authorized_resource, a.expires_at) == (
        "tool.call:s",
        "docs:x",
        123,
    )


def test_evaluation_error_fails_closed(tmp_path: Path) -> None:
    cedar = (
        CEDAR + '@id("risky")\nforbid (principal, action, resource) when { context.risk > 5 };\n'
    )
    p = PolicySet.load(write(tmp_path, cedar=cedar))
    ok = evaluate(p, principal="a", action="tool.call:x", resource=None, context={"risk": 1})
    assert ok.decision is Decision.ALLOW
    with pytest.raises(PolicyEvaluationError, match="error while evaluating policy `risky`") as err:
        evaluate(p, principal="a", action="tool.call:x", resource=None, context={})
    assert isinstance(err.value, LineageError)
    assert "does not have the attribute `risk`" in str(err.value)


def test_bad_context_value_fails_closed(default: PolicySet) -> None:
    with pytest.raises(PolicyEvaluationError, match="expected a str, int or bool"):
        evaluate(
            default,
            principal="a",
            action="tool.call:x",
            resource=None,
            context={"f": 1.5},  # type: ignore[dict-item]  # the runtime guard is under test
        )


def test_cedar_exception_fails_closed(default: PolicySet, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("engine exploded")

    monkeypatch.setattr(cedarpy, "is_authorized", boom)
    with pytest.raises(PolicyEvaluationError, match="engine exploded"):
        evaluate(default, principal="a", action="tool.call:x", resource=None, context={})


def test_evaluation_is_deterministic(default: PolicySet, tmp_path: Path) -> None:
    shutil.copy(POLICIES / "default.toml", tmp_path / "default.toml")
    shutil.copy(POLICIES / "default.cedar", tmp_path / "default.cedar")
    again = PolicySet.load(tmp_path / "default.toml")
    assert again == default
    for action, resource in [("tool.call:a", "docs:x"), ("tool.call:delete_records", None)]:
        first = evaluate(default, principal="agent:p", action=action, resource=resource, context={})
        second = evaluate(again, principal="agent:p", action=action, resource=resource, context={})
        assert first == second

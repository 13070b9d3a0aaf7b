"""decide(): the scan's engine at admission time, with enforcement actions, waivers and scope."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from kubepci.admission.cache import Snapshot
from kubepci.admission.decide import Decision, Policy, admission_inventory, decide
from kubepci.admission.review import make_review, parse_review, request_resource
from kubepci.checks import default_catalog
from kubepci.checks._registry import Catalog, CheckContext, check
from kubepci.config import CheckOverride, Config, parse_config
from kubepci.engine import evaluate
from kubepci.inventory import Inventory, Workload
from kubepci.inventory.loaders.manifests import load_paths
from kubepci.model import Enforcement, EnforcementPoint, Severity, Status, Violation
from kubepci.waivers import load_waivers
from tests.unit.admission.platform import NOW, PLATFORM, config, decide_object, objects, one, snapshot

PRIVILEGED_PATH = "spec.template.spec.containers[0].securityContext.privileged"


def _privileged_api() -> dict[str, Any]:
    dep = one("Deployment", "payments", "payment-api")
    dep["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] = True
    return dep


def _policy(**overrides: CheckOverride) -> Policy:
    cfg = dataclasses.replace(config(), checks={**config().checks, **overrides})
    return Policy(default_catalog(), cfg, load_waivers(PLATFORM / "waivers.yaml"))


def test_compliant_cde_deployment_is_allowed_silently() -> None:
    d = decide_object(one("Deployment", "payments", "payment-api"), policy=_policy())
    assert d.allowed
    assert (d.denied, d.warned, d.audited, d.errors) == ((), (), (), ())
    assert d.warnings == ()
    assert d.audit_annotations() == {"decision-id": d.uid, "decision": "allowed", "scope": "cde"}


def test_privileged_container_is_denied_naming_check_field_and_fix() -> None:
    d = decide_object(_privileged_api(), policy=_policy(), uid="req-1")
    assert not d.allowed
    assert [(r.check_id, r.path) for r in d.denied] == [("workload-privileged", PRIVILEGED_PATH)]
    remediation = default_catalog().get("workload-privileged").meta.remediation  # type: ignore[union-attr]
    assert d.message == (
        "kubepci denied Deployment payments/payment-api (1 failing check): "
        f"[workload-privileged] {PRIVILEGED_PATH}: container 'payment-api' runs privileged"
        f" (fix: {remediation.removesuffix('.')})"
    )
    response = orjson.loads(d.response())["response"]
    assert response["uid"] == "req-1"
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    assert response["status"]["message"] == d.message
    assert response["auditAnnotations"]["decision-id"] == "req-1"
    assert response["auditAnnotations"]["deny.workload-privileged"].startswith(PRIVILEGED_PATH + ": ")


def test_warn_override_admits_with_a_warning() -> None:
    d = decide_object(_privileged_api(), policy=_policy(**{"workload-privileged": CheckOverride(
        enforcement=Enforcement.WARN)}))
    assert d.allowed
    assert [r.check_id for r in d.warned] == ["workload-privileged"]
    assert len(d.warnings) == 1
    assert d.warnings[0].startswith(f"kubepci [workload-privileged] {PRIVILEGED_PATH}: container 'payment-api'")
    response = orjson.loads(d.response())["response"]
    assert response["allowed"] is True
    assert "status" not in response
    assert response["warnings"] == list(d.warnings)
    assert response["auditAnnotations"]["warn.workload-privileged"].startswith(PRIVILEGED_PATH)


def test_audit_override_admits_silently_and_annotates() -> None:
    d = decide_object(_privileged_api(), policy=_policy(**{"workload-privileged": CheckOverride(
        enforcement=Enforcement.AUDIT)}))
    assert d.allowed
    assert d.warnings == ()
    annotations = d.audit_annotations()
    assert annotations["audit.workload-privileged"].startswith(PRIVILEGED_PATH + ": container 'payment-api'")
    assert annotations["decision"] == "allowed"


def test_catalog_default_audit_check_is_recorded_not_enforced() -> None:
    dep = one("Deployment", "payments", "payment-api")
    dep["spec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}})
    d = decide_object(dep, policy=_policy())
    assert d.allowed
    assert [(r.check_id, r.enforcement) for r in d.audited] == [("secret-env-secretkeyref", Enforcement.AUDIT)]
    assert "audit.secret-env-secretkeyref" in d.audit_annotations()


def test_live_waiver_admits_and_names_the_waiver() -> None:
    fluent_bit = one("DaemonSet", "logging", "fluent-bit")
    d = decide_object(fluent_bit, policy=_policy())
    waived = {r.check_id: r.waiver_id for r in d.waived}
    assert waived == {"workload-readonly-rootfs": "W-2026-001"}
    assert "workload-readonly-rootfs" not in {r.check_id for r in d.denied}
    assert d.audit_annotations()["waived.workload-readonly-rootfs"] == "W-2026-001"


def test_waiver_stops_applying_the_day_after_it_expires() -> None:
    fluent_bit = one("DaemonSet", "logging", "fluent-bit")
    last_day = dt.datetime(2027, 6, 30, 23, 0, tzinfo=dt.UTC)
    assert "workload-readonly-rootfs" in {r.check_id for r in decide_object(fluent_bit, policy=_policy(),
                                                                             now=last_day).waived}
    after = decide_object(fluent_bit, policy=_policy(), now=last_day + dt.timedelta(days=1))
    denied = {r.check_id: r for r in after.denied}
    assert denied["workload-readonly-rootfs"].expired_waiver == "W-2026-001"
    assert "(waiver W-2026-001 has expired)" in after.message


def test_expired_waiver_is_named_in_the_denial() -> None:
    nginx = one("Deployment", "ingress", "ingress-nginx-controller")
    d = decide_object(nginx, policy=_policy())
    denied = {r.check_id: r for r in d.denied}
    assert denied["workload-readonly-rootfs"].expired_waiver == "W-2025-007"
    assert not d.waived


def test_dry_run_gets_the_same_verdict_and_is_flagged() -> None:
    real = decide_object(_privileged_api(), policy=_policy())
    dry = decide_object(_privileged_api(), policy=_policy(), dry_run=True)
    assert dry.dry_run
    assert not real.dry_run
    assert dry.record()["dry_run"] is True
    assert (dry.allowed, dry.message, dry.denied) == (real.allowed, real.message, real.denied)


def test_scope_comes_from_the_cached_namespace_labels() -> None:
    """workload-sandboxed-runtime-cde applies in the CDE only: the same pod spec passes in 'shop'."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "payments"},
           "spec": one("Deployment", "payments", "payment-api")["spec"]["template"]["spec"]}
    del pod["spec"]["runtimeClassName"]
    in_cde = decide_object(pod, policy=_policy())
    assert in_cde.scope is not None
    assert in_cde.scope.value == "cde"
    assert ("workload-sandboxed-runtime-cde", "spec.runtimeClassName") in {(r.check_id, r.path)
                                                                          for r in in_cde.denied}
    pod["metadata"]["namespace"] = "shop"
    elsewhere = decide_object(pod, policy=_policy())
    assert elsewhere.scope is not None
    assert elsewhere.scope.value == "out-of-scope"
    assert "workload-sandboxed-runtime-cde" not in {r.check_id for r in elsewhere.denied}


def test_network_policies_come_from_the_snapshot() -> None:
    dep = one("Deployment", "payments", "payment-api")
    assert decide_object(dep, policy=_policy()).allowed
    without = [o for o in objects() if not (o["kind"] == "NetworkPolicy" and o["metadata"]["namespace"] == "payments")]
    d = decide_object(dep, policy=_policy(), snap=Snapshot.from_objects(without, config()))
    assert {(r.check_id, r.path) for r in d.denied} == {("netpol-workload-covered", "spec.template.metadata.labels")}


def _binding(kind: str, name: str, role_kind: str, role: str, namespace: str = "") -> dict[str, Any]:
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
            "subjects": [{"kind": "User", "name": "mallory@example.com", "apiGroup": "rbac.authorization.k8s.io"}]}


def _role(kind: str, name: str, verbs: list[str], namespace: str = "") -> dict[str, Any]:
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta,
            "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": verbs}]}


@pytest.mark.parametrize(("binding", "role"), [
    (_binding("ClusterRoleBinding", "sneaky", "ClusterRole", "everything"), _role("ClusterRole", "everything", ["*"])),
    (_binding("RoleBinding", "sneaky", "Role", "everything", "payments"),
     _role("Role", "everything", ["*"], "payments")),
    (_binding("RoleBinding", "sneaky", "ClusterRole", "everything", "payments"),
     _role("ClusterRole", "everything", ["*"])),
])
def test_a_binding_to_a_cached_admin_equivalent_role_is_denied(binding: dict[str, Any], role: dict[str, Any]) -> None:
    """The role a binding names comes from the snapshot: cluster-admin by another name is still caught."""
    snap = Snapshot.from_objects([*objects(), role], config())
    d = decide_object(binding, policy=_policy(), snap=snap)
    assert ("rbac-cluster-admin-binding", "subjects[0]") in {(r.check_id, r.path) for r in d.denied}, d.message
    narrow = {**role, "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]}
    d = decide_object(binding, policy=_policy(), snap=Snapshot.from_objects([*objects(), narrow], config()))
    assert "rbac-cluster-admin-binding" not in {r.check_id for r in d.denied}, d.message


def test_roles_reach_only_binding_reviews() -> None:
    snap = Snapshot.from_objects([*objects(), _role("ClusterRole", "everything", ["*"])], config())
    assert "everything" in {r.name for r in snap.cluster_roles}
    binding = request_resource(parse_review(orjson.dumps(make_review(
        _binding("ClusterRoleBinding", "b", "ClusterRole", "everything")))))
    pod_owner = request_resource(parse_review(orjson.dumps(make_review(one("Deployment", "payments", "payment-api")))))
    assert binding is not None
    assert pod_owner is not None
    assert "everything" in {r.name for r in admission_inventory(binding, snap).of_kind("ClusterRole")}
    assert admission_inventory(pod_owner, snap).of_kind("ClusterRole") == ()


def test_namespace_update_is_judged_by_its_new_labels() -> None:
    ns = one("Namespace", "", "shop")
    assert decide_object(ns, operation="UPDATE", policy=_policy()).scope.value == "out-of-scope"  # type: ignore[union-attr]
    ns["metadata"]["labels"] = {"kubepci.io/scope": "cde", "pod-security.kubernetes.io/enforce": "baseline"}
    d = decide_object(ns, operation="UPDATE", policy=_policy())
    assert d.scope is not None
    assert d.scope.value == "cde"
    denied = {r.check_id for r in d.denied}
    assert "namespace-psa-cde-restricted" in denied  # a CDE-only check, reached because of the new label
    assert "node-security-level-namespace-label" in denied


@pytest.mark.parametrize("operation", ["DELETE", "CONNECT"])
def test_operations_other_than_create_and_update_are_not_evaluated(operation: str) -> None:
    d = decide_object(_privileged_api(), operation=operation, policy=_policy())
    assert d.allowed
    assert d.skipped == f"{operation} is not evaluated"


def test_object_being_deleted_is_never_blocked() -> None:
    dep = _privileged_api()
    dep["metadata"]["deletionTimestamp"] = "2026-11-01T00:00:00Z"
    d = decide_object(dep, operation="UPDATE", policy=_policy())
    assert d.allowed
    assert d.skipped == "object is being deleted"


def test_kind_without_checks_is_allowed_without_evaluation() -> None:
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l", "namespace": "shop"}}
    assert decide_object(lease, policy=_policy()).skipped == ""  # pan-exposure reads every kind
    no_catch_all = Catalog(tuple(c for c in default_catalog() if "*" not in c.meta.targets))
    d = decide_object(lease, policy=Policy(no_catch_all, config()))
    assert d.allowed
    assert d.skipped == "no check applies to Lease"


def test_record_names_checks_and_fields_but_never_values() -> None:
    grafana = one("Deployment", "monitoring", "grafana")
    d = decide_object(grafana, policy=_policy())
    record = d.record()
    assert record["kind"] == "Deployment"
    assert record["namespace"] == "monitoring"
    literal = [x for x in record["denied"] if x["check"] == "secret-env-literal"]
    assert literal
    assert literal[0]["path"].startswith("spec.template.spec.containers[0].env[")
    serialized = orjson.dumps(record).decode()
    for env in grafana["spec"]["template"]["spec"]["containers"][0].get("env", []):
        if isinstance(env.get("value"), str) and len(env["value"]) > 3:
            assert env["value"] not in serialized


def test_audit_annotation_keys_are_valid_for_the_apiserver() -> None:
    d = decide_object(one("DaemonSet", "logging", "fluent-bit"), policy=_policy())
    for key in d.audit_annotations():
        assert "/" not in key
        assert 0 < len(key) <= 63
        assert key[0].isalnum()
        assert key[-1].isalnum()


def _crashing_catalog() -> Catalog:
    @check(id="test-crash-always", title="A check that crashes", requirements=("2.2.1",), blog=("R2",),
           severity=Severity.HIGH, targets=("workload",), remediation="Fix the check.")
    def crash(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
        raise RuntimeError("boom")

    return Catalog((crash,))


@pytest.mark.parametrize(("namespace", "allowed"), [("payments", False), ("shop", True)])
def test_crashing_check_follows_the_failure_policy_of_the_scope(namespace: str, allowed: bool) -> None:
    dep = one("Deployment", "payments", "payment-api")
    dep["metadata"]["namespace"] = namespace
    d = decide_object(dep, policy=Policy(_crashing_catalog(), config()))
    assert d.allowed is allowed
    assert [r.check_id for r in d.errors] == ["test-crash-always"]
    assert "RuntimeError: boom" in d.errors[0].message
    if allowed:
        assert d.warnings
        assert "test-crash-always" in d.warnings[0]
    else:
        assert "[test-crash-always]" in d.message


def test_failure_policy_ignore_for_cde_makes_a_crash_fail_open() -> None:
    cfg = dataclasses.replace(config(), failure_policy_cde="Ignore")
    d = decide_object(one("Deployment", "payments", "payment-api"), policy=Policy(_crashing_catalog(), cfg))
    assert d.allowed
    assert d.errors


def test_disabled_check_does_not_run_at_admission() -> None:
    cfg = parse_config("checks: {workload-privileged: {enabled: false}}\n")
    d = decide_object(_privileged_api(), policy=Policy(default_catalog(), cfg), snap=snapshot(cfg))
    assert "workload-privileged" not in {r.check_id for r in d.denied}


def test_checks_for_selects_only_checks_that_can_judge_the_kind() -> None:
    policy = Policy(default_catalog(), Config())
    for_deployment = {c.id for c in policy.checks_for("Deployment")}
    assert {"workload-privileged", "pan-exposure", "vendor-default-password"} <= for_deployment
    assert not {"namespace-psa-enforce", "ingress-tls", "rbac-wildcard"} & for_deployment
    assert "namespace-limitrange-cde" not in {c.id for c in policy.checks_for("Namespace")}  # admission=False
    assert {c.id for c in policy.checks_for("Lease")} <= {c.id for c in default_catalog() if "*" in c.meta.targets}


#: kinds whose checks need objects the webhook does not cache (roles behind a binding)
_NOT_COMPARABLE = {"RoleBinding", "ClusterRoleBinding"}


def test_decisions_agree_with_a_scan_of_the_example_platform() -> None:
    """One engine: for every object a scan judges, admission finds the same failing (check, field) pairs."""
    cfg = config()
    policy = Policy(default_catalog(), cfg)
    scan_objects = objects()
    inventory = Inventory.build(load_paths([str(PLATFORM)]).resources)
    scan = evaluate(default_catalog(), inventory, cfg, point=EnforcementPoint.ADMISSION, now=NOW)
    snap = snapshot(cfg)
    compared = 0
    for obj, resource in zip(scan_objects, inventory.resources, strict=True):
        if resource.kind in _NOT_COMPARABLE or not policy.checks_for(resource.kind).checks:
            continue
        expected = {(f.check_id, f.path) for f in scan.findings
                    if f.resource == resource.ref and f.status is Status.FAIL}
        request = parse_review(orjson.dumps(make_review(obj)))
        d: Decision = decide(request, snap, policy, now=NOW)
        got = {(r.check_id, r.path) for r in (*d.denied, *d.warned, *d.audited)}
        assert got == expected, resource.ref
        compared += 1
    assert compared >= 50


def test_long_denials_show_ten_reasons_and_count_the_rest() -> None:
    d = decide_object(one("Deployment", "shop", "shop-web"), policy=_policy())
    assert len(d.denied) > 10
    assert d.message.count("; [") == 9  # ten reasons, nine separators
    assert d.message.endswith(f"; and {len(d.denied) - 10} more")
    assert len(d.audit_annotations()) >= len({r.check_id for r in d.denied}) + 3  # every check still annotated


def test_admission_inventory_targets_only_the_object_and_answers_lookups_from_the_snapshot() -> None:
    snap = snapshot()
    new = one("NetworkPolicy", "payments", "default-deny-all")
    new["metadata"]["labels"] = {"changed": "yes"}
    request = parse_review(orjson.dumps(make_review(new, operation="UPDATE")))
    resource = request_resource(request)
    assert resource is not None
    inv = admission_inventory(resource, snap)
    assert [str(r.ref) for r in inv.resources] == ["payments/NetworkPolicy/default-deny-all"]
    assert [str(r.ref) for r in inv.of_kind("NetworkPolicy")] == ["payments/NetworkPolicy/default-deny-all"]
    in_ns = inv.in_namespace("payments", "NetworkPolicy")
    assert in_ns[0] is inv.resources[0]  # the new version, not the cached one
    assert len(in_ns) == len(snap.network_policies["payments"])
    assert {r.name for r in in_ns} == {r.name for r in snap.network_policies["payments"]}
    assert inv.namespaces["payments"].labels["kubepci.io/scope"] == "cde"
    assert inv.nodes is snap.nodes
    assert inv.of_kind("RuntimeClass") == snap.runtime_classes
    assert not inv.workloads

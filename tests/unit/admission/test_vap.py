"""The ValidatingAdmissionPolicy export: shape, scope bindings, actions, messages, CLI, CEL dialect."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from kubepci.admission.cel import CelError, evaluate, evaluate_policy
from kubepci.admission.vap import (
    WORKLOAD_VARIABLES,
    export_check,
    export_checks,
    export_documents,
    registry_patterns,
    render_yaml,
    variables_for,
)
from kubepci.checks import default_catalog
from kubepci.checks.images import registry_allowed
from kubepci.cli.admission_vap_cmd import export_vap
from kubepci.config import CheckOverride, Config, ScopeRule, parse_config
from kubepci.inventory import Inventory, workload_of
from kubepci.model import Enforcement, Resource, ResourceRef, Scope, SourceLocation
from kubepci.scope import compute_scope
from kubepci.selectors import selects

CATALOG = default_catalog()
CEL_IDS = sorted(c.id for c in CATALOG if c.meta.cel)


def _check(check_id: str) -> Any:
    found = CATALOG.get(check_id)
    assert found is not None
    return found


def _exported(check_id: str, config: Config | None = None, action: str | None = None) -> Any:
    exported = export_check(_check(check_id), config or Config(), action)
    assert exported is not None
    return exported


def _pod(containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "apps"},
            "spec": {"containers": containers, **spec}}


# --- shape ---------------------------------------------------------------------------------------


def test_catalog_has_cel_for_the_per_object_checks() -> None:
    assert len(CEL_IDS) >= 45
    for check_id in ("workload-privileged", "workload-seccomp", "image-allowed-registry", "ingress-tls",
                     "rbac-escalation-verbs", "service-external-ips", "namespace-psa-enforce"):
        assert check_id in CEL_IDS
    # cross-object checks stay Python-only
    for check_id in ("workload-automount-sa-token", "netpol-workload-covered", "rbac-cluster-admin-binding"):
        assert check_id not in CEL_IDS


def test_every_exported_expression_parses_and_reads_only_defined_variables() -> None:
    config = replace(Config(), allowed_registries=("harbor.example.com",), require_digest="all")
    exported = export_checks(CATALOG, config)
    assert sorted(e.check_id for e in exported) == CEL_IDS
    for e in exported:
        spec = e.policy["spec"]
        defined: list[str] = []
        for var in spec.get("variables", []):
            evaluate_source = var["expression"]
            assert evaluate_source, e.check_id
            defined.append(var["name"])
        for v in spec["validations"]:
            for source in (v["expression"], v["messageExpression"]):
                assert set(__import__("re").findall(r"variables\.(\w+)", source)) <= set(defined), e.check_id
        for source in [*(c["expression"] for c in spec.get("matchConditions", [])),
                       *(v["expression"] for v in spec.get("variables", [])),
                       *(v["expression"] for v in spec["validations"]),
                       *(v["messageExpression"] for v in spec["validations"])]:
            from kubepci.admission.cel import compile_expression

            compile_expression(source)


def test_output_is_byte_stable_multi_document_yaml_named_after_the_checks() -> None:
    first = render_yaml(export_documents(CATALOG, Config()))
    second = render_yaml(export_documents(default_catalog(), Config()))
    assert first == second
    docs = list(yaml.safe_load_all(first))
    policies = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicy"]
    bindings = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding"]
    exported = {f"kubepci-{i}" for i in CEL_IDS if i != "image-allowed-registry"}  # that one needs an allowlist
    assert {p["metadata"]["name"] for p in policies} == exported
    assert {b["spec"]["policyName"] for b in bindings} == {p["metadata"]["name"] for p in policies}
    assert all(d["apiVersion"] == "admissionregistration.k8s.io/v1" for d in docs)
    priv = next(p for p in policies if p["metadata"]["name"] == "kubepci-workload-privileged")
    assert priv["metadata"]["annotations"]["kubepci.io/requirements"] == "2.2.6"
    assert priv["spec"]["failurePolicy"] == "Fail"
    assert "creationTimestamp" not in first


def test_workload_policy_matches_every_workload_kind_and_debug_containers() -> None:
    rules = _exported("workload-privileged").policy["spec"]["matchConstraints"]["resourceRules"]
    resources = {(g, r) for rule in rules for g in rule["apiGroups"] for r in rule["resources"]}
    assert resources == {
        ("", "pods"), ("", "pods/ephemeralcontainers"), ("", "replicationcontrollers"), ("apps", "deployments"),
        ("apps", "statefulsets"), ("apps", "daemonsets"), ("apps", "replicasets"), ("batch", "jobs"),
        ("batch", "cronjobs"), ("apps.openshift.io", "deploymentconfigs"),
    }
    assert all(rule["operations"] == ["CREATE", "UPDATE"] for rule in rules)
    ingress_rules = _exported("ingress-tls").policy["spec"]["matchConstraints"]["resourceRules"]
    assert ingress_rules == [{"apiGroups": ["networking.k8s.io"], "apiVersions": ["v1"],
                              "operations": ["CREATE", "UPDATE"], "resources": ["ingresses"]}]


@pytest.mark.parametrize("kind", ["Pod", "Deployment", "StatefulSet", "Job", "CronJob", "ReplicationController"])
def test_pod_spec_variables_select_the_pod_spec_of_every_kind(kind: str) -> None:
    spec = {"initContainers": [{"name": "i"}], "containers": [{"name": "a"}, {"name": "b"}],
            "ephemeralContainers": [{"name": "e"}], "securityContext": {"runAsUser": 7}}
    meta = {"name": "w", "labels": {"tier": "pod"}, "annotations": {"note": "x"}}
    if kind == "Pod":
        body: dict[str, Any] = {"apiVersion": "v1", "kind": kind, "metadata": meta, "spec": spec}
    elif kind == "CronJob":
        body = {"apiVersion": "batch/v1", "kind": kind, "metadata": {"name": "w"},
                "spec": {"jobTemplate": {"spec": {"template": {"metadata": meta, "spec": spec}}}}}
    else:
        body = {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": "w"},
                "spec": {"template": {"metadata": meta, "spec": spec}}}
    variables: dict[str, Any] = {}
    for name, source in WORKLOAD_VARIABLES.items():
        variables[name] = evaluate(source, {"object": body, "variables": variables})
    assert variables["podSpec"] == spec
    assert variables["podLabels"] == {"tier": "pod"}
    assert variables["podAnnotations"] == {"note": "x"}
    assert variables["podSecurityContext"] == {"runAsUser": 7}
    assert [c["name"] for c in variables["containers"]] == ["i", "a", "b", "e"]  # as Workload.containers
    assert [c["name"] for c in variables["runContainers"]] == ["i", "a", "b"]
    wl = workload_of(Resource(ResourceRef("apps", kind, "w", body["apiVersion"]), body, SourceLocation("t")))
    assert wl is not None
    assert [c.name for c in wl.containers] == ["i", "a", "b", "e"]


def test_variables_are_emitted_only_when_read_with_their_dependencies() -> None:
    names = [v["name"] for v in variables_for(["variables.podAnnotations['x'] == ''"], Config(), workload=True)]
    assert names == ["podSpec", "podMeta", "podAnnotations"] or names == ["podMeta", "podAnnotations"]
    assert [v["name"] for v in _exported("service-external-ips").policy["spec"].get("variables", [])] == []
    uid = {v["name"]: v["expression"] for v in _exported(
        "workload-high-uid", replace(Config(), min_uid=20000)).policy["spec"]["variables"]}
    assert uid["minUid"] == "20000"
    with pytest.raises(ValueError, match="undefined variables: nope"):
        variables_for(["variables.nope"], Config(), workload=True)
    with pytest.raises(ValueError, match="podSpec"):
        variables_for(["variables.podSpec.hostPID"], Config(), workload=False)


# --- actions and configuration -------------------------------------------------------------------


def _actions(exported: Any) -> list[list[str]]:
    return [b["spec"]["validationActions"] for b in exported.bindings]


def test_enforcement_becomes_validation_actions() -> None:
    assert _actions(_exported("workload-privileged")) == [["Deny"]]
    assert _check("image-digest-pinned").meta.enforcement is Enforcement.WARN
    assert set(map(tuple, _actions(_exported("image-digest-pinned")))) == {("Warn",)}
    assert _check("secret-env-secretkeyref").meta.enforcement is Enforcement.AUDIT
    assert _actions(_exported("secret-env-secretkeyref")) == [["Audit"]]


def test_config_overrides_then_action_flag_win() -> None:
    config = replace(Config(), checks={"workload-privileged": CheckOverride(enforcement=Enforcement.WARN)})
    assert _actions(_exported("workload-privileged", config)) == [["Warn"]]
    assert _actions(_exported("workload-privileged", config, "Audit")) == [["Audit"]]
    with pytest.raises(ValueError, match="action must be one of"):
        _exported("workload-privileged", config, "deny")


def test_disabled_and_inapplicable_checks_are_not_exported() -> None:
    off = replace(Config(), checks={"workload-privileged": CheckOverride(enabled=False)})
    assert export_check(_check("workload-privileged"), off) is None
    assert export_check(_check("image-allowed-registry"), Config()) is None  # no allowlist: nothing to enforce
    assert export_check(_check("image-digest-pinned"), replace(Config(), require_digest="none")) is None
    everywhere = _exported("image-digest-pinned", replace(Config(), require_digest="all"))
    assert everywhere.policy["metadata"]["annotations"]["kubepci.io/applies-to"] == "all"
    assert "matchConditions" not in everywhere.policy["spec"]
    cde_only = _exported("image-digest-pinned")  # default require_digest: cde
    assert cde_only.policy["metadata"]["annotations"]["kubepci.io/applies-to"] == "cde"
    assert cde_only.policy["spec"]["matchConditions"][0]["name"] == "kubepci-scope-not-narrowed"


# --- scope: bindings reproduce the engine's scope ------------------------------------------------


def _selected(exported: Any, name: str, labels: dict[str, str]) -> bool:
    full = {**labels, "kubernetes.io/metadata.name": name}
    return any(selects(b["spec"]["matchResources"]["namespaceSelector"], full) for b in exported.bindings)


def test_every_binding_excludes_system_admission_and_exempt_namespaces() -> None:
    config = replace(Config(), admission_exclude_namespaces=("ops",), admission_namespace="kubepci")
    for check_id in ("workload-privileged", "workload-interactive-tty-cde", "netpol-rules-without-ports"):
        exported = _exported(check_id, config)
        for ns in ("kube-system", "kube-public", "kubepci", "ops"):
            assert not _selected(exported, ns, {"kubepci.io/scope": "cde"}), (check_id, ns)
        assert not _selected(exported, "tools", {"kubepci.io/scope": "exempt"}), check_id


SCOPE_CONFIG = Config(
    cde=ScopeRule(namespaces=("payments", "vault", "kube-public"), selector={"team": "pay"}),
    connected=ScopeRule(namespaces=("ingress", "payments"), selector={"zone": "dmz"}),
    exempt=ScopeRule(namespaces=("kube-system", "kube-public", "kube-node-lease", "tools"), selector={"exempt": "yes"}),
)
NAMES = ["payments", "vault", "ingress", "web", "tools", "kube-public"]
LABEL_SETS: list[dict[str, str]] = [
    {}, {"kubepci.io/scope": "cde"}, {"kubepci.io/scope": "connected"}, {"kubepci.io/scope": "out-of-scope"},
    {"kubepci.io/scope": "exempt"}, {"kubepci.io/scope": "bogus"}, {"team": "pay"}, {"zone": "dmz"},
    {"team": "pay", "zone": "dmz"}, {"exempt": "yes", "team": "pay"},
]


@pytest.mark.parametrize(("check_id", "allowed"), [
    ("workload-privileged", {Scope.CDE, Scope.CONNECTED, Scope.OUT_OF_SCOPE, Scope.UNCLASSIFIED}),
    ("workload-interactive-tty-cde", {Scope.CDE}),
    ("netpol-rules-without-ports", {Scope.CDE, Scope.CONNECTED}),
])
def test_bindings_select_exactly_the_namespaces_the_engine_evaluates(check_id: str, allowed: set[Scope]) -> None:
    exported = _exported(check_id, SCOPE_CONFIG)
    mismatches = []
    for name, labels in itertools.product(NAMES, LABEL_SETS):
        ns = Resource(ResourceRef("", "Namespace", name, "v1"),
                      {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}},
                      SourceLocation("t"))
        scope = compute_scope(Inventory.build([ns]), SCOPE_CONFIG).of_namespace(name)
        engine = scope in allowed
        # documented: names listed under scope.exempt stay excluded even when a label gives another scope
        if name in SCOPE_CONFIG.exempt.namespaces:
            engine = False
        if _selected(exported, name, labels) != engine:
            mismatches.append(f"{name} {labels}: engine scope {scope.value}, bindings select {not engine}")
    assert not mismatches, "\n".join(mismatches)


def _narrowed(exported: Any, body: dict[str, Any]) -> bool:
    return not evaluate_policy(exported.policy, body).matched


@pytest.mark.parametrize(("pod_label", "own_label", "cde_skips", "in_scope_skips"), [
    (None, None, False, False),
    ("connected", None, True, False),
    ("out-of-scope", None, True, True),
    ("", "out-of-scope", True, True),
    (None, "connected", True, False),
    ("cde", "out-of-scope", False, False),
    ("exempt", None, False, False),
])
def test_a_pod_label_narrows_scope_like_the_engine(pod_label: str | None, own_label: str | None, cde_skips: bool,
                                                   in_scope_skips: bool) -> None:
    template_labels = {} if pod_label is None else {"kubepci.io/scope": pod_label}
    own = {} if own_label is None else {"kubepci.io/scope": own_label}
    body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "pay", "labels": own},
            "spec": {"template": {"metadata": {"labels": template_labels}, "spec": {"containers": [{"name": "a"}]}}}}
    ns = Resource(ResourceRef("", "Namespace", "pay", "v1"),
                  {"metadata": {"name": "pay", "labels": {"kubepci.io/scope": "cde"}}}, SourceLocation("t"))
    dep = Resource(ResourceRef("pay", "Deployment", "d", "apps/v1"), body, SourceLocation("t"))
    scope_map = compute_scope(Inventory.build([ns, dep]), Config())
    wl = workload_of(dep)
    assert wl is not None
    engine_scope = scope_map.of_workload(wl)
    assert (engine_scope is not Scope.CDE) == cde_skips
    assert (engine_scope not in (Scope.CDE, Scope.CONNECTED)) == in_scope_skips
    assert _narrowed(_exported("workload-interactive-tty-cde"), body) == cde_skips
    fake_in_scope = replace(_check("workload-privileged"), meta=replace(_check("workload-privileged").meta,
                                                                         applies_to="in-scope"))
    exported = export_check(fake_in_scope, Config())
    assert exported is not None
    assert _narrowed(exported, body) == in_scope_skips


# --- messages ------------------------------------------------------------------------------------


def test_denial_message_names_check_object_containers_and_remediation() -> None:
    body = _pod([{"name": "ok", "image": "a"}, {"name": "bad", "image": "b", "securityContext": {"privileged": True}}],
                initContainers=[{"name": "setup", "securityContext": {"privileged": True}}])
    verdict = evaluate_policy(_exported("workload-privileged").policy, body)
    assert not verdict.allowed
    (failure,) = verdict.failures
    assert failure.message == (
        "[kubepci workload-privileged] Pod web (containers: setup, bad): Containers must not run privileged. "
        "Remove securityContext.privileged (or set it false) and grant only the capabilities needed. (PCI DSS 2.2.6)"
    )
    host = evaluate_policy(_exported("workload-host-pid").policy, _pod([{"name": "a"}], hostPID=True))
    assert host.failures[0].message.startswith("[kubepci workload-host-pid] Pod web: Pods must not share")
    assert evaluate_policy(_exported("workload-host-pid").policy, _pod([{"name": "a"}], hostPID=False)).allowed


def test_static_message_is_kept_for_clients_that_do_not_evaluate_expressions() -> None:
    validation = _exported("rbac-wildcard").policy["spec"]["validations"][0]
    assert validation["message"].startswith("[kubepci rbac-wildcard] Roles must not grant wildcard permissions.")
    assert validation["reason"] == "Invalid"


# --- registry allowlist patterns ------------------------------------------------------------------


@pytest.mark.parametrize(("image", "allowed"), [
    ("harbor.example.com/pay/api:1.0", True),
    ("HARBOR.Example.com/pay/api@sha256:" + "a" * 64, True),
    ("harbor.example.com.evil.io/pay/api:1", False),
    ("harbor.example.com:5000/pay/api:1", False),
    ("harbor.example.com", True),  # no slash: Docker Hub's library/harbor.example.com, allowed by docker.io/library
    ("localhost/app:1", False),
    ("localhost:5000/team/app", True),
    ("LOCALHOST:5000/team/app:2", True),
    ("LOCALHOST/team/app", False),  # only lower-case 'localhost' names a registry; this is Docker Hub
    ("nginx:1.25", True),  # docker.io/library/nginx
    ("docker.io/library/nginx", True),
    ("index.docker.io/nginx", True),
    ("bitnami/redis:7", False),
    ("registry.k8s.io/ingress-nginx/controller:v1", True),
    ("registry.k8s.io/ingress-nginxx/controller:v1", False),
    ("registry.k8s.io/ingress-nginx:v1", True),
    ("registry.k8s.io/ingress-nginx:v1/x", False),
])
def test_registry_patterns_agree_with_the_python_parser(image: str, allowed: bool) -> None:
    prefixes = ("harbor.example.com", "docker.io/library", "registry.k8s.io/ingress-nginx/", "localhost:5000/team")
    assert registry_allowed(image, prefixes) == allowed
    pairs = registry_patterns(prefixes)
    got = any(evaluate("i.matches(p.match) && !i.matches(p.unless)", {"i": image.strip(), "p": p}) for p in pairs)
    assert got == allowed


# --- the CEL dialect -------------------------------------------------------------------------------


@pytest.mark.parametrize(("source", "expected"), [
    ("'ÀBC'.lowerAscii()", "Àbc"),  # ASCII only, as cel-go
    ("'\\u212a'.lowerAscii()", "\u212a"),
    ("' \\t x \\n'.trim()", "x"),
    ("'\\u001cx'.trim()", "\u001cx"),  # Go's white space excludes U+001C..U+001F; Python's strip does not
    ("'a/b/c'.split('/')", ["a", "b", "c"]),
    ("'a/b/c'.split('/', 2)", ["a", "b/c"]),
    ("''.split('/')", [""]),
    ("['a', 'b'].join(', ')", "a, b"),
    ("'héllo'.indexOf('l')", 2),
    ("'a:b:c'.lastIndexOf(':')", 3),
    ("'abcdef'.substring(2, 4)", "cd"),
    ("'aXbX'.replace('X', '-')", "a-b-"),
    ("'abc'.charAt(1)", "b"),
])
def test_kubernetes_string_library_has_go_semantics(source: str, expected: Any) -> None:
    assert evaluate(source, {}) == expected


@pytest.mark.parametrize("source", ["'abc'.substring(4)", "'abc'.substring(2, 1)", "o.missing", "'a'.join(',')"])
def test_errors_surface_as_cel_errors(source: str) -> None:
    with pytest.raises(CelError):
        evaluate(source, {"o": {}})


def test_kubernetes_only_syntax_is_rejected_at_parse_time() -> None:
    with pytest.raises(CelError, match="does not parse"):
        evaluate("object.?spec.orValue({})", {"object": {}})


def test_evaluation_error_denies_like_failure_policy_fail() -> None:
    policy = {"spec": {"validations": [{"expression": "object.spec.missing == 1", "message": "m"}]}}
    verdict = evaluate_policy(policy, {"spec": {}})
    assert verdict.matched
    assert not verdict.allowed
    assert "no such key" in verdict.errors[0]


# --- CLI -------------------------------------------------------------------------------------------


def test_cli_writes_the_yaml_with_config_and_action(tmp_path: Path) -> None:
    config = tmp_path / "kubepci.yaml"
    config.write_text("images: {allowed_registries: [harbor.example.com]}\nscope: {cde: {namespaces: [payments]}}\n")
    out = tmp_path / "vap.yaml"
    result = CliRunner().invoke(export_vap, ["-c", str(config), "-o", str(out), "--action", "warn"])
    assert result.exit_code == 0, result.output
    docs = list(yaml.safe_load_all(out.read_text()))
    names = {d["metadata"]["name"] for d in docs}
    assert "kubepci-image-allowed-registry" in names
    assert "kubepci-workload-interactive-tty-cde-named" in names
    assert {tuple(d["spec"]["validationActions"]) for d in docs if "validationActions" in d["spec"]} == {("Warn",)}
    named = next(d for d in docs if d["metadata"]["name"] == "kubepci-workload-interactive-tty-cde-named")
    assert {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["payments"]} in \
        named["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"]
    assert "policies" in result.output
    assert out.read_text() == render_yaml(export_documents(CATALOG, parse_config(config.read_text()), "Warn"))


def test_cli_selects_checks_and_rejects_unknown_ones() -> None:
    result = CliRunner().invoke(export_vap, ["--check", "workload-host-pid"])
    assert result.exit_code == 0
    assert [d["metadata"]["name"] for d in yaml.safe_load_all(result.output)] == ["kubepci-workload-host-pid"] * 2
    bad = CliRunner().invoke(export_vap, ["--check", "no-such-check"])
    assert bad.exit_code != 0
    assert "unknown check id(s): no-such-check" in str(bad.exception)
    empty = CliRunner().invoke(export_vap, ["--check", "workload-automount-sa-token"])
    assert "no selected check has a CEL expression" in str(empty.exception)

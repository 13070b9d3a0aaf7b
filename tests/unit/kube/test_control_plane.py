"""Flag parsing, the audit-policy evaluator and the version rule behind the control-plane checks."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubepci.checks._audit_policy import Probe, audit_gaps, decide
from kubepci.checks._control_plane import components, parse_bool
from kubepci.checks.cluster_config import _latest_minor
from kubepci.inventory import workload_of
from kubepci.model import Resource, ResourceRef, SourceLocation

POLICIES = Path("../shared/testdata/k8s-audit-policies")


def _pod(container: dict[str, Any]) -> Resource:
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "kube-system"},
            "spec": {"containers": [container]}}
    return Resource(ResourceRef("kube-system", "Pod", "p", "v1"), body, SourceLocation("x.yaml", 1))


def _flags(container: dict[str, Any]) -> list[Any]:
    wl = workload_of(_pod(container))
    assert wl is not None
    return list(components(wl))


def test_pflag_forms_and_paths() -> None:
    (f,) = _flags({"name": "c", "image": "x", "command": [
        "/usr/local/bin/kube-apiserver", "--profiling", "--authorization-mode", "Node", "--tls-min-version=",
        "--enable-admission-plugins=A,B", "--enable-admission-plugins=C", "--secure-port=1", "--secure-port=6443"]})
    assert f.component == "kube-apiserver"
    assert f.get("profiling") == "true"  # a bare boolean flag
    assert (f.get("authorization-mode"), f.path("authorization-mode")) == ("Node", "spec.containers[0].command[2]")
    assert f.get("tls-min-version") == ""
    assert not f.has("tls-min-version")
    assert f.items("enable-admission-plugins") == ["A", "B", "C"]  # string slices accumulate
    assert (f.get("secure-port"), f.path("secure-port")) == ("6443", "spec.containers[0].command[8]")  # last wins
    assert f.path("absent") == "spec.containers[0].command"


def test_component_from_image_when_only_args_are_given() -> None:
    (f,) = _flags({"name": "api", "image": "registry.k8s.io/kube-apiserver:v1.36.3@sha256:" + "0" * 64,
                   "args": ["--anonymous-auth=false"]})
    assert (f.component, f.get("anonymous-auth"), f.path("anonymous-auth")) == (
        "kube-apiserver", "false", "spec.containers[0].args[0]")


def test_hyperkube_and_non_components() -> None:
    (f,) = _flags({"name": "c", "image": "x", "command": ["/hyperkube", "apiserver", "--profiling=false"]})
    assert (f.component, f.get("profiling")) == ("kube-apiserver", "false")
    assert _flags({"name": "c", "image": "busybox", "command": ["sh", "-c", "kube-apiserver --x"]}) == []
    assert _flags({"name": "c", "image": "registry.k8s.io/pause:3.10"}) == []


def test_etcd_environment_is_overridden_by_flags() -> None:
    (f,) = _flags({"name": "etcd", "image": "x", "command": ["etcd", "--auto-tls=false"],
                   "env": [{"name": "ETCD_AUTO_TLS", "value": "true"},
                           {"name": "ETCD_CLIENT_CERT_AUTH", "value": "1"}]})
    assert f.get("auto-tls") == "false"
    assert (f.bool("client-cert-auth", False), f.path("client-cert-auth")) == (True, "spec.containers[0].env[1]")


@pytest.mark.parametrize(("text", "value"), [("true", True), ("T", True), ("1", True), ("False", False),
                                             ("0", False), ("yes", None), (None, None)])
def test_parse_bool_follows_pflag(text: str | None, value: bool | None) -> None:
    assert parse_bool(text) is value


def _policy(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((POLICIES / name).read_text())
    assert isinstance(doc, dict)
    return doc


def test_gce_policy_only_misses_event_deletion() -> None:
    """The upstream GCE policy drops every events request for volume; deleting events then leaves no trace."""
    gaps = list(audit_gaps(_policy("gce-configure-helper-policy.yaml")))
    assert [(g.expectation.topic, g.path, g.level) for g in gaps] == [("deletion of events", "rules[9]", "None")]
    assert "delete events in payments" in gaps[0].message()


def test_website_example_policy_gaps() -> None:
    gaps = {(g.expectation.topic, g.path, g.level, g.problem) for g in audit_gaps(
        _policy("k8s-website-example-audit-policy.yaml"))}
    assert gaps == {
        # configmap bodies in kube-system at Request, TokenRequest bodies at Request (core group rule)
        ("Secret and ConfigMap bodies", "rules[5]", "Request", "bodies logged (above Metadata)"),
        ("token requests and reviews", "rules[7]", "Request", "bodies logged (above Metadata)"),
        # RBAC changes fall through to the Metadata catch-all
        ("RBAC changes", "rules[8]", "Metadata", "logged below Request"),
    }


def test_first_matching_rule_wins_with_upstream_resource_patterns() -> None:
    policy = {"rules": [
        {"level": "None", "users": ["system:kube-proxy"]},
        {"level": "Request", "resources": [{"group": "", "resources": ["pods/*"]}], "omitStages": ["ResponseStarted"]},
        {"level": "Metadata", "resources": [{"group": "", "resources": ["*/exec"]}]},
        {"level": "RequestResponse", "namespaces": ["kube-system"]},
        {"level": "None", "nonResourceURLs": ["/healthz*"]},
        {"level": "Metadata"},
    ], "omitStages": ["RequestReceived"]}
    assert decide(policy, Probe("create", "", "pods", "exec", "payments")) == (
        "Request", frozenset({"RequestReceived", "ResponseStarted"}), 1)
    assert decide(policy, Probe("get", "", "services", "proxy", "payments"))[0::2] == ("Metadata", 5)
    assert decide(policy, Probe("get", "", "nodes", "proxy"))[0::2] == ("Metadata", 5)
    assert decide(policy, Probe("get", "apps", "deployments", "", "kube-system"))[0::2] == ("RequestResponse", 3)
    assert decide(policy, Probe("get", url="/healthz/etcd"))[0::2] == ("None", 4)
    assert decide(policy, Probe("get", url="/version"))[0::2] == ("Metadata", 5)
    assert decide({"rules": []}, Probe("get", "", "pods"))[0::2] == ("None", None)


def test_current_minor_from_the_release_table_and_cadence() -> None:
    assert _latest_minor(dt.date(2026, 11, 27)) == (37, False)
    assert _latest_minor(dt.date(2026, 8, 25)) == (36, False)
    assert _latest_minor(dt.date(2027, 5, 1)) == (39, True)  # 248 days after 1.37: two cadences
    assert _latest_minor(None) == (37, False)

"""Matrices, CDE exposure, NCA-style pairs, endpoint resolution, live-cluster pods, CNI policies."""

from __future__ import annotations

import pytest

from kubepci.analyzers.netpol import PortSet
from kubepci.errors import UsageError
from tests.unit.netpol._helpers import build, netpol

CONFIG = """
zones:
  internet: [0.0.0.0/0, "::/0"]
  processor: [203.0.113.0/24]
flows:
  - {from: y/a, to: x/a, ports: [80/TCP], reason: "approved api"}
  - {from: x, to: zone/processor, ports: [443/TCP], reason: "acquirer"}
"""

CDE_POLICIES = (
    netpol("deny", "x", "{podSelector: {}, policyTypes: [Ingress, Egress]}"),
    netpol("in", "x", "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: "
                      "{matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: a}}}], "
                      "ports: [{port: 80}, {port: 81}]}]}"),
    netpol("out", "x", "{podSelector: {matchLabels: {pod: a}}, policyTypes: [Egress], egress: [{to: [{ipBlock: "
                       "{cidr: 203.0.113.0/24}}], ports: [{port: 443}, {port: 8443}]}]}"),
)


def test_namespace_and_zone_matrices() -> None:
    model = build(*CDE_POLICIES, config=CONFIG)
    ns = model.namespace_matrix()
    assert ns.get("y", "x") == PortSet.of("TCP", 80, 81)
    assert ns.get("z", "x") == PortSet.empty()
    assert ns.get("x", "zone/processor") == PortSet.of("TCP", 443) | PortSet.of("TCP", 8443)
    assert ns.get("x", "zone/internet") == PortSet.empty()
    assert ns.get("zone/internet", "y") == PortSet.all()
    assert ns.get("x", "x") == PortSet.empty()
    assert "zone/processor" in ns.nodes
    assert "x" in ns.nodes
    zones = model.zone_matrix({"x": "cde", "y": "connected", "z": "connected"})
    assert zones.get("connected", "cde") == PortSet.of("TCP", 80, 81)
    assert zones.get("cde", "zone/processor") == PortSet.of("TCP", 443) | PortSet.of("TCP", 8443)
    assert [c[:2] for c in ns.cells] == sorted(c[:2] for c in ns.cells)
    assert ns.to_dict()["cells"][0].keys() == {"from", "to", "ports", "text"}


def test_exposure_lists_boundary_flows_with_approval() -> None:
    model = build(*CDE_POLICIES, config=CONFIG)
    exposure = model.exposure(["x"])
    inbound = {(f.source, f.destination): f for f in exposure.inbound}
    assert set(inbound) == {("y/a", "x/a")}
    flow = inbound[("y/a", "x/a")]
    assert flow.approved == PortSet.of("TCP", 80)
    assert flow.unapproved == PortSet.of("TCP", 81)
    assert flow.approved_by == ("approved api",)
    outbound = {(f.source, f.destination): f for f in exposure.outbound}
    assert set(outbound) == {("x/a", "zone/processor")}
    assert outbound[("x/a", "zone/processor")].unapproved == PortSet.of("TCP", 8443)
    assert exposure.not_isolated == ()
    doc = exposure.to_dict()
    assert doc["inbound"][0]["unapproved_text"] == "TCP 81"


def test_exposure_reports_directions_nothing_isolates() -> None:
    model = build(netpol("in", "x", "{podSelector: {}, policyTypes: [Ingress]}"))
    exposure = model.exposure(["x"])
    assert set(exposure.not_isolated) == {("x/a", "egress"), ("x/b", "egress"), ("x/c", "egress")}
    assert ("x/a", "zone/internet") in {(f.source, f.destination) for f in exposure.outbound}


def test_connectivity_pairs_nca_style() -> None:
    model = build(*CDE_POLICIES, config=CONFIG, with_ips=False)
    pairs = {(s, d): p for s, d, p in model.connectivity_pairs("workload")}
    assert pairs[("y/a[Pod]", "x/a[Pod]")] == {"TCP": [(80, 81)]}
    assert ("z/a[Pod]", "x/a[Pod]") not in pairs
    assert pairs[("x/a[Pod]", "203.0.113.0/24")] == {"TCP": [(443, 443), (8443, 8443)]}
    assert not any(s == d for s, d in pairs)
    assert all(not (s[0].isdigit() and d[0].isdigit()) for s, d in pairs)
    assert model.connectivity_pairs("workload") == model.connectivity_pairs("workload")
    with pytest.raises(ValueError, match="level"):
        model.connectivity_pairs("node")


LIVE = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: y}
spec:
  template:
    metadata: {labels: {app: api}}
    spec: {containers: [{name: c, image: i}]}
---
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: api-5d8
  namespace: y
  ownerReferences: [{apiVersion: apps/v1, kind: Deployment, name: api, controller: true}]
spec:
  template:
    metadata: {labels: {app: api, pod-template-hash: 5d8}}
    spec: {containers: [{name: c, image: i}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: api-5d8-aaaaa
  namespace: y
  labels: {app: api, pod-template-hash: 5d8}
  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: api-5d8, controller: true}]
spec: {containers: [{name: c, image: i}]}
status: {podIP: 10.9.0.1}
---
apiVersion: v1
kind: Pod
metadata:
  name: api-5d8-bbbbb
  namespace: y
  labels: {app: api, pod-template-hash: 5d8}
  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: api-5d8, controller: true}]
spec: {containers: [{name: c, image: i}]}
status: {podIP: 10.9.0.2}
"""


def test_live_pods_attach_to_top_owner_and_ipblocks_match_them() -> None:
    egress = netpol("eg", "x", "{podSelector: {matchLabels: {pod: a}}, policyTypes: [Egress], egress: "
                               "[{to: [{ipBlock: {cidr: 10.9.0.2/32}}]}]}")
    model = build(LIVE, egress, with_xyz=True)
    names = {e.name for e in model.endpoints() if e.namespace == "y"}
    assert "y/api" in names
    assert "y/api-5d8" not in names
    assert "y/api-5d8-aaaaa" not in names
    api = model.endpoint("y/api")
    assert api.workload_kind == "Deployment"
    assert api.pods == ("api-5d8-aaaaa", "api-5d8-bbbbb")
    # one of the two replicas is inside the ipBlock: the workload is reachable, per pod IP only one
    assert model.allowed_ports("x/a", "y/api") == PortSet.all()
    assert model.allowed_ports("x/a", "10.9.0.2") == PortSet.all()
    assert model.allowed_ports("x/a", "10.9.0.1") == PortSet.empty()
    pods = {(s, d) for s, d, _ in model.connectivity_pairs("pod")}
    assert ("x/a[Pod]", "y/api-5d8-bbbbb[Pod]") in pods
    assert ("x/a[Pod]", "y/api-5d8-aaaaa[Pod]") not in pods


CILIUM = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: l7, namespace: y}
spec:
  endpointSelector: {matchLabels: {"k8s:pod": b}}
  ingress: [{fromEndpoints: [{}]}]
---
apiVersion: crd.projectcalico.org/v1
kind: NetworkPolicy
metadata: {name: calico-deny, namespace: z}
spec: {selector: all(), types: [Ingress]}
"""


def test_cni_policies_are_not_analysed_never_no_policy() -> None:
    model = build(CILIUM)
    assert model.endpoint("y/b").not_analysed == ("CiliumNetworkPolicy y/l7 (cilium)",)
    assert model.endpoint("y/a").not_analysed == ()
    assert {e.name for e in model.endpoints() if e.not_analysed and e.namespace == "z"} == {"z/a", "z/b", "z/c"}
    # the Calico object named NetworkPolicy is not mistaken for a Kubernetes one
    assert model.allowed_ports("x/a", "z/a") == PortSet.all()
    codes = [d.code for d in model.diagnostics]
    assert codes.count("policy-not-analysed") == 2
    v = model.can_reach("x/a", "z/a")
    assert "which kubepci does not evaluate" in v.explanation.notes[0]
    exposure = model.exposure(["z"])
    assert {e for e, _ in exposure.not_analysed} >= {"z/a", "z/b", "z/c"}


def test_endpoint_resolution() -> None:
    model = build(config=CONFIG)
    assert [e.name for e in model.resolve("x")] == ["x/a", "x/b", "x/c"]
    assert model.resolve("x/Pod/a")[0].name == "x/a"
    assert model.resolve("zone/processor")[0].addresses == "203.0.113.0/24"
    ip = model.resolve("203.0.113.5")[0]
    assert ip.kind == "ip"
    assert "zone/processor" in ip.addresses
    for bad in ("nope/a", "zone/mars", "q"):
        with pytest.raises(UsageError):
            model.resolve(bad)
    verdict = model.can_reach("y", "x", 80, "TCP")
    assert verdict.allowed
    assert len(verdict.explanation.pairs) == 9


def test_implicit_internet_zone_and_most_specific_zone_wins() -> None:
    model = build(config="zones:\n  corp: [10.20.0.0/16]\n")
    zones = {e.name: e.addresses for e in model.endpoints() if e.kind == "zone"}
    assert set(zones) == {"zone/corp", "zone/internet"}
    assert zones["zone/internet"] == "0.0.0.0-10.19.255.255, 10.21.0.0-255.255.255.255, ::/0"
    assert model.resolve("10.20.1.1")[0].addresses.endswith("(zone/corp)")
    assert model.resolve("8.8.8.8")[0].addresses.endswith("(zone/internet)")


def test_addresses_no_zone_covers_are_external_when_internet_is_configured() -> None:
    model = build(config="zones:\n  internet: [1.0.0.0/8]\n")
    zones = {e.name: e.addresses for e in model.endpoints() if e.kind == "zone"}
    assert zones == {"zone/internet": "1.0.0.0/8", "zone/external": "0.0.0.0/8, 2.0.0.0-255.255.255.255, ::/0"}


def test_deployments_offline_use_the_pod_template() -> None:
    doc = LIVE.split("---")[0]
    model = build(doc, netpol("d", "y", "{podSelector: {matchLabels: {app: api}}, policyTypes: [Ingress]}"),
                  with_xyz=True)
    assert model.endpoint("y/api").pods == ()
    assert model.allowed_ports("x/a", "y/api") == PortSet.empty()
    assert model.allowed_ports("x/a", "y/a") == PortSet.all()


CLUSTER_WIDE = """
apiVersion: crd.projectcalico.org/v1
kind: GlobalNetworkPolicy
metadata: {name: gnp}
spec: {selector: all()}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: cnp}
spec: {tier: Admin, priority: 1}
"""


def test_cluster_wide_cni_policy_marks_everything_and_cnp_is_reported() -> None:
    model = build(CLUSTER_WIDE)
    marked = {e.name for e in model.endpoints() if e.kind == "workload" and e.not_analysed}
    assert marked == {f"{ns}/{p}" for ns in "xyz" for p in "abc"}
    assert model.endpoint("x/a").not_analysed == ("GlobalNetworkPolicy gnp (calico)",)
    cnp = next(d for d in model.diagnostics if d.code == "cnp-not-analysed")
    assert cnp.resource is not None
    assert cnp.resource.name == "cnp"


def test_explanation_text_names_the_deciding_rule_for_the_queried_port() -> None:
    model = build(netpol("p", "x", "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: "
                                   "{ns: y}}}], ports: [{port: 81}]}]}"))
    text = model.can_reach("y/a", "x/a", 81, "TCP").explanation.text()
    assert "y/a -> x/a: ALLOWED (TCP 81)" in text
    assert "allow TCP 81 by x/p rule 0: ingress rule matches this peer" in text
    denied = model.can_reach("y/a", "x/a", 80, "TCP").explanation.text()
    assert "isolate TCP 80 by x/p: isolated for ingress by x/p; no rule allows these ports" in denied
    assert "81" not in denied

"""One test (or a few) per numbered NetworkPolicy semantics item of netpol-rbac.md §4 (items 1-15;
item 16, AdminNetworkPolicy, lives in test_admin.py). Each asserts allowed port sets and what the
explanation says."""

from __future__ import annotations

from kubepci.analyzers.netpol import ASSUMPTIONS, PortSet
from tests.unit.netpol._helpers import build, netpol, pod_ip

TCP80 = PortSet.of("TCP", 80)
ZONES = "zones:\n  corporate: [192.168.0.0/16]\n"


def test_item1_connection_needs_egress_at_source_and_ingress_at_destination() -> None:
    model = build(
        netpol("eg", "x", "{podSelector: {matchLabels: {pod: a}}, policyTypes: [Egress], egress: [{to: "
                          "[{namespaceSelector: {matchLabels: {ns: y}}}], ports: [{port: 80}]}]}"),
        netpol("in", "y", "{podSelector: {matchLabels: {pod: b}}, ingress: [{from: [{podSelector: {}}]}, "
                          "{from: [{namespaceSelector: {matchLabels: {ns: x}}}], ports: [{port: 80}, {port: 81}]}]}"),
    )
    v = model.can_reach("x/a", "y/b")
    assert v.allowed
    assert v.ports == TCP80
    pair = v.explanation.pairs[0]
    assert pair.egress.isolated_by == ("x/eg",)
    allows = [(d.policy, d.rule, d.action) for d in pair.egress.decisions if d.action == "allow"]
    assert allows == [("x/eg", 0, "allow")]
    assert pair.ingress.isolated_by == ("y/in",)
    allow = next(d for d in pair.ingress.decisions if d.action == "allow")
    assert (allow.policy, allow.rule, allow.ports) == ("y/in", 1, PortSet.of("TCP", 80, 81))
    # the reverse direction is not isolated at all
    back = model.can_reach("y/b", "x/a").explanation.pairs[0]
    assert "not isolated (no NetworkPolicy selects it for Egress)" in back.egress.summary
    assert "not isolated (no NetworkPolicy selects it for Ingress)" in back.ingress.summary


def test_item1_isolated_destination_with_no_matching_rule_says_so() -> None:
    model = build(netpol("deny", "x", "{podSelector: {}, policyTypes: [Ingress]}"))
    v = model.can_reach("y/a", "x/a", 80, "TCP")
    assert not v.allowed
    ingress = v.explanation.pairs[0].ingress
    assert ingress.allowed == PortSet.empty()
    assert ingress.summary.startswith("isolated by x/deny, no rule allows")
    assert [(d.action, d.ports) for d in ingress.decisions] == [("isolate", TCP80)]


def test_item2_policy_types_default_from_sections() -> None:
    model = build(netpol("eg-only", "x", "{podSelector: {matchLabels: {pod: a}}, egress: [{ports: [{port: 81}]}]}"))
    assert model.allowed_ports("y/a", "x/a") == PortSet.empty()  # Ingress implied: deny all ingress
    assert model.allowed_ports("x/a", "y/a") == PortSet.of("TCP", 81)
    ingress = model.can_reach("y/a", "x/a").explanation.pairs[0].ingress
    assert ingress.isolated_by == ("x/eg-only",)


def test_item2_empty_egress_list_without_policy_types_does_not_isolate_egress() -> None:
    model = build(netpol("p", "x", "{podSelector: {}, egress: []}"))
    assert model.allowed_ports("x/a", "y/a") == PortSet.all()
    assert model.allowed_ports("y/a", "x/a") == PortSet.empty()


def test_item2_both_types_without_egress_rules_is_default_deny_egress() -> None:
    model = build(netpol("p", "x", "{podSelector: {}, policyTypes: [Ingress, Egress], ingress: [{}]}"))
    assert model.allowed_ports("x/a", "y/a") == PortSet.empty()
    assert model.allowed_ports("y/a", "x/a") == PortSet.all()


def test_item3_empty_list_denies_and_empty_rule_allows_everything_including_external() -> None:
    model = build(
        netpol("none", "x", "{podSelector: {matchLabels: {pod: a}}, policyTypes: [Ingress], ingress: []}"),
        netpol("open", "x", "{podSelector: {matchLabels: {pod: b}}, ingress: [{}]}"),
        config=ZONES,
    )
    assert model.allowed_ports("y/a", "x/a") == PortSet.empty()
    assert model.allowed_ports("zone/internet", "x/a") == PortSet.empty()
    assert model.allowed_ports("y/a", "x/b") == PortSet.all()
    assert model.allowed_ports("zone/internet", "x/b") == PortSet.all()
    assert model.allowed_ports("zone/corporate", "x/b") == PortSet.all()


def test_item3_missing_ports_means_all_ports_and_protocols() -> None:
    model = build(netpol("p", "x", "{podSelector: {}, ingress: [{from: [{namespaceSelector: {}}]}]}"))
    assert model.allowed_ports("y/a", "x/a") == PortSet.all()


def test_item4_namespace_selector_all_does_not_include_external_addresses() -> None:
    model = build(netpol("p", "x", "{podSelector: {}, ingress: [{from: [{namespaceSelector: {}}]}]}"), config=ZONES)
    assert model.allowed_ports("z/c", "x/a") == PortSet.all()
    v = model.can_reach("zone/internet", "x/a")
    assert not v.allowed
    assert v.explanation.pairs[0].ingress.isolated_by == ("x/p",)
    assert not model.can_reach("203.0.113.9", "x/a").allowed


def test_item4_pod_selector_alone_means_policy_namespace() -> None:
    model = build(netpol("p", "x", "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: "
                                   "[{podSelector: {matchLabels: {pod: b}}}]}]}"))
    assert model.allowed_ports("x/b", "x/a") == PortSet.all()
    assert model.allowed_ports("y/b", "x/a") == PortSet.empty()


EXTRA_PODS = """
apiVersion: v1
kind: Pod
metadata: {name: plain, namespace: y}
spec: {containers: [{name: c, image: i}]}
---
apiVersion: v1
kind: Pod
metadata: {name: tiered, namespace: y, labels: {tier: gold}}
spec: {containers: [{name: c, image: i}]}
"""


def test_item5_notin_and_doesnotexist_match_objects_without_the_key() -> None:
    model = build(EXTRA_PODS, netpol("p", "x", "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: "
                                                "[{namespaceSelector: {}, podSelector: {matchExpressions: [{key: tier, "
                                                "operator: NotIn, values: [gold]}, {key: role, operator: "
                                                "DoesNotExist}]}}]}]}"))
    assert model.allowed_ports("y/plain", "x/a") == PortSet.all()
    assert model.allowed_ports("y/b", "x/a") == PortSet.all()
    assert model.allowed_ports("y/tiered", "x/a") == PortSet.empty()


def test_item5_invalid_selector_drops_the_policy_with_a_diagnostic() -> None:
    model = build(netpol("bad", "x", "{podSelector: {matchExpressions: [{key: pod, operator: In, values: []}]}, "
                                     "policyTypes: [Ingress]}"))
    assert model.allowed_ports("y/a", "x/a") == PortSet.all()
    diag = next(d for d in model.diagnostics if d.code == "policy-invalid")
    assert diag.resource is not None
    assert diag.resource.name == "bad"
    assert "values must be non-empty for operator In" in diag.message


def test_item6_ipblock_cidr_minus_except_over_zones_and_ipv6() -> None:
    model = build(
        netpol("p", "x", "{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 192.168.0.0/16, except: "
                         "[192.168.5.0/24]}}, {ipBlock: {cidr: '2001:db8::/32'}}], ports: [{port: 443}]}]}"),
        config=ZONES,
    )
    assert model.allowed_ports("192.168.1.1", "x/a") == PortSet.of("TCP", 443)
    assert model.allowed_ports("192.168.5.7", "x/a") == PortSet.empty()
    assert model.allowed_ports("2001:db8::1", "x/a") == PortSet.of("TCP", 443)
    assert model.allowed_ports("2001:db9::1", "x/a") == PortSet.empty()
    # the corporate zone is partly allowed: the zone verdict lists which ranges
    v = model.can_reach("zone/corporate", "x/a")
    assert v.allowed
    assert v.ports == PortSet.of("TCP", 443)
    names = sorted(p.source for p in v.explanation.pairs)
    assert any("192.168.5.0/24" in n for n in names)


def test_item6_invalid_ipblocks_are_rejected() -> None:
    model = build(
        netpol("outside", "x", "{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: "
                               "[11.0.0.0/8]}}]}]}"),
        netpol("mixed", "y", "{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}, "
                             "podSelector: {}}]}]}"),
    )
    bad = {d.resource.name for d in model.diagnostics if d.code == "policy-invalid" and d.resource}
    assert bad == {"outside", "mixed"}
    assert model.allowed_ports("z/a", "x/a") == PortSet.all()


def test_item7_protocol_defaults_to_tcp_and_endport_is_inclusive() -> None:
    model = build(netpol("p", "x", "{podSelector: {}, ingress: [{ports: [{port: 8000, endPort: 8080}]}]}"))
    assert model.allowed_ports("y/a", "x/a") == PortSet.of("TCP", 8000, 8080)


def test_item7_invalid_port_specs_are_rejected() -> None:
    model = build(
        netpol("named-range", "x", "{podSelector: {}, ingress: [{ports: [{port: serve-80-tcp, endPort: 90}]}]}"),
        netpol("backwards", "y", "{podSelector: {}, ingress: [{ports: [{port: 90, endPort: 80}]}]}"),
        netpol("icmp", "z", "{podSelector: {}, ingress: [{ports: [{protocol: ICMP}]}]}"),
    )
    bad = {d.resource.name for d in model.diagnostics if d.code == "policy-invalid" and d.resource}
    assert bad == {"named-range", "backwards", "icmp"}


NAMED = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web-v1, namespace: y}
spec:
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: c, image: i, ports: [{name: http, containerPort: 8080}]}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web-v2, namespace: y}
spec:
  template:
    metadata: {labels: {app: web, v: "2"}}
    spec:
      containers: [{name: c, image: i, ports: [{name: http, containerPort: 9090}, {name: dns, containerPort: 53,
                   protocol: UDP}]}]
"""


def test_item8_named_ports_resolve_per_destination_by_name_and_protocol() -> None:
    model = build(NAMED, netpol("p", "y", "{podSelector: {matchLabels: {app: web}}, ingress: [{ports: "
                                          "[{port: http}, {port: dns, protocol: UDP}, {port: dns}]}]}"))
    assert model.allowed_ports("x/a", "y/web-v1") == PortSet.of("TCP", 8080)
    assert model.allowed_ports("x/a", "y/web-v2") == PortSet.of("TCP", 9090) | PortSet.of("UDP", 53)
    v = model.can_reach("x/a", "y/web-v2", "http")
    assert v.ports == PortSet.of("TCP", 9090)


def test_item8_egress_named_ports_never_match_addresses() -> None:
    model = build(NAMED, netpol("p", "x", "{podSelector: {matchLabels: {pod: a}}, policyTypes: [Egress], egress: "
                                          "[{ports: [{port: http}]}]}"), config=ZONES)
    assert model.allowed_ports("x/a", "y/web-v2") == PortSet.of("TCP", 9090)
    assert model.allowed_ports("x/a", "zone/internet") == PortSet.empty()
    assert model.allowed_ports("x/a", "y/b") == PortSet.empty()  # y/b has no port named http


def test_item9_sctp_only_allow_still_isolates() -> None:
    model = build(netpol("p", "x", "{podSelector: {}, ingress: [{ports: [{protocol: SCTP, port: 80}]}]}"))
    assert model.allowed_ports("y/a", "x/a") == PortSet.of("SCTP", 80)
    assert not model.can_reach("y/a", "x/a", 80, "TCP").allowed


SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: dns, namespace: y}
spec: {selector: {pod: a}, ports: [{port: 53, targetPort: 5353, protocol: UDP}]}
"""


def test_item10_rules_act_on_pod_ports_not_service_ports() -> None:
    model = build(SERVICE, netpol("p", "y", "{podSelector: {matchLabels: {pod: a}}, ingress: [{ports: "
                                            "[{port: 5353, protocol: UDP}]}]}"))
    assert model.can_reach("x/a", "y/a", 5353, "UDP").allowed
    assert not model.can_reach("x/a", "y/a", 53, "UDP").allowed
    assert any("after Service translation" in a for a in ASSUMPTIONS)


def test_item11_default_deny_egress_blocks_dns_and_broad_dns_rule_reaches_everything() -> None:
    deny = netpol("deny", "x", "{podSelector: {}, policyTypes: [Egress]}")
    model = build(deny)
    assert not model.can_reach("x/a", "y/a", 53, "UDP").allowed
    broad = netpol("dns", "x", "{podSelector: {}, policyTypes: [Egress], egress: [{to: [{namespaceSelector: {}}], "
                               "ports: [{port: 53, protocol: UDP}]}]}")
    model = build(deny, broad)
    exposure = model.exposure(["x"])
    outbound = {(f.source, f.destination): f.ports for f in exposure.outbound}
    assert outbound[("x/a", "z/c")] == PortSet.of("UDP", 53)
    assert {d for s, d in outbound if s == "x/a"} == {"y/a", "y/b", "y/c", "z/a", "z/b", "z/c"}


def test_item12_self_traffic_is_always_allowed_and_reported_as_such() -> None:
    model = build(netpol("deny", "x", "{podSelector: {}, policyTypes: [Ingress, Egress]}"))
    v = model.can_reach("x/a", "x/a", 80, "TCP")
    assert v.allowed
    assert v.ports == TCP80
    pair = v.explanation.pairs[0]
    assert pair.self_traffic
    assert pair.notes[0].startswith("self traffic: a pod can always reach itself")
    assert model.allowed_ports("x/a", "x/a") == PortSet.all()
    assert model.allowed_ports("x/a", "x/b") == PortSet.empty()
    assert all(s != d for s, d, _ in model.workload_matrix().cells)


def test_items13_and_15_assumptions_are_stated_in_the_exposure() -> None:
    exposure = build().exposure(["x"])
    text = " ".join(exposure.assumptions)
    assert "node a pod runs on" in text
    assert "always allowed" in text
    assert "steady state" in text


HOSTNET = """
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: x}
spec:
  template:
    metadata: {labels: {app: agent}}
    spec: {hostNetwork: true, containers: [{name: c, image: i}]}
"""


def test_item14_host_network_workloads_are_not_enforceable() -> None:
    model = build(HOSTNET, netpol("deny", "x", "{podSelector: {}, policyTypes: [Ingress]}"))
    agent = model.endpoint("x/agent")
    assert agent.host_network
    diag = next(d for d in model.diagnostics if d.code == "host-network")
    assert "x/agent" in diag.message
    exposure = model.exposure(["x"])
    assert [e for e, _ in exposure.not_enforceable] == ["x/agent"]
    v = model.can_reach("y/a", "x/agent")
    assert any("hostNetwork" in n for n in v.explanation.pairs[0].notes)


def test_pod_ip_queries_resolve_to_the_pod() -> None:
    model = build(netpol("deny", "y", "{podSelector: {matchLabels: {pod: b}}, policyTypes: [Ingress]}"))
    v = model.can_reach("x/a", pod_ip("y", "b"))
    assert not v.allowed
    assert v.explanation.pairs[0].ingress.isolated_by == ("y/deny",)


def test_string_port_that_is_not_a_port_name_invalidates_the_policy() -> None:
    """The API server rejects ``port: "80"`` (a name needs a letter), so the policy isolates nothing."""
    from kubepci.analyzers.netpol import compile_inventory
    from kubepci.inventory import Inventory
    from kubepci.inventory.loaders.manifests import parse_text

    text = """\
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: x, labels: {app: p}}
spec: {containers: [{name: c, image: i}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: quoted, namespace: x}
spec:
  podSelector: {}
  ingress: [{ports: [{port: "80"}]}]
"""
    resources, problems = parse_text(text, "t.yaml")
    assert not problems
    model = compile_inventory(Inventory.build(resources))
    assert any("'80' is neither a number nor a valid port name" in d.message for d in model.diagnostics)

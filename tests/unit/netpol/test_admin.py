"""AdminNetworkPolicy / BaselineAdminNetworkPolicy v1alpha1 tiers (netpol-rbac.md §4 item 16)."""

from __future__ import annotations

import yaml

from kubepci.analyzers.netpol import PortSet
from tests.unit.netpol._helpers import build, netpol
from tests.unit.netpol.test_semantics import HOSTNET


def anp(name: str, spec: str, kind: str = "AdminNetworkPolicy") -> str:
    body = {"apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": kind, "metadata": {"name": name},
            "spec": yaml.safe_load(spec)}
    return yaml.safe_dump(body, sort_keys=False)


def banp(spec: str, name: str = "default") -> str:
    return anp(name, spec, "BaselineAdminNetworkPolicy")


SUBJECT_X = "subject: {namespaces: {matchLabels: {ns: x}}}"
FROM_Y = "from: [{namespaces: {matchLabels: {ns: y}}}]"
ALLOW_Y_NP = netpol("allow-y", "x", "{podSelector: {}, ingress: [{from: [{namespaceSelector: "
                                    "{matchLabels: {ns: y}}}]}]}")
DENY_X_NP = netpol("deny", "x", "{podSelector: {}, policyTypes: [Ingress]}")


def test_anp_deny_overrides_networkpolicy_allow_and_is_explained() -> None:
    model = build(ALLOW_Y_NP, anp("deny-y", f"{{priority: 10, {SUBJECT_X}, ingress: [{{name: no-y, action: Deny, "
                                            f"{FROM_Y}}}]}}"))
    v = model.can_reach("y/a", "x/a")
    assert not v.allowed
    d = v.explanation.pairs[0].ingress.decisions[0]
    assert (d.tier, d.action, d.policy, d.rule, d.rule_name) == (
        "admin", "deny", "AdminNetworkPolicy/deny-y (priority 10)", 0, "no-y")
    assert model.allowed_ports("z/a", "x/a") == PortSet.empty()  # NetworkPolicy still isolates


def test_anp_allow_overrides_networkpolicy_isolation() -> None:
    model = build(DENY_X_NP, anp("allow-z", f"{{priority: 3, {SUBJECT_X}, ingress: [{{action: Allow, "
                                            "from: [{namespaces: {matchLabels: {ns: z}}}], "
                                            "ports: [{portNumber: {port: 80, protocol: TCP}}]}]}"))
    assert model.allowed_ports("z/b", "x/a") == PortSet.of("TCP", 80)
    assert model.allowed_ports("y/b", "x/a") == PortSet.empty()


def test_lower_priority_value_wins() -> None:
    model = build(
        anp("allow-first", f"{{priority: 5, {SUBJECT_X}, ingress: [{{action: Allow, {FROM_Y}}}]}}"),
        anp("deny-later", f"{{priority: 10, {SUBJECT_X}, ingress: [{{action: Deny, {FROM_Y}}}]}}"),
    )
    assert model.allowed_ports("y/a", "x/a") == PortSet.all()
    assert not [d for d in model.diagnostics if d.code == "anp-same-priority"]


def test_rules_within_an_anp_are_first_match() -> None:
    model = build(DENY_X_NP, anp("ordered", f"{{priority: 1, {SUBJECT_X}, ingress: ["
                                            f"{{action: Deny, {FROM_Y}, "
                                            "ports: [{portNumber: {port: 80, protocol: TCP}}]},"
                                            f"{{action: Allow, {FROM_Y}}}]}}"))
    assert model.allowed_ports("y/a", "x/a") == PortSet.all() - PortSet.of("TCP", 80)


def test_pass_hands_over_to_networkpolicy() -> None:
    np81 = netpol("only-81", "x", "{podSelector: {}, ingress: [{ports: [{port: 81}]}]}")
    model = build(np81, anp("pass-y", f"{{priority: 1, {SUBJECT_X}, ingress: [{{action: Pass, {FROM_Y}}}]}}"),
                  anp("deny-y", f"{{priority: 2, {SUBJECT_X}, ingress: [{{action: Deny, {FROM_Y}}}]}}"))
    assert model.allowed_ports("y/a", "x/a") == PortSet.of("TCP", 81)
    decisions = model.can_reach("y/a", "x/a").explanation.pairs[0].ingress.decisions
    assert [(d.tier, d.action) for d in decisions] == [("admin", "pass"), ("networkpolicy", "allow"),
                                                     ("networkpolicy", "isolate")]


def test_pass_falls_through_to_baseline_when_no_networkpolicy_isolates() -> None:
    deny_base = banp(f"{{{SUBJECT_X}, ingress: [{{action: Deny, {FROM_Y}}}]}}")
    model = build(deny_base, anp("pass-y", f"{{priority: 1, {SUBJECT_X}, ingress: [{{action: Pass, {FROM_Y}}}]}}"))
    assert model.allowed_ports("y/a", "x/a") == PortSet.empty()
    last = model.can_reach("y/a", "x/a").explanation.pairs[0].ingress.decisions[-1]
    assert (last.tier, last.action, last.policy) == ("baseline", "deny", "BaselineAdminNetworkPolicy/default")
    assert model.allowed_ports("z/a", "x/a") == PortSet.all()


def test_baseline_applies_only_where_networkpolicy_does_not_isolate() -> None:
    np = netpol("a-from-y", "x", "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: "
                                 "{matchLabels: {ns: y}}}]}]}")
    model = build(np, banp(f"{{{SUBJECT_X}, ingress: [{{action: Deny, {FROM_Y}}}]}}"))
    assert model.allowed_ports("y/a", "x/a") == PortSet.all()
    assert model.allowed_ports("y/a", "x/b") == PortSet.empty()
    assert model.allowed_ports("z/a", "x/b") == PortSet.all()


def test_banp_must_be_named_default() -> None:
    model = build(banp(f"{{{SUBJECT_X}, ingress: [{{action: Deny, {FROM_Y}}}]}}", name="other"))
    assert model.allowed_ports("y/a", "x/a") == PortSet.all()
    assert any(d.code == "banp-not-default" for d in model.diagnostics)


def test_same_priority_overlap_is_flagged_but_disjoint_is_not() -> None:
    a = anp("a", f"{{priority: 7, {SUBJECT_X}, ingress: [{{action: Allow, {FROM_Y}}}]}}")
    b = anp("b", f"{{priority: 7, {SUBJECT_X}, ingress: [{{action: Deny, {FROM_Y}}}]}}")
    model = build(a, b)
    flagged = [d for d in model.diagnostics if d.code == "anp-same-priority"]
    assert len(flagged) == 1
    assert "AdminNetworkPolicy/a" in flagged[0].message
    assert "AdminNetworkPolicy/b" in flagged[0].message
    c = anp("c", "{priority: 7, subject: {namespaces: {matchLabels: {ns: z}}}, ingress: [{action: Deny, "
                 "from: [{namespaces: {matchLabels: {ns: y}}}]}]}")
    assert not [d for d in build(a, c).diagnostics if d.code == "anp-same-priority"]


def test_direction_without_rules_is_unaffected() -> None:
    model = build(anp("egress-only", f"{{priority: 1, {SUBJECT_X}, egress: [{{action: Deny, "
                                     "to: [{namespaces: {matchLabels: {ns: z}}}]}]}"))
    assert model.allowed_ports("y/a", "x/a") == PortSet.all()
    assert model.allowed_ports("x/a", "z/a") == PortSet.empty()
    assert model.allowed_ports("x/a", "y/a") == PortSet.all()


def test_egress_networks_peer_and_pods_peer() -> None:
    model = build(anp("egress", f"{{priority: 1, {SUBJECT_X}, egress: ["
                                "{action: Deny, to: [{networks: [203.0.113.0/24]}]},"
                                "{action: Deny, to: [{pods: {namespaceSelector: {matchLabels: {ns: y}}, "
                                "podSelector: {matchLabels: {pod: b}}}}], ports: [{portRange: {protocol: UDP, "
                                "start: 80, end: 81}}]}]}"),
                  config="zones:\n  processor: [203.0.113.0/24]\n")
    assert model.allowed_ports("x/a", "zone/processor") == PortSet.empty()
    assert model.allowed_ports("x/a", "zone/internet") == PortSet.all()
    assert model.allowed_ports("x/a", "y/b") == PortSet.all() - PortSet.of("UDP", 80, 81)
    assert model.allowed_ports("x/a", "y/a") == PortSet.all()


def test_named_port_in_anp_resolves_on_destination() -> None:
    model = build(DENY_X_NP, anp("named", f"{{priority: 1, {SUBJECT_X}, ingress: [{{action: Allow, {FROM_Y}, "
                                          "ports: [{namedPort: serve-81-udp}]}]}"))
    assert model.allowed_ports("y/a", "x/a") == PortSet.of("UDP", 81)


def test_unknown_peer_fields_fail_closed() -> None:
    deny = anp("deny-unknown", f"{{priority: 1, {SUBJECT_X}, ingress: [{{action: Deny, "
                               "from: [{sameLabels: [team]}]}]}")
    assert build(deny).allowed_ports("y/a", "x/a") == PortSet.empty()
    allow = anp("allow-unknown", f"{{priority: 1, {SUBJECT_X}, ingress: [{{action: Allow, "
                                 "from: [{sameLabels: [team]}]}]}")
    model = build(DENY_X_NP, allow)
    assert model.allowed_ports("y/a", "x/a") == PortSet.empty()
    assert any(d.code == "peer-not-modelled" for d in model.diagnostics)


def test_host_network_pods_are_not_anp_subjects() -> None:
    model = build(HOSTNET, anp("deny-all", f"{{priority: 1, {SUBJECT_X}, ingress: [{{action: Deny, "
                                           "from: [{namespaces: {}}]}]}"))
    assert model.allowed_ports("y/a", "x/a") == PortSet.empty()
    assert model.allowed_ports("y/a", "x/agent") == PortSet.all()


def test_pod_subject_selects_only_matching_pods() -> None:
    model = build(anp("pods", "{priority: 1, subject: {pods: {namespaceSelector: {matchLabels: {ns: x}}, "
                              "podSelector: {matchLabels: {pod: c}}}}, ingress: [{action: Deny, "
                              "from: [{namespaces: {}}]}]}"))
    assert model.allowed_ports("y/a", "x/c") == PortSet.empty()
    assert model.allowed_ports("y/a", "x/b") == PortSet.all()


def test_invalid_priority_is_rejected() -> None:
    model = build(anp("bad", f"{{priority: 1001, {SUBJECT_X}, ingress: [{{action: Deny, {FROM_Y}}}]}}"))
    assert model.allowed_ports("y/a", "x/a") == PortSet.all()
    assert any(d.code == "policy-invalid" and "priority" in d.message for d in model.diagnostics)

"""Reachability truth tables over the x/y/z × a/b/c model, in the style of the upstream e2e suite.

Every case states the full set of allowed (source pod, destination pod) pairs for the probed
port and protocol; loopback is not judged, as upstream. The cases are our own formulations of the
kinds of scenarios the e2e suite covers (deny-all, namespace and pod peers, AND vs OR, named
ports, ipBlock with except on pod IPs, egress isolation, additive policies, per-protocol rules).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.unit.netpol._helpers import ALL_PAIRS, POD_NAMES, build, into, netpol, out_of, pod_ip, reach

X = ("x/a", "x/b", "x/c")
Y = ("y/a", "y/b", "y/c")
Z = ("z/a", "z/b", "z/c")


@dataclass(frozen=True)
class Case:
    name: str
    policies: tuple[str, ...]
    probes: tuple[tuple[int, str, frozenset[tuple[str, str]]], ...]
    pod_ips_match: bool = True


def only(dst: str, *srcs: str) -> frozenset[tuple[str, str]]:
    """Everything allowed except traffic into ``dst``, which only ``srcs`` may reach."""
    return (ALL_PAIRS - into([dst])) | into([dst], srcs)


CASES = [
    Case("no-policies-allow-everything", (), ((80, "TCP", ALL_PAIRS), (81, "UDP", ALL_PAIRS), (80, "SCTP", ALL_PAIRS))),
    Case("deny-all-ingress-in-x",
         (netpol("deny", "x", "{podSelector: {}, policyTypes: [Ingress]}"),),
         ((80, "TCP", ALL_PAIRS - into(X)), (81, "UDP", ALL_PAIRS - into(X)))),
    Case("deny-all-egress-in-x",
         (netpol("deny", "x", "{podSelector: {}, policyTypes: [Egress]}"),),
         ((80, "TCP", ALL_PAIRS - out_of(X)), (80, "SCTP", ALL_PAIRS - out_of(X)))),
    Case("deny-all-both-directions-in-x",
         (netpol("deny", "x", "{podSelector: {}, policyTypes: [Ingress, Egress]}"),),
         ((80, "TCP", ALL_PAIRS - into(X) - out_of(X)),)),
    Case("allow-x-a-from-same-namespace",
         (netpol("p", "x", "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{podSelector: {}}]}]}"),),
         ((80, "TCP", only("x/a", "x/b", "x/c")),)),
    Case("allow-x-a-from-namespace-y",
         (netpol("p", "x", "{podSelector: {matchLabels: {pod: a}}, "
                           "ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}]}"),),
         ((80, "TCP", only("x/a", *Y)),)),
    Case("and-peer-namespace-y-and-pod-b",
         (netpol("p", "x", "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: "
                           "{matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: b}}}]}]}"),),
         ((80, "TCP", only("x/a", "y/b")),)),
    Case("or-peers-namespace-y-or-pod-b",
         (netpol("p", "x", "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: "
                           "{matchLabels: {ns: y}}}, {podSelector: {matchLabels: {pod: b}}}]}]}"),),
         ((80, "TCP", only("x/a", *Y, "x/b")),)),
    Case("namespace-selector-notin-x",
         (netpol("p", "x", "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: "
                           "{matchExpressions: [{key: ns, operator: NotIn, values: [x]}]}}]}]}"),),
         ((80, "TCP", only("x/a", *Y, *Z)),)),
    Case("pod-selector-in-expression-any-namespace",
         (netpol("p", "x", "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {}, "
                           "podSelector: {matchExpressions: [{key: pod, operator: In, values: [b, c]}]}}]}]}"),),
         ((81, "TCP", only("x/a", "x/b", "x/c", "y/b", "y/c", "z/b", "z/c")),)),
    Case("namespace-by-metadata-name-label",
         (netpol("p", "x", "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: "
                           "{matchLabels: {kubernetes.io/metadata.name: z}}}]}]}"),),
         ((80, "TCP", only("x/a", *Z)),)),
    Case("ingress-on-port-80-only",
         (netpol("p", "x", "{podSelector: {matchLabels: {pod: a}}, ingress: [{ports: [{port: 80}]}]}"),),
         ((80, "TCP", ALL_PAIRS), (81, "TCP", only("x/a")), (80, "UDP", only("x/a")))),
    Case("ingress-on-port-81-from-namespace-y",
         (netpol("p", "x", "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: "
                           "{matchLabels: {ns: y}}}], ports: [{port: 81, protocol: TCP}]}]}"),),
         ((80, "TCP", only("x/a")), (81, "TCP", only("x/a", *Y)))),
    Case("named-port-ingress",
         (netpol("p", "x", "{podSelector: {matchLabels: {pod: a}}, ingress: [{ports: [{port: serve-80-tcp}]}]}"),),
         ((80, "TCP", ALL_PAIRS), (81, "TCP", only("x/a")), (80, "UDP", only("x/a")))),
    Case("named-port-with-other-protocol-matches-nothing",
         (netpol("p", "x", "{podSelector: {matchLabels: {pod: a}}, ingress: [{ports: "
                           "[{port: serve-80-tcp, protocol: UDP}]}]}"),),
         ((80, "TCP", only("x/a")), (80, "UDP", only("x/a")))),
    Case("named-port-egress-resolved-on-destination",
         (netpol("p", "x", "{podSelector: {matchLabels: {pod: a}}, policyTypes: [Egress], "
                           "egress: [{ports: [{port: serve-81-tcp}]}]}"),),
         ((81, "TCP", ALL_PAIRS), (80, "TCP", ALL_PAIRS - out_of(["x/a"])))),
    Case("multiple-policies-are-additive-on-peers",
         (netpol("from-y", "x", "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: "
                                "{matchLabels: {ns: y}}}]}]}"),
          netpol("from-z", "x", "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: "
                                "{matchLabels: {ns: z}}}]}]}")),
         ((80, "TCP", only("x/a", *Y, *Z)),)),
    Case("multiple-policies-are-additive-on-ports",
         (netpol("p80", "x", "{podSelector: {}, ingress: [{ports: [{port: 80}]}]}"),
          netpol("p81", "x", "{podSelector: {}, ingress: [{ports: [{port: 81, protocol: UDP}]}]}")),
         ((80, "TCP", ALL_PAIRS), (81, "UDP", ALL_PAIRS), (81, "TCP", ALL_PAIRS - into(X)))),
    Case("egress-isolation-allow-only-to-y-on-80",
         (netpol("p", "x", "{podSelector: {matchLabels: {pod: a}}, policyTypes: [Egress], egress: [{to: "
                           "[{namespaceSelector: {matchLabels: {ns: y}}}], ports: [{port: 80}]}]}"),),
         ((80, "TCP", (ALL_PAIRS - out_of(["x/a"])) | out_of(["x/a"], Y)),
          (81, "TCP", ALL_PAIRS - out_of(["x/a"])))),
    Case("egress-allowed-but-destination-ingress-denies",
         (netpol("eg", "x", "{podSelector: {matchLabels: {pod: a}}, policyTypes: [Egress], egress: [{to: "
                            "[{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: b}}}]}]}"),
          netpol("in", "y", "{podSelector: {matchLabels: {pod: b}}, ingress: [{from: [{namespaceSelector: "
                            "{matchLabels: {ns: z}}}]}]}")),
         ((80, "TCP", (ALL_PAIRS - out_of(["x/a"]) - into(["y/b"])) | into(["y/b"], Z)),)),
    Case("sctp-only-allow-isolates-tcp",
         (netpol("p", "x", "{podSelector: {matchLabels: {pod: a}}, ingress: "
                           "[{ports: [{port: 80, protocol: SCTP}]}]}"),),
         ((80, "SCTP", ALL_PAIRS), (80, "TCP", only("x/a")), (80, "UDP", only("x/a")))),
    Case("udp-only-on-81",
         (netpol("p", "x", "{podSelector: {matchLabels: {pod: a}}, ingress: [{ports: [{port: 81, protocol: UDP}]}]}"),),
         ((81, "UDP", ALL_PAIRS), (80, "UDP", only("x/a")), (81, "TCP", only("x/a")))),
    Case("any-port-on-a-protocol",
         (netpol("p", "x", "{podSelector: {matchLabels: {pod: a}}, ingress: [{ports: [{protocol: TCP}]}]}"),),
         ((80, "TCP", ALL_PAIRS), (81, "TCP", ALL_PAIRS), (81, "UDP", only("x/a")))),
    Case("end-port-range",
         (netpol("p", "x", "{podSelector: {matchLabels: {pod: a}}, ingress: [{ports: [{port: 80, endPort: 81}]}]}"),),
         ((80, "TCP", ALL_PAIRS), (81, "TCP", ALL_PAIRS), (80, "SCTP", only("x/a")))),
    Case("ipblock-egress-to-a-pod-ip",
         (netpol("p", "x", f"{{podSelector: {{matchLabels: {{pod: a}}}}, policyTypes: [Egress], egress: [{{to: "
                           f"[{{ipBlock: {{cidr: {pod_ip('y', 'b')}/32}}}}]}}]}}"),),
         ((80, "TCP", (ALL_PAIRS - out_of(["x/a"])) | {("x/a", "y/b")}),)),
    Case("ipblock-egress-to-a-pod-ip-ignored-when-switched-off",
         (netpol("p", "x", f"{{podSelector: {{matchLabels: {{pod: a}}}}, policyTypes: [Egress], egress: [{{to: "
                           f"[{{ipBlock: {{cidr: {pod_ip('y', 'b')}/32}}}}]}}]}}"),),
         ((80, "TCP", ALL_PAIRS - out_of(["x/a"])),), pod_ips_match=False),
    Case("ipblock-ingress-with-except-on-a-pod-ip",
         (netpol("p", "x", f"{{podSelector: {{matchLabels: {{pod: a}}}}, ingress: [{{from: [{{ipBlock: "
                           f"{{cidr: 10.0.0.0/16, except: [{pod_ip('y', 'b')}/32]}}}}]}}]}}"),),
         ((80, "TCP", only("x/a", *(p for p in POD_NAMES if p != "y/b"))),)),
    Case("except-denied-by-one-peer-allowed-by-another",
         (netpol("p", "x", f"{{podSelector: {{matchLabels: {{pod: a}}}}, ingress: [{{from: [{{ipBlock: "
                           f"{{cidr: 10.0.0.0/16, except: [{pod_ip('y', 'b')}/32]}}}}, "
                           "{namespaceSelector: {matchLabels: {ns: y}}}]}]}"),),
         ((80, "TCP", ALL_PAIRS),)),
    Case("empty-ingress-rule-allows-all",
         (netpol("deny", "x", "{podSelector: {}, policyTypes: [Ingress]}"),
          netpol("all", "x", "{podSelector: {matchLabels: {pod: a}}, ingress: [{}]}")),
         ((80, "TCP", ALL_PAIRS - into(["x/b", "x/c"])),)),
    Case("egress-only-rules-without-policytypes-also-deny-ingress",
         (netpol("p", "x", "{podSelector: {matchLabels: {pod: a}}, egress: [{}]}"),),
         ((80, "TCP", ALL_PAIRS - into(["x/a"])),)),
    Case("explicit-egress-type-ignores-ingress-rules",
         (netpol("p", "x", "{podSelector: {matchLabels: {pod: a}}, policyTypes: [Egress], "
                           "ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}], egress: [{}]}"),),
         ((80, "TCP", ALL_PAIRS),)),
    Case("pod-selector-matching-nothing-isolates-nothing",
         (netpol("p", "x", "{podSelector: {matchLabels: {pod: nobody}}, policyTypes: [Ingress, Egress]}"),),
         ((80, "TCP", ALL_PAIRS),)),
    Case("deny-egress-then-allow-all-egress",
         (netpol("deny", "x", "{podSelector: {}, policyTypes: [Egress]}"),
          netpol("allow", "x", "{podSelector: {}, policyTypes: [Egress], egress: [{}]}")),
         ((80, "TCP", ALL_PAIRS),)),
    Case("egress-to-all-namespaces-on-udp-53-style-rule",
         (netpol("p", "x", "{podSelector: {}, policyTypes: [Egress], egress: [{to: [{namespaceSelector: {}}], "
                           "ports: [{port: 81, protocol: UDP}]}]}"),),
         ((81, "UDP", ALL_PAIRS), (80, "UDP", ALL_PAIRS - out_of(X)))),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_truth_table(case: Case) -> None:
    model = build(*case.policies, pod_ips_match=case.pod_ips_match)
    for port, proto, expected in case.probes:
        got = reach(model, port, proto)
        assert got == expected, f"{port}/{proto}: missing {sorted(expected - got)}, unexpected {sorted(got - expected)}"


def test_there_are_enough_truth_table_cases() -> None:
    assert len(CASES) >= 25

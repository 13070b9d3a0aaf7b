"""Property tests: the three evaluation paths agree on random policy sets.

* ``allowed_ports`` (per-signature partitions, :mod:`partition`),
* ``can_reach`` (the single-pair explanation walk, :mod:`explain`),
* the rectangle relation behind the matrices (:mod:`matrix`).

A mismatch would mean the explanation shown to an auditor is not the verdict the matrix reports.
"""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubepci.analyzers.netpol import PortSet
from tests.unit.netpol._helpers import POD_NAMES, build

LABEL_VALUES = ("a", "b", "c", "x", "y", "z")
ENDPOINTS = (*POD_NAMES, "zone/internet", "zone/lab")
ZONES = "zones:\n  lab: [10.0.2.0/24, 192.0.2.0/24]\n"


def _selector(key: str) -> st.SearchStrategy[dict[str, Any]]:
    expr = st.fixed_dictionaries({"key": st.just(key), "operator": st.sampled_from(["In", "NotIn"]),
                                  "values": st.lists(st.sampled_from(LABEL_VALUES), min_size=1, max_size=2)})
    exists = st.fixed_dictionaries({"key": st.sampled_from([key, "other"]),
                                    "operator": st.sampled_from(["Exists", "DoesNotExist"])})
    return st.one_of(
        st.just({}),
        st.builds(lambda v: {"matchLabels": {key: v}}, st.sampled_from(LABEL_VALUES)),
        st.builds(lambda e: {"matchExpressions": [e]}, st.one_of(expr, exists)),
    )


CIDRS = ("10.0.1.0/24", "10.0.2.2/32", "10.0.0.0/16", "192.0.2.0/25", "0.0.0.0/0")
_peer = st.one_of(
    st.builds(lambda p: {"podSelector": p}, _selector("pod")),
    st.builds(lambda n: {"namespaceSelector": n}, _selector("ns")),
    st.builds(lambda p, n: {"podSelector": p, "namespaceSelector": n}, _selector("pod"), _selector("ns")),
    st.builds(lambda c, e: {"ipBlock": {"cidr": c, **({"except": ["10.0.1.1/32"]} if e and c == "10.0.0.0/16"
                                                     else {})}},
              st.sampled_from(CIDRS), st.booleans()),
)
_port = st.one_of(
    st.builds(lambda p, proto: {"port": p, "protocol": proto}, st.sampled_from([80, 81]),
              st.sampled_from(["TCP", "UDP", "SCTP"])),
    st.builds(lambda proto: {"protocol": proto}, st.sampled_from(["TCP", "UDP"])),
    st.just({"port": 80, "endPort": 81}),
    st.builds(lambda n: {"port": n}, st.sampled_from(["serve-80-tcp", "serve-81-udp", "nope"])),
)


def _rule(peer_key: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(lambda peers, ports: {**({peer_key: peers} if peers is not None else {}),
                                           **({"ports": ports} if ports is not None else {})},
                     st.one_of(st.none(), st.lists(_peer, min_size=1, max_size=2)),
                     st.one_of(st.none(), st.lists(_port, min_size=1, max_size=2)))


_np = st.builds(
    lambda ns, sel, types, ing, eg: {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"namespace": ns},
        "spec": {"podSelector": sel, **({"policyTypes": types} if types else {}),
                 **({"ingress": ing} if ing is not None else {}), **({"egress": eg} if eg is not None else {})}},
    st.sampled_from(["x", "y", "z"]), _selector("pod"),
    st.one_of(st.none(), st.sampled_from([["Ingress"], ["Egress"], ["Ingress", "Egress"]])),
    st.one_of(st.none(), st.lists(_rule("from"), max_size=2)),
    st.one_of(st.none(), st.lists(_rule("to"), max_size=2)),
)

_admin_peer = st.one_of(
    st.builds(lambda n: {"namespaces": n}, _selector("ns")),
    st.builds(lambda n, p: {"pods": {"namespaceSelector": n, "podSelector": p}}, _selector("ns"), _selector("pod")),
)
_admin_port = st.one_of(
    st.builds(lambda p, proto: {"portNumber": {"port": p, "protocol": proto}}, st.sampled_from([80, 81]),
              st.sampled_from(["TCP", "UDP"])),
    st.just({"namedPort": "serve-81-udp"}),
    st.just({"portRange": {"start": 80, "end": 81, "protocol": "SCTP"}}),
)


def _admin_rule(peer_key: str, actions: list[str], egress: bool) -> st.SearchStrategy[dict[str, Any]]:
    peers = st.one_of(_admin_peer, st.just({"networks": ["10.0.0.0/16"]})) if egress else _admin_peer
    return st.builds(lambda a, p, ports: {"action": a, peer_key: p, **({"ports": ports} if ports else {})},
                     st.sampled_from(actions), st.lists(peers, min_size=1, max_size=2),
                     st.one_of(st.none(), st.lists(_admin_port, min_size=1, max_size=2)))


def _admin(kind: str, actions: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(
        lambda prio, subj, ing, eg: {
            "apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": kind, "metadata": {},
            "spec": {**({"priority": prio} if kind == "AdminNetworkPolicy" else {}),
                     "subject": {"namespaces": subj}, "ingress": ing, "egress": eg}},
        st.integers(0, 2), _selector("ns"),
        st.lists(_admin_rule("from", actions, False), max_size=2),
        st.lists(_admin_rule("to", actions, True), max_size=2),
    )


@st.composite
def policy_sets(draw: st.DrawFn) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = draw(st.lists(_np, max_size=4))
    docs += draw(st.lists(_admin("AdminNetworkPolicy", ["Allow", "Deny", "Pass"]), max_size=2))
    docs += draw(st.lists(_admin("BaselineAdminNetworkPolicy", ["Allow", "Deny"]), max_size=1))
    for i, d in enumerate(docs):
        meta: dict[str, Any] = d["metadata"]
        meta["name"] = "default" if d["kind"] == "BaselineAdminNetworkPolicy" else f"p{i}"
    return docs


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy_sets(), st.booleans())
def test_partition_explanation_and_matrix_agree(docs: list[dict[str, Any]], pod_ips: bool) -> None:
    model = build(yaml.safe_dump_all(docs), config=ZONES, pod_ips_match=pod_ips)
    matrix = model.workload_matrix()
    pairs = {(s, d): PortSet.from_mapping(p) for s, d, p in model.connectivity_pairs("workload")}
    for s in ENDPOINTS:
        for d in ENDPOINTS:
            if s == d or (s.startswith("zone/") and d.startswith("zone/")):
                continue
            fast = model.allowed_ports(s, d)
            verdict = model.can_reach(s, d)
            assert verdict.ports == fast, (s, d, verdict.explanation.text())
            assert matrix.get(s, d) == fast, (s, d)
            if not s.startswith("zone/") and not d.startswith("zone/"):
                assert pairs.get((f"{s}[Pod]", f"{d}[Pod]"), PortSet.empty()) == fast, (s, d)

"""Seeded random NetworkPolicy sets over the x/y/z × a/b/c model (netpol-rbac.md §3).

Each case is the shared ``_base/xyz.yaml`` cluster, sometimes one replicated Deployment more, and
1-4 random policies drawing on every construct of §4: policyTypes variants, empty and missing
sections, AND/OR peers, matchLabels and all four expression operators on pods and namespaces (the
name label included), ipBlocks with excepts (kept off pod addresses: there are none offline),
numeric ports, endPort ranges, whole protocols and named ports (some of which resolve to different
numbers per pod, some to nothing, some with the wrong protocol).

Inputs on which NCA deviates from upstream are never generated (differences.yaml pins a
hand-written scenario for each): a section present while policyTypes excludes it, policyTypes in
the order [Egress, Ingress], ``egress: []`` without policyTypes, Exists/DoesNotExist pod expressions
next to a namespaceSelector, and Namespace manifests (so never an overridden name label).
"""

from __future__ import annotations

import ipaddress
import itertools
import random
from typing import Any

__all__ = ["CASES", "SEED", "generate"]

SEED = 20261104
CASES = 30

_NAMESPACES = ("x", "y", "z")
_POD_LABELS = {"pod": ("a", "b", "c", "d"), "tier": ("web", "db")}
_NS_LABELS = {"ns": ("x", "y", "z"), "env": ("prod", "dev"), "kubernetes.io/metadata.name": ("x", "y", "z", "w")}
_CIDRS = ("192.168.0.0/16", "192.168.10.0/24", "203.0.113.0/24", "198.51.100.0/25", "0.0.0.0/0",
          "10.0.0.0/8", "2001:db8::/32", "::/0")
_NUMBERS = (53, 80, 81, 443, 8080, 8081, 9000)
_RANGES = ((80, 81), (8000, 8100), (1, 1024), (9000, 9000), (30000, 32767))
_NAMES = ("serve-80-tcp", "serve-81-udp", "serve-80-sctp", "http", "nope")
_PROTOCOLS = ("TCP", "UDP", "SCTP")


def _selector(rng: random.Random, labels: dict[str, tuple[str, ...]], keys_allowed: bool) -> dict[str, Any]:
    """{} or matchLabels and/or matchExpressions; key operators only when ``keys_allowed``."""
    shape = rng.random()
    if shape < 0.2:
        return {}
    out: dict[str, Any] = {}
    if shape < 0.6:
        key = rng.choice(sorted(labels))
        out["matchLabels"] = {key: rng.choice(labels[key])}
    if shape >= 0.45:
        exprs = []
        for _ in range(rng.randint(1, 2)):
            key = rng.choice(sorted(labels))
            ops = ["In", "NotIn"] + (["Exists", "DoesNotExist"] if keys_allowed else [])
            op = rng.choice(ops)
            expr: dict[str, Any] = {"key": key, "operator": op}
            if op in ("In", "NotIn"):
                expr["values"] = sorted(rng.sample(labels[key], rng.randint(1, 2)))
            exprs.append(expr)
        out["matchExpressions"] = exprs
    return out


def _ip_block(rng: random.Random) -> dict[str, Any]:
    cidr = rng.choice(_CIDRS)
    net = ipaddress.ip_network(cidr)
    block: dict[str, Any] = {"cidr": cidr}
    if rng.random() < 0.5:
        new_prefix = min(net.prefixlen + rng.randint(2, 8), net.max_prefixlen)
        picks = list(itertools.islice(net.subnets(new_prefix=new_prefix), 1, 4))
        block["except"] = [str(s) for s in rng.sample(picks, rng.randint(1, 2))]
    return block


def _peer(rng: random.Random) -> dict[str, Any]:
    kind = rng.random()
    if kind < 0.2:
        return {"ipBlock": _ip_block(rng)}
    if kind < 0.45:
        return {"podSelector": _selector(rng, _POD_LABELS, keys_allowed=True)}
    if kind < 0.7:
        return {"namespaceSelector": _selector(rng, _NS_LABELS, keys_allowed=True)}
    # AND peer: NCA evaluates pod key operators in the policy's namespace only (differences.yaml)
    return {"namespaceSelector": _selector(rng, _NS_LABELS, keys_allowed=True),
            "podSelector": _selector(rng, _POD_LABELS, keys_allowed=False)}


def _port(rng: random.Random) -> dict[str, Any]:
    kind = rng.random()
    entry: dict[str, Any] = {}
    if kind < 0.35:
        entry["port"] = rng.choice(_NUMBERS)
    elif kind < 0.55:
        lo, hi = rng.choice(_RANGES)
        entry.update(port=lo, endPort=hi)
    elif kind < 0.7:
        entry["protocol"] = rng.choice(_PROTOCOLS)
        return entry
    else:
        entry["port"] = rng.choice(_NAMES)
    if rng.random() < 0.5:
        entry["protocol"] = rng.choice(_PROTOCOLS)
    return entry


def _rule(rng: random.Random, peer_key: str) -> dict[str, Any]:
    rule: dict[str, Any] = {}
    peers = rng.random()
    if peers < 0.15:
        rule[peer_key] = []
    elif peers >= 0.25:
        rule[peer_key] = [_peer(rng) for _ in range(rng.randint(1, 3))]
    ports = rng.random()
    if ports < 0.1:
        rule["ports"] = []
    elif ports >= 0.35:
        rule["ports"] = [_port(rng) for _ in range(rng.randint(1, 3))]
    return rule


def _policy(rng: random.Random, index: int) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": _selector(rng, _POD_LABELS, keys_allowed=True)}
    types = rng.choice([None, ["Ingress"], ["Egress"], ["Ingress", "Egress"]])
    ingress = types is None or "Ingress" in types
    egress = types is not None and "Egress" in types
    if types is None:
        egress = rng.random() < 0.5  # an omitted policyTypes then gets Egress from a non-empty section
    else:
        spec["policyTypes"] = types
    if ingress and rng.random() < 0.85:
        spec["ingress"] = [_rule(rng, "from") for _ in range(rng.randint(0, 3))]
    if egress and (types is None or rng.random() < 0.85):
        spec["egress"] = [_rule(rng, "to") for _ in range(rng.randint(1 if types is None else 0, 3))]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": f"gen-{index}", "namespace": rng.choice(_NAMESPACES)}, "spec": spec}


def _deployment(rng: random.Random) -> dict[str, Any]:
    labels = {"pod": "d"}
    if rng.random() < 0.5:
        labels["tier"] = rng.choice(_POD_LABELS["tier"])
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "d", "namespace": rng.choice(_NAMESPACES)},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"pod": "d"}},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "main", "image": "registry.example/d:1.0",
                                                       "ports": [{"name": "http", "containerPort": 9000},
                                                                 {"name": "serve-81-udp", "containerPort": 81,
                                                                  "protocol": "UDP"}]}]}}},
    }


def generate(index: int, seed: int = SEED) -> list[dict[str, Any]]:
    """The extra documents of generated case ``index`` (the xyz base is added by the caller)."""
    rng = random.Random(f"{seed}:{index}")  # noqa: S311 - reproducible test input, not a secret
    docs: list[dict[str, Any]] = []
    if rng.random() < 0.5:
        docs.append(_deployment(rng))
    docs.extend(_policy(rng, i) for i in range(rng.randint(1, 4)))
    return docs

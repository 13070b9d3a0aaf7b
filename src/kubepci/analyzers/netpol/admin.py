"""AdminNetworkPolicy and BaselineAdminNetworkPolicy (v1alpha1) parsing into the IR.

Semantics: netpol-rbac.md §4 item 16. Unknown peer kinds fail closed (an Allow matches nothing, a
Deny or Pass matches everything); node and domain-name peers are not modelled and match nothing,
with a diagnostic, because kubepci has no node or DNS endpoints to attach them to.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kubepci.analyzers.netpol.ipset import IPSet
from kubepci.analyzers.netpol.ir import (
    ALL_PORTS,
    Invalid,
    PeerIR,
    PolicyIR,
    PortSpec,
    RuleIR,
    parse_cidr,
    parse_port_number,
    parse_protocol,
    parse_selector,
)
from kubepci.analyzers.netpol.ports import PortSet
from kubepci.model import Resource
from kubepci.selectors import LabelSelector

__all__ = ["admin_policy"]


def _admin_ports(raw: Any, what: str) -> PortSpec:
    if raw is None or raw == []:
        return ALL_PORTS
    if not isinstance(raw, list):
        raise Invalid(f"{what}: must be a list")
    numeric = PortSet.empty()
    named: list[tuple[str, str | None]] = []
    for i, item in enumerate(raw):
        where = f"{what}[{i}]"
        if not isinstance(item, Mapping) or len(item) != 1:
            raise Invalid(f"{where}: exactly one of portNumber, namedPort, portRange")
        if "portNumber" in item:
            body = item["portNumber"] or {}
            proto = parse_protocol(body.get("protocol"), where)
            numeric |= PortSet.of(proto, parse_port_number(body.get("port"), where))
        elif "portRange" in item:
            body = item["portRange"] or {}
            lo, hi = parse_port_number(body.get("start"), where), parse_port_number(body.get("end"), where)
            if hi < lo:
                raise Invalid(f"{where}: portRange end {hi} is below start {lo}")
            numeric |= PortSet.of(parse_protocol(body.get("protocol"), where), lo, hi)
        elif "namedPort" in item and isinstance(item["namedPort"], str):
            named.append((item["namedPort"], None))
        else:
            raise Invalid(f"{where}: unknown port kind {next(iter(item))!r}")
    return PortSpec(numeric, tuple(sorted(set(named), key=lambda n: n[0])))


_ADMIN_PEER_FIELDS = frozenset({"namespaces", "pods", "networks", "nodes", "domainNames"})


def _admin_peers(raw: Any, what: str, action: str, egress: bool,
                 notes: list[str]) -> tuple[PeerIR, ...]:
    """§4 item 16 peers; unknown peer fields fail closed (Allow matches nothing, Deny/Pass all)."""
    if not isinstance(raw, list) or not raw:
        raise Invalid(f"{what}: at least one peer is required")
    peers: list[PeerIR] = []
    for i, item in enumerate(raw):
        where = f"{what}[{i}]"
        if not isinstance(item, Mapping) or len(item) != 1:
            raise Invalid(f"{where}: exactly one peer kind per entry")
        kind = next(iter(item))
        body = item[kind]
        allowed_kinds = _ADMIN_PEER_FIELDS if egress else frozenset({"namespaces", "pods"})
        if kind not in allowed_kinds:
            notes.append(f"{where}: unknown peer kind {kind!r}; fails closed")
            peers.append(PeerIR(nothing=True) if action == "allow" else PeerIR(everything=True))
        elif kind == "namespaces":
            peers.append(PeerIR(namespaces=parse_selector(body, f"{where}.namespaces")))
        elif kind == "pods":
            if not isinstance(body, Mapping) or set(body) - {"namespaceSelector", "podSelector"}:
                notes.append(f"{where}.pods: unknown fields; fails closed")
                peers.append(PeerIR(nothing=True) if action == "allow" else PeerIR(everything=True))
                continue
            peers.append(PeerIR(pods=parse_selector(body.get("podSelector"), f"{where}.pods.podSelector"),
                                namespaces=parse_selector(body.get("namespaceSelector"),
                                                     f"{where}.pods.namespaceSelector")))
        elif kind == "networks":
            if not isinstance(body, list) or not body:
                raise Invalid(f"{where}.networks: must be a non-empty list of CIDRs")
            peers.append(PeerIR(ipset=_union_cidrs(body, f"{where}.networks")))
        else:  # nodes, domainNames: no node or DNS endpoints are modelled
            notes.append(f"{where}: {kind} peers are not modelled (no node/DNS endpoints); treated as matching "
                         "nothing")
            peers.append(PeerIR(nothing=True))
    return tuple(peers)


def _union_cidrs(items: Iterable[Any], what: str) -> IPSet:
    out = IPSet()
    for j, item in enumerate(items):
        out = out | parse_cidr(item, f"{what}[{j}]")
    return out


def admin_policy(res: Resource, baseline: bool, notes: list[str]) -> PolicyIR:
    spec = res.body.get("spec") or {}
    if not isinstance(spec, Mapping):
        raise Invalid("spec must be a mapping")
    priority = 0
    if not baseline:
        raw_priority = spec.get("priority")
        if isinstance(raw_priority, bool) or not isinstance(raw_priority, int) or not 0 <= raw_priority <= 1000:
            raise Invalid(f"spec.priority {raw_priority!r} must be an integer 0-1000")
        priority = raw_priority
    subject = spec.get("subject")
    if not isinstance(subject, Mapping) or len(subject) != 1 or next(iter(subject)) not in ("namespaces", "pods"):
        raise Invalid("spec.subject needs exactly one of namespaces or pods")
    if "namespaces" in subject:
        sub_ns, sub_pods = parse_selector(subject["namespaces"], "spec.subject.namespaces"), LabelSelector()
    else:
        body = subject["pods"] if isinstance(subject["pods"], Mapping) else {}
        sub_ns = parse_selector(body.get("namespaceSelector"), "spec.subject.pods.namespaceSelector")
        sub_pods = parse_selector(body.get("podSelector"), "spec.subject.pods.podSelector")
    actions = ("Allow", "Deny") if baseline else ("Allow", "Deny", "Pass")
    rules: dict[str, list[RuleIR]] = {"ingress": [], "egress": []}
    for direction, peer_key in (("ingress", "from"), ("egress", "to")):
        raw = spec.get(direction) or []
        if not isinstance(raw, list):
            raise Invalid(f"spec.{direction} must be a list")
        for i, rule in enumerate(raw):
            where = f"spec.{direction}[{i}]"
            if not isinstance(rule, Mapping):
                raise Invalid(f"{where}: must be a mapping")
            action = rule.get("action")
            if action not in actions:
                raise Invalid(f"{where}.action {action!r} must be one of {', '.join(actions)}")
            act = str(action).lower()
            rules[direction].append(RuleIR(
                i, act, _admin_peers(rule.get(peer_key), f"{where}.{peer_key}", act, direction == "egress", notes),
                _admin_ports(rule.get("ports"), f"{where}.ports"), str(rule.get("name") or "")))
    kind = "BaselineAdminNetworkPolicy" if baseline else "AdminNetworkPolicy"
    return PolicyIR(
        tier="baseline" if baseline else "admin", resource=res, label=f"{kind}/{res.name}", namespace="",
        priority=priority, subject_pods=sub_pods, subject_namespaces=sub_ns,
        affects_ingress=bool(rules["ingress"]), affects_egress=bool(rules["egress"]),
        ingress=tuple(rules["ingress"]), egress=tuple(rules["egress"]),
    )

"""Public value types of the reachability engine: endpoints, verdicts, explanations, matrices.

Everything here is frozen and carries its own ``to_dict`` so reporters and the CLI render it
without knowing how it was computed. Explanations are data, not prose: an auditor's evidence
(PCI DSS 1.2.5, 11.4.5) must say *which* policy and rule allowed a flow, and a later check must be
able to ask the same question programmatically.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubepci.analyzers.netpol.ipset import IPSet
from kubepci.analyzers.netpol.ports import PortSet
from kubepci.model import ResourceRef

__all__ = [
    "Decision",
    "Diagnostic",
    "DirectionVerdict",
    "Endpoint",
    "Explanation",
    "IPSet",
    "Matrix",
    "PairVerdict",
    "PortSet",
    "Verdict",
    "flow_ports",
    "names_endpoint",
]

#: statements every report about NetworkPolicy reachability must carry (netpol-rbac.md §4, §10.3)
ASSUMPTIONS = (
    "steady state: pods created before their policies are programmed may briefly be unrestricted",
    "traffic from the node a pod runs on (kubelet probes, node-local agents) is always allowed",
    "ports are pod (target) ports after Service translation, not Service ports",
    "a pod can always reach itself; self traffic is never restricted",
)


def names_endpoint(spec: str, name: str, namespace: str, ref: ResourceRef | None) -> bool:
    """Does a flow's ``from``/``to`` name this endpoint? ``ns/workload`` and ``ns/Kind/workload`` name a
    workload, ``ns`` every workload of the namespace, ``zone/<name>`` and ``ip/<address>`` only
    themselves. Takes the parts so endpoints can be matched before they are built."""
    if spec == name:
        return True
    if ref is None or spec.startswith("zone/"):
        return False
    ns, sep, rest = spec.partition("/")
    if not sep:
        return spec == namespace
    return ns == namespace and rest in (ref.name, f"{ref.kind}/{ref.name}")


def flow_ports(texts: Sequence[str]) -> PortSet:
    """A flow's ports; none listed means every port. Entries that do not parse approve nothing."""
    if not texts:
        return PortSet.all()
    out = PortSet.empty()
    for text in texts:
        try:
            out |= PortSet.parse(text)
        except ValueError:
            continue
    return out


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Something that sends or receives traffic: a workload, a named external zone, or one IP.

    ``name`` is the user-facing identifier: ``ns/workload``, ``zone/<name>`` or ``ip/<address>``.
    """

    name: str
    kind: str  # workload | zone | ip
    namespace: str = ""
    workload_kind: str = ""
    ref: ResourceRef | None = None
    host_network: bool = False
    pods: tuple[str, ...] = ()
    addresses: str = ""  # zones and IPs: the address ranges, for display
    not_analysed: tuple[str, ...] = ()  # Cilium/Calico policies that also govern it

    @property
    def is_external(self) -> bool:
        return self.kind != "workload"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.namespace:
            out["namespace"] = self.namespace
        if self.workload_kind:
            out["workload_kind"] = self.workload_kind
        if self.host_network:
            out["host_network"] = True
        if self.pods:
            out["pods"] = list(self.pods)
        if self.addresses:
            out["addresses"] = self.addresses
        if self.not_analysed:
            out["not_analysed"] = list(self.not_analysed)
        return out


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """Something the compiler wants a human to know: a rejected policy, an undefined ordering."""

    severity: str  # error | warning | info
    code: str
    message: str
    resource: ResourceRef | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"severity": self.severity, "code": self.code, "message": self.message,
                "resource": str(self.resource) if self.resource else None}


@dataclass(frozen=True, slots=True)
class Decision:
    """One step of a direction's evaluation: which tier/policy/rule decided which ports, and how.

    ``action`` is allow, deny, pass (ANP hands over to NetworkPolicy), or isolate (NetworkPolicy
    selects the pod and no rule allows these ports).
    """

    tier: str  # admin | networkpolicy | baseline | default | self | external
    action: str
    ports: PortSet
    policy: str = ""
    rule: int | None = None
    rule_name: str = ""
    reason: str = ""

    def text(self) -> str:
        where = self.policy
        if self.rule is not None:
            where += f" rule {self.rule}" + (f" ({self.rule_name})" if self.rule_name else "")
        head = f"{self.action} {self.ports}"
        return f"{head} by {where}: {self.reason}" if where else f"{head}: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"tier": self.tier, "action": self.action, "ports": self.ports.to_dict()}
        if self.policy:
            out["policy"] = self.policy
        if self.rule is not None:
            out["rule"] = self.rule
        if self.rule_name:
            out["rule_name"] = self.rule_name
        out["reason"] = self.reason
        return out


@dataclass(frozen=True, slots=True)
class DirectionVerdict:
    """Egress at the source, or ingress at the destination, for one pair."""

    direction: str  # egress | ingress
    endpoint: str
    allowed: PortSet
    isolated_by: tuple[str, ...] = ()
    decisions: tuple[Decision, ...] = ()
    summary: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"direction": self.direction, "endpoint": self.endpoint, "allowed": self.allowed.to_dict(),
                "isolated_by": list(self.isolated_by), "summary": self.summary,
                "decisions": [d.to_dict() for d in self.decisions]}


@dataclass(frozen=True, slots=True)
class PairVerdict:
    """The verdict for one concrete (source, destination) endpoint pair."""

    source: str
    destination: str
    ports: PortSet
    egress: DirectionVerdict
    ingress: DirectionVerdict
    self_traffic: bool = False
    notes: tuple[str, ...] = ()

    @property
    def allowed(self) -> bool:
        return bool(self.ports)

    def text(self) -> str:
        verdict = "ALLOWED" if self.ports else "DENIED"
        lines = [f"{self.source} -> {self.destination}: {verdict} ({self.ports})"]
        for dv in (self.egress, self.ingress):
            lines.append(f"  {dv.direction} at {dv.endpoint}: {dv.summary}")
            lines.extend(f"    - {d.text()}" for d in dv.decisions)
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "destination": self.destination, "allowed": self.allowed,
                "ports": self.ports.to_dict(), "self_traffic": self.self_traffic,
                "egress": self.egress.to_dict(), "ingress": self.ingress.to_dict(), "notes": list(self.notes)}


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why a can-reach query came out as it did: one PairVerdict per endpoint pair examined."""

    pairs: tuple[PairVerdict, ...]
    notes: tuple[str, ...] = ()
    query: PortSet | None = None

    def text(self) -> str:
        parts = [p.text() for p in self.pairs]
        parts.extend(f"note: {n}" for n in self.notes)
        return "\n".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"query": self.query.to_dict() if self.query is not None else None,
                "pairs": [p.to_dict() for p in self.pairs], "notes": list(self.notes)}


@dataclass(frozen=True, slots=True)
class Verdict:
    """Answer to ``can_reach``: allowed at all, on which ports, and why."""

    allowed: bool
    ports: PortSet
    explanation: Explanation

    def to_dict(self) -> dict[str, Any]:
        return {"allowed": self.allowed, "ports": self.ports.to_dict(), "explanation": self.explanation.to_dict()}


@dataclass(frozen=True, slots=True)
class Matrix:
    """Allowed ports between nodes (zones, namespaces or workloads); only non-empty cells kept."""

    level: str
    nodes: tuple[str, ...]
    cells: tuple[tuple[str, str, PortSet], ...]
    _index: Mapping[tuple[str, str], PortSet] = field(default_factory=dict, compare=False, repr=False)

    @staticmethod
    def build(level: str, nodes: Any, cells: Mapping[tuple[str, str], PortSet]) -> Matrix:
        ordered = tuple(sorted((s, d, p) for (s, d), p in cells.items() if p))
        return Matrix(level, tuple(sorted(set(nodes))), ordered, {(s, d): p for s, d, p in ordered})

    def get(self, source: str, destination: str) -> PortSet:
        return self._index.get((source, destination), PortSet.empty())

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "nodes": list(self.nodes),
                "cells": [{"from": s, "to": d, "ports": p.to_dict(), "text": str(p)} for s, d, p in self.cells]}

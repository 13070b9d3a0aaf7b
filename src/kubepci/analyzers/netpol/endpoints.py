"""Endpoints and their equivalence classes.

Every pod of a workload shares its template's labels, so policies cannot tell them apart; more
generally two pods with the same namespace, labels, named container ports and hostNetwork flag
(and, when ipBlocks may match pod IPs, the same IP atom) are treated identically by every policy.
The engine therefore computes on *classes* and expands to workloads or pods only when reporting,
which keeps the cost proportional to classes (netpol-rbac.md §7).

When the inventory holds live Pod objects (with ownerReferences and status.podIP), each pod is
attached to its top-level owner workload, and its real labels and IPs are used; offline, the
workload's pod template stands in for its pods.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubepci.analyzers.netpol.ipset import IPAtoms, IPSet, parse_ip
from kubepci.inventory import Inventory, Workload
from kubepci.model import ResourceRef
from kubepci.selectors import NAMESPACE_NAME_LABEL

__all__ = [
    "EndpointClass",
    "Member",
    "WorkloadUnit",
    "assign_zones",
    "collect_units",
    "members_of",
    "named_ports_of",
    "namespace_labels",
    "pod_ips_of",
]

NamedPorts = tuple[tuple[str, str, int], ...]


@dataclass(frozen=True, slots=True)
class EndpointClass:
    """Pods that every policy treats alike. Bits of classes are their indices."""

    index: int
    namespace: str
    labels: Mapping[str, str]
    named_ports: NamedPorts  # (name, protocol, number)
    host_network: bool
    ip_atoms: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Member:
    """One pod (or a workload's template, offline) and the class it falls in."""

    endpoint: str
    pod: str
    namespace: str
    labels: Mapping[str, str]
    named_ports: NamedPorts
    host_network: bool
    ips: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class WorkloadUnit:
    """A top-level workload with the pods that belong to it (none offline)."""

    workload: Workload
    pods: tuple[Workload, ...]

    @property
    def ref(self) -> ResourceRef:
        return self.workload.ref


def named_ports_of(pod_spec: Mapping[str, Any]) -> NamedPorts:
    """Named container ports (§4 item 8). Native sidecars (init containers with restartPolicy
    Always) serve traffic for the pod's whole life, so their ports count too; ephemeral
    containers cannot declare ports."""
    out: set[tuple[str, str, int]] = set()
    containers: list[Any] = list(pod_spec.get("containers") or [])
    containers += [c for c in pod_spec.get("initContainers") or []
                   if isinstance(c, Mapping) and c.get("restartPolicy") == "Always"]
    for c in containers:
        if not isinstance(c, Mapping):
            continue
        for p in c.get("ports") or []:
            if not isinstance(p, Mapping):
                continue
            name, number = p.get("name"), p.get("containerPort")
            proto = p.get("protocol") or "TCP"
            if isinstance(name, str) and name and isinstance(number, int) and not isinstance(number, bool):
                out.add((name, str(proto), number))
    return tuple(sorted(out))


def pod_ips_of(body: Mapping[str, Any]) -> tuple[tuple[int, int], ...]:
    status = body.get("status")
    if not isinstance(status, Mapping):
        return ()
    texts: list[str] = []
    for item in status.get("podIPs") or []:
        if isinstance(item, Mapping) and isinstance(item.get("ip"), str):
            texts.append(item["ip"])
    if isinstance(status.get("podIP"), str):
        texts.append(status["podIP"])
    out: set[tuple[int, int]] = set()
    for t in texts:
        try:
            out.add(parse_ip(t))
        except ValueError:
            continue
    return tuple(sorted(out))


def namespace_labels(inventory: Inventory, namespace: str) -> dict[str, str]:
    """The namespace's labels with the immutable name label synthesised (§4 item 5)."""
    info = inventory.namespaces.get(namespace)
    labels = {str(k): str(v) for k, v in (info.labels if info else {}).items() if isinstance(v, str)}
    labels[NAMESPACE_NAME_LABEL] = namespace
    return labels


def _owner_key(wl: Workload) -> tuple[str, str, str] | None:
    refs = wl.resource.metadata.get("ownerReferences")
    if not isinstance(refs, list):
        return None
    valid = [r for r in refs if isinstance(r, Mapping) and isinstance(r.get("kind"), str)
             and isinstance(r.get("name"), str)]
    chosen = next((r for r in valid if r.get("controller") is True), valid[0] if valid else None)
    if chosen is None:
        return None
    return (wl.namespace, str(chosen["kind"]), str(chosen["name"]))


def collect_units(inventory: Inventory) -> list[WorkloadUnit]:
    """Group workloads under their top-level owner; Pods contribute their live labels and IPs."""
    by_key = {(w.namespace, w.ref.kind, w.ref.name): w for w in inventory.workloads}

    def top(w: Workload) -> Workload:
        seen = {(w.namespace, w.ref.kind, w.ref.name)}
        cur = w
        while True:
            key = _owner_key(cur)
            if key is None or key not in by_key or key in seen:
                return cur
            seen.add(key)
            cur = by_key[key]

    pods: dict[tuple[str, str, str], list[Workload]] = {}
    tops: dict[tuple[str, str, str], Workload] = {}
    for w in inventory.workloads:
        root = top(w)
        key = (root.namespace, root.ref.kind, root.ref.name)
        if root is w:
            tops[key] = w
        if w.ref.kind == "Pod":
            pods.setdefault(key, []).append(w)
    return [WorkloadUnit(tops[k], tuple(sorted(pods.get(k, ()), key=lambda p: p.ref.name)))
            for k in sorted(tops)]


def assign_zones(atoms: IPAtoms, zones: Mapping[str, IPSet]) -> list[str]:
    """Zone of every atom: the most specific (smallest) zone containing it, ties by name.

    So ``internet: 0.0.0.0/0`` next to ``corporate: 10.20.0.0/16`` means "the internet except the
    corporate network", which is what people mean when they write both. Atoms no zone covers go to
    ``external``; without a configured ``internet`` zone, everything else is ``internet``.
    """
    ranked = sorted(zones.items(), key=lambda kv: (kv[1].size(), kv[0]))
    fallback = "external" if "internet" in zones else "internet"
    out: list[str] = []
    for version, lo, _hi in atoms.atoms:
        out.append(next((name for name, s in ranked if s.contains(version, lo)), fallback))
    return out


def members_of(units: Sequence[WorkloadUnit], endpoint_names: Sequence[str]) -> list[Member]:
    """One Member per live pod, or per workload template when no pod of it was seen."""
    out: list[Member] = []
    for unit, name in zip(units, endpoint_names, strict=True):
        sources: Sequence[Workload] = unit.pods or (unit.workload,)
        for src in sources:
            labels = {str(k): str(v) for k, v in src.pod_labels.items() if isinstance(v, str)}
            out.append(Member(
                endpoint=name, pod=src.ref.name if src.ref.kind == "Pod" else "", namespace=unit.workload.namespace,
                labels=labels, named_ports=named_ports_of(src.pod_spec),
                host_network=src.pod_spec.get("hostNetwork") is True,
                ips=pod_ips_of(src.resource.body) if src.ref.kind == "Pod" else (),
            ))
    return out

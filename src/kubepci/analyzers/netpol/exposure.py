"""CDE exposure: everything that can reach the cardholder-data environment, and everything it can reach.

This is the segmentation evidence for PCI DSS 1.3.1/1.3.2 (CDE inbound and outbound restricted),
1.4.x (untrusted networks) and 11.4.5 (segmentation testing): the flows crossing the CDE boundary
with their ports, each compared with the approved ruleset in ``kubepci.yaml`` ``flows``, plus the
caveats that limit the proof (hostNetwork, unevaluated CNI policies, directions no policy isolates).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kubepci.analyzers.netpol.matrix import relation
from kubepci.analyzers.netpol.model import ASSUMPTIONS, Endpoint, flow_ports, names_endpoint
from kubepci.analyzers.netpol.ports import PortSet

if TYPE_CHECKING:
    from kubepci.analyzers.netpol.engine import NetpolModel

__all__ = ["Exposure", "ExposureFlow", "compute_exposure"]


@dataclass(frozen=True, slots=True)
class ExposureFlow:
    source: str
    destination: str
    ports: PortSet
    approved: PortSet
    approved_by: tuple[str, ...] = ()

    @property
    def unapproved(self) -> PortSet:
        return self.ports - self.approved

    def to_dict(self) -> dict[str, Any]:
        return {"from": self.source, "to": self.destination, "ports": self.ports.to_dict(), "text": str(self.ports),
                "approved": self.approved.to_dict(), "unapproved": self.unapproved.to_dict(),
                "unapproved_text": str(self.unapproved), "approved_by": list(self.approved_by)}


@dataclass(frozen=True, slots=True)
class Exposure:
    cde_namespaces: tuple[str, ...]
    inbound: tuple[ExposureFlow, ...]
    outbound: tuple[ExposureFlow, ...]
    not_isolated: tuple[tuple[str, str], ...]  # (CDE workload, direction)
    not_enforceable: tuple[tuple[str, str], ...]  # (endpoint, reason)
    not_analysed: tuple[tuple[str, str], ...]  # (endpoint, policies)
    assumptions: tuple[str, ...] = ASSUMPTIONS

    def to_dict(self) -> dict[str, Any]:
        return {
            "cde_namespaces": list(self.cde_namespaces),
            "inbound": [f.to_dict() for f in self.inbound],
            "outbound": [f.to_dict() for f in self.outbound],
            "not_isolated": [{"endpoint": e, "direction": d} for e, d in self.not_isolated],
            "not_enforceable": [{"endpoint": e, "reason": r} for e, r in self.not_enforceable],
            "not_analysed": [{"endpoint": e, "policies": p} for e, p in self.not_analysed],
            "assumptions": list(self.assumptions),
        }


def _approved(model: NetpolModel, src: Endpoint, dst: Endpoint) -> tuple[PortSet, tuple[str, ...]]:
    ports = PortSet.empty()
    reasons: list[str] = []
    for flow in model.config.flows:
        if not (names_endpoint(flow.source, src.name, src.namespace, src.ref)
                and names_endpoint(flow.destination, dst.name, dst.namespace, dst.ref)):
            continue
        ports |= flow_ports(flow.ports)
        reasons.append(flow.reason or f"{flow.source} -> {flow.destination}")
    return ports, tuple(reasons)


def _flows(model: NetpolModel, pairs: dict[tuple[str, str], PortSet]) -> tuple[ExposureFlow, ...]:
    by_name = {e.name: e for e in model.endpoints()}
    out = []
    for (s, d), ports in sorted(pairs.items()):
        approved, reasons = _approved(model, by_name[s], by_name[d])
        out.append(ExposureFlow(s, d, ports, ports & approved, reasons))
    return tuple(out)


def _names(model: NetpolModel, bits: int, cache: dict[int, list[str]]) -> list[str]:
    hit = cache.get(bits)
    if hit is None:
        found: set[str] = set()
        rest = bits
        while rest:
            low = rest & -rest
            found.update(model.class_endpoints(low.bit_length() - 1))
            rest ^= low
        hit = cache[bits] = sorted(found)
    return hit


def compute_exposure(model: NetpolModel, cde_namespaces: Sequence[str]) -> Exposure:
    b = model.binding
    cde = tuple(sorted(set(cde_namespaces)))
    cde_bits = 0
    for ns in cde:
        cde_bits |= b.ns_masks.get(ns, 0)
    inbound: dict[tuple[str, str], PortSet] = {}
    outbound: dict[tuple[str, str], PortSet] = {}
    cache: dict[int, list[str]] = {}

    def add(target: dict[tuple[str, str], PortSet], srcs: Iterable[str], dsts: list[str], ports: PortSet) -> None:
        for s in srcs:
            for d in dsts:
                if s != d:
                    have = target.get((s, d))
                    target[(s, d)] = ports if have is None else have | ports

    for srcs, dsts, ports in relation(model):
        if dsts & cde_bits and srcs & ~cde_bits:
            add(inbound, _names(model, srcs & ~cde_bits, cache), _names(model, dsts & cde_bits, cache), ports)
        if srcs & cde_bits and dsts & ~cde_bits:
            add(outbound, _names(model, srcs & cde_bits, cache), _names(model, dsts & ~cde_bits, cache), ports)
    cde_endpoints = [e for e in model.endpoints() if e.kind == "workload" and e.namespace in cde]
    not_isolated: list[tuple[str, str]] = []
    for e in cde_endpoints:
        for direction, sigs in (("ingress", b.ingress_sig), ("egress", b.egress_sig)):
            bits = model.bits_of(e)
            if any(not sigs[c][1] for c in range(b.n_pods) if bits >> c & 1):
                not_isolated.append((e.name, direction))
    touching = {e.name for e in cde_endpoints} | {s for s, _ in inbound} | {d for _, d in outbound}
    not_enforceable = [(e.name, "hostNetwork: NetworkPolicy isolation is undefined for host-networked pods, "
                                "segmentation is not provable by policy")
                       for e in model.endpoints() if e.host_network and e.name in touching]
    not_analysed = [(e.name, ", ".join(e.not_analysed)) for e in model.endpoints()
                    if e.not_analysed and e.name in touching]
    return Exposure(cde, _flows(model, inbound), _flows(model, outbound), tuple(not_isolated),
                    tuple(not_enforceable), tuple(not_analysed))

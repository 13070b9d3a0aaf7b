"""The segmentation evidence of a run (PCI DSS 1.2.3, 1.3.1/1.3.2, 1.4.x, 11.4.5), as plain values.

Built from the same memoised :class:`~kubepci.checks._segmentation.Segmentation` the checks use,
so the evidence and the findings can never disagree, and handed to the report as data
(:mod:`kubepci.reporters.segmentation` turns it into JSON and an SVG).
"""

from __future__ import annotations

from dataclasses import dataclass

from kubepci.analyzers.netpol.engine import iter_bits
from kubepci.analyzers.netpol.matrix import relation
from kubepci.analyzers.netpol.model import ASSUMPTIONS, Diagnostic, Matrix
from kubepci.analyzers.netpol.ports import PortSet
from kubepci.checks._segmentation import Segmentation
from kubepci.checks._segmentation_values import Flow

__all__ = ["Evidence", "cde_matrix", "evidence_of"]

_HOST_NETWORK = ("hostNetwork: NetworkPolicy isolation is undefined for host-networked pods, segmentation "
                 "is not provable by policy")


@dataclass(frozen=True, slots=True)
class Evidence:
    """What crosses the CDE boundary and what limits the proof.

    ``inbound``/``outbound``: per CDE workload, the flows into it (from every peer) and out of it
    (towards peers outside the CDE namespaces). ``not_isolated``: (workload, direction) pairs with
    connections that exist only because no policy isolates that direction. ``dmz``: the
    internet-facing namespaces and why. ``not_enforceable``: host-networked workloads in or next to
    the CDE. ``not_analysed``: (namespace, policies, workloads) governed by CNI policies kubepci
    does not evaluate.
    """

    cde_namespaces: tuple[str, ...]
    inbound: tuple[tuple[str, tuple[Flow, ...]], ...]
    outbound: tuple[tuple[str, tuple[Flow, ...]], ...]
    not_isolated: tuple[tuple[str, str], ...]
    matrix: Matrix
    dmz: tuple[tuple[str, str], ...]
    not_enforceable: tuple[tuple[str, str], ...]
    not_analysed: tuple[tuple[str, tuple[str, ...], int], ...]
    diagnostics: tuple[Diagnostic, ...]
    assumptions: tuple[str, ...] = ASSUMPTIONS


def cde_matrix(seg: Segmentation) -> Matrix:
    """Namespace (and zone) matrix restricted to rows and columns touching a CDE namespace."""
    cells: dict[tuple[str, str], PortSet] = {}

    def accumulate(srcs: int, dsts: int, ports: PortSet) -> None:
        dst_labels = seg.labels_of(dsts)
        for s in seg.labels_of(srcs):
            for d in dst_labels:
                have = cells.get((s, d))
                cells[(s, d)] = ports if have is None else have | ports

    cde = seg.cde_bits
    if cde:
        for srcs, dsts, ports in relation(seg.model):
            d_cde, s_cde = dsts & cde, srcs & cde
            if d_cde:
                accumulate(srcs, d_cde, ports)
            if s_cde:
                accumulate(s_cde, dsts, ports)
    nodes = {n for pair in cells for n in pair} | set(seg.cde_namespaces)
    return Matrix.build("namespace", nodes, cells)


def _touching_bits(seg: Segmentation) -> int:
    """Pod classes in the CDE or with a flow into or out of it."""
    inbound, outbound = seg.rects()
    bits = seg.cde_bits
    seen: set[int] = set()
    for rects in (*inbound.values(), *outbound.values()):
        for peer_bits, _ports in rects:
            if id(peer_bits) not in seen:  # the same bitset object is shared by many classes
                seen.add(id(peer_bits))
                bits |= peer_bits
    return bits & seg.model.binding.pod_bits


def evidence_of(seg: Segmentation) -> Evidence:
    model = seg.model
    cde_endpoints = seg.cde_endpoints()
    inbound = tuple((e.name, seg.inbound(e)) for e in cde_endpoints)
    outbound = tuple((e.name, seg.outbound(e)) for e in cde_endpoints)
    not_isolated = tuple((e.name, d) for e in cde_endpoints for d in ("ingress", "egress")
                         if not e.not_analysed and seg.default_open(e, d))
    touching = _touching_bits(seg)
    names: set[str] = set()
    for bit in iter_bits(touching & model.binding.host_bits):
        names.update(model.class_endpoints(bit))
    names.update(e.name for e in cde_endpoints if e.host_network)
    not_enforceable = tuple((n, _HOST_NETWORK) for n in sorted(names))
    governed: dict[str, tuple[set[str], set[str]]] = {}
    for e in model.endpoints():
        if e.not_analysed and model.bits_of(e) & touching:
            policies, workloads = governed.setdefault(e.namespace, (set(), set()))
            policies.update(e.not_analysed)
            workloads.add(e.name)
    not_analysed = tuple((ns, tuple(sorted(p)), len(w)) for ns, (p, w) in sorted(governed.items()))
    return Evidence(seg.cde_namespaces, inbound, outbound, not_isolated, cde_matrix(seg),
                    tuple(seg.dmz.items()), not_enforceable, not_analysed, model.diagnostics)

"""The whole allowed-traffic relation as rectangles, and its projections to matrices.

Every source class with the same egress signature sees the same partition of destinations, and
every destination class with the same ingress signature the same partition of sources. Crossing
one ingress group (G, Q) of a destination signature (classes D) with one egress group (H, R) of a
source signature (classes S) yields the rectangle (S ∩ G) × (D ∩ H) on ports Q ∩ R. The union of
all rectangles is exactly the allowed relation, computed without a loop over class pairs; the
matrices then only map bits to namespaces, zones or workloads.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from kubepci.analyzers.netpol.model import Matrix
from kubepci.analyzers.netpol.partition import Groups
from kubepci.analyzers.netpol.ports import PortSet

if TYPE_CHECKING:
    from kubepci.analyzers.netpol.engine import NetpolModel

__all__ = ["Rect", "connectivity_pairs", "namespace_matrix", "relation", "workload_matrix", "zone_matrix"]

#: (source class bits, destination class bits, ports)
Rect = tuple[int, int, PortSet]


def _iter_bits(bits: int) -> Iterable[int]:
    while bits:
        low = bits & -bits
        yield low.bit_length() - 1
        bits ^= low


def _signature_sets(model: NetpolModel, direction: str) -> list[tuple[int, Groups]]:
    b = model.binding
    sigs = b.ingress_sig if direction == "ingress" else b.egress_sig
    members: dict[object, int] = {}
    first: dict[object, int] = {}
    for c, sig in enumerate(sigs):
        members[sig] = members.get(sig, 0) | (1 << c)
        first.setdefault(sig, c)
    out = [(bits, model.groups(direction, first[sig])) for sig, bits in members.items()]
    atom_bits = b.all_bits & ~b.pod_bits
    if atom_bits:
        out.append((atom_bits, model.groups(direction, b.n_pods)))
    return out


def relation(model: NetpolModel) -> Iterator[Rect]:
    """Rectangles whose union is the allowed (source class, destination class, port) relation.

    Pairs of the same class are included: they stand for different pods of that class. A
    generator, because a large cluster yields a few hundred thousand rectangles of big integers
    and every consumer folds them into a much smaller matrix as they come.
    """
    egress = _signature_sets(model, "egress")
    ingress = _signature_sets(model, "ingress")
    owner: dict[int, int] = {}
    for i, (bits, _groups) in enumerate(egress):
        for bit in _iter_bits(bits):
            owner[bit] = i
    for dst_bits, in_groups in ingress:
        for sources, in_ports in in_groups:
            if sources.bit_count() < len(egress):
                candidates = sorted({owner[bit] for bit in _iter_bits(sources) if bit in owner})
            else:
                candidates = list(range(len(egress)))
            for e in candidates:
                src_bits, eg_groups = egress[e]
                srcs = src_bits & sources
                if not srcs:
                    continue
                for targets, eg_ports in eg_groups:
                    dsts = dst_bits & targets
                    if dsts:
                        ports = in_ports & eg_ports
                        if ports:
                            yield srcs, dsts, ports


def _label_spans(model: NetpolModel) -> tuple[list[str], list[int]]:
    """For every bit: its label (namespace or zone/<z>) and the first bit after that label's span."""
    b = model.binding
    total = b.all_bits.bit_length()
    labels = [b.bit_label(bit) for bit in range(total)]
    ends = [0] * total
    end = total
    for bit in range(total - 1, -1, -1):
        if bit + 1 < total and labels[bit + 1] != labels[bit]:
            end = bit + 1
        ends[bit] = end
    return labels, ends


def _labels_of(bits: int, labels: list[str], ends: list[int]) -> list[str]:
    out: list[str] = []
    while bits:
        low = (bits & -bits).bit_length() - 1
        out.append(labels[low])
        bits = (bits >> ends[low]) << ends[low]
    return out


def _accumulate(cells: dict[tuple[str, str], PortSet], srcs: Iterable[str], dsts: list[str], ports: PortSet) -> None:
    for s in srcs:
        for d in dsts:
            have = cells.get((s, d))
            cells[(s, d)] = ports if have is None else have | ports


def namespace_matrix(model: NetpolModel) -> Matrix:
    """Namespace × namespace (and zone) allowed ports; intra-namespace cells are pod-to-other-pod."""
    labels, ends = _label_spans(model)
    cells: dict[tuple[str, str], PortSet] = {}
    for srcs, dsts, ports in relation(model):
        _accumulate(cells, _labels_of(srcs, labels, ends), _labels_of(dsts, labels, ends), ports)
    return Matrix.build("namespace", set(labels), cells)


def zone_matrix(model: NetpolModel, namespace_zone: Mapping[str, str]) -> Matrix:
    """Zones: external zones as ``zone/<name>``, namespaces mapped by ``namespace_zone`` (e.g. scope)."""
    ns = namespace_matrix(model)

    def zone(label: str) -> str:
        return label if label.startswith("zone/") else namespace_zone.get(label, "cluster")

    cells: dict[tuple[str, str], PortSet] = {}
    for s, d, p in ns.cells:
        _accumulate(cells, (zone(s),), [zone(d)], p)
    return Matrix.build("zone", {zone(n) for n in ns.nodes}, cells)


def _endpoint_cells(model: NetpolModel, rects: Iterable[Rect]) -> dict[tuple[str, str], PortSet]:
    cells: dict[tuple[str, str], PortSet] = {}
    cache: dict[int, list[str]] = {}

    def names(bits: int) -> list[str]:
        hit = cache.get(bits)
        if hit is None:
            found: set[str] = set()
            for bit in _iter_bits(bits):
                found.update(model.class_endpoints(bit))
            hit = cache[bits] = sorted(found)
        return hit

    for srcs, dsts, ports in rects:
        dst_names = names(dsts)
        for s in names(srcs):
            for d in dst_names:
                if s != d:
                    have = cells.get((s, d))
                    cells[(s, d)] = ports if have is None else have | ports
    return cells


def workload_matrix(model: NetpolModel) -> Matrix:
    """Workload (and zone) pairs; a workload's own replicas talking to each other are left out."""
    cells = _endpoint_cells(model, relation(model))
    return Matrix.build("workload", (e.name for e in model.endpoints()), cells)


def connectivity_pairs(model: NetpolModel, level: str = "workload") -> list[
        tuple[str, str, dict[str, list[tuple[int, int]]]]]:
    """Allowed pairs in a form close to NCA's ``txt_no_fw_rules`` output (netpol-rbac.md §2.1).

    Workloads are ``ns/name[Kind]``, pods ``ns/pod[Pod]`` (a workload without live pods appears
    once under its own kind), addresses are one entry per IP atom as a CIDR, single address or
    ``first-last`` range. Self pairs and address-to-address pairs are omitted.
    """
    if level not in ("workload", "pod"):
        raise ValueError("level must be workload or pod")
    b = model.binding
    by_name = {e.name: e for e in model.endpoints()}

    def display(endpoint: str) -> str:
        e = by_name[endpoint]
        return f"{e.namespace}/{e.ref.name}[{e.workload_kind}]" if e.ref is not None else endpoint

    unit_names: dict[int, list[str]] = {}
    for bit in range(b.all_bits.bit_length()):
        if b.is_atom(bit):
            unit_names[bit] = [b.atom_text(bit)]
        elif level == "workload":
            unit_names[bit] = sorted({display(n) for n in model.class_endpoints(bit)})
    if level == "pod":
        for member, bit in model.members:
            ep = by_name[member.endpoint]
            unit = f"{member.namespace}/{member.pod}[Pod]" if member.pod else display(ep.name)
            unit_names.setdefault(bit, []).append(unit)
    cells: dict[tuple[str, str], PortSet] = {}
    for srcs, dsts, ports in relation(model):
        dst_units = [u for bit in _iter_bits(dsts) for u in unit_names.get(bit, ())]
        for sbit in _iter_bits(srcs):
            for s in unit_names.get(sbit, ()):
                for d in dst_units:
                    if s != d:
                        have = cells.get((s, d))
                        cells[(s, d)] = ports if have is None else have | ports
    return [(s, d, {proto: list(rng) for proto, rng in p.items()}) for (s, d), p in sorted(cells.items())]

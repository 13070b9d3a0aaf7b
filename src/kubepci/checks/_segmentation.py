"""CDE segmentation facts derived from the reachability model, computed once per run.

The segmentation checks (``checks/segmentation.py``) and the report's segmentation evidence ask
the same questions of the NetworkPolicy model: which peers can open connections to each CDE
workload and on which ports, which peers each CDE workload can reach, which of those flows the
approved ruleset (``kubepci.yaml`` ``flows``, PCI DSS 1.2.1) covers, which traffic a CDE pod
accepts only because no policy isolates it, and which namespaces form the internet-facing tier.

Everything works on the model's bitsets (one bit per endpoint class or IP atom) and only names
peers at the end, summarised as "every pod in the cluster", "every workload outside the CDE", a
whole namespace, a zone or single workloads. That keeps a cluster without any policy (every pod
reaches every CDE pod) linear in the number of CDE workloads instead of quadratic in all of them.
The model is walked once (:func:`~kubepci.analyzers.netpol.matrix.relation`); results are
memoised on a :class:`Segmentation` cached per model in a ``WeakKeyDictionary``.

Conventions: a flow approves the pod classes of the workloads its ``from``/``to`` names, so
workloads whose pods carry identical labels share approvals (NetworkPolicy cannot tell them apart
either). Flows into a CDE workload are judged from every source; flows out of it only towards
destinations outside the CDE namespaces, so an intra-CDE flow is judged once, at its receiver.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

from kubepci.analyzers.netpol.engine import NetpolModel, iter_bits
from kubepci.analyzers.netpol.matrix import relation
from kubepci.analyzers.netpol.model import Endpoint
from kubepci.analyzers.netpol.partition import Groups, evaluate_direction
from kubepci.analyzers.netpol.ports import PortSet
from kubepci.checks._segmentation_values import (
    UNTRUSTED_ZONES,
    Flow,
    Peer,
    flow_order,
    flow_ports,
    spec_matches,
    union_partition,
)
from kubepci.model import Scope

if TYPE_CHECKING:
    from kubepci.analyzers.netpol.bind import Signature
    from kubepci.inventory import Inventory, Workload
    from kubepci.scope import ScopeMap

__all__ = ["Segmentation", "segmentation_of"]

#: Service types that publish pods outside the cluster network
_PUBLISHING_TYPES = frozenset({"LoadBalancer", "NodePort"})

_NONE = PortSet.empty()
_ALL = PortSet.all()

Rects = list[tuple[int, PortSet]]


@dataclass(frozen=True, slots=True)
class _Approval:
    """One ``flows`` entry bound to the model: its specs as written and the bits they name."""

    source_spec: str
    destination_spec: str
    source: int
    destination: int
    ports: PortSet
    reason: str


class Segmentation:
    """Segmentation facts for one model and one CDE definition. Treat as read-only; it memoises."""

    def __init__(self, model: NetpolModel, scope: ScopeMap, inventory: Inventory) -> None:
        b = model.binding
        self.model = model
        self.cde_namespaces: tuple[str, ...] = tuple(sorted(scope.cde_namespaces()))
        self.cde_bits = 0
        for ns in self.cde_namespaces:
            self.cde_bits |= b.ns_masks.get(ns, 0)
        self.untrusted_bits = 0
        for zone in UNTRUSTED_ZONES:
            self.untrusted_bits |= b.zone_masks.get(zone, 0)
        total = b.all_bits.bit_length()
        self._labels = [b.bit_label(bit) for bit in range(total)]
        self._ends = [0] * total
        end = total
        for bit in range(total - 1, -1, -1):
            if bit + 1 < total and self._labels[bit + 1] != self._labels[bit]:
                end = bit + 1
            self._ends[bit] = end
        self._endpoints: dict[str, Endpoint] = {}
        self._ns_endpoints: dict[str, list[str]] = {}
        self._by_ref: dict[tuple[str, str, str], Endpoint] = {}
        for e in model.endpoints():
            if e.kind == "workload" and e.ref is not None:
                self._endpoints[e.name] = e
                self._ns_endpoints.setdefault(e.namespace, []).append(e.name)
                self._by_ref[(e.namespace, e.ref.kind, e.ref.name)] = e
        cde = set(self.cde_namespaces)
        self._outside_workloads = sum(len(v) for ns, v in self._ns_endpoints.items() if ns not in cde)
        self._outside_namespaces = sum(1 for ns in self._ns_endpoints if ns not in cde)
        self._approvals = self._bind_approvals()
        self.dmz: Mapping[str, str] = self._find_dmz(scope, inventory)  # namespace -> why it faces the internet
        self.dmz_bits = self.untrusted_bits
        for ns in self.dmz:
            self.dmz_bits |= b.ns_masks.get(ns, 0)
        self._inbound_rects: dict[int, Rects] | None = None
        self._outbound_rects: dict[int, Rects] = {}
        self._names: dict[tuple[int, bool], tuple[Peer, ...]] = {}
        self._flows: dict[tuple[str, str], tuple[Flow, ...]] = {}
        self._open: dict[tuple[str, Signature], Groups] = {}

    # construction ------------------------------------------------------------------------------
    def _spec_bits(self, spec: str) -> int:
        b = self.model.binding
        if spec.startswith("zone/"):
            return b.zone_masks.get(spec[5:], 0)
        if "/" not in spec:
            return b.ns_masks.get(spec, 0)
        bits = 0
        for name in self._ns_endpoints.get(spec.partition("/")[0], ()):
            e = self._endpoints[name]
            if spec_matches(spec, e):
                bits |= self.model.bits_of(e)
        return bits

    def _bind_approvals(self) -> list[_Approval]:
        out = []
        for flow in self.model.config.flows:
            reason = flow.reason or f"{flow.source} -> {flow.destination}"
            out.append(_Approval(flow.source, flow.destination, self._spec_bits(flow.source),
                                 self._spec_bits(flow.destination), flow_ports(flow.ports), reason))
        return out

    def _find_dmz(self, scope: ScopeMap, inventory: Inventory) -> dict[str, str]:
        """Namespaces outside the CDE whose pods accept connections from an untrusted zone, plus
        connected namespaces that publish a Service as LoadBalancer/NodePort or hold a Gateway."""
        b = self.model.binding
        out: dict[str, str] = {}
        by_sig: dict[Signature, PortSet] = {}
        cde = set(self.cde_namespaces)
        for c in range(b.n_pods):
            ns = b.classes[c].namespace
            if ns in cde or ns in out:
                continue
            sig = b.ingress_sig[c]
            ports = by_sig.get(sig)
            if ports is None:
                ports = _NONE
                for group, allowed in self.model.groups("ingress", c):
                    if group & self.untrusted_bits:
                        ports |= allowed
                by_sig[sig] = ports
            if ports:
                who = ", ".join(self.model.class_endpoints(c)[:1]) or ns
                out[ns] = f"{who} accepts connections from the internet on {ports}"
        for kind in ("Service", "Gateway"):
            for r in inventory.of_kind(kind):
                ns = r.namespace
                if ns in out or ns in cde or scope.of_namespace(ns) is not Scope.CONNECTED:
                    continue
                spec = r.body.get("spec")
                stype = spec.get("type") if isinstance(spec, Mapping) else None
                if kind == "Gateway":
                    out[ns] = f"connected namespace with Gateway {r.name}"
                elif stype in _PUBLISHING_TYPES:
                    out[ns] = f"connected namespace publishing Service {r.name} as {stype}"
        return dict(sorted(out.items()))

    # endpoints ---------------------------------------------------------------------------------
    def endpoint_of(self, workload: Workload) -> Endpoint | None:
        """The model endpoint of a top-level workload; None for workloads another one owns."""
        return self._by_ref.get((workload.namespace, workload.ref.kind, workload.ref.name))

    def cde_endpoints(self) -> list[Endpoint]:
        cde = set(self.cde_namespaces)
        return [e for e in self.model.endpoints() if e.kind == "workload" and e.namespace in cde]

    # the relation, once ------------------------------------------------------------------------
    def rects(self) -> tuple[dict[int, Rects], dict[int, Rects]]:
        """Per CDE class: (sources, ports) that reach it, and (destinations, ports) it reaches."""
        if self._inbound_rects is None:
            inbound: dict[int, Rects] = {}
            outbound: dict[int, Rects] = {}
            cde = self.cde_bits
            if cde:
                for srcs, dsts, ports in relation(self.model):
                    d_cde = dsts & cde
                    if d_cde:
                        for bit in iter_bits(d_cde):
                            inbound.setdefault(bit, []).append((srcs, ports))
                    s_cde = srcs & cde
                    if s_cde:
                        for bit in iter_bits(s_cde):
                            outbound.setdefault(bit, []).append((dsts, ports))
            self._inbound_rects, self._outbound_rects = inbound, outbound
        return self._inbound_rects, self._outbound_rects

    # naming ------------------------------------------------------------------------------------
    def labels_of(self, bits: int) -> list[str]:
        """Namespaces (and ``zone/<name>``) of the classes and atoms in ``bits``, in bit order."""
        out: list[str] = []
        labels, ends = self._labels, self._ends
        while bits:
            low = (bits & -bits).bit_length() - 1
            out.append(labels[low])
            bits = (bits >> ends[low]) << ends[low]
        return out

    def _namespaces_of(self, pods: int) -> Iterator[tuple[str, int]]:
        """(namespace, its bits within ``pods``) for every namespace ``pods`` touches."""
        labels, ends = self._labels, self._ends
        while pods:
            low = (pods & -pods).bit_length() - 1
            end = ends[low]
            span = pods & ((1 << end) - 1)
            yield labels[low], span
            pods &= ~span

    def peers(self, bits: int, summarise: bool = True) -> tuple[Peer, ...]:
        """Name a set of classes and atoms: whole namespaces and zones, and with ``summarise`` also
        "every pod in the cluster" and "every workload outside the CDE"."""
        hit = self._names.get((bits, summarise))
        if hit is not None:
            return hit
        b = self.model.binding
        out: list[Peer] = []
        pods = bits & b.pod_bits
        outside = b.pod_bits & ~self.cde_bits
        many = summarise and len(self._ns_endpoints) > 1
        if pods and pods == b.pod_bits and many:
            out.append(Peer("*", "cluster", sum(len(v) for v in self._ns_endpoints.values())))
            pods = 0
        elif summarise and outside and pods & outside == outside and self._outside_namespaces > 1:
            out.append(Peer("outside-cde", "outside-cde", self._outside_workloads))
            pods &= ~outside
        for ns, span in self._namespaces_of(pods):
            members = self._ns_endpoints.get(ns, [])
            if span == b.ns_masks.get(ns, 0) and len(members) > 1:
                out.append(Peer(ns, "namespace", len(members)))
                continue
            names: set[str] = set()
            for bit in iter_bits(span):
                names.update(self.model.class_endpoints(bit))
            out.extend(Peer(n, "workload") for n in sorted(names))
        for zone in sorted(b.zone_masks):
            mask = b.zone_masks[zone]
            inside = bits & mask
            if not inside:
                continue
            detail = ""
            if inside != mask:
                atoms = [b.atom_order[bit - b.n_pods] for bit in iter_bits(inside)]
                detail = f"part: {b.atoms.as_set(atoms)}"
            out.append(Peer(f"zone/{zone}", "zone", 0, detail))
        result = tuple(out)
        self._names[(bits, summarise)] = result
        return result

    def _flows_of(self, endpoint: Endpoint, rects: Rects, approvals: Sequence[tuple[int, PortSet, str]],
                  summarise: bool = True) -> tuple[Flow, ...]:
        b = self.model.binding
        allowed = union_partition(b.all_bits, rects)
        state: dict[tuple[PortSet, PortSet, tuple[str, ...]], int] = {(p, _NONE, ()): g for p, g in allowed.items()}
        for bits, ports, reason in approvals:
            new: dict[tuple[PortSet, PortSet, tuple[str, ...]], int] = {}
            for key, group in state.items():
                inside = group & bits
                covered = key[0] & ports
                if inside and covered:
                    rest = group & ~bits
                    if rest:
                        new[key] = new.get(key, 0) | rest
                    grown = (key[0], key[1] | covered, (*key[2], reason))
                    new[grown] = new.get(grown, 0) | inside
                else:
                    new[key] = new.get(key, 0) | group
            state = new
        merged: dict[Peer, Flow] = {}
        for (ports, approved, reasons), group in state.items():
            for peer in self.peers(group, summarise):
                if peer.kind == "workload" and peer.name == endpoint.name:
                    continue  # a workload's own pods: self traffic, never restricted
                have = merged.get(peer)
                if have is None:
                    merged[peer] = Flow(peer, ports, approved, reasons)
                else:
                    merged[peer] = Flow(peer, have.ports | ports, have.approved | approved,
                                        tuple(dict.fromkeys((*have.approved_by, *reasons))))
        return tuple(sorted(merged.values(), key=flow_order))

    # flows -------------------------------------------------------------------------------------
    def inbound(self, endpoint: Endpoint) -> tuple[Flow, ...]:
        """Every peer that can open connections to ``endpoint`` (a CDE workload), with approvals."""
        key = ("in", endpoint.name)
        hit = self._flows.get(key)
        if hit is None:
            inbound, _ = self.rects()
            rects = [r for bit in iter_bits(self.model.bits_of(endpoint)) for r in inbound.get(bit, ())]
            approvals = [(a.source, a.ports, a.reason) for a in self._approvals
                         if spec_matches(a.destination_spec, endpoint)]
            hit = self._flows[key] = self._flows_of(endpoint, rects, approvals)
        return hit

    def outbound(self, endpoint: Endpoint) -> tuple[Flow, ...]:
        """Every peer outside the CDE namespaces that ``endpoint`` can reach, with approvals."""
        key = ("out", endpoint.name)
        hit = self._flows.get(key)
        if hit is None:
            _, outbound = self.rects()
            leaving = ~self.cde_bits
            rects = [(dsts & leaving, p) for bit in iter_bits(self.model.bits_of(endpoint))
                     for dsts, p in outbound.get(bit, ())]
            approvals = [(a.destination, a.ports, a.reason) for a in self._approvals
                         if spec_matches(a.source_spec, endpoint)]
            hit = self._flows[key] = self._flows_of(endpoint, rects, approvals)
        return hit

    def _default_open(self, direction: str, c: int) -> Groups:
        """Peer groups and ports class ``c`` allows in ``direction`` only because nothing decided them:
        not isolated by a NetworkPolicy and not denied or allowed by an admin or baseline policy."""
        b = self.model.binding
        sig = b.ingress_sig[c] if direction == "ingress" else b.egress_sig[c]
        hit = self._open.get((direction, sig))
        if hit is None:
            admin, isolated, _allows, base = b.entries(sig, direction, b.classes[c])
            if isolated:
                hit = ()
            else:
                # every explicit Allow becomes Deny: what is still allowed then was allowed by default
                flip_admin = [(bits, ports, "deny" if a == "allow" else a) for bits, ports, a in admin]
                flip_base = [(bits, ports, "deny" if a == "allow" else a) for bits, ports, a in base]
                hit = evaluate_direction(b.all_bits, flip_admin, False, [], flip_base)
            self._open[(direction, sig)] = hit
        return hit

    def default_open(self, endpoint: Endpoint, direction: str) -> tuple[Flow, ...]:
        """Flows of ``endpoint`` in ``direction`` (ingress: from peers, egress: to peers) that exist
        only because no policy isolates the endpoint in that direction; the peer side must allow
        them too, so these are real connections, not just a missing policy."""
        key = (f"open-{direction}", endpoint.name)
        hit = self._flows.get(key)
        if hit is None:
            inbound, outbound = self.rects()
            source = inbound if direction == "ingress" else outbound
            rects: Rects = []
            for c in iter_bits(self.model.bits_of(endpoint)):
                groups = self._default_open(direction, c)
                if not groups:
                    continue
                for bits, ports in source.get(c, ()):
                    for g, q in groups:
                        rects.append((bits & g, ports & q))
            hit = self._flows[key] = self._flows_of(endpoint, rects, ())
        return hit

    def dmz_inbound(self, endpoint: Endpoint) -> tuple[Flow, ...]:
        """Flows into ``endpoint`` from untrusted zones and from workloads of the DMZ namespaces."""
        dmz_bits = self.dmz_bits
        key = ("dmz", endpoint.name)
        hit = self._flows.get(key)
        if hit is None:
            inbound, _ = self.rects()
            rects = [(srcs & dmz_bits, p) for bit in iter_bits(self.model.bits_of(endpoint))
                     for srcs, p in inbound.get(bit, ())]
            hit = self._flows[key] = self._flows_of(endpoint, rects, (), summarise=False)
        return hit


#: per model: (the ScopeMap it was built for, the facts); a run has one scope, so one entry per model
_CACHE: WeakKeyDictionary[NetpolModel, list[tuple[ScopeMap, Segmentation]]] = WeakKeyDictionary()


def segmentation_of(model: NetpolModel, scope: ScopeMap, inventory: Inventory) -> Segmentation:
    """The (memoised) segmentation facts of ``model`` for the CDE that ``scope`` defines."""
    entries = _CACHE.setdefault(model, [])
    for known, seg in entries:
        if known is scope:  # identity: called once per target, so no per-call scope comparison
            return seg
    seg = Segmentation(model, scope, inventory)
    entries.append((scope, seg))
    return seg

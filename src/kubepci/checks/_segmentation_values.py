"""Value types and small pure helpers of the CDE segmentation analysis (see ``_segmentation``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kubepci.analyzers.netpol.model import Endpoint, flow_ports, names_endpoint
from kubepci.analyzers.netpol.ports import PortSet

if TYPE_CHECKING:
    from kubepci.inventory import Workload

__all__ = [
    "DATA_STORE_LABEL",
    "UNTRUSTED_ZONES",
    "Flow",
    "Peer",
    "flow_order",
    "flow_ports",
    "is_data_store",
    "spec_matches",
    "union_partition",
]

#: workload (or pod template) label marking a CDE workload that stores cardholder data (PCI 1.4.4)
DATA_STORE_LABEL = "kubepci.io/data-store"
#: zones treated as untrusted networks: the configured internet, and addresses no zone names
UNTRUSTED_ZONES = ("internet", "external")

_NONE = PortSet.empty()
_ALL = PortSet.all()


@dataclass(frozen=True, slots=True)
class Peer:
    """The other end of a flow, named for a human: one workload, a namespace, a zone, or a summary.

    ``kind`` is workload | namespace | zone | cluster (every pod) | outside-cde (every pod outside
    the CDE namespaces); ``workloads`` counts the workloads it stands for; ``detail`` gives the
    address ranges when only part of a zone is concerned.
    """

    name: str
    kind: str
    workloads: int = 1
    detail: str = ""

    def text(self) -> str:
        if self.kind == "cluster":
            return f"every pod in the cluster ({self.workloads} workloads)"
        if self.kind == "outside-cde":
            return f"every workload outside the CDE ({self.workloads} workloads)"
        if self.kind == "namespace":
            return f"every workload in namespace {self.name} ({self.workloads})"
        if self.detail:
            return f"{self.name} ({self.detail})"
        return self.name

    @property
    def is_untrusted_zone(self) -> bool:
        return self.kind == "zone" and self.name.removeprefix("zone/") in UNTRUSTED_ZONES


@dataclass(frozen=True, slots=True)
class Flow:
    """Allowed ports between a CDE workload and one peer, with what the approved ruleset covers."""

    peer: Peer
    ports: PortSet
    approved: PortSet = _NONE
    approved_by: tuple[str, ...] = ()

    @property
    def unapproved(self) -> PortSet:
        return self.ports - self.approved


def spec_matches(spec: str, endpoint: Endpoint) -> bool:
    """Does a flow's ``from``/``to`` (``ns/workload``, ``ns/Kind/workload`` or ``ns``) name ``endpoint``?"""
    return names_endpoint(spec, endpoint.name, endpoint.namespace, endpoint.ref)


def union_partition(universe: int, rects: Iterable[tuple[int, PortSet]]) -> dict[PortSet, int]:
    """Split ``universe`` into groups of bits that share the union of the ports of their rects."""
    same: dict[PortSet, int] = {}  # rects with equal ports merge first: usually that is all of them
    for bits, ports in rects:
        if bits and ports:
            same[ports] = same.get(ports, 0) | bits
    if len(same) <= 1:
        return same
    state: dict[PortSet, int] = {_NONE: universe}
    for ports, bits in same.items():
        new: dict[PortSet, int] = {}
        for have, group in state.items():
            inside = group & bits
            if inside and not ports.issubset(have):
                rest = group & ~bits
                if rest:
                    new[have] = new.get(have, 0) | rest
                grown = have | ports
                new[grown] = new.get(grown, 0) | inside
            else:
                new[have] = new.get(have, 0) | group
        state = new
    state.pop(_NONE, None)
    return state


def is_data_store(workload: Workload, endpoint: Endpoint | None = None) -> bool:
    """A CDE data store (PCI 1.4.4): a StatefulSet (or a pod of one), or a workload labelled
    ``kubepci.io/data-store: "true"`` on its metadata or pod template."""
    if workload.ref.kind == "StatefulSet" or (endpoint is not None and endpoint.workload_kind == "StatefulSet"):
        return True
    for labels in (workload.resource.labels, workload.pod_labels):
        value = labels.get(DATA_STORE_LABEL)
        if isinstance(value, str) and value.strip().lower() == "true":
            return True
    return False


_PEER_ORDER = {"cluster": 0, "outside-cde": 1, "zone": 3, "namespace": 4, "workload": 5}


def flow_order(flow: Flow) -> tuple[int, str, str]:
    """Widest peers first, the internet before other zones, then by name."""
    rank = 2 if flow.peer.is_untrusted_zone else _PEER_ORDER[flow.peer.kind]
    return rank, flow.peer.name, flow.peer.detail

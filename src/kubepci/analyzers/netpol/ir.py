"""The symbolic IR the policy parsers produce, and the validators they share.

Kept apart from the parsers so the NetworkPolicy and the admin-tier parsers can both use it
without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubepci.analyzers.netpol.ipset import IPSet
from kubepci.analyzers.netpol.model import Diagnostic
from kubepci.analyzers.netpol.ports import PROTOCOLS, PortSet
from kubepci.model import Resource
from kubepci.selectors import LabelSelector, SelectorError

__all__ = [
    "ALL_PORTS",
    "CompiledPolicies",
    "ForeignPolicy",
    "Invalid",
    "PeerIR",
    "PolicyIR",
    "PortSpec",
    "RuleIR",
    "parse_cidr",
    "parse_port_number",
    "parse_protocol",
    "parse_selector",
]


class Invalid(ValueError):
    """The object would be rejected by the API server."""


@dataclass(frozen=True, slots=True)
class PortSpec:
    """A rule's ports: numeric part plus named ports (resolved later on the destination pod)."""

    numeric: PortSet
    named: tuple[tuple[str, str | None], ...] = ()  # (name, protocol); None = any protocol (ANP)

    @property
    def is_all(self) -> bool:
        return self.numeric.is_all()


ALL_PORTS = PortSpec(PortSet.all())


@dataclass(frozen=True, slots=True)
class PeerIR:
    """One peer. ``namespaces is None`` with ``same_namespace`` set means the policy's namespace."""

    pods: LabelSelector | None = None
    namespaces: LabelSelector | None = None
    same_namespace: str | None = None
    ipset: IPSet | None = None
    everything: bool = False  # all pods in all namespaces and all IP addresses
    nothing: bool = False  # matches no endpoint (fail-closed Allow, unmodelled peer kinds)


@dataclass(frozen=True, slots=True)
class RuleIR:
    index: int
    action: str  # allow | deny | pass
    peers: tuple[PeerIR, ...]
    ports: PortSpec
    name: str = ""


@dataclass(frozen=True, slots=True)
class PolicyIR:
    tier: str  # admin | networkpolicy | baseline
    resource: Resource
    label: str
    namespace: str
    priority: int
    subject_pods: LabelSelector
    subject_namespaces: LabelSelector | None  # None: the policy's own namespace
    affects_ingress: bool
    affects_egress: bool
    ingress: tuple[RuleIR, ...] = ()
    egress: tuple[RuleIR, ...] = ()


@dataclass(frozen=True, slots=True)
class ForeignPolicy:
    """A Cilium/Calico policy: ``selector`` None means every endpoint in its namespace (or cluster)."""

    resource: Resource
    engine: str  # cilium | calico
    namespace: str  # "" = cluster-wide
    selector: LabelSelector | None

    @property
    def label(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.resource.kind} {where}{self.resource.name} ({self.engine})"


@dataclass(frozen=True, slots=True)
class CompiledPolicies:
    policies: tuple[PolicyIR, ...]
    foreign: tuple[ForeignPolicy, ...]
    diagnostics: tuple[Diagnostic, ...]


def parse_selector(raw: Any, what: str) -> LabelSelector:
    try:
        return LabelSelector.parse(raw)
    except SelectorError as exc:
        raise Invalid(f"{what}: {exc}") from None


def parse_cidr(text: Any, what: str) -> IPSet:
    if not isinstance(text, str):
        raise Invalid(f"{what}: CIDR must be a string")
    try:
        return IPSet.from_cidr(text)
    except ValueError:
        raise Invalid(f"{what}: invalid CIDR {text!r}") from None


def parse_protocol(raw: Any, what: str) -> str:
    proto = "TCP" if raw is None else raw
    if proto not in PROTOCOLS:
        raise Invalid(f"{what}: protocol {proto!r} is not TCP, UDP or SCTP")
    return str(proto)


def parse_port_number(raw: Any, what: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= 65535:
        raise Invalid(f"{what}: port {raw!r} is not in 1-65535")
    return raw

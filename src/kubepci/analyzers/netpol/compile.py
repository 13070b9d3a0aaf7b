"""Turn NetworkPolicy, AdminNetworkPolicy and BaselineAdminNetworkPolicy objects into an IR.

The IR is still symbolic (selectors, CIDRs, port names); :mod:`.engine` binds it to endpoint
classes. Validation follows the API server: an object it would reject cannot exist in a cluster,
so it is dropped with an ``error`` diagnostic rather than credited with allowing or isolating
anything. Cilium and Calico policies are recognised but not evaluated: the endpoints they govern
are marked "not analysed", because reporting them as "no policy" would be a false statement.

Semantics references are the numbered items of netpol-rbac.md §4.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from kubepci.analyzers.netpol.admin import admin_policy
from kubepci.analyzers.netpol.ir import (
    ALL_PORTS,
    CompiledPolicies,
    ForeignPolicy,
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
from kubepci.analyzers.netpol.model import Diagnostic
from kubepci.analyzers.netpol.ports import PortSet
from kubepci.model import Resource
from kubepci.selectors import LabelSelector, SelectorError

__all__ = [
    "CompiledPolicies",
    "ForeignPolicy",
    "PeerIR",
    "PolicyIR",
    "PortSpec",
    "RuleIR",
    "compile_policies",
]

NP_GROUP = "networking.k8s.io"
ADMIN_GROUP = "policy.networking.k8s.io"
CILIUM_GROUPS = frozenset({"cilium.io"})
CALICO_GROUPS = frozenset({"projectcalico.org", "crd.projectcalico.org"})
CALICO_POLICY_KINDS = frozenset({"NetworkPolicy", "GlobalNetworkPolicy", "StagedNetworkPolicy",
                                 "StagedGlobalNetworkPolicy", "StagedKubernetesNetworkPolicy"})
CILIUM_POLICY_KINDS = frozenset({"CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy"})


def _group(resource: Resource) -> str:
    api = resource.ref.api_version or str(resource.body.get("apiVersion") or "")
    return api.split("/", 1)[0] if "/" in api else ""


#: IANA_SVC_NAME as the API server validates named ports: 1-15 lowercase letters, digits and
#: single inner hyphens, with at least one letter
_IANA_SVC_NAME = re.compile(r"(?=.{1,15}$)(?=.*[a-z])[a-z0-9]+(?:-[a-z0-9]+)*")


def _np_ports(raw: Any, what: str) -> PortSpec:
    """§4 items 7-9: protocol defaults to TCP; a missing port means every port of the protocol."""
    if raw is None or raw == []:
        return ALL_PORTS
    if not isinstance(raw, list):
        raise Invalid(f"{what}: ports must be a list")
    numeric = PortSet.empty()
    named: list[tuple[str, str | None]] = []
    for i, item in enumerate(raw):
        where = f"{what}[{i}]"
        if not isinstance(item, Mapping):
            raise Invalid(f"{where}: must be a mapping")
        proto = parse_protocol(item.get("protocol"), where)
        port = item.get("port")
        end = item.get("endPort")
        if isinstance(port, str) and not _IANA_SVC_NAME.fullmatch(port):
            # the API server rejects the policy: a string port must be a service name with a letter
            raise Invalid(f"{where}: port {port!r} is neither a number nor a valid port name")
        if port is None:
            if end is not None:
                raise Invalid(f"{where}: endPort needs port")
            numeric |= PortSet.of(proto)
        elif isinstance(port, str):
            if end is not None:
                raise Invalid(f"{where}: endPort cannot be used with named port {port!r}")
            named.append((port, proto))
        else:
            lo = parse_port_number(port, where)
            hi = lo if end is None else parse_port_number(end, f"{where}.endPort")
            if hi < lo:
                raise Invalid(f"{where}: endPort {hi} is below port {lo}")
            numeric |= PortSet.of(proto, lo, hi)
    return PortSpec(numeric, tuple(sorted(set(named), key=lambda n: (n[0], n[1] or ""))))


def _np_peers(raw: Any, what: str, namespace: str) -> tuple[PeerIR, ...]:
    """§4 items 3, 4, 6: missing/empty peers = everything; selectors in one peer are ANDed."""
    if raw is None or raw == []:
        return (PeerIR(everything=True),)
    if not isinstance(raw, list):
        raise Invalid(f"{what}: must be a list")
    peers: list[PeerIR] = []
    for i, item in enumerate(raw):
        where = f"{what}[{i}]"
        if not isinstance(item, Mapping):
            raise Invalid(f"{where}: must be a mapping")
        has_pod, has_ns, has_ip = "podSelector" in item, "namespaceSelector" in item, "ipBlock" in item
        if has_ip:
            if has_pod or has_ns:
                raise Invalid(f"{where}: ipBlock cannot be combined with podSelector or namespaceSelector")
            block = item["ipBlock"]
            if not isinstance(block, Mapping):
                raise Invalid(f"{where}.ipBlock: must be a mapping")
            cidr = parse_cidr(block.get("cidr"), f"{where}.ipBlock.cidr")
            excepts = block.get("except") or []
            if not isinstance(excepts, list):
                raise Invalid(f"{where}.ipBlock.except: must be a list")
            ipset = cidr
            for j, ex in enumerate(excepts):
                ex_set = parse_cidr(ex, f"{where}.ipBlock.except[{j}]")
                if not ex_set.issubset(cidr) or ex_set == cidr:
                    raise Invalid(f"{where}.ipBlock.except[{j}]: {ex} must be strictly within {block.get('cidr')}")
                ipset = ipset - ex_set
            peers.append(PeerIR(ipset=ipset))
        elif has_pod or has_ns:
            pods = parse_selector(item.get("podSelector"), f"{where}.podSelector") if has_pod else None
            if has_ns:
                peers.append(PeerIR(pods=pods, namespaces=parse_selector(item.get("namespaceSelector"),
                                                                    f"{where}.namespaceSelector")))
            else:
                peers.append(PeerIR(pods=pods, same_namespace=namespace))
        else:
            raise Invalid(f"{where}: a peer needs podSelector, namespaceSelector or ipBlock")
    return tuple(peers)


def _network_policy(res: Resource) -> PolicyIR:
    spec = res.body.get("spec") or {}
    if not isinstance(spec, Mapping):
        raise Invalid("spec must be a mapping")
    ns = res.namespace
    subject = parse_selector(spec.get("podSelector"), "spec.podSelector")
    ingress_raw, egress_raw = spec.get("ingress"), spec.get("egress")
    types_raw = spec.get("policyTypes")
    if types_raw is None or types_raw == []:
        # §4 item 2: Ingress always implied, Egress only when there are egress rules (the API
        # server's defaulting tests len(spec.egress) != 0, so "egress: []" does not count)
        types = {"Ingress"} | ({"Egress"} if egress_raw else set())
    else:
        if not isinstance(types_raw, list) or any(t not in ("Ingress", "Egress") for t in types_raw):
            raise Invalid(f"spec.policyTypes: {types_raw!r} must list only Ingress and Egress")
        types = set(types_raw)
    rules: dict[str, list[RuleIR]] = {"ingress": [], "egress": []}
    for direction, raw, peer_key in (("ingress", ingress_raw, "from"), ("egress", egress_raw, "to")):
        if raw is None:
            continue
        if not isinstance(raw, list):
            raise Invalid(f"spec.{direction} must be a list")
        for i, rule in enumerate(raw):
            where = f"spec.{direction}[{i}]"
            if rule is None:
                rule = {}
            if not isinstance(rule, Mapping):
                raise Invalid(f"{where}: must be a mapping")
            rules[direction].append(RuleIR(i, "allow", _np_peers(rule.get(peer_key), f"{where}.{peer_key}", ns),
                                           _np_ports(rule.get("ports"), f"{where}.ports")))
    return PolicyIR(
        tier="networkpolicy", resource=res, label=f"{ns}/{res.name}", namespace=ns, priority=0,
        subject_pods=subject, subject_namespaces=None,
        affects_ingress="Ingress" in types, affects_egress="Egress" in types,
        ingress=tuple(rules["ingress"]) if "Ingress" in types else (),
        egress=tuple(rules["egress"]) if "Egress" in types else (),
    )


def _foreign(res: Resource, engine: str) -> ForeignPolicy:
    namespace = "" if res.kind in ("CiliumClusterwideNetworkPolicy", "GlobalNetworkPolicy",
                                   "StagedGlobalNetworkPolicy") else res.namespace
    selector: LabelSelector | None = None
    spec = res.body.get("spec")
    if engine == "cilium" and isinstance(spec, Mapping) and "endpointSelector" in spec and namespace:
        try:
            sel = LabelSelector.parse(spec["endpointSelector"], strict=False, key_prefixes=("k8s:", "any:"))
        except SelectorError:
            sel = None
        # keys Cilium derives itself cannot be matched against manifest labels: mark the whole namespace
        if sel is not None and not any(r.key.startswith(("io.cilium", "io.kubernetes", "reserved"))
                                       for r in sel.requirements):
            selector = sel
    return ForeignPolicy(res, engine, namespace, selector)


def compile_policies(resources: Iterable[Resource]) -> CompiledPolicies:
    """Compile every policy object among ``resources``; order of the output is deterministic."""
    policies: list[PolicyIR] = []
    foreign: list[ForeignPolicy] = []
    diags: list[Diagnostic] = []
    for res in resources:
        group, kind = _group(res), res.kind
        notes: list[str] = []
        try:
            if kind == "NetworkPolicy" and group == NP_GROUP:
                policies.append(_network_policy(res))
            elif kind == "AdminNetworkPolicy" and group == ADMIN_GROUP:
                policies.append(admin_policy(res, False, notes))
            elif kind == "BaselineAdminNetworkPolicy" and group == ADMIN_GROUP:
                if res.name != "default":
                    diags.append(Diagnostic("warning", "banp-not-default",
                                            f"BaselineAdminNetworkPolicy {res.name!r} ignored: the API accepts only "
                                            "the singleton named 'default'", res.ref))
                    continue
                policies.append(admin_policy(res, True, notes))
            elif kind == "ClusterNetworkPolicy" and group == ADMIN_GROUP:
                diags.append(Diagnostic("warning", "cnp-not-analysed",
                                        f"ClusterNetworkPolicy {res.name} (v1alpha2) is not evaluated", res.ref))
            elif kind in CILIUM_POLICY_KINDS and group in CILIUM_GROUPS:
                foreign.append(_foreign(res, "cilium"))
            elif kind in CALICO_POLICY_KINDS and group in CALICO_GROUPS:
                foreign.append(_foreign(res, "calico"))
        except Invalid as exc:
            diags.append(Diagnostic("error", "policy-invalid",
                                    f"{kind} {res.ref} would be rejected by the API server and is ignored: {exc}",
                                    res.ref))
            continue
        diags.extend(Diagnostic("warning", "peer-not-modelled", f"{kind} {res.name}: {n}", res.ref) for n in notes)
    policies.sort(key=lambda p: (p.tier, p.namespace, p.resource.name))
    foreign.sort(key=lambda f: (f.namespace, f.resource.kind, f.resource.name))
    return CompiledPolicies(tuple(policies), tuple(foreign), tuple(diags))

"""Network security controls (controls.md NET-002..NET-010; PCI DSS 1.2-1.4, blog R1).

These checks read NetworkPolicies *syntactically*: which pods a policy selects, in which
directions it isolates them and whether a single rule is obviously too wide. They do not compute
reachability (that is the netpol analyzer's job); where a question needs it, the check says what
it assumed. Policy semantics follow the upstream API: ``policyTypes`` defaults to Ingress, plus
Egress when egress rules are present; a missing or empty ``from``/``to`` means every peer; an
invalid selector selects nothing, because the API server would never have admitted it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from typing import Any

from kubepci.checks._netpol import (
    effective_rules,
    has_workload,
    is_k8s_network_policy,
    isolation_index,
    k8s_policies,
    other_policy,
    peers,
    pod_labels_path,
    pod_selector,
    policy_types,
    rules,
    spec_of,
)
from kubepci.checks._registry import CheckContext, check
from kubepci.checks._util import mapping
from kubepci.inventory import WORKLOAD_KINDS, Inventory, NamespaceInfo, Workload, workload_of
from kubepci.model import Enforcement, Resource, Severity, Violation
from kubepci.selectors import LabelSelector, SelectorError, selects

__all__: list[str] = []

#: link-local instance metadata services (AWS/GCP/Azure/OpenStack IPv4, AWS IPv6), served on TCP 80
_METADATA_IPS = (ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"))


@check(
    id="netpol-namespace-has-policy",
    title="Namespaces running workloads must have a network policy",
    requirements=("1.2.6", "1.3.1", "1.4.1"),
    blog=("R1",),
    severity=Severity.MEDIUM,
    targets=("namespace",),
    remediation="Add a NetworkPolicy (starting with a default-deny) to every namespace that runs workloads.",
    refs=("NET-002", "C-0054", "C-0206", "CIS 5.3.2"),
)
def namespace_has_policy(ns: NamespaceInfo, ctx: CheckContext) -> Iterator[Violation]:
    """Without any policy every pod of the namespace accepts and sends any traffic. Cilium, Calico and
    AdminNetworkPolicy objects that can select pods of the namespace count as policies too."""
    inv = ctx.inventory
    if not has_workload(inv, ns.name):
        return
    if next(k8s_policies(inv, ns.name), None) is not None or other_policy(inv, ns) is not None:
        return
    yield Violation(
        f"namespace {ns.name!r} runs workloads but no NetworkPolicy (nor Cilium, Calico or admin network"
        " policy) applies to it, so all its traffic is allowed",
        "metadata.name",
    )


@check(
    id="netpol-workload-covered",
    title="Every workload must be isolated by NetworkPolicies for ingress and egress",
    requirements=("1.3.1", "1.3.2"),
    blog=("R1",),
    severity=Severity.MEDIUM,
    targets=("workload",),
    remediation="Select the pod with NetworkPolicies whose policyTypes include both Ingress and Egress.",
    refs=("NET-005", "C-0260", "C-0030", "polaris missingNetworkPolicy"),
)
def workload_covered(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """A pod is isolated in a direction only if a same-namespace policy selecting it enforces that
    direction (deny-all policies count: isolation, not rules, is what this asks)."""
    ingress = egress = False
    labels = wl.pod_labels
    index = ctx.analyzers.get("netpol_isolation") or isolation_index(ctx.inventory)  # built once per run
    for pol in index.get(wl.namespace, ()):
        if ((pol.ingress and not ingress) or (pol.egress and not egress)) and pol.selects(labels):
            ingress = ingress or pol.ingress
            egress = egress or pol.egress
            if ingress and egress:
                return
    path = pod_labels_path(wl)
    for covered, direction in ((ingress, "Ingress"), (egress, "Egress")):
        if not covered:
            yield Violation(
                f"no NetworkPolicy in namespace {wl.namespace!r} selects this pod for {direction}, so all"
                f" {direction.lower()} traffic is allowed",
                path,
            )


def _default_deny(inventory: Inventory, namespace: str, direction: str, field: str) -> bool:
    for pol in k8s_policies(inventory, namespace):
        spec = spec_of(pol)
        sel = pod_selector(spec)
        if sel is None or not sel.empty or direction not in policy_types(spec):
            continue
        rules = spec.get(field)
        if not (isinstance(rules, list) and rules):
            return True
    return False


@check(
    id="netpol-cde-default-deny-ingress",
    title="CDE namespaces must deny ingress by default",
    requirements=("1.3.1", "1.4.2"),
    blog=("R1",),
    severity=Severity.HIGH,
    targets=("namespace",),
    remediation="Add a NetworkPolicy with podSelector {} and policyTypes [Ingress] and no ingress rules.",
    applies_to="cde",
    refs=("NET-003", "C-0030"),
    admission=False,  # a namespace is labelled before its policies can exist
)
def cde_default_deny_ingress(ns: NamespaceInfo, ctx: CheckContext) -> Iterator[Violation]:
    """PCI 1.3.1 wants all other inbound traffic specifically denied: a namespace-wide deny-all policy
    keeps that true for pods that are added later with labels no allow-policy expected."""
    if not _default_deny(ctx.inventory, ns.name, "Ingress", "ingress"):
        yield Violation(
            f"CDE namespace {ns.name!r} has no default-deny ingress NetworkPolicy (podSelector: {{}},"
            " policyTypes including Ingress, no ingress rules)",
            "metadata.name",
        )


@check(
    id="netpol-cde-default-deny-egress",
    title="CDE namespaces must deny egress by default",
    requirements=("1.3.2",),
    blog=("R1",),
    severity=Severity.HIGH,
    targets=("namespace",),
    remediation="Add a NetworkPolicy with podSelector {} and policyTypes [Egress] and no egress rules.",
    applies_to="cde",
    refs=("NET-004",),
    admission=False,  # a namespace is labelled before its policies can exist
)
def cde_default_deny_egress(ns: NamespaceInfo, ctx: CheckContext) -> Iterator[Violation]:
    """PCI 1.3.2 restricts outbound CDE traffic to what is necessary; DNS and other needed egress then
    go into separate, narrow allow policies."""
    if not _default_deny(ctx.inventory, ns.name, "Egress", "egress"):
        yield Violation(
            f"CDE namespace {ns.name!r} has no default-deny egress NetworkPolicy (podSelector: {{}},"
            " policyTypes including Egress, no egress rules)",
            "metadata.name",
        )


def _empty_selector(raw: Any) -> bool:
    try:
        return LabelSelector.parse(raw).empty
    except SelectorError:
        return False


_Net = ipaddress.IPv4Network | ipaddress.IPv6Network


def _network(cidr: Any) -> _Net | None:
    if not isinstance(cidr, str):
        return None
    try:
        return ipaddress.ip_network(cidr.strip(), strict=False)
    except ValueError:
        return None


def _named_workload_selected(inventory: Inventory, spec: Mapping[str, Any], namespace: str, name: str) -> bool:
    """Does the policy select the workload a flow names? An unknown workload cannot be checked, so the
    namespace match stands (admission and partial scans lack the rest of the inventory)."""
    found = False
    for kind in WORKLOAD_KINDS:
        for r in inventory.in_namespace(namespace, kind):
            wl = workload_of(r) if r.name == name else None
            if wl is not None:
                found = True
                if selects(spec.get("podSelector"), wl.pod_labels):
                    return True
    return not found


def _approved_open_block(pol: Resource, ctx: CheckContext, field: str, net: _Net) -> bool:
    """Is a /0 ipBlock an approved flow (NET-006's approved-CIDR list)? It is when kubepci.yaml has a flow
    between a zone whose CIDRs cover the block and a workload of this namespace the policy selects,
    in the rule's direction (zone -> pod for ingress, pod -> zone for egress): the DMZ's public entry."""
    zones = {
        f"zone/{zone}" for zone, cidrs in ctx.config.zones.items()
        if any(z is not None and z.version == net.version and net.subnet_of(z)  # type: ignore[arg-type]
               for z in map(_network, cidrs))
    }
    if not zones:
        return False
    spec = spec_of(pol)
    for flow in ctx.config.flows:
        zone_side, pod_side = (flow.source, flow.destination) if field == "ingress" else (
            flow.destination, flow.source)
        namespace, _, name = pod_side.partition("/")
        if zone_side in zones and namespace == pol.namespace and _named_workload_selected(
            ctx.inventory, spec, namespace, name
        ):
            return True
    return False


@check(
    id="netpol-allow-all-rules",
    title="NetworkPolicy rules must not allow all peers",
    requirements=("1.2.5", "1.3.1", "1.3.2"),
    blog=("R1",),
    severity=Severity.HIGH,
    targets=("NetworkPolicy",),
    remediation="Name the allowed peers with pod and namespace selectors or narrow ipBlocks in every rule.",
    applies_to="in-scope",
    refs=("NET-006",),
)
def allow_all_rules(pol: Resource, ctx: CheckContext) -> Iterator[Violation]:
    """A rule without peers, a ``namespaceSelector: {}`` peer or a /0 ipBlock opens the selected pods to
    everything, which undoes the default-deny that PCI 1.3.1/1.3.2 rely on. A /0 ipBlock that an
    approved flow from or to a zone covers (the DMZ's public entry) passes. Rules of a direction the
    policy does not enforce are ignored by Kubernetes and therefore here."""
    if not is_k8s_network_policy(pol):
        return
    for field, peer_field, i, rule in effective_rules(spec_of(pol)):
        where = f"spec.{field}[{i}]"
        what = "source" if field == "ingress" else "destination"
        found = peers(rule, peer_field)
        if not found:
            yield Violation(
                f"{field} rule {i} has no {peer_field!r} peers, so it allows every {what} including"
                " addresses outside the cluster",
                f"{where}.{peer_field}",
            )
            continue
        for j, peer in found:
            ppath = f"{where}.{peer_field}[{j}]"
            if peer.get("namespaceSelector") is not None and _empty_selector(peer["namespaceSelector"]) and (
                peer.get("podSelector") is None or _empty_selector(peer["podSelector"])
            ):
                yield Violation(
                    f"{field} rule {i} peer {j} (namespaceSelector: {{}}) allows every pod in every"
                    " namespace",
                    f"{ppath}.namespaceSelector",
                )
            net = _network(mapping(peer.get("ipBlock")).get("cidr"))
            if net is not None and net.prefixlen == 0 and not _approved_open_block(pol, ctx, field, net):
                yield Violation(
                    f"{field} rule {i} peer {j} allows ipBlock {net} (every address, the internet included)",
                    f"{ppath}.ipBlock.cidr",
                )


@check(
    id="netpol-rules-without-ports",
    title="NetworkPolicy rules should name their ports",
    requirements=("1.2.5",),
    blog=("R1",),
    severity=Severity.LOW,
    targets=("NetworkPolicy",),
    remediation="List the ports and protocols each rule needs under ports.",
    applies_to="in-scope",
    enforcement=Enforcement.AUDIT,
    refs=("NET-006",),
    cel=(
        "!has(object.spec) || ((!((has(object.spec.policyTypes) && size(object.spec.policyTypes) > 0) ? "
        "'Ingress' in object.spec.policyTypes : true) || !has(object.spec.ingress) || "
        "object.spec.ingress.all(r, has(r.ports) && size(r.ports) > 0)) && "
        "(!((has(object.spec.policyTypes) && size(object.spec.policyTypes) > 0) ? 'Egress' in "
        "object.spec.policyTypes : (has(object.spec.egress) && size(object.spec.egress) > 0)) || "
        "!has(object.spec.egress) || object.spec.egress.all(r, has(r.ports) && size(r.ports) > 0)))"
    ),
)
def rules_without_ports(pol: Resource, ctx: CheckContext) -> Iterator[Violation]:
    """PCI 1.2.5 wants every allowed port and protocol identified; a rule without ``ports`` allows all
    of them to its peers."""
    if not is_k8s_network_policy(pol):
        return
    for field, _peer_field, i, rule in effective_rules(spec_of(pol)):
        ports = rule.get("ports")
        if not (isinstance(ports, list) and ports):
            yield Violation(f"{field} rule {i} lists no ports, so every port and protocol is allowed",
                            f"spec.{field}[{i}].ports")


def _reaches_tcp_80(ports: Any) -> bool:
    """Does a rule's port list admit TCP/80, where instance metadata services listen?"""
    if not (isinstance(ports, list) and ports):
        return True
    for p in ports:
        p = p if isinstance(p, Mapping) else {}
        if (p.get("protocol") or "TCP") != "TCP":
            continue
        port, end = p.get("port"), p.get("endPort")
        if port is None:
            return True
        if isinstance(port, int) and not isinstance(port, bool):  # named ports never match an ipBlock
            if port == 80 or (isinstance(end, int) and port <= 80 <= end):
                return True
    return False


@check(
    id="netpol-metadata-endpoint",
    title="CDE egress must not reach the cloud metadata endpoint",
    requirements=("1.3.2", "1.4.5"),
    blog=("R1",),
    severity=Severity.HIGH,
    targets=("NetworkPolicy",),
    remediation="Add 169.254.169.254/32 to the except list of every broad egress ipBlock.",
    applies_to="cde",
    refs=("NET-010", "C-0052"),
)
def metadata_endpoint(pol: Resource, ctx: CheckContext) -> Iterator[Violation]:
    """The instance metadata service hands out the node's cloud credentials; an egress ipBlock that
    covers 169.254.169.254 (or AWS's fd00:ec2::254) on TCP/80 without an ``except`` lets CDE pods take
    them. Rules whose ports exclude TCP/80 cannot reach it and pass."""
    if not is_k8s_network_policy(pol):
        return
    spec = spec_of(pol)
    if "Egress" not in policy_types(spec):
        return
    for i, rule in rules(spec, "egress"):
        if not _reaches_tcp_80(rule.get("ports")):
            continue
        found = peers(rule, "to")
        if not found:
            yield Violation(f"egress rule {i} allows every destination, the metadata endpoint"
                            " 169.254.169.254 included", f"spec.egress[{i}].to")
            continue
        for j, peer in found:
            block = mapping(peer.get("ipBlock"))
            net = _network(block.get("cidr"))
            if net is None:
                continue
            excepts = [n for n in map(_network, block.get("except") or []) if n is not None]
            for ip in _METADATA_IPS:
                if ip.version == net.version and ip in net and not any(
                    ip.version == e.version and ip in e for e in excepts
                ):
                    yield Violation(
                        f"egress ipBlock {net} includes the metadata endpoint {ip} and no except excludes it",
                        f"spec.egress[{i}].to[{j}].ipBlock",
                    )


@check(
    id="service-cde-external-exposure",
    title="CDE Services must not be exposed through LoadBalancer or NodePort",
    requirements=("1.4.1", "1.4.2", "1.4.4"),
    blog=("R1",),
    severity=Severity.HIGH,
    targets=("Service",),
    remediation="Use a ClusterIP Service and expose it only through the DMZ ingress controller.",
    applies_to="cde",
    refs=("NET-008", "C-0256", "gatekeeper K8sBlockLoadBalancer", "gatekeeper K8sBlockNodePort"),
    cel=(
        "!has(object.spec) || !has(object.spec.type) || !(object.spec.type in ['LoadBalancer', "
        "'NodePort'])"
    ),
)
def service_cde_external_exposure(svc: Resource, ctx: CheckContext) -> Iterator[Violation]:
    """A LoadBalancer or NodePort opens a CDE pod to networks outside the cluster, bypassing the DMZ
    that PCI 1.4.2 requires between untrusted networks and the CDE."""
    kind = spec_of(svc).get("type")
    if kind in ("LoadBalancer", "NodePort"):
        yield Violation(f"Service of type {kind} exposes CDE pods outside the cluster network", "spec.type")


@check(
    id="service-external-ips",
    title="Services must not set externalIPs",
    requirements=("1.4.2",),
    blog=("R1",),
    severity=Severity.HIGH,
    targets=("Service",),
    remediation="Remove spec.externalIPs and expose the Service through an ingress or load balancer.",
    refs=("NET-009", "KSV-0108", "C-0283", "CIS 1.2.3"),
    cel="!has(object.spec) || !has(object.spec.externalIPs) || size(object.spec.externalIPs) == 0",
)
def service_external_ips(svc: Resource, ctx: CheckContext) -> Iterator[Violation]:
    """externalIPs let whoever can create a Service capture traffic for any IP (CVE-2020-8554) and
    open pods to addresses no NetworkPolicy reviewer expects."""
    ips = spec_of(svc).get("externalIPs")
    if isinstance(ips, list) and ips:
        shown = ", ".join(str(ip) for ip in ips[:5]) + (", ..." if len(ips) > 5 else "")
        yield Violation(f"Service routes external IPs to its pods: {shown}", "spec.externalIPs")

"""CDE segmentation proved on the reachability model (controls.md NET-003..NET-007; PCI DSS 1.2-1.4, blog R1).

``network.py`` reads policies one object at a time; these checks ask the compiled model what
traffic is actually possible once every NetworkPolicy, AdminNetworkPolicy and
BaselineAdminNetworkPolicy is combined, and compare it with the approved ruleset in
``kubepci.yaml`` (``flows``). They need the whole inventory, so they never run at admission.

The model comes from the ``netpol`` analyzer in the check context, computed once per run.

Each check reports on the top-level workload that owns the pods (a Deployment, not its ReplicaSet
or Pods). Peers are summarised when a whole namespace, every pod outside the CDE or every pod in
the cluster is concerned; at most :data:`_MAX_LISTED` violations are listed per workload, the
report's segmentation evidence has all of them. Workloads also governed by Cilium or Calico
policies, which kubepci does not evaluate, carry a note: their actual reachability may be narrower.
A CDE data store is a StatefulSet or a workload labelled ``kubepci.io/data-store: "true"``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from kubepci.checks._netpol import pod_labels_path
from kubepci.checks._registry import CheckContext, check
from kubepci.inventory import Workload
from kubepci.model import Severity, Violation

if TYPE_CHECKING:  # the analyzer is imported when a check first runs, not when the catalog loads
    from kubepci.analyzers.netpol.model import Endpoint
    from kubepci.checks._segmentation import Segmentation
    from kubepci.checks._segmentation_values import Flow

__all__: list[str] = []

#: violations listed per workload and check before the rest is summarised in one more
_MAX_LISTED = 10


def _segmentation(ctx: CheckContext) -> Segmentation:
    """The run's segmentation facts, from the reachability model the engine computes once per run."""
    from kubepci.analyzers.netpol import NetpolModel
    from kubepci.checks._segmentation import segmentation_of

    model = ctx.analyzers["netpol"]
    if not isinstance(model, NetpolModel):
        raise TypeError("analyzers['netpol'] is not a NetpolModel")
    return segmentation_of(model, ctx.scope, ctx.inventory)


def _caveat(endpoint: Endpoint) -> str:
    if not endpoint.not_analysed:
        return ""
    return (f" (also governed by {', '.join(endpoint.not_analysed)}, which kubepci does not evaluate: actual "
            "reachability may be narrower)")


def _listed(messages: Sequence[str], path: str, what: str) -> Iterator[Violation]:
    for text in messages[:_MAX_LISTED]:
        yield Violation(text, path)
    if len(messages) > _MAX_LISTED:
        yield Violation(f"and {len(messages) - _MAX_LISTED} more {what} (all are listed in the report's "
                        "segmentation evidence)", path)


def _summary(flows: Sequence[Flow], limit: int = 4) -> str:
    parts = [f"{f.peer.text()} ({f.ports})" for f in flows[:limit]]
    if len(flows) > limit:
        parts.append(f"and {len(flows) - limit} more")
    return "; ".join(parts)


@check(
    id="netpol-cde-effective-default-deny",
    title="CDE workloads must be isolated by policy in both directions",
    requirements=("1.3.1", "1.3.2"),
    blog=("R1",),
    severity=Severity.HIGH,
    targets=("workload",),
    remediation="Select every CDE pod with a default-deny NetworkPolicy (policyTypes Ingress and Egress) or "
    "deny the rest with an admin network policy.",
    applies_to="cde",
    refs=("NET-003", "NET-004", "NET-005", "C-0260"),
    admission=False,
)
def cde_effective_default_deny(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """PCI 1.3.1/1.3.2 want all traffic into and out of the CDE that is not needed specifically
    denied. A pod that no NetworkPolicy selects for a direction, and that no admin or baseline
    policy decides, accepts (or sends) everything by default; having a policy "of the right shape"
    in the namespace is not enough if its selector misses the pod. The model is asked which
    connections exist only by default, with the peer's own policies applied, and those are reported.
    Host-networked pods cannot be isolated by NetworkPolicy at all. Workloads also governed by
    Cilium or Calico policies are not judged here (those policies may isolate them); the report
    lists them as not analysed."""
    seg = _segmentation(ctx)
    ep = seg.endpoint_of(wl)
    if ep is None:
        return
    path = pod_labels_path(wl)
    if ep.host_network:
        yield Violation(f"{ep.name} uses hostNetwork: NetworkPolicy isolation is undefined for host-networked "
                        "pods, so its segmentation cannot be proven by policy", wl.spec_field("hostNetwork"))
    if ep.not_analysed:
        return
    for direction, policy_type in (("ingress", "Ingress"), ("egress", "Egress")):
        flows = seg.default_open(ep, direction)
        if not flows:
            continue
        what = "accepts connections from" if direction == "ingress" else "can connect to"
        yield Violation(f"{direction} of {ep.name} is not isolated: no NetworkPolicy selects its pods for "
                        f"{policy_type} and no admin network policy decides the rest, so by default it {what} "
                        f"{_summary(flows)}", path)


@check(
    id="netpol-cde-unapproved-ingress",
    title="Every flow into a CDE workload must be an approved flow",
    requirements=("1.2.1", "1.2.5", "1.3.1"),
    blog=("R1",),
    severity=Severity.HIGH,
    targets=("workload",),
    remediation="Narrow the NetworkPolicies to the approved flows, or add the flow with its business reason "
    "to flows in kubepci.yaml.",
    applies_to="cde",
    refs=("NET-003", "NET-006", "NET-007"),
    admission=False,
)
def cde_unapproved_ingress(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """PCI 1.2.1 makes the approved ruleset the standard and 1.3.1 limits traffic into the CDE to
    what is needed: every source (workload, namespace or external zone) that the policies let
    open connections to a CDE workload must be covered by a flow in ``kubepci.yaml`` naming that
    source, this destination and a superset of the ports. Intra-CDE flows are judged here too,
    at the receiving workload."""
    seg = _segmentation(ctx)
    ep = seg.endpoint_of(wl)
    if ep is None:
        return
    caveat = _caveat(ep)
    messages = []
    for f in seg.inbound(ep):
        if not f.unapproved:
            continue
        also = f" (approved only: {f.approved})" if f.approved else ""
        messages.append(f"{f.peer.text()} can connect to {ep.name} on {f.unapproved}, which no approved flow in "
                        f"kubepci.yaml covers{also}{caveat}")
    yield from _listed(messages, pod_labels_path(wl), "unapproved sources")


@check(
    id="netpol-cde-unapproved-egress",
    title="Every flow out of a CDE workload must be an approved flow",
    requirements=("1.2.1", "1.2.5", "1.3.2"),
    blog=("R1",),
    severity=Severity.HIGH,
    targets=("workload",),
    remediation="Add egress policies that allow only the approved destinations and ports, or add the flow with "
    "its business reason to flows in kubepci.yaml.",
    applies_to="cde",
    refs=("NET-004", "NET-006", "NET-010"),
    admission=False,
)
def cde_unapproved_egress(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """PCI 1.3.2 limits traffic out of the CDE to what is needed. Every destination outside the CDE
    namespaces that a CDE workload can reach must be an approved flow; the internet gets its own
    message because an open path to it is how cardholder data leaves. Flows to other CDE workloads
    are judged by netpol-cde-unapproved-ingress at the receiver."""
    seg = _segmentation(ctx)
    ep = seg.endpoint_of(wl)
    if ep is None:
        return
    caveat = _caveat(ep)
    messages = []
    for f in seg.outbound(ep):
        if not f.unapproved:
            continue
        also = f" (approved only: {f.approved})" if f.approved else ""
        if f.peer.is_untrusted_zone:
            messages.append(f"{ep.name} can open connections to the internet ({f.peer.text()}) on {f.unapproved}: "
                            f"no CDE egress to the internet except approved destinations{also}{caveat}")
        else:
            messages.append(f"{ep.name} can connect to {f.peer.text()} on {f.unapproved}, which no approved flow "
                            f"in kubepci.yaml covers{also}{caveat}")
    yield from _listed(messages, pod_labels_path(wl), "unapproved destinations")


@check(
    id="netpol-dmz-to-cde-datastore",
    title="The internet-facing tier must not reach CDE data stores directly",
    requirements=("1.4.1", "1.4.4"),
    blog=("R1",),
    severity=Severity.CRITICAL,
    targets=("workload",),
    remediation="Deny ingress to the data store from DMZ namespaces and the internet, and route access through "
    "an application tier inside the CDE.",
    applies_to="cde",
    refs=("NET-007",),
    admission=False,
)
def dmz_to_cde_datastore(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """PCI 1.4.4: system components that store cardholder data must not be directly accessible from
    untrusted networks. The internet-facing tier (the DMZ) is every namespace outside the CDE whose
    pods accept connections from the internet zone, plus connected namespaces that publish a
    LoadBalancer/NodePort Service or hold a Gateway. A CDE data store is a StatefulSet or a workload
    labelled ``kubepci.io/data-store: "true"``. Neither the internet nor a DMZ workload may reach one
    directly, whatever kubepci.yaml approves."""
    from kubepci.checks._segmentation_values import is_data_store

    seg = _segmentation(ctx)
    ep = seg.endpoint_of(wl)
    if ep is None or not is_data_store(wl, ep):
        return
    caveat = _caveat(ep)
    messages = []
    for f in seg.dmz_inbound(ep):
        if f.peer.kind == "zone":
            origin = ", an untrusted network,"
        else:
            namespace = f.peer.name.partition("/")[0] if f.peer.kind == "workload" else f.peer.name
            reason = seg.dmz.get(namespace)
            origin = f" in the DMZ ({reason})" if reason else " in the DMZ"
        messages.append(f"{f.peer.text()}{origin} can reach the CDE data store {ep.name} directly on "
                        f"{f.ports}{caveat}")
    yield from _listed(messages, pod_labels_path(wl), "DMZ sources")

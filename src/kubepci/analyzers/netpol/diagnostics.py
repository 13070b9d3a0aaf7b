"""Compile-time diagnostics: undefined ANP ordering, unevaluated CNI policies, hostNetwork pods.

These are facts an auditor must see next to any reachability claim, because each one limits what
the claim proves (netpol-rbac.md §4 items 14 and 16, §10.3).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from kubepci.analyzers.netpol.bind import Binding, BoundRule
from kubepci.analyzers.netpol.compile import CompiledPolicies
from kubepci.analyzers.netpol.model import Diagnostic, Endpoint

__all__ = ["anp_priority_conflicts", "build_diagnostics"]


def _overlap(a: BoundRule, b: BoundRule) -> bool:
    if not a.bits & b.bits:
        return False
    pa, pb = a.rule.ports, b.rule.ports
    return bool(pa.named or pb.named or (pa.numeric & pb.numeric))


def anp_priority_conflicts(b: Binding) -> list[tuple[int, int, str]]:
    """Pairs of AdminNetworkPolicies with equal priority whose rules can match the same traffic.

    Which one wins is undefined upstream (§4 item 16); kubepci evaluates them by name, and says so.
    """
    admin = [i for i, p in enumerate(b.policies) if p.tier == "admin"]
    out: list[tuple[int, int, str]] = []
    for x, i in enumerate(admin):
        for j in admin[x + 1:]:
            pi, pj = b.policies[i], b.policies[j]
            if pi.priority != pj.priority or not b.subject_bits[i] & b.subject_bits[j]:
                continue
            for direction in ("ingress", "egress"):
                if any(_overlap(ri, rj) for ri in b.rules_for(i, direction) for rj in b.rules_for(j, direction)):
                    out.append((i, j, direction))
                    break
    return out


def build_diagnostics(b: Binding, compiled: CompiledPolicies, endpoints: Sequence[Endpoint],
                      endpoint_bits: Mapping[str, int]) -> list[Diagnostic]:
    out = list(compiled.diagnostics)
    for i, j, direction in anp_priority_conflicts(b):
        pi, pj = b.policies[i], b.policies[j]
        out.append(Diagnostic(
            "warning", "anp-same-priority",
            f"{pi.label} and {pj.label} both have priority {pi.priority} and both match some {direction} traffic "
            f"of the same pods; which one applies is undefined, kubepci evaluates {pi.label} first (by name)",
            pi.resource.ref))
    for fp in compiled.foreign:
        scope = f"namespace {fp.namespace}" if fp.namespace else "the whole cluster"
        which = "the pods it selects" if fp.selector is not None else f"every workload in {scope}"
        out.append(Diagnostic("warning", "policy-not-analysed",
                              f"{fp.label} is not evaluated; {which} are reported as 'not analysed'",
                              fp.resource.ref))
    for e in endpoints:
        if e.host_network:
            out.append(Diagnostic("warning", "host-network",
                                  f"{e.name} uses hostNetwork: NetworkPolicy cannot be relied on to isolate it "
                                  "(behaviour is undefined upstream; AdminNetworkPolicy ignores it)", e.ref))
    del endpoint_bits
    return sorted(out, key=lambda d: (d.code, str(d.resource), d.message))

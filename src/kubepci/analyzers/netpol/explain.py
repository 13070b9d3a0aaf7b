"""Evaluate one direction for one concrete (subject, peer) pair and record every decision.

This walks the same bound rules as :mod:`.partition`, in the same tier order, but for a single
peer, so it can say which policy and which rule index allowed, denied, passed or isolated which
ports. A property test checks that both paths give the same allowed ports.
"""

from __future__ import annotations

from kubepci.analyzers.netpol.bind import Binding
from kubepci.analyzers.netpol.model import Decision, DirectionVerdict
from kubepci.analyzers.netpol.ports import PortSet

__all__ = ["explain_direction"]

_ALL = PortSet.all()
_NONE = PortSet.empty()
_VERB = {"allow": "allows", "deny": "denies", "pass": "passes to NetworkPolicy"}


def _policy_name(b: Binding, pi: int) -> str:
    pol = b.policies[pi]
    return f"{pol.label} (priority {pol.priority})" if pol.tier == "admin" else pol.label


def explain_direction(b: Binding, direction: str, subject: int, peer: int, subject_name: str,
                      query: PortSet | None = None) -> DirectionVerdict:
    """Egress (subject = source) or ingress (subject = destination) verdict for one class pair."""
    cap = _ALL if query is None else query
    if b.is_atom(subject):
        reason = "an address outside the cluster: no NetworkPolicy applies to it"
        return DirectionVerdict(direction, subject_name, cap,
                                decisions=(Decision("external", "allow", cap, reason=reason),),
                                summary=f"outside the cluster, not restricted by policy ({cap})")
    cls = b.classes[subject]
    sig = b.ingress_sig[subject] if direction == "ingress" else b.egress_sig[subject]
    dest = cls if direction == "ingress" else b.class_at(peer)
    mask = 1 << peer
    admin_ids, np_ids, base_id, _named = sig
    decisions: list[Decision] = []
    allowed = decided = passed = _NONE
    summary: list[str] = []

    for pi in admin_ids:
        for r in b.rules_for(pi, direction):
            if not r.bits & mask:
                continue
            fresh = r.ports_at(dest) - decided
            if not fresh:
                continue
            decided |= fresh
            if r.rule.action == "allow":
                allowed |= fresh
            elif r.rule.action == "pass":
                passed |= fresh
            name = _policy_name(b, pi)
            decisions.append(Decision("admin", r.rule.action, fresh, name, r.rule.index, r.rule.name,
                                      f"first matching admin rule for this peer {_VERB[r.rule.action]} these ports"))
            if fresh & cap:
                summary.append(f"{name} rule {r.rule.index} {_VERB[r.rule.action]} {fresh & cap}")
    open_ports = (_ALL - decided) | passed
    isolated_by: tuple[str, ...] = ()
    if np_ids:
        isolated_by = tuple(b.policies[pi].label for pi in np_ids)
        np_allowed = _NONE
        for pi in np_ids:
            for r in b.rules_for(pi, direction):
                if not r.bits & mask:
                    continue
                ports = r.ports_at(dest) & open_ports
                if ports:
                    np_allowed |= ports
                    decisions.append(Decision("networkpolicy", "allow", ports, b.policies[pi].label, r.rule.index,
                                              reason=f"{direction} rule matches this peer"))
        allowed |= np_allowed
        denied = open_ports - np_allowed
        iso = ", ".join(isolated_by)
        if denied:
            decisions.append(Decision("networkpolicy", "isolate", denied, iso,
                                      reason=f"isolated for {direction} by {iso}; no rule allows these ports"))
        if np_allowed & cap:
            summary.append(f"isolated by {iso}; rules allow {np_allowed & cap}")
        elif open_ports & cap:
            summary.append(f"isolated by {iso}, no rule allows")
    elif open_ports:
        base_decided = _NONE
        if base_id >= 0:
            for r in b.rules_for(base_id, direction):
                if not r.bits & mask:
                    continue
                fresh = (r.ports_at(dest) & open_ports) - base_decided
                if not fresh:
                    continue
                base_decided |= fresh
                if r.rule.action == "allow":
                    allowed |= fresh
                name = b.policies[base_id].label
                decisions.append(Decision("baseline", r.rule.action, fresh, name, r.rule.index, r.rule.name,
                                          "not isolated by NetworkPolicy; first matching baseline rule"))
                if fresh & cap:
                    summary.append(f"{name} rule {r.rule.index} {_VERB[r.rule.action]} {fresh & cap}")
        rest = open_ports - base_decided
        if rest:
            allowed |= rest
            reason = f"not isolated (no NetworkPolicy selects it for {direction.capitalize()})"
            decisions.append(Decision("default", "allow", rest, reason=reason))
            if rest & cap:
                summary.append(f"{reason}: {rest & cap} allowed")
    allowed &= cap
    kept = tuple(d2 for d2 in (Decision(d.tier, d.action, d.ports & cap, d.policy, d.rule, d.rule_name, d.reason)
                               for d in decisions) if d2.ports)
    text = "; ".join(summary) if summary else "no policy decision"
    return DirectionVerdict(direction, subject_name, allowed, isolated_by, kept, f"{text} -> allowed: {allowed}")

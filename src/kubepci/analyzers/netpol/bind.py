"""Bind the policy IR to endpoint classes: every selector and peer becomes a bitset.

Bit layout: pod classes first (sorted by namespace, so each namespace is a contiguous bit range),
then IP atoms (sorted by zone, so each zone is contiguous too). A peer is then one integer, a
rule's destination-dependent named ports become a few (bitset, port) entries, and each class
gets an ingress and an egress *signature*: the exact tuple of rules that can affect it. Classes
with equal signatures share one evaluation.

Host-networked pods (§4 item 14): NetworkPolicy selects and matches them like any other pod (one
of the two behaviours upstream permits), while AdminNetworkPolicy ignores them as subjects and
pod peers, as its API states; every verdict that touches them carries a "not enforceable" note.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from kubepci.analyzers.netpol.compile import CompiledPolicies, PeerIR, PolicyIR, RuleIR
from kubepci.analyzers.netpol.endpoints import EndpointClass, Member, NamedPorts
from kubepci.analyzers.netpol.ipset import IPAtoms, IPSet, format_range
from kubepci.analyzers.netpol.partition import Entry
from kubepci.analyzers.netpol.ports import PROTOCOLS, PortSet
from kubepci.analyzers.netpol.selectors import LabelIndex
from kubepci.selectors import LabelSelector

__all__ = ["OTHER_VALUE", "Binding", "BoundRule", "ClassKey", "Signature", "Vocabulary", "member_class_key",
           "project_labels", "resolve_named", "selector_vocabulary"]

Signature = tuple[tuple[int, ...], tuple[int, ...], int, NamedPorts]  # admin, np, baseline (-1), named ports


def resolve_named(named: Sequence[tuple[str, str | None]], ports: NamedPorts) -> PortSet:
    """Named ports resolved on a destination: same name and (if given) same protocol (§4 item 8)."""
    out = PortSet.empty()
    for name, proto in named:
        for pname, pproto, number in ports:
            if pname == name and (proto is None or proto == pproto) and pproto in PROTOCOLS \
                    and 1 <= number <= 65535:
                out |= PortSet.of(pproto, number)
    return out


@dataclass(frozen=True, slots=True)
class BoundRule:
    policy: int
    rule: RuleIR
    direction: str
    bits: int
    egress_entries: tuple[tuple[int, PortSet], ...] = ()

    def ports_at(self, dest: EndpointClass | None) -> PortSet:
        """The rule's ports towards ``dest`` (None = an IP address: named ports never match)."""
        spec = self.rule.ports
        if not spec.named or dest is None:
            return spec.numeric
        return spec.numeric | resolve_named(spec.named, dest.named_ports)


@dataclass
class Binding:
    """Classes, bit layout and bound rules for one inventory. Built once per run."""

    classes: list[EndpointClass]
    class_namespace_labels: list[Mapping[str, str]]
    atoms: IPAtoms
    atom_order: list[int]  # bit position (minus n_pods) -> atom index
    atom_zone: list[str]  # by bit position
    policies: Sequence[PolicyIR]
    pod_ips_match: bool
    n_pods: int = 0
    pod_bits: int = 0
    all_bits: int = 0
    host_bits: int = 0
    ns_masks: dict[str, int] = field(default_factory=dict)
    zone_masks: dict[str, int] = field(default_factory=dict)
    subject_bits: list[int] = field(default_factory=list)
    rules: list[list[BoundRule]] = field(default_factory=list)  # per policy: ingress then egress
    ingress_sig: list[Signature] = field(default_factory=list)
    egress_sig: list[Signature] = field(default_factory=list)
    _pods: LabelIndex | None = None
    _namespaces: LabelIndex | None = None
    _named: dict[str, list[tuple[str, int, int]]] = field(default_factory=dict)
    _atom_pods: dict[int, int] = field(default_factory=dict)
    _atom_bit: dict[int, int] = field(default_factory=dict)

    # construction ------------------------------------------------------------------------------
    @classmethod
    def build(cls, classes: list[EndpointClass], ns_labels: Mapping[str, Mapping[str, str]], atoms: IPAtoms,
              atom_zones: Sequence[str], compiled: CompiledPolicies, pod_ips_match: bool) -> Binding:
        order = sorted(range(len(atoms)), key=lambda i: (atom_zones[i], i))
        b = cls(classes=classes, class_namespace_labels=[ns_labels[c.namespace] for c in classes], atoms=atoms,
                atom_order=order, atom_zone=[atom_zones[i] for i in order], policies=compiled.policies,
                pod_ips_match=pod_ips_match)
        b.n_pods = len(classes)
        b.pod_bits = (1 << b.n_pods) - 1
        b.all_bits = (1 << (b.n_pods + len(atoms))) - 1
        b._atom_bit = {a: b.n_pods + pos for pos, a in enumerate(order)}
        for c in classes:
            bit = 1 << c.index
            b.ns_masks[c.namespace] = b.ns_masks.get(c.namespace, 0) | bit
            if c.host_network:
                b.host_bits |= bit
            for a in c.ip_atoms:
                b._atom_pods[a] = b._atom_pods.get(a, 0) | bit
            for name, proto, number in c.named_ports:
                b._named.setdefault(name, []).append((proto, number, bit))
        for pos, zone in enumerate(b.atom_zone):
            b.zone_masks[zone] = b.zone_masks.get(zone, 0) | (1 << (b.n_pods + pos))
        b._pods = LabelIndex([c.labels for c in classes])
        b._namespaces = LabelIndex(b.class_namespace_labels)
        b._bind_policies()
        return b

    def _select(self, pods: LabelSelector | None, namespaces: LabelSelector | None, same_ns: str | None) -> int:
        assert self._pods is not None  # noqa: S101 - set in build
        assert self._namespaces is not None  # noqa: S101 - set in build
        if same_ns is not None:
            ns_bits = self.ns_masks.get(same_ns, 0)
        elif namespaces is not None:
            ns_bits = self._namespaces.select(namespaces)
        else:
            ns_bits = self.pod_bits
        return ns_bits & (self._pods.select(pods) if pods is not None else self.pod_bits)

    def ip_bits(self, ipset: IPSet) -> int:
        """Atoms inside ``ipset`` plus, when enabled, pod classes whose IP lies inside (§2.3)."""
        bits = 0
        for a in self.atoms.atoms_of(ipset):
            bits |= 1 << self._atom_bit[a]
            if self.pod_ips_match:
                bits |= self._atom_pods.get(a, 0)
        return bits

    def peer_bits(self, peer: PeerIR, admin: bool) -> int:
        if peer.nothing:
            return 0
        if peer.everything:
            return self.all_bits
        if peer.ipset is not None:
            bits = self.ip_bits(peer.ipset)
        else:
            bits = self._select(peer.pods, peer.namespaces, peer.same_namespace)
        # ANP/BANP: host-networked pods are neither subjects nor pod peers (§4 item 14)
        return bits & ~self.host_bits if admin and peer.ipset is None else bits

    def _egress_entries(self, rule: RuleIR, bits: int) -> tuple[tuple[int, PortSet], ...]:
        entries: list[tuple[int, PortSet]] = []
        if rule.ports.numeric:
            entries.append((bits, rule.ports.numeric))
        for name, proto in rule.ports.named:
            for pproto, number, cbit in self._named.get(name, ()):
                if (proto is None or proto == pproto) and pproto in PROTOCOLS and 1 <= number <= 65535 \
                        and bits & cbit:
                    entries.append((bits & cbit, PortSet.of(pproto, number)))
        return tuple(entries)

    def _bind_policies(self) -> None:
        n = self.n_pods
        ingress_lists: list[tuple[list[int], list[int], list[int]]] = [([], [], []) for _ in range(n)]
        egress_lists: list[tuple[list[int], list[int], list[int]]] = [([], [], []) for _ in range(n)]
        named_in: list[bool] = [False] * n
        tier_slot = {"admin": 0, "networkpolicy": 1, "baseline": 2}
        admin_order = sorted((i for i, p in enumerate(self.policies) if p.tier == "admin"),
                             key=lambda i: (self.policies[i].priority, self.policies[i].resource.name))
        rank = {pi: r for r, pi in enumerate(admin_order)}
        for pi, pol in enumerate(self.policies):
            admin = pol.tier != "networkpolicy"
            if admin:
                subject = self._select(pol.subject_pods, pol.subject_namespaces, None) & ~self.host_bits
            else:
                subject = self._select(pol.subject_pods, None, pol.namespace)
            self.subject_bits.append(subject)
            bound: list[BoundRule] = []
            for direction, rules in (("ingress", pol.ingress), ("egress", pol.egress)):
                for rule in rules:
                    bits = 0
                    for peer in rule.peers:
                        bits |= self.peer_bits(peer, admin)
                    extra = self._egress_entries(rule, bits) if direction == "egress" else ()
                    bound.append(BoundRule(pi, rule, direction, bits, extra))
            self.rules.append(bound)
            has_named_in = any(r.ports.named for r in pol.ingress)
            slot = tier_slot[pol.tier]
            bits = subject
            while bits:
                low = bits & -bits
                c = low.bit_length() - 1
                bits ^= low
                if pol.affects_ingress:
                    ingress_lists[c][slot].append(pi)
                    named_in[c] = named_in[c] or has_named_in
                if pol.affects_egress:
                    egress_lists[c][slot].append(pi)
        for c in range(n):
            for lists, target, with_named in ((ingress_lists, self.ingress_sig, True),
                                              (egress_lists, self.egress_sig, False)):
                adm, nps, base = lists[c]
                named = self.classes[c].named_ports if with_named and named_in[c] else ()
                target.append((tuple(sorted(adm, key=rank.__getitem__)), tuple(nps), base[0] if base else -1, named))

    # queries -----------------------------------------------------------------------------------
    def bit_of_atom(self, atom: int) -> int:
        return self._atom_bit[atom]

    def is_atom(self, bit: int) -> bool:
        return bit >= self.n_pods

    def class_at(self, bit: int) -> EndpointClass | None:
        return self.classes[bit] if bit < self.n_pods else None

    def bit_label(self, bit: int) -> str:
        """Namespace of a pod class, ``zone/<name>`` of an atom."""
        if bit < self.n_pods:
            return self.classes[bit].namespace
        return f"zone/{self.atom_zone[bit - self.n_pods]}"

    def atom_text(self, bit: int) -> str:
        version, lo, hi = self.atoms.atoms[self.atom_order[bit - self.n_pods]]
        return format_range(version, lo, hi)

    def atom_range(self, bit: int) -> tuple[int, int, int]:
        return self.atoms.atoms[self.atom_order[bit - self.n_pods]]

    def rules_for(self, policy: int, direction: str) -> list[BoundRule]:
        return [r for r in self.rules[policy] if r.direction == direction]

    def entries(self, sig: Signature, direction: str, dest: EndpointClass | None) -> tuple[
            list[Entry], bool, list[tuple[int, PortSet]], list[Entry]]:
        """Tier entries for a signature. Ingress ports resolve on ``dest`` (the subject itself)."""
        admin_ids, np_ids, base_id, _named = sig

        def expand(rule: BoundRule) -> list[tuple[int, PortSet]]:
            if direction == "egress":
                return list(rule.egress_entries)
            ports = rule.ports_at(dest)
            return [(rule.bits, ports)] if ports else []

        admin = [(bits, ports, r.rule.action) for pi in admin_ids for r in self.rules_for(pi, direction)
                 for bits, ports in expand(r)]
        allows = [e for pi in np_ids for r in self.rules_for(pi, direction) for e in expand(r)]
        base = ([(bits, ports, r.rule.action) for r in self.rules_for(base_id, direction) for bits, ports in expand(r)]
                if base_id >= 0 else [])
        return admin, bool(np_ids), allows, base


ClassKey = tuple[str, tuple[tuple[str, str], ...], NamedPorts, bool, tuple[int, ...], str]


#: Label vocabulary of every pod selector: key -> the values selectors name for it.
Vocabulary = Mapping[str, frozenset[str]]
#: Stands for "a value no selector names". Label values are [A-Za-z0-9._-], so no real value is NUL.
OTHER_VALUE = "\x00"


def selector_vocabulary(compiled: CompiledPolicies) -> dict[str, frozenset[str]]:
    """The label keys pod selectors test and the values they name. Two pods that agree on these
    (a key absent, present with a value no selector names, or present with the same named value)
    are selected by exactly the same selectors, so they may share one endpoint class."""
    vocab: dict[str, set[str]] = {}

    def add(selector: LabelSelector | None) -> None:
        for req in selector.requirements if selector is not None else ():
            vocab.setdefault(req.key, set()).update(req.values)

    for pol in compiled.policies:
        add(pol.subject_pods)
        for rule in (*pol.ingress, *pol.egress):
            for peer in rule.peers:
                add(peer.pods)
    for foreign in compiled.foreign:
        add(foreign.selector)
    return {k: frozenset(v) for k, v in vocab.items()}


def project_labels(labels: Mapping[str, str], vocab: Vocabulary) -> dict[str, str]:
    """``labels`` reduced to what selectors can tell apart (see :func:`selector_vocabulary`)."""
    out: dict[str, str] = {}
    for key, value in labels.items():
        named = vocab.get(key)
        if named is not None:
            out[key] = value if value in named else OTHER_VALUE
    return out


def member_class_key(member: Member, atoms: IPAtoms, pod_ips_match: bool, vocab: Vocabulary,
                     pinned: frozenset[str] = frozenset()) -> ClassKey:
    """Members with equal keys are indistinguishable to every policy: one endpoint class. Labels are
    projected on the selectors' vocabulary; keying on all labels made one class per workload
    (a 100k-object scan: 33k classes and 33k-bit masks, 270 MB). An endpoint in ``pinned`` (one that
    an approved flow names by workload) keeps classes of its own: approvals are matched on class
    bits, and an approval of one workload must not cover another that merely looks alike."""
    ip_atoms = tuple(sorted({atoms.index_of(v, x) for v, x in member.ips})) if pod_ips_match else ()
    labels = tuple(sorted(project_labels(member.labels, vocab).items()))
    own = member.endpoint if member.endpoint in pinned else ""
    return (member.namespace, labels, member.named_ports, member.host_network, ip_atoms, own)

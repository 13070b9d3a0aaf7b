"""The reachability engine: ``compile_inventory`` builds a :class:`NetpolModel` once per run.

The model answers ``can_reach`` with an explanation, gives ``allowed_ports`` between endpoints,
and feeds the matrices and the CDE exposure report. All work is done per endpoint class and per
policy signature (see :mod:`.bind`), memoised inside the model; results are deterministic.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kubepci.analyzers.netpol.bind import Binding, Signature, member_class_key, resolve_named, selector_vocabulary
from kubepci.analyzers.netpol.compile import CompiledPolicies, compile_policies
from kubepci.analyzers.netpol.endpoints import (
    EndpointClass,
    Member,
    WorkloadUnit,
    assign_zones,
    collect_units,
    members_of,
    namespace_labels,
)
from kubepci.analyzers.netpol.explain import explain_direction
from kubepci.analyzers.netpol.ipset import IPAtoms, IPSet, parse_ip
from kubepci.analyzers.netpol.model import (
    Diagnostic,
    Endpoint,
    Explanation,
    Matrix,
    PairVerdict,
    Verdict,
    names_endpoint,
)
from kubepci.analyzers.netpol.partition import Groups, evaluate_direction
from kubepci.analyzers.netpol.ports import PortSet
from kubepci.config import Config
from kubepci.errors import ConfigError, UsageError
from kubepci.inventory import Inventory

if TYPE_CHECKING:
    from kubepci.analyzers.netpol.exposure import Exposure

__all__ = ["CompileOptions", "NetpolModel", "compile_inventory", "iter_bits"]

_ALL = PortSet.all()
_NONE = PortSet.empty()
_EXTERNAL_GROUPS_KEY = "external"


def iter_bits(bits: int) -> Iterator[int]:
    while bits:
        low = bits & -bits
        yield low.bit_length() - 1
        bits ^= low


@dataclass(frozen=True, slots=True)
class CompileOptions:
    """``ipblock_matches_pod_ips``: upstream e2e semantics (netpol-rbac.md §2.3); turn off to
    compare with NCA / netpol-analyzer, which never let an ipBlock select a pod."""

    ipblock_matches_pod_ips: bool = True


class NetpolModel:
    """Compiled reachability model of one inventory. Treat as read-only; it memoises internally."""

    def __init__(self, binding: Binding, endpoints: Sequence[Endpoint], endpoint_bits: Mapping[str, int],
                 members: Sequence[tuple[Member, int]], compiled: CompiledPolicies,
                 diagnostics: Sequence[Diagnostic], config: Config) -> None:
        self.binding = binding
        self._endpoints = tuple(endpoints)
        self._by_name = {e.name: e for e in endpoints}
        self._bits = dict(endpoint_bits)
        self.members = tuple(members)
        self.compiled = compiled
        self.diagnostics = tuple(diagnostics)
        self.config = config
        self._groups: dict[tuple[str, Signature | str], Groups] = {}
        self._class_endpoints: dict[int, list[str]] = {}
        for e in self._endpoints:
            if e.kind == "workload":
                for bit in iter_bits(self._bits[e.name]):
                    self._class_endpoints.setdefault(bit, []).append(e.name)

    # endpoints ---------------------------------------------------------------------------------
    def endpoints(self) -> tuple[Endpoint, ...]:
        return self._endpoints

    def endpoint(self, name: str) -> Endpoint:
        found = self.resolve(name)
        if len(found) != 1:
            raise UsageError(f"{name!r} names {len(found)} endpoints; give ns/workload")
        return found[0]

    def bits_of(self, endpoint: Endpoint) -> int:
        return self._bits[endpoint.name]

    def class_endpoints(self, bit: int) -> list[str]:
        """Workload endpoints that have pods in class ``bit``; ``zone/<z>`` for an atom."""
        if self.binding.is_atom(bit):
            return [self.binding.bit_label(bit)]
        return self._class_endpoints.get(bit, [])

    def resolve(self, spec: str | Endpoint) -> tuple[Endpoint, ...]:
        """``ns/workload``, ``ns/Kind/workload``, ``ns`` (every workload), ``zone/<name>`` or an IP."""
        if isinstance(spec, Endpoint):
            return (spec,)
        text = spec.strip()
        if text in self._by_name:
            return (self._by_name[text],)
        if text.startswith("zone/"):
            raise UsageError(f"unknown zone {text[5:]!r}; known: "
                             + ", ".join(e.name for e in self._endpoints if e.kind == "zone"))
        try:
            version, value = parse_ip(text.removeprefix("ip/"))
        except ValueError:
            pass
        else:
            return (self._ip_endpoint(text.removeprefix("ip/"), version, value),)
        parts = text.split("/")
        found: tuple[Endpoint, ...] = ()
        if len(parts) == 1:
            found = tuple(e for e in self._endpoints if e.kind == "workload" and e.namespace == text)
        elif len(parts) == 2:
            found = tuple(e for e in self._endpoints if e.kind == "workload" and e.namespace == parts[0]
                          and e.ref is not None and e.ref.name == parts[1])
        elif len(parts) == 3:
            found = tuple(e for e in self._endpoints if e.kind == "workload" and e.namespace == parts[0]
                          and e.ref is not None and e.ref.kind == parts[1] and e.ref.name == parts[2])
        if not found:
            raise UsageError(f"no endpoint {text!r} (use ns/workload, ns, zone/<name> or an IP address)")
        return found

    def _ip_endpoint(self, text: str, version: int, value: int) -> Endpoint:
        for member, bit in self.members:
            if (version, value) in member.ips:
                name = f"{member.namespace}/{member.pod}"
                owner = self._by_name[member.endpoint]
                ep = Endpoint(f"ip/{text}", "ip", owner.namespace, "Pod", owner.ref, member.host_network,
                              (name,), text, owner.not_analysed)
                self._bits.setdefault(ep.name, 1 << bit)
                return ep
        atom = self.binding.atoms.index_of(version, value)
        bit = self.binding.bit_of_atom(atom)
        ep = Endpoint(f"ip/{text}", "ip", addresses=f"{text} ({self.binding.bit_label(bit)})")
        self._bits.setdefault(ep.name, 1 << bit)
        return ep

    # per-class evaluation ----------------------------------------------------------------------
    def groups(self, direction: str, bit: int) -> Groups:
        """Peer partition with allowed ports, for class ``bit`` in ``direction``."""
        b = self.binding
        if b.is_atom(bit):
            key: tuple[str, Signature | str] = (direction, _EXTERNAL_GROUPS_KEY)
        else:
            key = (direction, b.ingress_sig[bit] if direction == "ingress" else b.egress_sig[bit])
        hit = self._groups.get(key)
        if hit is None:
            if b.is_atom(bit):
                hit = ((b.pod_bits, _ALL),) if b.pod_bits else ()
            else:
                sig = key[1]
                assert not isinstance(sig, str)  # noqa: S101 - pod classes have signatures
                admin, isolated, allows, base = b.entries(sig, direction, b.classes[bit])
                hit = evaluate_direction(b.all_bits, admin, isolated, allows, base)
            self._groups[key] = hit
        return hit

    def pair_ports(self, src_bit: int, dst_bit: int) -> PortSet:
        """Allowed ports from class ``src_bit`` to a *different pod* of class ``dst_bit``."""
        egress = next((p for g, p in self.groups("egress", src_bit) if g >> dst_bit & 1), _NONE)
        if not egress:
            return _NONE
        ingress = next((p for g, p in self.groups("ingress", dst_bit) if g >> src_bit & 1), _NONE)
        return egress & ingress

    def allowed_ports(self, src: Endpoint | str, dst: Endpoint | str) -> PortSet:
        """Union of allowed ports over the pods of ``src`` and ``dst``; all ports to itself."""
        out = _NONE
        for s in self.resolve(src):
            for d in self.resolve(dst):
                if s.name == d.name:
                    return _ALL
                for sb in iter_bits(self._bits[s.name]):
                    for db in iter_bits(self._bits[d.name]):
                        out |= self.pair_ports(sb, db)
        return out

    # can-reach ---------------------------------------------------------------------------------
    def can_reach(self, src: Endpoint | str, dst: Endpoint | str, port: int | str | None = None,
                  proto: str | None = None) -> Verdict:
        """Can ``src`` open connections to ``dst`` (on ``port``/``proto``)? With an explanation."""
        sources, dests = self.resolve(src), self.resolve(dst)
        single = len(sources) == 1 and len(dests) == 1
        pairs: list[PairVerdict] = []
        total = _NONE
        query_all = _query(None, port, proto)
        for s in sources:
            for d in dests:
                if s.name == d.name and not single:
                    continue
                for pv in self._pair_verdicts(s, d, port, proto):
                    pairs.append(pv)
                    total |= pv.ports
        notes = [f"{e.name}: also governed by {', '.join(e.not_analysed)}, which kubepci does not evaluate; "
                 "actual reachability may be narrower" for e in {*sources, *dests} if e.not_analysed]
        return Verdict(bool(total), total, Explanation(tuple(pairs), tuple(sorted(notes)), query_all))

    def _pair_verdicts(self, s: Endpoint, d: Endpoint, port: int | str | None,
                       proto: str | None) -> list[PairVerdict]:
        b = self.binding
        s_bits, d_bits = list(iter_bits(self._bits[s.name])), list(iter_bits(self._bits[d.name]))
        grouped: dict[tuple[object, ...], tuple[list[str], list[str], PairVerdict]] = {}
        for sb in s_bits:
            for db in d_bits:
                if b.is_atom(sb) and b.is_atom(db):
                    continue
                dest_class = b.class_at(db)
                query = _query(dest_class, port, proto)
                s_name = self._part_name(s, sb, len(s_bits) > 1)
                d_name = self._part_name(d, db, len(d_bits) > 1)
                eg = explain_direction(b, "egress", sb, db, s.name, query)
                ing = explain_direction(b, "ingress", db, sb, d.name, query)
                ports = eg.allowed & ing.allowed
                notes = self._notes(sb, db)
                self_traffic = s.name == d.name
                if self_traffic:
                    notes.insert(0, f"self traffic: a pod can always reach itself; between different pods of "
                                    f"{s.name}: {ports}")
                    ports = query if query is not None else _ALL
                pv = PairVerdict(s.name, d.name, ports, eg, ing, self_traffic, tuple(notes))
                key = (ports, eg.summary, ing.summary, eg.decisions, ing.decisions, pv.notes)
                slot = grouped.setdefault(key, ([], [], pv))
                slot[0].append(s_name)
                slot[1].append(d_name)
        out: list[PairVerdict] = []
        for s_parts, d_parts, pv in grouped.values():
            out.append(PairVerdict(_join(s.name, s_parts), _join(d.name, d_parts), pv.ports, pv.egress, pv.ingress,
                                   pv.self_traffic, pv.notes))
        return out

    def _part_name(self, ep: Endpoint, bit: int, many: bool) -> str:
        if not many:
            return ""
        return self.binding.atom_text(bit) if self.binding.is_atom(bit) else f"class {bit}"

    def _notes(self, sb: int, db: int) -> list[str]:
        notes = []
        for bit in (sb, db):
            c = self.binding.class_at(bit)
            if c is not None and c.host_network:
                notes.append(f"{', '.join(self.class_endpoints(bit))} uses hostNetwork: NetworkPolicy behaviour is "
                             "undefined for host-networked pods, so segmentation is not enforceable by policy")
        return notes

    # reports -----------------------------------------------------------------------------------
    def namespace_matrix(self) -> Matrix:
        from kubepci.analyzers.netpol.matrix import namespace_matrix

        return namespace_matrix(self)

    def workload_matrix(self) -> Matrix:
        from kubepci.analyzers.netpol.matrix import workload_matrix

        return workload_matrix(self)

    def zone_matrix(self, namespace_zone: Mapping[str, str]) -> Matrix:
        from kubepci.analyzers.netpol.matrix import zone_matrix

        return zone_matrix(self, namespace_zone)

    def exposure(self, cde_namespaces: Sequence[str]) -> Exposure:
        from kubepci.analyzers.netpol.exposure import compute_exposure

        return compute_exposure(self, cde_namespaces)

    def connectivity_pairs(self, level: str = "workload") -> list[tuple[str, str, dict[str, list[tuple[int, int]]]]]:
        from kubepci.analyzers.netpol.matrix import connectivity_pairs

        return connectivity_pairs(self, level)


def _join(name: str, parts: list[str]) -> str:
    parts = sorted({p for p in parts if p})
    if not parts:
        return name
    shown = ", ".join(parts[:4]) + (f", and {len(parts) - 4} more" if len(parts) > 4 else "")
    return f"{name} [{shown}]"


def _query(dest: EndpointClass | None, port: int | str | None, proto: str | None) -> PortSet | None:
    if port is None:
        return PortSet.of(proto) if proto else None
    if isinstance(port, int) or port.isdigit():
        return PortSet.of(proto or "TCP", int(port))
    if dest is None:
        return _NONE  # named ports never match addresses outside the cluster
    return resolve_named([(port, proto.upper() if proto else None)], dest.named_ports)


def _zone_sets(config: Config) -> dict[str, IPSet]:
    zones: dict[str, IPSet] = {}
    for name, cidrs in config.zones.items():
        try:
            zones[name] = IPSet.from_cidrs(cidrs)
        except ValueError as exc:
            raise ConfigError(f"{config.source}: zones.{name}: {exc}") from None
    return zones


def compile_inventory(inventory: Inventory, config: Config | None = None,
                      options: CompileOptions | None = None) -> NetpolModel:
    """Compile every policy and workload of ``inventory`` into a reachability model."""
    from kubepci.analyzers.netpol.diagnostics import build_diagnostics

    config = config or Config()
    options = options or CompileOptions()
    compiled = compile_policies(inventory.resources)
    units = collect_units(inventory)
    short = [f"{u.workload.namespace}/{u.workload.ref.name}" for u in units]
    taken = Counter(short)
    names = [s if taken[s] == 1 else f"{u.workload.namespace}/{u.ref.kind}/{u.ref.name}"
             for u, s in zip(units, short, strict=True)]
    members = members_of(units, names)
    zones = _zone_sets(config)
    sets: list[IPSet] = list(zones.values())
    for pol in compiled.policies:
        for rule in (*pol.ingress, *pol.egress):
            sets.extend(p.ipset for p in rule.peers if p.ipset is not None)
    atoms = IPAtoms(sets)
    vocab = selector_vocabulary(compiled)
    pinned = _named_by_flows(config, units, names)
    keys = [member_class_key(m, atoms, options.ipblock_matches_pod_ips, vocab, pinned) for m in members]
    ordered = sorted(set(keys))
    index = {k: i for i, k in enumerate(ordered)}
    by_key = {k: m for k, m in zip(keys, members, strict=True)}
    classes = []
    for i, k in enumerate(ordered):
        m = by_key[k]
        classes.append(EndpointClass(i, m.namespace, dict(k[1]), m.named_ports, m.host_network, k[4]))
    namespaces = sorted(set(inventory.namespaces) | {c.namespace for c in classes})
    ns_labels = {ns: namespace_labels(inventory, ns) for ns in namespaces}
    binding = Binding.build(classes, ns_labels, atoms, assign_zones(atoms, zones), compiled,
                            options.ipblock_matches_pod_ips)
    member_bits = [(m, index[k]) for m, k in zip(members, keys, strict=True)]
    endpoints, endpoint_bits = _endpoints(units, names, member_bits, binding, compiled)
    diagnostics = build_diagnostics(binding, compiled, endpoints, endpoint_bits)
    return NetpolModel(binding, endpoints, endpoint_bits, member_bits, compiled, diagnostics, config)


def _named_by_flows(config: Config, units: Sequence[WorkloadUnit], names: Sequence[str]) -> frozenset[str]:
    """Endpoints an approved flow names as a workload (``ns/name``, ``ns/Kind/name``), not by namespace or zone."""
    specs = {spec for flow in config.flows for spec in (flow.source, flow.destination)
             if "/" in spec and not spec.startswith("zone/")}
    if not specs:
        return frozenset()
    return frozenset(name for unit, name in zip(units, names, strict=True)
                     if any(names_endpoint(spec, name, unit.workload.namespace, unit.ref) for spec in specs))


def _endpoints(units: Sequence[object], names: Sequence[str], member_bits: Sequence[tuple[Member, int]],
               b: Binding, compiled: CompiledPolicies) -> tuple[list[Endpoint], dict[str, int]]:
    bits: dict[str, int] = {}
    pods: dict[str, list[str]] = {}
    host: dict[str, bool] = {}
    for m, bit in member_bits:
        bits[m.endpoint] = bits.get(m.endpoint, 0) | (1 << bit)
        if m.pod:
            pods.setdefault(m.endpoint, []).append(m.pod)
        host[m.endpoint] = host.get(m.endpoint, False) or m.host_network
    out: list[Endpoint] = []
    for unit, name in zip(units, names, strict=True):
        assert isinstance(unit, WorkloadUnit)  # noqa: S101
        ns = unit.workload.namespace
        governed = []
        for fp in compiled.foreign:
            if fp.namespace and fp.namespace != ns:
                continue
            if fp.selector is None or any(fp.selector.matches(b.classes[c].labels) for c in iter_bits(bits[name])):
                governed.append(fp.label)
        out.append(Endpoint(name, "workload", ns, unit.ref.kind, unit.ref, host.get(name, False),
                            tuple(sorted(pods.get(name, ()))), not_analysed=tuple(governed)))
    for zone in sorted(b.zone_masks):
        mask = b.zone_masks[zone]
        rng = b.atoms.as_set([b.atom_order[bit - b.n_pods] for bit in iter_bits(mask)])
        ep = Endpoint(f"zone/{zone}", "zone", addresses=str(rng))
        out.append(ep)
        bits[ep.name] = mask
    return out, bits

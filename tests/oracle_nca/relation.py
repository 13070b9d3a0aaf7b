"""A tool-neutral allowed-connection relation, and the exact comparison of two of them.

Both sides (kubepci and NCA) are reduced to ``(source, destination) -> ports`` where ports are
interval sets over 1-65535 per protocol (TCP, UDP, SCTP) and sources/destinations are workload names
or *atomic* address intervals. The two tools cut the address space differently (netpol-rbac.md §2.1
item 2), so every address endpoint of both sides is refined onto the union of all range boundaries
before pairs are compared. Deliberately independent of kubepci's own PortSet/IPSet: an oracle
harness that borrowed the engine's arithmetic could not catch a bug in it.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "FULL",
    "PROTOCOLS",
    "Endpoint",
    "IPRange",
    "Mismatch",
    "Ports",
    "RawPair",
    "compare",
    "format_atom",
    "normalise",
    "parse_ip_endpoint",
]

PROTOCOLS = ("TCP", "UDP", "SCTP")
Intervals = tuple[tuple[int, int], ...]
IPRange = tuple[int, int, int]  # (IP version, first, last) as integers
Endpoint = str | tuple[IPRange, ...]  # a workload name, or the address ranges of one printed peer
Key = str | IPRange  # a workload name or one atomic address interval
_TOP = {4: (1 << 32) - 1, 6: (1 << 128) - 1}


def _merge(items: Iterable[tuple[int, int]]) -> Intervals:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(i for i in items if i[0] <= i[1]):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(hi, out[-1][1]))
        else:
            out.append((lo, hi))
    return tuple(out)


def _minus(a: Intervals, b: Intervals) -> Intervals:
    out: list[tuple[int, int]] = []
    for lo, hi in a:
        cur = lo
        for blo, bhi in b:
            if bhi < cur or blo > hi:
                continue
            if blo > cur:
                out.append((cur, blo - 1))
            cur = max(cur, bhi + 1)
        if cur <= hi:
            out.append((cur, hi))
    return tuple(out)


def format_intervals(items: Intervals) -> str:
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in items) or "none"


@dataclass(frozen=True, slots=True)
class Ports:
    """Per-protocol port interval sets; only non-empty protocols are stored, in PROTOCOLS order."""

    items: tuple[tuple[str, Intervals], ...]

    @staticmethod
    def build(mapping: Mapping[str, Iterable[tuple[int, int]]]) -> Ports:
        unknown = set(mapping) - set(PROTOCOLS)
        if unknown:
            raise ValueError(f"not a NetworkPolicy protocol: {sorted(unknown)}")
        merged = ((p, _merge(mapping.get(p, ()))) for p in PROTOCOLS)
        return Ports(tuple((p, rng) for p, rng in merged if rng))

    def get(self, protocol: str) -> Intervals:
        return next((rng for p, rng in self.items if p == protocol), ())

    def __bool__(self) -> bool:
        return bool(self.items)

    def __or__(self, other: Ports) -> Ports:
        return Ports.build({p: self.get(p) + other.get(p) for p in PROTOCOLS})

    def __sub__(self, other: Ports) -> Ports:
        return Ports.build({p: _minus(self.get(p), other.get(p)) for p in PROTOCOLS})

    def __str__(self) -> str:
        """``TCP,UDP,SCTP 1-65535``, ``TCP 80; UDP 53``: protocols with equal ranges share an entry."""
        groups: dict[Intervals, list[str]] = {}
        for proto, rng in self.items:
            groups.setdefault(rng, []).append(proto)
        return "; ".join(f"{','.join(protos)} {format_intervals(rng)}" for rng, protos in groups.items()) or "none"


FULL = Ports.build({p: ((1, 65535),) for p in PROTOCOLS})
RawPair = tuple[Endpoint, Endpoint, Ports]


def _address(text: str) -> tuple[int, int]:
    addr = ipaddress.ip_address(text)
    return addr.version, int(addr)


def parse_ip_endpoint(text: str) -> tuple[IPRange, ...] | None:
    """``a-b``, a single address, a CIDR, or a comma-separated list of those; None if not addresses."""
    out: list[IPRange] = []
    for piece in text.split(","):
        piece = piece.strip()
        try:
            if "/" in piece:
                net = ipaddress.ip_network(piece, strict=True)
                out.append((net.version, int(net.network_address), int(net.broadcast_address)))
            elif "-" in piece:
                first, last = piece.split("-", 1)
                (v1, lo), (v2, hi) = _address(first), _address(last)
                if v1 != v2 or lo > hi:
                    return None
                out.append((v1, lo, hi))
            else:
                version, value = _address(piece)
                out.append((version, value, value))
        except ValueError:
            return None
    return tuple(out) if out else None


def format_atom(key: Key) -> str:
    if isinstance(key, str):
        return key
    version, lo, hi = key
    cls = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    if lo == hi:
        return str(cls(lo))
    nets = list(ipaddress.summarize_address_range(cls(lo), cls(hi)))
    return str(nets[0]) if len(nets) == 1 else f"{cls(lo)}-{cls(hi)}"


def _cuts(sides: Sequence[Iterable[RawPair]]) -> dict[int, list[int]]:
    cuts: dict[int, set[int]] = {4: {0}, 6: {0}}
    for pairs in sides:
        for src, dst, _ports in pairs:
            for ep in (src, dst):
                if isinstance(ep, str):
                    continue
                for version, lo, hi in ep:
                    cuts[version].add(lo)
                    if hi < _TOP[version]:
                        cuts[version].add(hi + 1)
    return {v: sorted(c) for v, c in cuts.items()}


def _atoms(ep: Endpoint, cuts: Mapping[int, list[int]]) -> list[Key]:
    if isinstance(ep, str):
        return [ep]
    out: list[Key] = []
    for version, lo, hi in ep:
        starts = cuts[version]
        i = bisect.bisect_left(starts, lo)
        while i < len(starts) and starts[i] <= hi:
            end = starts[i + 1] - 1 if i + 1 < len(starts) else _TOP[version]
            out.append((version, starts[i], end))
            i += 1
    return out


def normalise(*sides: Iterable[RawPair]) -> list[dict[tuple[Key, Key], Ports]]:
    """Each side as (source, destination) -> union of ports, addresses refined onto common atoms."""
    lists = [list(s) for s in sides]
    cuts = _cuts(lists)
    out: list[dict[tuple[Key, Key], Ports]] = []
    for pairs in lists:
        rel: dict[tuple[Key, Key], Ports] = {}
        for src, dst, ports in pairs:
            for s in _atoms(src, cuts):
                for d in _atoms(dst, cuts):
                    have = rel.get((s, d))
                    rel[(s, d)] = ports if have is None else have | ports
        out.append(rel)
    return out


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One (source, destination) pair on which the two sides allow different ports."""

    source: str
    destination: str
    kubepci: Ports
    nca: Ports

    def line(self) -> str:
        return f"{self.source} => {self.destination}: kubepci={self.kubepci} nca={self.nca}"

    def detail(self) -> str:
        return (f"{self.line()}  [only kubepci: {self.kubepci - self.nca}; only nca: {self.nca - self.kubepci}]")


def compare(kubepci: Iterable[RawPair], nca: Iterable[RawPair]) -> list[Mismatch]:
    """Every pair whose port sets differ, sorted; empty when the two relations are identical."""
    ours, theirs = normalise(kubepci, nca)
    out: list[Mismatch] = []
    for key in set(ours) | set(theirs):
        a, b = ours.get(key, Ports(())), theirs.get(key, Ports(()))
        if a != b:
            out.append(Mismatch(format_atom(key[0]), format_atom(key[1]), a, b))
    return sorted(out, key=lambda m: (m.source, m.destination))

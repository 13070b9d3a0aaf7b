"""IP address sets as interval sets, and the partition of the address space into atoms.

An ipBlock is ``cidr`` minus ``except`` (netpol-rbac.md §4 item 6), which is not a CIDR any more,
so sets are kept as sorted integer intervals per IP version. The engine never reasons about single
addresses: it cuts both address spaces at every boundary any policy, zone or pod IP mentions, so
each resulting *atom* is either wholly inside or wholly outside every set. An atom then behaves
like one more endpoint class in the bitsets.
"""

from __future__ import annotations

import bisect
import ipaddress
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kubepci.analyzers.netpol.ports import merge_intervals

__all__ = ["IPAtoms", "IPSet", "format_range", "parse_ip"]

_TOP = {4: (1 << 32) - 1, 6: (1 << 128) - 1}

Intervals = tuple[tuple[int, int], ...]


def parse_ip(text: str) -> tuple[int, int]:
    """(version, integer) of a single address; raises ValueError.

    Dotted-quad IPv4 (every pod IP of a live cluster) takes a fast path through inet_pton.
    """
    text = text.strip()
    if "." in text and ":" not in text:
        try:
            return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
        except OSError:
            raise ValueError(f"not an IP address: {text!r}") from None
    addr = ipaddress.ip_address(text)
    return addr.version, int(addr)


def format_range(version: int, lo: int, hi: int) -> str:
    """A CIDR when the range is one, a single address, or ``first-last``."""
    cls = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    if lo == hi:
        return str(cls(lo))
    nets = list(ipaddress.summarize_address_range(cls(lo), cls(hi)))
    if len(nets) == 1:
        return str(nets[0])
    return f"{cls(lo)}-{cls(hi)}"


def _sub(a: Intervals, b: Intervals) -> Intervals:
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


@dataclass(frozen=True, slots=True)
class IPSet:
    """An immutable set of IPv4 and IPv6 addresses."""

    v4: Intervals = ()
    v6: Intervals = ()

    @staticmethod
    def from_cidr(text: str) -> IPSet:
        """Parse a CIDR (host bits allowed, as the API server's ParseCIDR allows); ValueError if bad."""
        net = ipaddress.ip_network(text.strip(), strict=False)
        rng = ((int(net.network_address), int(net.broadcast_address)),)
        return IPSet(v4=rng) if net.version == 4 else IPSet(v6=rng)

    @staticmethod
    def from_cidrs(texts: Iterable[str]) -> IPSet:
        out = IPSet()
        for t in texts:
            out = out | IPSet.from_cidr(t)
        return out

    @staticmethod
    def everything() -> IPSet:
        return IPSet(((0, _TOP[4]),), ((0, _TOP[6]),))

    def __bool__(self) -> bool:
        return bool(self.v4 or self.v6)

    def __or__(self, other: IPSet) -> IPSet:
        return IPSet(merge_intervals(self.v4 + other.v4), merge_intervals(self.v6 + other.v6))

    def __sub__(self, other: IPSet) -> IPSet:
        return IPSet(_sub(self.v4, other.v4), _sub(self.v6, other.v6))

    def __and__(self, other: IPSet) -> IPSet:
        return self - (self - other)

    def issubset(self, other: IPSet) -> bool:
        return not (self - other)

    def contains(self, version: int, value: int) -> bool:
        rng = self.v4 if version == 4 else self.v6
        return any(lo <= value <= hi for lo, hi in rng)

    def size(self) -> int:
        return sum(hi - lo + 1 for lo, hi in self.v4) + sum(hi - lo + 1 for lo, hi in self.v6)

    def ranges(self) -> tuple[tuple[int, int, int], ...]:
        return tuple((4, lo, hi) for lo, hi in self.v4) + tuple((6, lo, hi) for lo, hi in self.v6)

    def __str__(self) -> str:
        if not self:
            return "no addresses"
        return ", ".join(format_range(v, lo, hi) for v, lo, hi in self.ranges())


class IPAtoms:
    """The address space of both IP versions cut at every boundary of the given sets.

    Atom ``i`` is ``(version, lo, hi)``; atoms are ordered by version then address. ``atoms_of``
    maps a set to the indices of the atoms it covers; because the cut includes the set's own
    boundaries, coverage is all-or-nothing.
    """

    def __init__(self, sets: Iterable[IPSet], addresses: Iterable[tuple[int, int]] = ()) -> None:
        cuts: dict[int, set[int]] = {4: {0}, 6: {0}}
        for s in sets:
            for version, lo, hi in s.ranges():
                cuts[version].add(lo)
                if hi < _TOP[version]:
                    cuts[version].add(hi + 1)
        for version, value in addresses:
            cuts[version].add(value)
            if value < _TOP[version]:
                cuts[version].add(value + 1)
        self.atoms: list[tuple[int, int, int]] = []
        self._starts: dict[int, list[int]] = {}
        self._offset: dict[int, int] = {}
        for version in (4, 6):
            starts = sorted(cuts[version])
            self._offset[version] = len(self.atoms)
            self._starts[version] = starts
            for i, lo in enumerate(starts):
                hi = starts[i + 1] - 1 if i + 1 < len(starts) else _TOP[version]
                self.atoms.append((version, lo, hi))

    def __len__(self) -> int:
        return len(self.atoms)

    def index_of(self, version: int, value: int) -> int:
        starts = self._starts[version]
        return self._offset[version] + bisect.bisect_right(starts, value) - 1

    def atoms_of(self, ipset: IPSet) -> list[int]:
        out: list[int] = []
        for version, lo, hi in ipset.ranges():
            first = self.index_of(version, lo)
            last = self.index_of(version, hi)
            out.extend(range(first, last + 1))
        return out

    def as_set(self, indices: Sequence[int]) -> IPSet:
        v4 = [(a[1], a[2]) for a in (self.atoms[i] for i in indices) if a[0] == 4]
        v6 = [(a[1], a[2]) for a in (self.atoms[i] for i in indices) if a[0] == 6]
        return IPSet(merge_intervals(v4), merge_intervals(v6))

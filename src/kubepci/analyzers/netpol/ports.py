"""Port sets: per-protocol interval sets over 1-65535 for TCP, UDP and SCTP.

NetworkPolicy speaks only these three protocols (netpol-rbac.md §4 item 9), so a port set is a
fixed triple of sorted, disjoint, non-adjacent inclusive intervals. Values are immutable and
hashable so the engine can key caches on them; the binary operations are memoised because the
matrix unions the same few sets hundreds of thousands of times.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["MAX_PORT", "PROTOCOLS", "PortSet", "format_intervals", "merge_intervals"]

PROTOCOLS = ("TCP", "UDP", "SCTP")
MAX_PORT = 65535

Intervals = tuple[tuple[int, int], ...]
_FULL: Intervals = ((1, MAX_PORT),)


def merge_intervals(items: Iterable[tuple[int, int]]) -> Intervals:
    """Sort, merge overlapping and adjacent intervals; drop empty ones."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(i for i in items if i[0] <= i[1]):
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return tuple(out)


def _intersect(a: Intervals, b: Intervals) -> Intervals:
    out: list[tuple[int, int]] = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo = max(a[i][0], b[j][0])
        hi = min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return tuple(out)


def _subtract(a: Intervals, b: Intervals) -> Intervals:
    out: list[tuple[int, int]] = []
    j = 0
    for lo, hi in a:
        cur = lo
        while j < len(b) and b[j][1] < cur:
            j += 1
        k = j
        while k < len(b) and b[k][0] <= hi:
            if b[k][0] > cur:
                out.append((cur, b[k][0] - 1))
            cur = max(cur, b[k][1] + 1)
            k += 1
        if cur <= hi:
            out.append((cur, hi))
    return tuple(out)


def format_intervals(items: Intervals) -> str:
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in items)


@dataclass(frozen=True, slots=True)
class PortSet:
    """An immutable set of (protocol, port) pairs.

    ``tcp``/``udp``/``sctp`` hold sorted, merged inclusive intervals. Build values with the class
    methods; the operators return new values.
    """

    tcp: Intervals = ()
    udp: Intervals = ()
    sctp: Intervals = ()

    # construction -----------------------------------------------------------------------------
    @staticmethod
    def all() -> PortSet:
        return _ALL

    @staticmethod
    def empty() -> PortSet:
        return _EMPTY

    @staticmethod
    def of(protocol: str, lo: int | None = None, hi: int | None = None) -> PortSet:
        """``protocol`` ports ``lo..hi`` (all ports of the protocol when ``lo`` is None)."""
        proto = protocol.upper()
        if proto not in PROTOCOLS:
            raise ValueError(f"unsupported protocol {protocol!r} (TCP, UDP or SCTP)")
        if lo is None:
            rng: Intervals = _FULL
        else:
            top = lo if hi is None else hi
            if not 1 <= lo <= top <= MAX_PORT:
                raise ValueError(f"invalid port range {lo}-{top}")
            rng = ((lo, top),)
        return PortSet(**{proto.lower(): rng})

    @staticmethod
    def from_mapping(data: Mapping[str, Sequence[Sequence[int]]]) -> PortSet:
        parts = {p.lower(): merge_intervals((int(i[0]), int(i[1])) for i in data.get(p, ())) for p in PROTOCOLS}
        return PortSet(**parts)

    @staticmethod
    def parse(text: str) -> PortSet:
        """Parse ``8443/TCP``, ``53/udp``, ``8000-8100/TCP``, ``TCP`` (all ports), ``all`` or ``none``."""
        raw = text.strip()
        if raw.lower() in ("all", "*"):
            return _ALL
        if raw.lower() in ("none", ""):
            return _EMPTY
        port_part, _, proto = raw.partition("/")
        if not proto and port_part.upper() in PROTOCOLS:
            return PortSet.of(port_part)
        proto = proto or "TCP"
        lo_text, _, hi_text = port_part.partition("-")
        if not lo_text.isdigit() or (hi_text and not hi_text.isdigit()):
            raise ValueError(f"not a port: {text!r} (expected PORT[-END]/PROTOCOL)")
        return PortSet.of(proto, int(lo_text), int(hi_text) if hi_text else None)

    # queries ------------------------------------------------------------------------------------
    def __bool__(self) -> bool:
        return bool(self.tcp or self.udp or self.sctp)

    def intervals(self, protocol: str) -> Intervals:
        proto = protocol.upper()
        if proto == "TCP":
            return self.tcp
        if proto == "UDP":
            return self.udp
        if proto == "SCTP":
            return self.sctp
        return ()

    def contains(self, port: int, protocol: str = "TCP") -> bool:
        return any(lo <= port <= hi for lo, hi in self.intervals(protocol))

    def is_all(self) -> bool:
        return self == _ALL

    def items(self) -> tuple[tuple[str, Intervals], ...]:
        """(protocol, intervals) for the non-empty protocols, in TCP, UDP, SCTP order."""
        return tuple((p, self.intervals(p)) for p in PROTOCOLS if self.intervals(p))

    def to_dict(self) -> dict[str, list[list[int]]]:
        return {p: [[lo, hi] for lo, hi in rng] for p, rng in self.items()}

    def issubset(self, other: PortSet) -> bool:
        return not (self - other)

    def __str__(self) -> str:
        if not self:
            return "none"
        if self == _ALL:
            return "all ports"
        parts = []
        for proto, rng in self.items():
            parts.append(proto if rng == _FULL else f"{proto} {format_intervals(rng)}")
        return "; ".join(parts)

    # algebra ------------------------------------------------------------------------------------
    def __or__(self, other: PortSet) -> PortSet:
        return _union(self, other)

    def __and__(self, other: PortSet) -> PortSet:
        return _intersection(self, other)

    def __sub__(self, other: PortSet) -> PortSet:
        return _difference(self, other)


_ALL = PortSet(_FULL, _FULL, _FULL)
_EMPTY = PortSet()


@lru_cache(maxsize=65536)
def _union(a: PortSet, b: PortSet) -> PortSet:
    if not b or a == b:
        return a
    if not a:
        return b
    return PortSet(merge_intervals(a.tcp + b.tcp), merge_intervals(a.udp + b.udp), merge_intervals(a.sctp + b.sctp))


@lru_cache(maxsize=65536)
def _intersection(a: PortSet, b: PortSet) -> PortSet:
    if a == b:
        return a
    if not a or not b:
        return _EMPTY
    return PortSet(_intersect(a.tcp, b.tcp), _intersect(a.udp, b.udp), _intersect(a.sctp, b.sctp))


@lru_cache(maxsize=65536)
def _difference(a: PortSet, b: PortSet) -> PortSet:
    if not a or not b:
        return a
    if a == b:
        return _EMPTY
    return PortSet(_subtract(a.tcp, b.tcp), _subtract(a.udp, b.udp), _subtract(a.sctp, b.sctp))

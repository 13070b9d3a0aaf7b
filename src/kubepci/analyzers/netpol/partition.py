"""Evaluate one direction of one endpoint class against every peer at once.

The answer is a partition of the peer bitset into groups that share the same allowed port set.
Tiers follow netpol-rbac.md §4 item 16: AdminNetworkPolicy rules in priority order (first match
decides Allow/Deny, Pass hands the ports down), then NetworkPolicy (if the pod is isolated in this
direction it decides: the union of its rules allows, everything else is denied), then the
BaselineAdminNetworkPolicy (first match), then default allow. Working on (bitset, port set)
groups instead of single peers keeps the cost proportional to the number of distinct outcomes.
"""

from __future__ import annotations

from collections.abc import Sequence

from kubepci.analyzers.netpol.ports import PortSet

__all__ = ["Entry", "Groups", "evaluate_direction", "lowest_bit"]

#: (peer bits, ports, action) where action is allow, deny or pass
Entry = tuple[int, PortSet, str]
#: (peer bits, allowed ports); bitsets of different groups are disjoint
Groups = tuple[tuple[int, PortSet], ...]

_ALL = PortSet.all()
_NONE = PortSet.empty()

_FirstMatchKey = tuple[PortSet, PortSet, PortSet]  # allowed, decided, passed


def lowest_bit(bits: int) -> int:
    return (bits & -bits).bit_length() - 1


def _merge(state: dict[_FirstMatchKey, int], key: _FirstMatchKey, bits: int) -> None:
    state[key] = state.get(key, 0) | bits


def _first_match(state: dict[_FirstMatchKey, int], entry: Entry) -> dict[_FirstMatchKey, int]:
    bits, ports, action = entry
    new: dict[_FirstMatchKey, int] = {}
    for key, group in state.items():
        inside = group & bits
        if not inside:
            _merge(new, key, group)
            continue
        rest = group & ~bits
        if rest:
            _merge(new, key, rest)
        allowed, decided, passed = key
        fresh = ports - decided
        if fresh:
            if action == "allow":
                allowed = allowed | fresh
            elif action == "pass":
                passed = passed | fresh
            decided = decided | fresh
        _merge(new, (allowed, decided, passed), inside)
    return new


def _union(state: dict[PortSet, int], bits: int, ports: PortSet) -> dict[PortSet, int]:
    new: dict[PortSet, int] = {}
    for have, group in state.items():
        inside = group & bits
        if inside and not ports.issubset(have):
            rest = group & ~bits
            if rest:
                new[have] = new.get(have, 0) | rest
            grown = have | ports
            new[grown] = new.get(grown, 0) | inside
        else:
            new[have] = new.get(have, 0) | group
    return new


def evaluate_direction(universe: int, admin: Sequence[Entry], isolated: bool,
                       allows: Sequence[tuple[int, PortSet]], baseline: Sequence[Entry]) -> Groups:
    """Allowed ports per peer group for one subject class in one direction.

    ``admin`` are AdminNetworkPolicy entries already in evaluation order; ``allows`` the
    NetworkPolicy allow entries (used only when ``isolated``); ``baseline`` the BANP entries.
    """
    result: dict[PortSet, int] = {}
    if not admin and not isolated and not baseline:
        return ((universe, _ALL),) if universe else ()
    state: dict[_FirstMatchKey, int] = {(_NONE, _NONE, _NONE): universe}
    for entry in admin:
        state = _first_match(state, entry)
    if isolated:
        np_state: dict[PortSet, int] = {_NONE: universe}
        for bits, ports in allows:
            np_state = _union(np_state, bits, ports)
        for (allowed, decided, passed), group in state.items():
            open_ports = (_ALL - decided) | passed
            for np_ports, np_group in np_state.items():
                inside = group & np_group
                if inside:
                    final = allowed | (open_ports & np_ports)
                    result[final] = result.get(final, 0) | inside
    else:
        base: dict[_FirstMatchKey, int] = {}
        for (allowed, decided, passed), group in state.items():
            _merge(base, (allowed, decided - passed, _NONE), group)
        for entry in baseline:
            base = _first_match(base, entry)
        for (allowed, decided, _passed), group in base.items():
            final = allowed | (_ALL - decided)
            result[final] = result.get(final, 0) | group
    return tuple(sorted(((bits, ports) for ports, bits in result.items() if ports and bits),
                        key=lambda g: lowest_bit(g[0])))

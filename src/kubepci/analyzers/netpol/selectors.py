"""Label selectors over a whole bitset index: "which endpoint classes does this selector match".

Selectors themselves (parsing, validation, one-object matching) are :mod:`kubepci.selectors`, the
implementation the checks and the admission webhook use too. :class:`LabelIndex` answers with
integer bitsets (one bit per class), built once per label, so selecting over thousands of classes
costs a handful of big-integer operations instead of a loop over classes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from kubepci.selectors import LabelSelector

__all__ = ["LabelIndex"]


class LabelIndex:
    """Bitset index over a sequence of label maps: bit ``i`` stands for item ``i``.

    ``universe`` is the bitset of every item the index covers; other bits are never set in answers.
    """

    def __init__(self, items: Sequence[Mapping[str, str]], first_bit: int = 0) -> None:
        self._kv: dict[tuple[str, str], int] = {}
        self._key: dict[str, int] = {}
        self.universe = 0
        for i, labels in enumerate(items):
            bit = 1 << (first_bit + i)
            self.universe |= bit
            for k, v in labels.items():
                self._kv[(k, v)] = self._kv.get((k, v), 0) | bit
                self._key[k] = self._key.get(k, 0) | bit
        self._cache: dict[LabelSelector, int] = {}

    def select(self, selector: LabelSelector) -> int:
        hit = self._cache.get(selector)
        if hit is not None:
            return hit
        bits = self.universe
        for r in selector.requirements:
            if r.operator in ("In", "NotIn"):
                any_of = 0
                for v in r.values:
                    any_of |= self._kv.get((r.key, v), 0)
                bits &= any_of if r.operator == "In" else ~any_of
            elif r.operator == "Exists":
                bits &= self._key.get(r.key, 0)
            else:
                bits &= ~self._key.get(r.key, 0)
            if not bits:
                break
        bits &= self.universe
        self._cache[selector] = bits
        return bits

"""Kubernetes label selectors, matched one object at a time or over a whole bitset index.

``metav1.LabelSelector`` is matchLabels AND matchExpressions (In, NotIn, Exists, DoesNotExist);
``NotIn`` and ``DoesNotExist`` match objects that lack the key; an empty selector matches
everything (netpol-rbac.md §4 item 5). A selector the API server would reject raises
:class:`SelectorError`: such a policy cannot exist in a cluster, so the compiler drops it with a
diagnostic instead of crediting it with selecting anything.

:class:`LabelIndex` answers "which endpoint classes does this selector match" with integer
bitsets (one bit per class), built once per label, so selecting over thousands of classes costs a
handful of big-integer operations instead of a loop over classes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["NAMESPACE_NAME_LABEL", "LabelIndex", "LabelSelector", "Requirement", "SelectorError"]

#: immutable label every namespace carries since Kubernetes 1.22; offline inputs lack it
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"

_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


class SelectorError(ValueError):
    """A label selector the API server would reject."""


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "In":
            return self.key in labels and labels[self.key] in self.values
        if self.operator == "NotIn":
            return self.key not in labels or labels[self.key] not in self.values
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels

    def __str__(self) -> str:
        if self.operator == "Exists":
            return self.key
        if self.operator == "DoesNotExist":
            return f"!{self.key}"
        if self.operator == "In" and len(self.values) == 1:
            return f"{self.key}={self.values[0]}"
        op = "in" if self.operator == "In" else "notin"
        return f"{self.key} {op} ({','.join(self.values)})"


def _string(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise SelectorError(f"{what} must be a string, got {type(value).__name__} {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """A parsed, validated label selector; equal selectors compare and hash equal."""

    requirements: tuple[Requirement, ...] = ()

    @staticmethod
    def parse(raw: Any, key_prefixes: Sequence[str] = ()) -> LabelSelector:
        """Parse a LabelSelector mapping. ``None`` and ``{}`` match everything.

        ``key_prefixes`` are stripped from keys (Cilium writes ``k8s:app``).
        """
        if raw is None:
            return LabelSelector()
        if not isinstance(raw, Mapping):
            raise SelectorError(f"a label selector must be a mapping, got {type(raw).__name__}")
        unknown = set(raw) - {"matchLabels", "matchExpressions"}
        if unknown:
            raise SelectorError(f"unknown label selector field(s): {', '.join(sorted(map(str, unknown)))}")

        def key_of(k: Any) -> str:
            key = _string(k, "label key")
            for prefix in key_prefixes:
                if key.startswith(prefix):
                    key = key[len(prefix):]
            if not key:
                raise SelectorError("empty label key")
            return key

        reqs: list[Requirement] = []
        match_labels = raw.get("matchLabels") or {}
        if not isinstance(match_labels, Mapping):
            raise SelectorError("matchLabels must be a mapping")
        for k, v in match_labels.items():
            reqs.append(Requirement(key_of(k), "In", (_string(v, f"matchLabels value of {k}"),)))
        exprs = raw.get("matchExpressions") or []
        if not isinstance(exprs, list):
            raise SelectorError("matchExpressions must be a list")
        for i, expr in enumerate(exprs):
            if not isinstance(expr, Mapping):
                raise SelectorError(f"matchExpressions[{i}] must be a mapping")
            op = expr.get("operator")
            if op not in _OPERATORS:
                raise SelectorError(f"matchExpressions[{i}]: operator {op!r} is not one of {', '.join(_OPERATORS)}")
            values = expr.get("values") or []
            if not isinstance(values, list):
                raise SelectorError(f"matchExpressions[{i}].values must be a list")
            vals = tuple(sorted({_string(v, f"matchExpressions[{i}] value") for v in values}))
            if op in ("In", "NotIn") and not vals:
                raise SelectorError(f"matchExpressions[{i}]: operator {op} needs at least one value")
            if op in ("Exists", "DoesNotExist") and vals:
                raise SelectorError(f"matchExpressions[{i}]: operator {op} takes no values")
            reqs.append(Requirement(key_of(expr.get("key")), op, vals))
        return LabelSelector(tuple(sorted(set(reqs), key=lambda r: (r.key, r.operator, r.values))))

    @property
    def is_empty(self) -> bool:
        return not self.requirements

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements) if self.requirements else "{}"


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

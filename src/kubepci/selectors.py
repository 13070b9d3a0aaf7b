"""Label selectors as Kubernetes and Calico evaluate them: the one implementation the checks, the
admission webhook and the netpol analyzer share.

Two dialects live here because network segmentation is written in both:

* :class:`LabelSelector` is ``metav1.LabelSelector`` (matchLabels AND matchExpressions with
  In/NotIn/Exists/DoesNotExist), validated and matched exactly as ``LabelSelectorAsSelector``
  does: an empty selector matches everything, ``NotIn``/``DoesNotExist`` match objects that lack
  the key, and anything the API server would reject raises :class:`SelectorError`, because such
  an object cannot exist in a cluster and must not be credited with selecting anything.
* :class:`CalicoSelector` is Calico's selector expression language (``all()``, ``has(k)``,
  ``==``, ``in {..}``, ``&&``, ``||``, ``!`` ...).

Both can be evaluated with *partial knowledge*: a ``known`` predicate names the keys whose
presence/absence is certain (say, the namespace labels) and every other key is unknown, so the
answer is three-valued (True, False, or None for "depends on pod labels"). That answers
questions like "can this cluster-wide policy select any pod in namespace X?" without pods.

A ``None`` selector passed to :meth:`LabelSelector.parse` is treated as empty (matches all): the
API server defaults a NetworkPolicy's absent ``podSelector`` that way in practice. Callers for
which a missing selector means something else (a NetworkPolicy peer without
``namespaceSelector``) must test for absence before parsing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "NAMESPACE_NAME_LABEL",
    "CalicoSelector",
    "KnownFn",
    "LabelSelector",
    "Requirement",
    "SelectorError",
    "namespace_labels",
    "selector_matches",
    "selects",
]

#: immutable label every namespace carries since Kubernetes 1.22; offline inputs lack it
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"

#: which label keys a partial evaluation may treat as certain
KnownFn = Callable[[str], bool]

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")

_NAME = re.compile(r"^[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*$")
_VALUE = re.compile(r"^(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


class SelectorError(ValueError):
    """A selector the API server (or Calico) would reject."""


def _valid_key(key: Any, strict: bool = True) -> bool:
    """IsQualifiedName: optional DNS-subdomain prefix (<= 253) and '/', then a 63-char name."""
    if not isinstance(key, str) or not key:
        return False
    if not strict:
        return True
    prefix, sep, name = key.rpartition("/")
    if sep and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return False
    return bool(_NAME.match(name))


def _valid_value(value: Any, strict: bool = True) -> bool:
    return isinstance(value, str) and (not strict or bool(_VALUE.match(value)))


def _label(labels: Mapping[str, Any], key: str) -> str | None:
    """Object label value, or None when absent; non-string values cannot exist in the API."""
    value = labels.get(key)
    return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class Requirement:
    """One ``key op values`` term; matchLabels entries become ``In`` with one value."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, Any]) -> bool:
        value = _label(labels, self.key)
        if self.operator == "In":
            return value is not None and value in self.values
        if self.operator == "NotIn":
            return value is None or value not in self.values
        if self.operator == "Exists":
            return value is not None
        return value is None  # DoesNotExist

    def __str__(self) -> str:
        vals = ",".join(sorted(set(self.values)))
        if self.operator == "Exists":
            return self.key
        if self.operator == "DoesNotExist":
            return f"!{self.key}"
        if self.operator == "In":
            return f"{self.key}={self.values[0]}" if len(self.values) == 1 else f"{self.key} in ({vals})"
        return f"{self.key} notin ({vals})"


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """A parsed ``metav1.LabelSelector``: the AND of its requirements, sorted by key."""

    requirements: tuple[Requirement, ...] = ()

    @classmethod
    def parse(cls, raw: Any, *, strict: bool = True, key_prefixes: Sequence[str] = ()) -> LabelSelector:
        """Validate like the API server; raises SelectorError naming the offending field.

        ``strict=False`` skips the key/value syntax rules (operators and value counts are still
        checked) for CRDs such as Cilium's whose keys carry source prefixes like ``k8s:``;
        ``key_prefixes`` are stripped from keys first (Cilium's ``k8s:app`` is the pod label ``app``).
        Equal selectors parse equal: values and requirements are sorted and deduplicated.
        """
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise SelectorError(f"selector must be a mapping, got {type(raw).__name__}")
        unknown = set(raw) - {"matchLabels", "matchExpressions"}
        if unknown:  # a typo such as `matchLabel` would otherwise read as {}: every pod
            raise SelectorError(f"unknown label selector field(s): {', '.join(sorted(map(str, unknown)))}")
        reqs: set[Requirement] = set()
        match_labels = raw.get("matchLabels")
        if match_labels is not None:
            if not isinstance(match_labels, Mapping):
                raise SelectorError("matchLabels must be a mapping of label key to value")
            for key, value in match_labels.items():
                key = _strip(key, key_prefixes)
                if not _valid_key(key, strict):
                    raise SelectorError(f"matchLabels: invalid label key {key!r}")
                if not _valid_value(value, strict):
                    raise SelectorError(f"matchLabels[{key}]: invalid label value {value!r}")
                reqs.add(Requirement(key, "In", (value,)))
        exprs = raw.get("matchExpressions")
        if exprs is not None:
            if not isinstance(exprs, list):
                raise SelectorError("matchExpressions must be a list")
            for i, expr in enumerate(exprs):
                reqs.add(_expression(expr, i, strict, key_prefixes))
        return cls(tuple(sorted(reqs, key=lambda r: (r.key, r.operator, r.values))))

    @property
    def empty(self) -> bool:
        """True when the selector matches every object (``{}``)."""
        return not self.requirements

    def matches(self, labels: Mapping[str, Any]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    def evaluate(self, labels: Mapping[str, Any], known: KnownFn) -> bool | None:
        """Three-valued match: False if a certain key fails, None if only unknown keys remain."""
        unknown = False
        for r in self.requirements:
            if not known(r.key):
                unknown = True
            elif not r.matches(labels):
                return False
        return None if unknown else True

    def keys(self) -> frozenset[str]:
        return frozenset(r.key for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def _strip(key: Any, prefixes: Sequence[str]) -> Any:
    if isinstance(key, str):
        for prefix in prefixes:
            if key.startswith(prefix):
                return key[len(prefix):]
    return key


def _expression(expr: Any, index: int, strict: bool, key_prefixes: Sequence[str] = ()) -> Requirement:
    where = f"matchExpressions[{index}]"
    if not isinstance(expr, Mapping):
        raise SelectorError(f"{where} must be a mapping")
    key, op, values = _strip(expr.get("key"), key_prefixes), expr.get("operator"), expr.get("values")
    if not _valid_key(key, strict):
        raise SelectorError(f"{where}: invalid label key {key!r}")
    if op not in OPERATORS:
        raise SelectorError(f"{where}: {op!r} is not a valid label selector operator")
    if values is None:
        values = []
    if not isinstance(values, list):
        raise SelectorError(f"{where}: values must be a list")
    if op in ("In", "NotIn") and not values:
        raise SelectorError(f"{where}: values must be non-empty for operator {op}")
    if op in ("Exists", "DoesNotExist") and values:
        raise SelectorError(f"{where}: values must be empty for operator {op}")
    for v in values:
        if not _valid_value(v, strict):
            raise SelectorError(f"{where}: invalid label value {v!r}")
    return Requirement(str(key), op, tuple(sorted(set(values))))


def selector_matches(raw: Any, labels: Mapping[str, Any]) -> bool:
    """Parse and match in one call; raises SelectorError for an invalid selector."""
    return LabelSelector.parse(raw).matches(labels)


def selects(raw: Any, labels: Mapping[str, Any]) -> bool:
    """Does a selector the API server would admit match ``labels``? Invalid selectors match nothing.

    Hot path of per-workload checks: a matchLabels entry the object lacks decides the answer
    (False whether or not the rest is valid) before any parsing or validation.
    """
    if type(raw) is dict:
        match_labels = raw.get("matchLabels")
        if type(match_labels) is dict:
            for key, value in match_labels.items():
                if labels.get(key) != value or type(value) is not str:
                    return False
    try:
        return LabelSelector.parse(raw).matches(labels)
    except SelectorError:
        return False


def namespace_labels(name: str, labels: Mapping[str, Any]) -> dict[str, Any]:
    """A namespace's labels as selectors see them, with the name label synthesized."""
    out = dict(labels)
    out[NAMESPACE_NAME_LABEL] = name
    return out


# --- Calico selector expressions --------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:(?P<op>&&|\|\||==|!=|[!(){},])|(?P<str>"[^"]*"|'[^']*')|(?P<word>[A-Za-z0-9_./\-]+))"""
)


@dataclass(frozen=True, slots=True)
class _Node:
    """One node of a Calico selector AST: ``kind`` decides which other fields matter."""

    kind: str  # all | global | has | eq | ne | in | notin | contains | starts | ends | not | and | or
    key: str = ""
    values: tuple[str, ...] = ()
    children: tuple[_Node, ...] = ()


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise SelectorError(f"calico selector: unexpected character at {pos}: {text[pos:pos + 10]!r}")
        out.append(m.group("op") or m.group("str") or m.group("word"))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.pos = 0

    def peek(self, offset: int = 0) -> str | None:
        i = self.pos + offset
        return self.toks[i] if i < len(self.toks) else None

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (expected is not None and tok != expected):
            want = expected or "more input"
            raise SelectorError(f"calico selector {self.text!r}: expected {want}, got {tok!r}")
        self.pos += 1
        return tok

    def string(self) -> str:
        tok = self.take()
        if len(tok) < 2 or tok[0] not in "'\"" or tok[-1] != tok[0]:
            raise SelectorError(f"calico selector {self.text!r}: expected a quoted string, got {tok!r}")
        return tok[1:-1]

    def parse(self) -> _Node:
        if not self.toks:
            return _Node("all")
        node = self.or_()
        if self.peek() is not None:
            raise SelectorError(f"calico selector {self.text!r}: unexpected {self.peek()!r}")
        return node

    def or_(self) -> _Node:
        parts = [self.and_()]
        while self.peek() == "||":
            self.take()
            parts.append(self.and_())
        return parts[0] if len(parts) == 1 else _Node("or", children=tuple(parts))

    def and_(self) -> _Node:
        parts = [self.unary()]
        while self.peek() == "&&":
            self.take()
            parts.append(self.unary())
        return parts[0] if len(parts) == 1 else _Node("and", children=tuple(parts))

    def unary(self) -> _Node:
        if self.peek() == "!":
            self.take()
            return _Node("not", children=(self.unary(),))
        return self.primary()

    def primary(self) -> _Node:
        tok = self.take()
        if tok == "(":
            node = self.or_()
            self.take(")")
            return node
        if tok in ("all", "global") and self.peek() == "(":
            self.take("(")
            self.take(")")
            return _Node(tok)
        if tok == "has" and self.peek() == "(":
            self.take("(")
            key = self.take()
            self.take(")")
            return _Node("has", key)
        if not re.fullmatch(r"[A-Za-z0-9_./\-]+", tok):
            raise SelectorError(f"calico selector {self.text!r}: expected a label key, got {tok!r}")
        return self.comparison(tok)

    def comparison(self, key: str) -> _Node:
        op = self.take()
        if op in ("==", "!="):
            return _Node("eq" if op == "==" else "ne", key, (self.string(),))
        if op == "in":
            return _Node("in", key, self.set_())
        if op == "not":
            self.take("in")
            return _Node("notin", key, self.set_())
        if op == "contains":
            return _Node("contains", key, (self.string(),))
        if op in ("starts", "ends"):
            self.take("with")
            return _Node(op, key, (self.string(),))
        raise SelectorError(f"calico selector {self.text!r}: unknown operator {op!r} after {key!r}")

    def set_(self) -> tuple[str, ...]:
        self.take("{")
        values: list[str] = []
        if self.peek() != "}":
            values.append(self.string())
            while self.peek() == ",":
                self.take(",")
                values.append(self.string())
        self.take("}")
        return tuple(values)


def _all(results: Iterator[bool | None], stop: bool) -> bool | None:
    """Kleene AND (stop=False) / OR (stop=True) over three-valued results."""
    unknown = False
    for r in results:
        if r is stop:
            return stop
        if r is None:
            unknown = True
    return None if unknown else not stop


@dataclass(frozen=True, slots=True)
class CalicoSelector:
    """A parsed Calico selector; the empty string means ``all()`` as in Calico's defaults."""

    text: str
    root: _Node

    @classmethod
    def parse(cls, text: Any) -> CalicoSelector:
        if text is None:
            text = ""
        if not isinstance(text, str):
            raise SelectorError(f"calico selector must be a string, got {type(text).__name__}")
        return cls(text, _Parser(text).parse())

    def matches(self, labels: Mapping[str, Any], *, is_global: bool = False) -> bool:
        return bool(self.evaluate(labels, lambda _k: True, is_global=is_global))

    def evaluate(self, labels: Mapping[str, Any], known: KnownFn, *, is_global: bool = False) -> bool | None:
        """Three-valued evaluation; ``is_global`` answers ``global()`` (non-namespaced subject)."""
        return self._evaluate(self.root, labels, known, is_global)

    def _evaluate(self, node: _Node, labels: Mapping[str, Any], known: KnownFn, is_global: bool) -> bool | None:
        kind = node.kind
        if kind == "all":
            return True
        if kind == "global":
            return is_global
        if kind == "not":
            inner = self._evaluate(node.children[0], labels, known, is_global)
            return None if inner is None else not inner
        if kind in ("and", "or"):
            return _all((self._evaluate(c, labels, known, is_global) for c in node.children), kind == "or")
        if not known(node.key):
            return None
        value = _label(labels, node.key)
        if kind == "has":
            return value is not None
        if kind in ("ne", "notin"):
            return value is None or value not in node.values
        if value is None:
            return False
        if kind in ("eq", "in"):
            return value in node.values
        if kind == "contains":
            return node.values[0] in value
        if kind == "starts":
            return value.startswith(node.values[0])
        return value.endswith(node.values[0])  # ends

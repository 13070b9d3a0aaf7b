"""Node segregation by security level (controls.md CFG-012; PCI DSS 2.2.3, A1.1.1; blog R2).

The blog's design: nodes carry a security level (label and a ``NoSchedule`` taint
``kubepci.io/security-level=<level>``), every pod states the level it requires, and admission
enforces it, so workloads of different security levels never share a kernel (PCI 2.2.3: one
primary function per server, or functions of different security levels isolated).

A pod's level is its namespace's ``kubepci.io/security-level`` label; a pod label with the same key
may state it too (it must then agree). Three things must hold: the pod *requires* nodes of its
level (nodeSelector or required node affinity, never a preference), it tolerates no other level's
taint, and a ``spec.nodeName`` that bypasses the scheduler names a node of its level.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from kubepci.checks._netpol import pod_labels_path
from kubepci.checks._registry import CheckContext, check
from kubepci.checks._util import mapping
from kubepci.inventory import NamespaceInfo, Workload
from kubepci.model import Scope, Severity, Violation
from kubepci.scope import SECURITY_LEVEL_LABEL

__all__: list[str] = []

_LEVEL = SECURITY_LEVEL_LABEL
_REQS = ("2.2.3", "A1.1.1")
_TERMS = "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms"


def _pod_level(wl: Workload) -> str | None:
    value = wl.pod_labels.get(_LEVEL)
    return value if isinstance(value, str) and value else None


def _level(wl: Workload, ctx: CheckContext) -> str | None:
    """The level the pod must run at: its namespace's, else the one its own label states."""
    return ctx.scope.security_levels.get(wl.namespace) or _pod_level(wl)


def _term_requires(term: Any, level: str) -> bool:
    """A nodeSelectorTerm pins the level only with ``key In [level]`` (no other value)."""
    for expr in mapping(term).get("matchExpressions") or []:
        expr = mapping(expr)
        values = expr.get("values")
        if (
            expr.get("key") == _LEVEL
            and expr.get("operator") == "In"
            and isinstance(values, list)
            and values
            and all(v == level for v in values)
        ):
            return True
    return False


@check(
    id="node-security-level-affinity",
    title="Pods must require nodes of their security level",
    requirements=_REQS,
    blog=("R2",),
    severity=Severity.HIGH,
    targets=("workload",),
    remediation="Set nodeSelector kubepci.io/security-level to the namespace's security level.",
    refs=("CFG-012",),
)
def security_level_affinity(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """Only a hard requirement keeps the scheduler from placing the pod on a node of another level:
    preferred affinity is a hint, and required terms are ORed, so every term must pin the level."""
    ns_level = ctx.scope.security_levels.get(wl.namespace)
    pod_level = _pod_level(wl)
    if ns_level and pod_level and ns_level != pod_level:
        yield Violation(
            f"pod label {_LEVEL}={pod_level!r} contradicts the namespace's security level {ns_level!r}",
            pod_labels_path(wl),
        )
    level = ns_level or pod_level
    if not level:
        return
    selector = mapping(wl.pod_spec.get("nodeSelector"))
    if _LEVEL in selector:
        if selector[_LEVEL] != level:
            yield Violation(
                f"nodeSelector requires {_LEVEL}={selector[_LEVEL]!r} but the pod's security level is"
                f" {level!r}",
                wl.spec_field("nodeSelector"),
            )
        return  # nodeSelector and affinity are ANDed: affinity cannot widen a correct selector
    required = mapping(mapping(mapping(wl.pod_spec.get("affinity")).get("nodeAffinity")).get(
        "requiredDuringSchedulingIgnoredDuringExecution"))
    terms = required.get("nodeSelectorTerms")
    if not (isinstance(terms, list) and terms):
        yield Violation(
            f"pod does not require nodes of security level {level!r}: no nodeSelector {_LEVEL} and no"
            " required node affinity on it",
            wl.spec_field("nodeSelector"),
        )
        return
    for i, term in enumerate(terms):
        if not _term_requires(term, level):
            yield Violation(
                f"nodeSelectorTerms[{i}] lacks {_LEVEL} In [{level}]; terms are ORed, so it admits nodes"
                " of any security level",
                wl.spec_field(f"{_TERMS}[{i}]"),
            )


def _tolerated_levels(tol: Mapping[str, Any]) -> tuple[str, str | None] | None:
    """Which security-level taints a toleration admits (upstream ToleratesTaint): (description, the one
    level or None for every level), or None when it admits no level taint."""
    effect = tol.get("effect") or ""
    if effect not in ("", "NoSchedule"):
        return None
    key = tol.get("key") or ""
    operator = tol.get("operator") or "Equal"
    if key == "":
        if operator == "Exists":
            return "every taint, the security-level taints of all levels included", None
        return None
    if key != _LEVEL:
        return None
    if operator == "Exists":
        return f"{_LEVEL} taints of every level", None
    value = tol.get("value")
    if operator == "Equal" and isinstance(value, str) and value:
        return f"{_LEVEL}={value}", value
    return None  # an empty value tolerates no level's taint; other operators are invalid


def _cde_level(ctx: CheckContext, level: str | None) -> bool:
    """Is ``level`` (None: any level) the security level of a CDE namespace? Evaluated only for the
    rare pod without a level that still reaches for level-tainted nodes."""
    return any(
        (level is None or lvl == level) and ctx.scope.of_namespace(ns) is Scope.CDE
        for ns, lvl in ctx.scope.security_levels.items()
    )


@check(
    id="node-security-level-tolerations",
    title="Pods must tolerate only their own security level",
    requirements=_REQS,
    blog=("R2",),
    severity=Severity.HIGH,
    targets=("workload",),
    remediation="Tolerate kubepci.io/security-level only with operator Equal and the pod's own level.",
    refs=("CFG-012",),
)
def security_level_tolerations(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """The NoSchedule taint is what keeps other workloads off a level's nodes; a toleration of another
    level, an ``Exists`` on the key or a blanket ``operator: Exists`` walks through it. A pod without a
    level (every pod must run somewhere, and nodes may all carry levels) fails only when it tolerates
    the level of a CDE namespace, so it could land on CDE nodes."""
    level = _level(wl, ctx)
    if not level and not ctx.scope.security_levels:
        return
    tolerations = wl.pod_spec.get("tolerations")
    if not isinstance(tolerations, list):
        return
    for i, tol in enumerate(tolerations):
        if not isinstance(tol, Mapping):
            continue
        admits = _tolerated_levels(tol)
        if admits is None:
            continue
        what, value = admits
        if level:
            if value != level:
                yield Violation(f"pod with security level {level!r} tolerates {what}",
                                wl.spec_field(f"tolerations[{i}]"))
        elif _cde_level(ctx, value):
            yield Violation(f"pod with no security level tolerates {what}, so it can be scheduled onto CDE nodes",
                            wl.spec_field(f"tolerations[{i}]"))


@check(
    id="node-security-level-nodename",
    title="Pods pinned to a node must match its security level",
    requirements=_REQS,
    blog=("R2",),
    severity=Severity.HIGH,
    targets=("workload",),
    remediation="Remove spec.nodeName or name a node labelled with the pod's security level.",
    refs=("CFG-012",),
)
def security_level_nodename(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """``spec.nodeName`` skips the scheduler and with it every NoSchedule taint, so it must name a node
    of the pod's own level; a pod without a level must not be pinned to a node of a CDE level. With no
    nodes in the inventory the level cannot be known and the check passes; with nodes known, an
    unknown node name is a finding for a pod that has a level."""
    node_name = wl.pod_spec.get("nodeName")
    if not isinstance(node_name, str) or not node_name:
        return
    level = _level(wl, ctx)
    path = wl.spec_field("nodeName")
    node = ctx.inventory.nodes.get(node_name)
    if node is None:
        if level and ctx.inventory.nodes:
            yield Violation(f"nodeName {node_name!r} is an unknown node, so its security level cannot be"
                            f" confirmed as {level!r}", path)
        return
    node_level = node.labels.get(_LEVEL)
    node_level = node_level if isinstance(node_level, str) and node_level else None
    if level and node_level != level:
        has = f"security level {node_level!r}" if node_level else "no security level"
        yield Violation(f"pod of security level {level!r} is pinned to node {node_name!r} which has {has}",
                        path)
    elif not level and node_level and _cde_level(ctx, node_level):
        yield Violation(
            f"pod without a security level is pinned to node {node_name!r} of security level"
            f" {node_level!r}, which CDE namespaces use",
            path,
        )


@check(
    id="node-security-level-namespace-label",
    title="CDE namespaces must declare a security level",
    requirements=_REQS,
    blog=("R2",),
    severity=Severity.MEDIUM,
    targets=("namespace",),
    remediation="Label the namespace with kubepci.io/security-level naming the node pool it must run on.",
    applies_to="cde",
    refs=("CFG-012",),
    cel=(
        "has(object.metadata.labels) && 'kubepci.io/security-level' in object.metadata.labels && "
        "object.metadata.labels['kubepci.io/security-level'] != ''"
    ),
)
def security_level_namespace_label(ns: NamespaceInfo, ctx: CheckContext) -> Iterator[Violation]:
    """Without a level the node-segregation checks have nothing to enforce for the namespace's pods,
    and CDE pods could share nodes with anything."""
    if not ctx.scope.security_levels.get(ns.name):
        yield Violation(f"CDE namespace {ns.name!r} declares no {_LEVEL} label", "metadata.labels")

"""Which namespaces and workloads are CDE, connected-to, out of scope or exempt.

Precedence (most specific wins): the namespace's own ``kubepci.io/scope`` label, then the
namespace lists in kubepci.yaml, then the label selectors there. A workload's pod label may only
*narrow* its namespace's scope (CDE -> connected -> out-of-scope), never widen it: a team cannot
pull a CDE workload out of the CDE's controls by relabelling it upwards, and a label meant to
shrink scope must be an explicit, reviewable statement.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from kubepci.config import Config, ScopeRule
from kubepci.inventory import Inventory, Workload
from kubepci.model import Resource, Scope

__all__ = ["SCOPE_LABEL", "SECURITY_LEVEL_LABEL", "ScopeMap", "compute_scope"]

SCOPE_LABEL = "kubepci.io/scope"
SECURITY_LEVEL_LABEL = "kubepci.io/security-level"

_BY_LABEL = {"cde": Scope.CDE, "connected": Scope.CONNECTED, "out-of-scope": Scope.OUT_OF_SCOPE,
             "exempt": Scope.EXEMPT}
_NARROWNESS = {Scope.CDE: 0, Scope.CONNECTED: 1, Scope.OUT_OF_SCOPE: 2}


def _matches(rule: ScopeRule, name: str, labels: Mapping[str, str]) -> bool:
    if name in rule.namespaces:
        return True
    return bool(rule.selector) and all(labels.get(k) == v for k, v in rule.selector.items())


@dataclass(frozen=True, slots=True)
class ScopeMap:
    """Scope per namespace (and the security level per namespace), computed once per run."""

    namespaces: Mapping[str, Scope] = field(default_factory=dict)
    reasons: Mapping[str, str] = field(default_factory=dict)
    security_levels: Mapping[str, str] = field(default_factory=dict)

    def of_namespace(self, namespace: str) -> Scope:
        if not namespace:
            return Scope.CLUSTER
        return self.namespaces.get(namespace, Scope.UNCLASSIFIED)

    def of_resource(self, resource: Resource) -> Scope:
        return self.of_namespace(resource.namespace)

    def of_workload(self, workload: Workload) -> Scope:
        base = self.of_namespace(workload.namespace)
        label = workload.pod_labels.get(SCOPE_LABEL) or workload.resource.labels.get(SCOPE_LABEL)
        narrowed = _BY_LABEL.get(label) if isinstance(label, str) else None
        if narrowed in _NARROWNESS and base in _NARROWNESS and _NARROWNESS[narrowed] > _NARROWNESS[base]:
            return narrowed
        return base

    def cde_namespaces(self) -> tuple[str, ...]:
        return tuple(sorted(n for n, s in self.namespaces.items() if s is Scope.CDE))

    def summary(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for name, scope in sorted(self.namespaces.items()):
            out.setdefault(scope.value, []).append(name)
        return out


def compute_scope(inventory: Inventory, config: Config) -> ScopeMap:
    scopes: dict[str, Scope] = {}
    reasons: dict[str, str] = {}
    levels: dict[str, str] = {}
    names = set(inventory.namespaces) | set(config.cde.namespaces) | set(config.connected.namespaces)
    for name in sorted(names):
        info = inventory.namespaces.get(name)
        labels: Mapping[str, str] = info.labels if info else {}
        label = labels.get(SCOPE_LABEL)
        level = labels.get(SECURITY_LEVEL_LABEL)
        if isinstance(level, str) and level:
            levels[name] = level
        if isinstance(label, str) and label in _BY_LABEL:
            scopes[name], reasons[name] = _BY_LABEL[label], f"label {SCOPE_LABEL}={label}"
            continue
        for rule, scope, what in (
            (config.exempt, Scope.EXEMPT, "exempt"),
            (config.cde, Scope.CDE, "cde"),
            (config.connected, Scope.CONNECTED, "connected"),
            (config.out_of_scope, Scope.OUT_OF_SCOPE, "out_of_scope"),
        ):
            if _matches(rule, name, labels):
                scopes[name], reasons[name] = scope, f"{config.source}: scope.{what}"
                break
        else:
            scopes[name], reasons[name] = Scope.UNCLASSIFIED, "not classified by label or config"
    return ScopeMap(scopes, reasons, levels)

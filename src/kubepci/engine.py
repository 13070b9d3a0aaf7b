"""The one engine every enforcement point calls (DESIGN.md "One engine").

``evaluate`` runs each check over the targets it declares, applies scope, and turns a body's
violations into FAIL findings, silence into a recorded PASS, and an exception into an ERROR
finding for that pair: a crashing check never aborts a run and never passes silently.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kubepci.analyzers import standard_analyzers
from kubepci.checks._registry import Catalog, Check, CheckContext
from kubepci.config import Config
from kubepci.inventory import Inventory, NamespaceInfo, Workload
from kubepci.model import (
    EnforcementPoint,
    Finding,
    Resource,
    ResourceRef,
    Scope,
    Severity,
    SourceLocation,
    Status,
)
from kubepci.scope import ScopeMap, compute_scope

__all__ = ["Evaluation", "evaluate", "iter_targets"]

ProgressFn = Callable[[int, int], None]

_IN_SCOPE = (Scope.CDE, Scope.CONNECTED)


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Raw engine output, before waivers."""

    findings: tuple[Finding, ...]
    passed: Mapping[str, tuple[ResourceRef, ...]]
    evaluated: Mapping[str, int]
    skipped: Mapping[str, int]
    scope: ScopeMap
    checks: tuple[Check, ...] = field(default_factory=tuple)


def iter_targets(views: Sequence[str], inventory: Inventory) -> Iterator[tuple[Any, Resource]]:
    """(target object handed to the body, resource the finding is about) for target views."""
    seen: set[int] = set()
    for view in views:
        if view == "workload":
            for wl in inventory.workloads:
                if not wl.owned:  # judged on its controller, not once per ReplicaSet and Pod
                    yield wl, wl.resource
        elif view == "namespace":
            for info in inventory.namespaces.values():
                yield info, info.resource
        elif view == "inventory":
            anchor = Resource(ResourceRef("", "Cluster", "inventory"), {}, SourceLocation("(inventory)"), True)
            yield inventory, anchor
        elif view == "*":
            for r in inventory.resources:
                if id(r) not in seen:
                    seen.add(id(r))
                    yield r, r
        else:
            for r in inventory.of_kind(view):
                if id(r) not in seen:
                    seen.add(id(r))
                    yield r, r


def _scope_of(target: Any, resource: Resource, scope: ScopeMap) -> Scope:
    if isinstance(target, Workload):
        return scope.of_workload(target)
    if isinstance(target, NamespaceInfo):
        return scope.of_namespace(target.name)
    return scope.of_resource(resource)


def _allowed_scopes(check: Check) -> frozenset[Scope]:
    meta = check.meta
    if meta.applies_to == "cde":
        allowed = {Scope.CDE}
    elif meta.applies_to == "in-scope":
        allowed = set(_IN_SCOPE)
    else:
        allowed = set(Scope)
    if not meta.include_exempt:
        allowed.discard(Scope.EXEMPT)
    return frozenset(allowed)


class _Targets:
    """Targets per check with their scope, computed once per view and shared by every check."""

    def __init__(self, inventory: Inventory, scope: ScopeMap) -> None:
        self._inventory = inventory
        self._scope = scope
        self._by_view: dict[str, list[tuple[Any, Resource, Scope]]] = {}
        self._filtered: dict[tuple[tuple[str, ...], frozenset[Scope], Callable[[Any], bool] | None],
                             tuple[list[tuple[Any, Resource, Scope]], int]]
        self._filtered = {}

    def _view(self, view: str) -> list[tuple[Any, Resource, Scope]]:
        cached = self._by_view.get(view)
        if cached is None:
            cached = [(t, r, _scope_of(t, r, self._scope)) for t, r in iter_targets((view,), self._inventory)]
            self._by_view[view] = cached
        return cached

    def of(self, check: Check) -> list[tuple[Any, Resource, Scope]]:
        views = check.meta.targets
        if len(views) == 1:
            return self._view(views[0])
        return self._combined(views)

    def in_scope(self, check: Check, allowed: frozenset[Scope]) -> tuple[list[tuple[Any, Resource, Scope]], int]:
        """The check's targets whose scope is allowed (cached per views x scopes), and how many were skipped."""
        where = check.meta.where
        key = (check.meta.targets, allowed, where)
        hit = self._filtered.get(key)
        if hit is None:
            every = self.of(check)
            kept = [t for t in every if t[2] in allowed and (where is None or where(t[0]))]
            hit = (kept, len(every) - len(kept))
            self._filtered[key] = hit
        return hit

    def _combined(self, views: tuple[str, ...]) -> list[tuple[Any, Resource, Scope]]:
        seen: set[int] = set()
        out = []
        for view in views:
            special = view in ("workload", "namespace", "inventory")
            for item in self._view(view):
                if special:
                    out.append(item)
                elif id(item[1]) not in seen:
                    seen.add(id(item[1]))
                    out.append(item)
        return out


def evaluate(
    catalog: Catalog,
    inventory: Inventory,
    config: Config,
    *,
    scope: ScopeMap | None = None,
    point: EnforcementPoint = EnforcementPoint.SCAN,
    now: datetime | None = None,
    analyzers: Mapping[str, Any] | None = None,
    progress: ProgressFn | None = None,
) -> Evaluation:
    """Run every enabled check over its targets; findings come back sorted."""
    scope_map = scope if scope is not None else compute_scope(inventory, config)
    if analyzers is None:  # lazy: a model is computed only if a check asks for it
        analyzers = standard_analyzers(inventory, config)
    ctx = CheckContext(inventory, scope_map, config, point, now, analyzers)
    active = [c for c in catalog if config.checks.get(c.id) is None or config.checks[c.id].enabled]
    if point is EnforcementPoint.ADMISSION:
        active = [c for c in active if c.meta.admission]
    targets = _Targets(inventory, scope_map)
    findings, passed, evaluated, skipped = _run_checks(active, targets, ctx, progress)
    findings.sort(key=Finding.sort_key)
    return Evaluation(tuple(findings), passed, evaluated, skipped, scope_map, tuple(active))


_Result = tuple[list[Finding], dict[str, tuple[ResourceRef, ...]], dict[str, int], dict[str, int]]


def _run_checks(active: Sequence[Check], targets: _Targets, ctx: CheckContext,
                progress: ProgressFn | None = None) -> _Result:
    config, point = ctx.config, ctx.point
    findings: list[Finding] = []
    passed: dict[str, tuple[ResourceRef, ...]] = {}
    evaluated: dict[str, int] = {}
    skipped: dict[str, int] = {}
    for index, chk in enumerate(active):
        override = config.checks.get(chk.id)
        severity: Severity = override.severity if override and override.severity else chk.meta.severity
        reqs = chk.meta.requirements
        body = chk.body
        ok: list[ResourceRef] = []
        in_scope, n_skip = targets.in_scope(chk, _allowed_scopes(chk))
        for target, resource, target_scope in in_scope:
            try:
                violations = list(body(target, ctx))
            except Exception as exc:  # a broken check must surface as ERROR, never abort the run
                where = traceback.extract_tb(exc.__traceback__)[-1]
                findings.append(Finding(
                    chk.id, resource.ref, Status.ERROR, severity,
                    f"check raised {type(exc).__name__}: {exc} (at {where.name}:{where.lineno})", "",
                    reqs, target_scope, resource.location, point,
                ))
                continue
            if not violations:
                ok.append(resource.ref)
                continue
            for v in violations:
                findings.append(Finding(
                    chk.id, resource.ref, Status.FAIL, severity, v.message, v.path, reqs, target_scope,
                    resource.location, point,
                ))
        passed[chk.id] = tuple(ok)
        evaluated[chk.id] = len(in_scope)
        skipped[chk.id] = n_skip
        if progress is not None:
            progress(index + 1, len(active))
    return findings, passed, evaluated, skipped

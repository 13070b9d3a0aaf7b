"""The one engine every enforcement point calls (DESIGN.md "One engine").

``evaluate`` runs each check over the targets it declares, applies scope, and turns a body's
violations into FAIL findings, silence into a recorded PASS, and an exception into an ERROR
finding for that pair: a crashing check never aborts a run and never passes silently.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

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


def iter_targets(check: Check, inventory: Inventory) -> Iterator[tuple[Any, Resource]]:
    """(target object handed to the body, resource the finding is about) for one check."""
    seen: set[int] = set()
    for token in check.meta.targets:
        if token == "workload":
            for wl in inventory.workloads:
                yield wl, wl.resource
        elif token == "namespace":
            for info in inventory.namespaces.values():
                yield info, info.resource
        elif token == "inventory":
            anchor = Resource(ResourceRef("", "Cluster", "inventory"), {}, SourceLocation("(inventory)"), True)
            yield inventory, anchor
        elif token == "*":
            for r in inventory.resources:
                if id(r) not in seen:
                    seen.add(id(r))
                    yield r, r
        else:
            for r in inventory.of_kind(token):
                if id(r) not in seen:
                    seen.add(id(r))
                    yield r, r


def _scope_of(target: Any, resource: Resource, scope: ScopeMap) -> Scope:
    if isinstance(target, Workload):
        return scope.of_workload(target)
    if isinstance(target, NamespaceInfo):
        return scope.of_namespace(target.name)
    return scope.of_resource(resource)


def _applies(check: Check, target_scope: Scope) -> bool:
    meta = check.meta
    if target_scope is Scope.EXEMPT and not meta.include_exempt:
        return False
    if meta.applies_to == "cde":
        return target_scope is Scope.CDE
    if meta.applies_to == "in-scope":
        return target_scope in _IN_SCOPE
    return True


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
    scope_map = scope if scope is not None else compute_scope(inventory, config)
    ctx = CheckContext(inventory, scope_map, config, point, now, analyzers or {})
    findings: list[Finding] = []
    passed: dict[str, tuple[ResourceRef, ...]] = {}
    evaluated: dict[str, int] = {}
    skipped: dict[str, int] = {}
    active = [c for c in catalog if config.checks.get(c.id) is None or config.checks[c.id].enabled]
    if point is EnforcementPoint.ADMISSION:
        active = [c for c in active if c.meta.admission]
    for index, chk in enumerate(active):
        override = config.checks.get(chk.id)
        severity: Severity = override.severity if override and override.severity else chk.meta.severity
        reqs = chk.meta.requirements
        ok: list[ResourceRef] = []
        n_eval = n_skip = 0
        for target, resource in iter_targets(chk, inventory):
            target_scope = _scope_of(target, resource, scope_map)
            if not _applies(chk, target_scope):
                n_skip += 1
                continue
            n_eval += 1
            try:
                violations = list(chk.body(target, ctx))
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
        evaluated[chk.id] = n_eval
        skipped[chk.id] = n_skip
        if progress is not None:
            progress(index + 1, len(active))
    findings.sort(key=Finding.sort_key)
    return Evaluation(tuple(findings), passed, evaluated, skipped, scope_map, tuple(active))

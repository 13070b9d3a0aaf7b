"""From an inventory to a Report: engine, waivers, requirement verdicts, exit code.

Pure: the caller loads inputs and passes the clock, so the same inputs give the same bytes.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kubepci import __version__
from kubepci.analyzers import LazyAnalyzers, standard_analyzers
from kubepci.checks._registry import Catalog
from kubepci.config import Config
from kubepci.engine import Evaluation, evaluate
from kubepci.inventory import Inventory
from kubepci.model import Finding, Severity, Status
from kubepci.model.report import Report, RequirementResult, RunMetadata, Verdict
from kubepci.requirements import RequirementTree
from kubepci.scope import ScopeMap
from kubepci.waivers import Waiver, apply_waivers

__all__ = ["assess", "exit_code_for", "requirement_results", "segmentation_evidence"]


def exit_code_for(findings: Sequence[Finding], fail_on: Severity | None) -> int:
    """1 when an unwaived FAIL or ERROR is at or above ``fail_on``; ``None`` never fails."""
    if fail_on is None:
        return 0
    for f in findings:
        if f.status in (Status.FAIL, Status.ERROR) and f.severity >= fail_on:
            return 1
    return 0


def requirement_results(
    tree: RequirementTree,
    catalog: Catalog,
    findings: Sequence[Finding],
    evaluation: Evaluation,
) -> tuple[RequirementResult, ...]:
    """One result per requirement; a parent aggregates the checks cited on it and below it."""
    direct = catalog.by_requirement()
    per_check: dict[str, Counter[str]] = {c.id: Counter() for c in catalog}
    for f in findings:
        if f.check_id in per_check:
            per_check[f.check_id][f.status.value] += 1
    out: list[RequirementResult] = []
    principal_ids = {r.id for r in tree.principal()}
    for req in tree.ordered():
        ids: set[str] = set(direct.get(req.id, ()))
        for d in tree.descendants(req.id):
            ids.update(direct.get(d.id, ()))
        check_ids = tuple(sorted(i for i in ids if i in per_check))
        failed = sum(per_check[i][Status.FAIL.value] for i in check_ids)
        errors = sum(per_check[i][Status.ERROR.value] for i in check_ids)
        waived = sum(per_check[i][Status.WAIVED.value] for i in check_ids)
        passed = sum(len(evaluation.passed.get(i, ())) for i in check_ids)
        evaluated = sum(evaluation.evaluated.get(i, 0) for i in check_ids)
        if req.status == "not-applicable":
            verdict = Verdict.NOT_APPLICABLE
        elif req.status == "inherited" and not check_ids:
            verdict = Verdict.INHERITED
        elif failed:
            verdict = Verdict.FAIL
        elif errors:
            verdict = Verdict.ERROR
        elif req.status == "manual" or not check_ids:
            verdict = Verdict.MANUAL
        elif evaluated == 0:
            verdict = Verdict.NOT_TESTED
        elif req.status == "automated":
            verdict = Verdict.PASS
        else:
            verdict = Verdict.PARTIAL
        out.append(RequirementResult(
            req.id, req.title, req.status, req.blog, req.v3_2_1, verdict, check_ids,
            failed, passed, waived, errors, req.id in principal_ids,
        ))
    return tuple(out)


_POLICY_KINDS = ("NetworkPolicy", "AdminNetworkPolicy", "BaselineAdminNetworkPolicy")


def segmentation_evidence(inventory: Inventory, scope: ScopeMap, analyzers: Mapping[str, object],
                          ) -> Mapping[str, Any] | None:
    """CDE segmentation evidence, when the run analysed reachability (a check computed the netpol
    model) or the inventory has policies to analyse; None otherwise, so a scan that needs no
    reachability never pays for it."""
    if "netpol" not in analyzers or not scope.cde_namespaces():
        return None  # the evidence is about the CDE; without one there is nothing to prove
    computed = analyzers.computed("netpol") if isinstance(analyzers, LazyAnalyzers) else True
    if not computed and not any(inventory.of_kind(kind) for kind in _POLICY_KINDS):
        return None
    from kubepci.analyzers.netpol import NetpolModel
    from kubepci.checks._segmentation import segmentation_of
    from kubepci.checks._segmentation_evidence import evidence_of
    from kubepci.reporters.segmentation import to_dict

    model = analyzers["netpol"]
    if not isinstance(model, NetpolModel):
        return None
    return to_dict(evidence_of(segmentation_of(model, scope, inventory)))


def assess(
    inventory: Inventory,
    config: Config,
    catalog: Catalog,
    tree: RequirementTree,
    *,
    now: dt.datetime,
    waivers: Sequence[Waiver] = (),
    fail_on: Severity | None = Severity.LOW,
    progress: Callable[[int, int], None] | None = None,
    analyzers: Mapping[str, object] | None = None,
) -> Report:
    if analyzers is None:
        analyzers = standard_analyzers(inventory, config)
    evaluation = evaluate(catalog, inventory, config, now=now, progress=progress, analyzers=analyzers)
    outcome = apply_waivers(evaluation.findings, waivers, now.date(), inventory)
    findings = outcome.findings
    counts = Counter(f.status.value for f in findings)
    counts[Status.PASS.value] = sum(len(v) for v in evaluation.passed.values())
    metadata = RunMetadata(
        tool_version=__version__,
        catalog_digest=catalog.digest(),
        catalog_size=len(catalog),
        generated_at=now.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
        inputs=inventory.inputs,
        config_source=config.source,
        fail_on=fail_on.label if fail_on is not None else "none",
        resources=len(inventory.resources),
        standard=tree.standard,
        standard_version=tree.version,
    )
    scope_summary = {k: tuple(v) for k, v in evaluation.scope.summary().items()}
    return Report(
        metadata=metadata,
        findings=findings,
        passed=evaluation.passed,
        checks=tuple(c.meta for c in evaluation.checks),
        requirements=requirement_results(tree, catalog, findings, evaluation),
        scope=scope_summary,
        unreadable=inventory.unreadable,
        waivers=outcome.waivers,
        waivers_expired=outcome.expired,
        waivers_unused=outcome.unused,
        waiver_requests=outcome.requests,
        exit_code=exit_code_for(findings, fail_on),
        counts=dict(sorted(counts.items())),
        segmentation=segmentation_evidence(inventory, evaluation.scope, analyzers),
    )

"""One admission decision: the object under review + a cached snapshot → the same engine a scan runs.

Pure: no clock, no I/O, no globals. The caller passes the time (waiver expiry depends on it)
and the snapshot; the same inputs give the same :class:`Decision`, which is what lets a test,
the background audit and an auditor replaying the trail agree with the webhook.

What each failing check does depends on its enforcement action (the check's default, or the
``checks.<id>.enforcement`` override in kubepci.yaml): ``deny`` refuses the object with a message
naming the check, the field and the fix; ``warn`` admits it and returns a warning that kubectl
prints; ``audit`` admits it silently and records an audit annotation. A live waiver turns a
failure into WAIVED exactly as in a scan; an expired one does not, and the message says so.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from kubepci.admission.cache import Snapshot
from kubepci.admission.review import AdmissionRequest, encode_response, request_resource
from kubepci.checks._registry import Catalog, CheckMeta
from kubepci.config import Config
from kubepci.engine import evaluate
from kubepci.inventory import WORKLOAD_KINDS, Inventory, NamespaceInfo
from kubepci.model import Enforcement, EnforcementPoint, Finding, Resource, ResourceRef, Scope, Status
from kubepci.scope import SECURITY_LEVEL_LABEL, ScopeMap, compute_scope
from kubepci.waivers import Waiver, apply_waivers

__all__ = ["Decision", "Policy", "Reason", "admission_inventory", "decide"]

#: shown at most in one denial message; the rest are counted (the apiserver prints it on one line)
MAX_REASONS_IN_MESSAGE = 10
_ANNOTATION_NAME_MAX = 63


@dataclass(frozen=True, slots=True)
class Reason:
    """One failing (or waived, or erroring) check on the object under review."""

    check_id: str
    path: str
    message: str
    remediation: str
    enforcement: Enforcement
    status: Status
    waiver_id: str | None = None
    expired_waiver: str | None = None

    def text(self) -> str:
        where = f" {self.path}:" if self.path else ""
        expired = f" (waiver {self.expired_waiver} has expired)" if self.expired_waiver else ""
        fix = f" (fix: {self.remediation.rstrip('.')})" if self.remediation else ""
        return f"[{self.check_id}]{where} {self.message}{expired}{fix}"


@dataclass(frozen=True, slots=True)
class Policy:
    """Catalog + config + waivers, with the per-kind check selection precomputed once."""

    catalog: Catalog
    config: Config
    waivers: tuple[Waiver, ...] = ()
    _meta: Mapping[str, CheckMeta] = field(default_factory=dict, repr=False, compare=False)
    _modes: Mapping[str, Enforcement] = field(default_factory=dict, repr=False, compare=False)
    _by_kind: dict[str, Catalog] = field(default_factory=dict, repr=False, compare=False)
    _digest: str = field(default="", repr=False, compare=False)

    def __post_init__(self) -> None:
        meta = {c.id: c.meta for c in self.catalog}
        modes = {}
        for cid, m in meta.items():
            override = self.config.checks.get(cid)
            modes[cid] = override.enforcement if override and override.enforcement else m.enforcement
        object.__setattr__(self, "_meta", meta)
        object.__setattr__(self, "_modes", modes)
        object.__setattr__(self, "_digest", self.catalog.digest())

    def enforcement(self, check_id: str) -> Enforcement:
        return self._modes.get(check_id, Enforcement.DENY)

    def meta(self, check_id: str) -> CheckMeta | None:
        return self._meta.get(check_id)

    def checks_for(self, kind: str) -> Catalog:
        """The checks that can produce a finding about an object of ``kind``: the rest only cost time.

        A finding is always about the target a body received, so checks whose targets cannot be
        this object (other kinds, the namespace view for a Pod, the whole-inventory view) are dropped.
        """
        hit = self._by_kind.get(kind)
        if hit is None:
            views = {kind, "*"}
            if kind in WORKLOAD_KINDS:
                views.add("workload")
            if kind == "Namespace":
                views.add("namespace")
            hit = Catalog(tuple(c for c in self.catalog
                                if c.meta.admission and views.intersection(c.meta.targets)))
            self._by_kind[kind] = hit
        return hit

    @property
    def catalog_digest(self) -> str:
        """Names the exact catalog behind a decision, as a report's run metadata does."""
        return self._digest


@dataclass(frozen=True, slots=True)
class Decision:
    uid: str
    allowed: bool
    resource: ResourceRef | None
    operation: str
    dry_run: bool
    scope: Scope | None
    denied: tuple[Reason, ...] = ()
    warned: tuple[Reason, ...] = ()
    audited: tuple[Reason, ...] = ()
    waived: tuple[Reason, ...] = ()
    errors: tuple[Reason, ...] = ()
    message: str = ""
    skipped: str = ""  # why nothing was evaluated (DELETE, deletion in progress, no check applies)

    @property
    def decision_id(self) -> str:
        """The request uid: unique per admission call and present in the apiserver's audit event."""
        return self.uid

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(f"kubepci {r.text()}" for r in (*self.warned, *(e for e in self.errors if not self.denies(e))))

    def denies(self, reason: Reason) -> bool:
        return reason in self.denied

    def audit_annotations(self) -> dict[str, str]:
        """Keys are prefixed by the apiserver with the webhook name, so they stay short and '/'-free."""
        out = {"decision-id": self.uid, "decision": "allowed" if self.allowed else "denied"}
        if self.scope is not None:
            out["scope"] = self.scope.value
        for prefix, reasons in (("deny", self.denied), ("warn", self.warned), ("audit", self.audited),
                                ("waived", self.waived), ("error", self.errors)):
            grouped: dict[str, list[str]] = {}
            for r in reasons:
                detail = r.waiver_id if prefix == "waived" and r.waiver_id else f"{r.path}: {r.message}"
                grouped.setdefault(r.check_id, []).append(detail)
            for check_id, details in grouped.items():
                out[f"{prefix}.{check_id}"[:_ANNOTATION_NAME_MAX]] = " | ".join(details)
        return out

    def response(self) -> bytes:
        return encode_response(self.uid, self.allowed, message=self.message, warnings=self.warnings,
                               audit_annotations=self.audit_annotations())

    def record(self) -> dict[str, Any]:
        """What the log and the audit trail keep: ids, fields and outcomes, never object content."""
        ref = self.resource
        return {
            "decision_id": self.uid,
            "allowed": self.allowed,
            "dry_run": self.dry_run,
            "operation": self.operation,
            "kind": ref.kind if ref else "",
            "namespace": ref.namespace if ref else "",
            "name": ref.name if ref else "",
            "scope": self.scope.value if self.scope else "",
            "denied": [{"check": r.check_id, "path": r.path} for r in self.denied],
            "warned": [{"check": r.check_id, "path": r.path} for r in self.warned],
            "audited": [{"check": r.check_id, "path": r.path} for r in self.audited],
            "waived": [{"check": r.check_id, "path": r.path, "waiver": r.waiver_id} for r in self.waived],
            "errors": [{"check": r.check_id} for r in self.errors],
            "skipped": self.skipped,
        }


def _scope_for_namespace_object(snapshot: Snapshot, ns: Resource, config: Config) -> ScopeMap:
    """A Namespace under review is judged by its new labels, not by the cached old ones."""
    own = compute_scope(Inventory.build([ns]), config)
    base = snapshot.scope
    levels = dict(base.security_levels)
    levels.pop(ns.name, None)
    level = ns.labels.get(SECURITY_LEVEL_LABEL)
    if isinstance(level, str) and level:
        levels[ns.name] = level
    return ScopeMap(
        {**base.namespaces, ns.name: own.of_namespace(ns.name)},
        {**base.reasons, ns.name: own.reasons.get(ns.name, "")},
        levels,
    )


_BINDINGS = frozenset({"RoleBinding", "ClusterRoleBinding"})
_CLUSTER_CONTEXT = frozenset({"RuntimeClass", "ClusterRole"})


def admission_inventory(resource: Resource, snapshot: Snapshot) -> Inventory:
    """The one-object inventory: the object is the only target, the snapshot only answers lookups.

    Every view the engine iterates (resources, workloads, namespaces, the object's own kind) holds the
    object alone, so a namespace with a hundred NetworkPolicies does not make each review scan them
    all with ``*`` checks; the lookups checks make for context (``in_namespace``, ``of_kind`` of other
    kinds, ``nodes``) see the cached objects, with the object under review replacing its old version.
    The snapshot's per-namespace tuples are reused as they are: building this costs the same for a
    namespace with two policies or two hundred.
    """
    own = Inventory.build([resource])
    admitted = own.resources[0]
    namespace = admitted.name if admitted.kind == "Namespace" else admitted.namespace
    by_kind: dict[str, tuple[Resource, ...]] = dict(own.by_kind)
    by_ns_kind: dict[tuple[str, str], tuple[Resource, ...]] = dict(own.by_namespace_kind)
    namespaces = dict(own.namespaces)
    if admitted.kind != "Namespace":
        cached_ns = snapshot.namespaces.get(namespace)
        if cached_ns is not None:
            namespaces[namespace] = NamespaceInfo(namespace, cached_ns)  # its labels, not a synthetic stand-in
    context: list[tuple[str, tuple[Resource, ...]]] = [
        ("NetworkPolicy", snapshot.network_policies.get(namespace, ())),
        ("ServiceAccount", snapshot.service_accounts.get(namespace, ())),
        ("RuntimeClass", snapshot.runtime_classes)]
    if admitted.kind in _BINDINGS:  # the roles a binding may refer to; other reviews never read them
        context += [("Role", snapshot.roles.get(namespace, ())), ("ClusterRole", snapshot.cluster_roles)]
    for kind, cached in context:
        if kind == admitted.kind:  # the object under review replaces its cached old version
            cached = (admitted, *(r for r in cached if r.name != admitted.name))
        else:
            by_kind[kind] = cached
        if kind not in _CLUSTER_CONTEXT and cached:
            by_ns_kind[(namespace, kind)] = cached
    return replace(own, by_kind=by_kind, by_namespace_kind=by_ns_kind, namespaces=namespaces, nodes=snapshot.nodes)


def _object_scope(inventory: Inventory, scope_map: ScopeMap, admitted: ResourceRef) -> Scope:
    if admitted.kind == "Namespace":
        return scope_map.of_namespace(admitted.name)
    for wl in inventory.workloads:
        if wl.ref == admitted:
            return scope_map.of_workload(wl)  # a pod label may narrow its namespace's scope
    return scope_map.of_namespace(admitted.namespace)


def _error_denies(finding: Finding, config: Config) -> bool:
    """A crashing check follows the webhook's failure policy for the object's scope: closed in the CDE."""
    policy = config.failure_policy_cde if finding.scope is Scope.CDE else config.failure_policy_other
    return policy == "Fail"


def _message(resource: ResourceRef, denied: tuple[Reason, ...]) -> str:
    shown = "; ".join(r.text() for r in denied[:MAX_REASONS_IN_MESSAGE])
    more = len(denied) - MAX_REASONS_IN_MESSAGE
    tail = f"; and {more} more" if more > 0 else ""
    what = f"{resource.kind} {resource.namespace + '/' if resource.namespace else ''}{resource.name}"
    return f"kubepci denied {what} ({len(denied)} failing check{'s' if len(denied) != 1 else ''}): {shown}{tail}"


def decide(request: AdmissionRequest, snapshot: Snapshot, policy: Policy, *, now: dt.datetime) -> Decision:
    """Evaluate the object under review with every applicable check and turn findings into a verdict."""
    base = Decision(request.uid, True, None, request.operation, request.dry_run, None)
    if request.operation not in ("CREATE", "UPDATE"):
        return replace(base, skipped=f"{request.operation} is not evaluated")
    resource = request_resource(request)
    if resource is None:  # parse_review guarantees an object for CREATE/UPDATE; kept for direct callers
        return replace(base, skipped="no object")
    if resource.metadata.get("deletionTimestamp"):
        # finalizer removal on an object being deleted must never be blocked: it would wedge the deletion
        return replace(base, resource=resource.ref, skipped="object is being deleted")
    checks = policy.checks_for(resource.kind)
    scope_map = snapshot.scope
    if resource.kind == "Namespace":
        scope_map = _scope_for_namespace_object(snapshot, resource, policy.config)
    if not checks.checks:
        return replace(base, resource=resource.ref, skipped=f"no check applies to {resource.kind}")
    inventory = admission_inventory(resource, snapshot)
    admitted = inventory.resources[0].ref
    evaluation = evaluate(checks, inventory, policy.config, scope=scope_map, point=EnforcementPoint.ADMISSION,
                          now=now)
    mine = [f for f in evaluation.findings if f.resource == admitted]
    outcome = apply_waivers(mine, policy.waivers, now.date())
    expired = outcome.expired
    denied: list[Reason] = []
    warned: list[Reason] = []
    audited: list[Reason] = []
    waived: list[Reason] = []
    errors: list[Reason] = []
    for f in outcome.findings:
        meta = policy.meta(f.check_id)
        mode = policy.enforcement(f.check_id)
        remediation = meta.remediation if meta else ""
        if f.status is Status.WAIVED:
            waived.append(Reason(f.check_id, f.path, f.message, remediation, mode, f.status, f.waiver_id))
        elif f.status is Status.ERROR:
            reason = Reason(f.check_id, f.path, f.message, remediation, mode, f.status)
            errors.append(reason)
            if mode is Enforcement.DENY and _error_denies(f, policy.config):
                denied.append(reason)
        elif f.status is Status.FAIL:
            lapsed = next((w.id for w in expired if w.matches(f)), None)
            reason = Reason(f.check_id, f.path, f.message, remediation, mode, f.status, None, lapsed)
            {Enforcement.DENY: denied, Enforcement.WARN: warned, Enforcement.AUDIT: audited}[mode].append(reason)
    object_scope = _object_scope(inventory, scope_map, admitted)
    allowed = not denied
    return Decision(
        request.uid, allowed, admitted, request.operation, request.dry_run, object_scope,
        tuple(denied), tuple(warned), tuple(audited), tuple(waived), tuple(errors),
        "" if allowed else _message(admitted, tuple(denied)),
    )

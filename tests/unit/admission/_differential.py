"""Shared by the differential and e2e tests: run a check's Python body and its exported CEL on one object."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kubepci.admission.cel import evaluate_policy
from kubepci.admission.vap import KIND_RESOURCES, ExportedCheck
from kubepci.checks import default_catalog
from kubepci.checks._registry import Check, CheckContext
from kubepci.config import Config
from kubepci.inventory import WORKLOAD_KINDS, Inventory, NamespaceInfo, workload_of
from kubepci.inventory.loaders.manifests import load_paths
from kubepci.model import Resource, ResourceRef
from kubepci.scope import compute_scope

CHECKS_DIR = Path(__file__).resolve().parents[2] / "checks"

#: scalar fields of the pod and object schemas whose Go type is bool / integer: the apiserver refuses a
#: request whose JSON has another type there (HTTP 400) before any admission runs
BOOL_FIELDS = frozenset({
    "privileged", "allowPrivilegeEscalation", "readOnlyRootFilesystem", "runAsNonRoot", "hostPID", "hostIPC",
    "hostNetwork", "hostUsers", "stdin", "tty", "stdinOnce", "automountServiceAccountToken", "hostProcess",
    "shareProcessNamespace", "enableServiceLinks", "setHostnameAsFQDN", "readOnly", "optional",
})
INT_FIELDS = frozenset({
    "runAsUser", "runAsGroup", "fsGroup", "hostPort", "containerPort", "terminationGracePeriodSeconds",
    "activeDeadlineSeconds", "priority", "replicas",
})
#: maps whose keys are free text (a ConfigMap key may well be called "privileged")
FREE_FORM = frozenset({"labels", "annotations", "data", "stringData", "binaryData", "nodeSelector", "limits",
                       "requests", "matchLabels", "selector", "parameters"})


#: (kind, top-level field) the apiserver serialises as null when unset (no omitempty in the Go type)
NULL_WHEN_UNSET = frozenset({("Role", "rules"), ("ClusterRole", "rules")})


def admission_view(value: Any) -> Any:
    """The object as the apiserver hands it to admission: null fields dropped (kept as null where the Go type
    has no omitempty), null list items zeroed."""
    view = _drop_nulls(value)
    if isinstance(value, Mapping) and isinstance(view, dict):
        for kind, field in NULL_WHEN_UNSET:
            if value.get("kind") == kind and value.get(field) is None:
                view[field] = None
    return view


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [{} if v is None else _drop_nulls(v) for v in value]
    return value


def inadmissible(value: Any, path: str = "") -> str | None:
    """Why the apiserver would reject this object while decoding it, or None."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if key in BOOL_FIELDS and item is not None and not isinstance(item, bool):
                return f"{where} is {item!r}, not a boolean"
            if key in INT_FIELDS and item is not None and (isinstance(item, bool) or not isinstance(item, int)):
                return f"{where} is {item!r}, not an integer"
            if key in FREE_FORM:
                continue
            if key == "supplementalGroups" and isinstance(item, list) and not all(
                isinstance(g, int) and not isinstance(g, bool) for g in item
            ):
                return f"{where} holds a non-integer"
            found = inadmissible(item, where)
            if found:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = inadmissible(item, f"{path}[{i}]")
            if found:
                return found
    return None


def cel_checks() -> list[Check]:
    return [c for c in default_catalog() if c.meta.cel is not None]


def matches_kind(check: Check, resource: Resource) -> bool:
    """Would the exported policy's resource rules match this object?"""
    kind = resource.kind
    targets = check.meta.targets
    wanted = (kind in WORKLOAD_KINDS and "workload" in targets) or (kind == "Namespace" and "namespace" in targets) \
        or kind in targets
    if not wanted or kind not in KIND_RESOURCES:
        return False
    group, version, _ = KIND_RESOURCES[kind]
    return resource.ref.api_version == (f"{group}/{version}" if group else version)


def python_target(check: Check, resource: Resource, inventory: Inventory) -> Any:
    if resource.kind in WORKLOAD_KINDS and "workload" in check.meta.targets:
        return workload_of(resource)
    if resource.kind == "Namespace" and "namespace" in check.meta.targets:
        return inventory.namespaces.get(resource.name) or NamespaceInfo(resource.name, resource)
    return resource


@dataclass(frozen=True)
class Verdicts:
    python_messages: tuple[str, ...]
    cel_failures: tuple[str, ...]
    cel_errors: tuple[str, ...]
    matched: bool

    @property
    def python_ok(self) -> bool:
        return not self.python_messages

    @property
    def cel_ok(self) -> bool:
        return not self.cel_failures and not self.cel_errors

    @property
    def agree(self) -> bool:
        return self.python_ok == self.cel_ok


def without_match_conditions(policy: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(policy))
    out["spec"] = {k: v for k, v in out["spec"].items() if k != "matchConditions"}
    return out


def verdicts(check: Check, exported: ExportedCheck, resource: Resource, inventory: Inventory, config: Config,
             validations_only: Mapping[str, Any] | None = None) -> Verdicts:
    """Python body on the target vs the exported policy's validation (match conditions reported apart)."""
    scope = compute_scope(inventory, config)
    ctx = CheckContext(inventory, scope, config)
    target = python_target(check, resource, inventory)
    messages = tuple(v.message for v in check.body(target, ctx)) if target is not None else ()
    matched = evaluate_policy(exported.policy, resource.body).matched if "matchConditions" in \
        exported.policy["spec"] else True
    policy = validations_only if validations_only is not None else without_match_conditions(exported.policy)
    ns_info = inventory.namespaces.get(resource.namespace)
    ns_obj = dict(ns_info.resource.body) if ns_info is not None else None
    verdict = evaluate_policy(policy, resource.body, namespace_object=ns_obj)
    return Verdicts(messages, tuple(f.message for f in verdict.failures), verdict.errors, matched)


def fixture_files() -> list[Path]:
    return sorted(p for p in CHECKS_DIR.glob("*/*.yaml") if p.name.startswith(("pass.", "fail.")))


def body_config(check: Check, config: Config) -> Config:
    """The config under which the body judges the rule alone: where a rule applies is the bindings' job."""
    if check.id == "image-digest-pinned" and config.require_digest == "cde":
        return replace(config, require_digest="all")
    return config


def config_for(check: Check) -> Config:
    from tests.checks.harness import fixture_config

    return body_config(check, fixture_config(CHECKS_DIR / check.id))


def fixture_objects(path: Path) -> tuple[Inventory, list[Resource]]:
    """The fixture's inventory in admission view, and its objects."""
    loaded = load_paths([str(path)])
    resources = [
        Resource(r.ref, admission_view(r.body), r.location, r.synthetic) for r in loaded.resources
    ]
    inventory = Inventory.build(resources)
    return inventory, list(inventory.resources)


def iter_cases(check: Check) -> Iterator[tuple[Path, Resource, Inventory]]:
    for path in fixture_files():
        inventory, resources = fixture_objects(path)
        for r in resources:
            if matches_kind(check, r):
                yield path, r, inventory


def with_ref(resource: Resource, namespace: str) -> Resource:
    return Resource(ResourceRef(namespace, resource.kind, resource.name, resource.ref.api_version), resource.body,
                    resource.location, resource.synthetic)

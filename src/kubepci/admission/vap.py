"""Export checks as native ValidatingAdmissionPolicies (DESIGN.md "Python evaluates, CEL is an export").

Every check whose metadata carries ``cel`` becomes one ValidatingAdmissionPolicy named
``kubepci-<check-id>`` plus one or more ValidatingAdmissionPolicyBindings. The apiserver then
enforces the rule without the webhook; a differential test proves the CEL gives the check's
verdict on every fixture and on generated objects, and an e2e test proves a real apiserver agrees.

The CEL convention for ``CheckMeta.cel``
---------------------------------------
* A **workload** check (targets ``workload``) is written against the pod spec, never against
  ``object.spec``: one policy serves Pods, Deployments, StatefulSets, DaemonSets, ReplicaSets,
  ReplicationControllers, Jobs, CronJobs (and OpenShift DeploymentConfigs). The exported policy
  defines these variables (only those an expression reads are emitted):

  ``variables.podSpec``            the pod spec, wherever the kind keeps it
  ``variables.podMeta``            the pod (template) metadata, ``{}`` when absent
  ``variables.podLabels``          its labels, ``{}`` when absent
  ``variables.podAnnotations``     its annotations, ``{}`` when absent
  ``variables.podSecurityContext`` ``podSpec.securityContext`` or ``{}``
  ``variables.containers``         init + regular + ephemeral containers, in that order
  ``variables.runContainers``      init + regular containers (no ephemeral ones)

  and, from ``kubepci.yaml``: ``variables.minUid`` (``thresholds.min_uid``) and
  ``variables.allowedImages`` (``images.allowed_registries`` compiled into
  ``{match, unless}`` RE2 patterns by :func:`registry_patterns`).
* Any other check reads ``object`` (the object being admitted) only.
* Only functions both cel-go (Kubernetes) and :mod:`kubepci.admission.cel` provide: macros
  ``has/all/exists/exists_one/filter/map``, ``size``, ``in``, ``matches``, ``startsWith``,
  ``endsWith``, ``contains`` and the strings extension (``lowerAscii``, ``upperAscii``, ``trim``,
  ``split``, ``join``, ``indexOf``, ``lastIndexOf``, ``substring``, ``replace``). No optional
  types (``.?``) and no ``cel.bind``: the in-process evaluator cannot parse them.
* Guard every optional field with ``has()``: an evaluation error denies (failurePolicy Fail).
* Write the per-container part as ``variables.containers.all(c, P)`` (or ``runContainers``):
  the export then names the failing containers in the denial message.

Scope is expressed by bindings, not by CEL: ``applies_to: cde`` binds to namespaces labelled
``kubepci.io/scope: cde``, to the ``scope.cde`` namespace list and to the ``scope.cde`` selector
(one binding each, made disjoint); ``in-scope`` adds the connected ones. Every binding excludes
kube-system, the admission namespace, ``admission.exclude_namespaces`` and the exempt scope.
A pod label that narrows a CDE workload's scope is honoured by a matchCondition, as the engine
honours it. Known, documented differences from the scan's scope: a namespace listed under
``scope.exempt`` is excluded even if labelled otherwise, and an exempt selector with more than
one label cannot be negated in a label selector and is ignored.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from kubepci.checks._registry import Catalog, Check
from kubepci.config import Config
from kubepci.inventory import WORKLOAD_KINDS
from kubepci.model import Enforcement
from kubepci.scope import SCOPE_LABEL

__all__ = [
    "ACTIONS",
    "KIND_RESOURCES",
    "WORKLOAD_VARIABLES",
    "ExportedCheck",
    "export_checks",
    "export_documents",
    "registry_patterns",
    "render_yaml",
    "variables_for",
]

API_VERSION = "admissionregistration.k8s.io/v1"
NAME_LABEL = "kubernetes.io/metadata.name"
ACTIONS: Mapping[Enforcement, str] = {Enforcement.DENY: "Deny", Enforcement.WARN: "Warn",
                                       Enforcement.AUDIT: "Audit"}
_SCOPE_VALUES = ("cde", "connected", "out-of-scope", "exempt")

#: kind -> (API group, version, resource) of every kind a CEL check can target
KIND_RESOURCES: Mapping[str, tuple[str, str, str]] = {
    "Pod": ("", "v1", "pods"),
    "ReplicationController": ("", "v1", "replicationcontrollers"),
    "Deployment": ("apps", "v1", "deployments"),
    "StatefulSet": ("apps", "v1", "statefulsets"),
    "DaemonSet": ("apps", "v1", "daemonsets"),
    "ReplicaSet": ("apps", "v1", "replicasets"),
    "Job": ("batch", "v1", "jobs"),
    "CronJob": ("batch", "v1", "cronjobs"),
    "DeploymentConfig": ("apps.openshift.io", "v1", "deploymentconfigs"),
    "Namespace": ("", "v1", "namespaces"),
    "Service": ("", "v1", "services"),
    "ServiceAccount": ("", "v1", "serviceaccounts"),
    "Secret": ("", "v1", "secrets"),
    "ConfigMap": ("", "v1", "configmaps"),
    "Ingress": ("networking.k8s.io", "v1", "ingresses"),
    "NetworkPolicy": ("networking.k8s.io", "v1", "networkpolicies"),
    "Role": ("rbac.authorization.k8s.io", "v1", "roles"),
    "ClusterRole": ("rbac.authorization.k8s.io", "v1", "clusterroles"),
    "RoleBinding": ("rbac.authorization.k8s.io", "v1", "rolebindings"),
    "ClusterRoleBinding": ("rbac.authorization.k8s.io", "v1", "clusterrolebindings"),
}
#: ``kubectl debug`` adds ephemeral containers through this subresource: without it they bypass the policy
_EXTRA_SUBRESOURCES: Mapping[str, tuple[str, ...]] = {"Pod": ("pods/ephemeralcontainers",)}


def _template_expr(keys: Sequence[str], leaf: str) -> str:
    return "object." + ".".join((*keys[:-1], leaf))


def _by_kind(values: Mapping[str, str]) -> str:
    """A ternary over ``object.kind``; the most common value is the fallback."""
    counts: dict[str, int] = {}
    for value in values.values():
        counts[value] = counts.get(value, 0) + 1
    fallback = max(sorted(counts), key=lambda v: counts[v])
    expr = fallback
    for kind in sorted((k for k, v in values.items() if v != fallback), reverse=True):
        expr = f"object.kind == '{kind}' ? {values[kind]} : ({expr})"
    return expr


def _pod_meta_expr() -> str:
    values = {}
    for kind, keys in WORKLOAD_KINDS.items():
        if kind == "Pod":
            values[kind] = "object.metadata"
        else:
            meta = _template_expr(keys, "metadata")
            values[kind] = f"(has({meta}) ? {meta} : {{}})"
    return _by_kind(values)


_POD_SPEC = _by_kind({kind: "object." + ".".join(keys) for kind, keys in WORKLOAD_KINDS.items()})
_POD_META = _pod_meta_expr()


def _guarded(field: str) -> str:
    return f"(has(variables.podSpec.{field}) ? variables.podSpec.{field} : [])"


#: name -> expression, in definition order (a variable may read the ones before it)
WORKLOAD_VARIABLES: Mapping[str, str] = {
    "podSpec": _POD_SPEC,
    "podMeta": _POD_META,
    "podLabels": "has(variables.podMeta.labels) ? variables.podMeta.labels : {}",
    "podAnnotations": "has(variables.podMeta.annotations) ? variables.podMeta.annotations : {}",
    "podSecurityContext": "has(variables.podSpec.securityContext) ? variables.podSpec.securityContext : {}",
    "containers": " + ".join(_guarded(f) for f in ("initContainers", "containers", "ephemeralContainers")),
    "runContainers": " + ".join(_guarded(f) for f in ("initContainers", "containers")),
}
_CONFIG_VARIABLES = ("minUid", "allowedImages")
_VARIABLE_REF = re.compile(r"\bvariables\.([A-Za-z_][A-Za-z0-9_]*)")


def _cel_string(text: str) -> str:
    """A CEL single-quoted string literal."""
    escaped = text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\r", "\\r")
    return f"'{escaped}'"


def _cel_list(values: Sequence[str]) -> str:
    return "[" + ", ".join(_cel_string(v) for v in values) + "]"


# --- images.allowed_registries as RE2 patterns --------------------------------------------------

_HUB_ALIASES = ("docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com")
#: characters whose Python ``lower()`` is this ASCII letter besides the two ASCII cases (Kelvin sign)
_LOWER_EXTRA = {"k": "\u212a"}
_DIGEST_TAIL = r"(?:@[\s\S]*)?$"
_TAG = r"(?::[^:/@]*)?"
_NEVER = r"[^\s\S]"


def _ci(text: str) -> str:
    """Match ``text`` where the image side is compared after Python's ``str.lower()``."""
    out = []
    for ch in text:
        if "a" <= ch <= "z":
            out.append(f"[{ch}{ch.upper()}{_LOWER_EXTRA.get(ch, '')}]")
        else:
            out.append(re.escape(ch))
    return "".join(out)


def _segments(prefix_segments: Sequence[str]) -> str:
    """Path segments that start with ``prefix_segments``; the tag sits only on the last segment."""
    if not prefix_segments:
        return r"(?:[^@]*)"
    body = "/".join(re.escape(s) for s in prefix_segments)
    more = r"/[^@]*"
    if ":" in prefix_segments[-1]:  # a segment with ':' would be read as name:tag when it is the last
        return f"(?:{body}{more})"
    return f"(?:{body}(?:{more}|{_TAG}))"


def _hub_path(prefix_segments: Sequence[str]) -> str:
    """Docker Hub paths (after the host) whose repository starts with docker.io/<prefix_segments>."""
    if not prefix_segments:
        return r"(?:[^@]*)"
    options = []
    if prefix_segments[0] == "library" and len(prefix_segments) <= 2:  # 'nginx' is library/nginx
        if len(prefix_segments) == 1:
            options.append(r"[^/@]*")
        elif ":" not in prefix_segments[1]:
            options.append(re.escape(prefix_segments[1]) + _TAG)
    multi = _segments(prefix_segments)
    options.append(multi if len(prefix_segments) > 1 else f"(?:{re.escape(prefix_segments[0])}/[^@]*)")
    return "(?:" + "|".join(options) + ")"


def registry_patterns(prefixes: Sequence[str]) -> list[dict[str, str]]:
    """``images.allowed_registries`` as ``{match, unless}`` RE2 pattern pairs over the trimmed image.

    An image is allowed when some pair has ``match`` matching and ``unless`` not matching. The
    patterns reproduce :func:`kubepci.checks.images.registry_allowed`: the reference is split at
    the first ``@``; a trailing ``:tag`` after the last ``/`` is dropped; the first component is a
    registry only if it holds ``.`` or ``:`` or is ``localhost`` (then compared lower-cased);
    Docker Hub aliases and ``library/`` for one-segment names are normalised; a prefix matches
    whole path segments. The differential test checks this against the Python parser.
    """
    out: list[dict[str, str]] = []
    for raw in prefixes:
        prefix = raw.strip().rstrip("/")
        first, sep, remainder = prefix.partition("/")
        if "." in first or ":" in first or first == "localhost":
            host = first.lower()
            rest = remainder if sep else ""
        else:
            host, rest = "docker.io", prefix
        if not prefix:
            continue
        segments = rest.split("/") if rest else []
        if host in _HUB_ALIASES:
            aliases = "|".join(_ci(a) for a in _HUB_ALIASES)
            hub = _hub_path(segments)
            out.append({"match": f"^(?:{aliases})/{hub}{_DIGEST_TAIL}", "unless": _NEVER})
            # no registry component: the first segment has no '.' or ':' and is not 'localhost'
            out.append({"match": f"^{hub}{_DIGEST_TAIL}", "unless": r"^(?:localhost|[^/@]*[.:][^/@]*)/"})
        else:
            # an image's first component counts as a host only with '.' or ':' in it or as exactly 'localhost'
            pattern = _ci(host) if host != "localhost" else "localhost"
            out.append({"match": f"^{pattern}/{_segments(segments)}{_DIGEST_TAIL}", "unless": _NEVER})
    return out


# --- variables, messages, scope -----------------------------------------------------------------


def _config_variable(name: str, config: Config) -> str:
    if name == "minUid":
        return str(config.min_uid)
    if name == "allowedImages":
        pairs = registry_patterns(config.allowed_registries)
        items = ", ".join(f"{{'match': {_cel_string(p['match'])}, 'unless': {_cel_string(p['unless'])}}}"
                          for p in pairs)
        return f"[{items}]"
    raise KeyError(name)


def _referenced(expressions: Sequence[str]) -> set[str]:
    return {m for e in expressions for m in _VARIABLE_REF.findall(e)}


def variables_for(expressions: Sequence[str], config: Config, *, workload: bool) -> list[dict[str, str]]:
    """The variables an expression set needs, with their dependencies, in definition order."""
    wanted = _referenced(expressions)
    known = (set(WORKLOAD_VARIABLES) if workload else set()) | set(_CONFIG_VARIABLES)
    unknown = wanted - known
    if unknown:
        raise ValueError(f"CEL reads undefined variables: {', '.join(sorted(unknown))}")
    closure = set(wanted)
    for name in reversed(list(WORKLOAD_VARIABLES)):  # dependencies are defined earlier
        if name in closure:
            closure |= _referenced([WORKLOAD_VARIABLES[name]])
    out = [{"name": n, "expression": e} for n, e in WORKLOAD_VARIABLES.items() if n in closure]
    out += [{"name": n, "expression": _config_variable(n, config)} for n in _CONFIG_VARIABLES if n in closure]
    return out


def _matching_paren(text: str, open_index: int) -> int:
    depth, quote, i = 0, "", open_index
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ValueError("unbalanced parentheses in CEL")


_PER_CONTAINER = re.compile(r"variables\.(containers|runContainers)\.all\(c, ")


def _culprits(expression: str) -> str | None:
    """CEL listing the names of containers failing the per-container part, if the convention is used."""
    match = _PER_CONTAINER.search(expression)
    if match is None:
        return None
    close = _matching_paren(expression, match.end() - len("(c, "))
    predicate = expression[match.end() : close]
    return f"variables.{match.group(1)}.filter(c, !({predicate})).map(c, has(c.name) ? c.name : '')"


def _messages(check: Check, requirements: str) -> tuple[str, str]:
    meta = check.meta
    static = f"[kubepci {meta.id}] {meta.title}. {meta.remediation} (PCI DSS {requirements})"
    parts = [
        _cel_string(f"[kubepci {meta.id}] "),
        "object.kind + ' ' + (has(object.metadata.name) ? object.metadata.name : '')",
    ]
    culprits = _culprits(meta.cel or "")
    if culprits is not None:
        parts.append(f"(size({culprits}) > 0 ? ' (containers: ' + {culprits}.join(', ') + ')' : '')")
    parts.append(_cel_string(f": {meta.title}. {meta.remediation} (PCI DSS {requirements})"))
    return static, " + ".join(parts)


def _narrowing(applies_to: str) -> dict[str, str]:
    """A pod label may narrow a CDE workload's scope (kubepci.scope.ScopeMap.of_workload): the pod
    (template) label when set, else the object's own label, must not name a narrower scope."""
    narrow = _cel_list(["connected", "out-of-scope"] if applies_to == "cde" else ["out-of-scope"])
    key = _cel_string(SCOPE_LABEL)
    labels = "object.metadata.labels"
    own = f"(has({labels}) && {key} in {labels} && {labels}[{key}] in {narrow})"
    values = {}
    for kind, keys in WORKLOAD_KINDS.items():
        if kind == "Pod":
            values[kind] = own
            continue
        meta = _template_expr(keys, "metadata")
        pod_set = f"has({meta}) && has({meta}.labels) && {key} in {meta}.labels && {meta}.labels[{key}] != ''"
        values[kind] = f"(({pod_set}) ? {meta}.labels[{key}] in {narrow} : {own})"
    return {"name": "kubepci-scope-not-narrowed", "expression": f"!({_by_kind(values)})"}


def _expr(key: str, operator: str, values: Sequence[str]) -> dict[str, Any]:
    return {"key": key, "operator": operator, "values": sorted(set(values))}


def _excluded(config: Config, include_exempt: bool) -> list[str]:
    names = {"kube-system", config.admission_namespace, *config.admission_exclude_namespaces}
    if not include_exempt:
        names |= set(config.exempt.namespaces)
    return sorted(n for n in names if n)


def _exempt_selector(config: Config, include_exempt: bool) -> list[dict[str, Any]]:
    out = [] if include_exempt else [_expr(SCOPE_LABEL, "NotIn", ["exempt"])]
    if not include_exempt and len(config.exempt.selector) == 1:
        (key, value), = config.exempt.selector.items()
        out.append(_expr(key, "NotIn", [value]))
    return out


def namespace_selectors(config: Config, applies_to: str, include_exempt: bool) -> list[tuple[str, dict[str, Any]]]:
    """(binding name suffix, namespaceSelector) pairs whose union is the check's scope."""
    excluded = _excluded(config, include_exempt)
    exempt = _exempt_selector(config, include_exempt)
    not_excluded = [_expr(NAME_LABEL, "NotIn", excluded)]
    if applies_to == "all":
        return [("", {"matchExpressions": not_excluded + exempt})]
    rules = [config.cde] if applies_to == "cde" else [config.cde, config.connected]
    labels = ["cde"] if applies_to == "cde" else ["cde", "connected"]
    unlabelled = _expr(SCOPE_LABEL, "NotIn", list(_SCOPE_VALUES))
    out: list[tuple[str, dict[str, Any]]] = [
        ("", {"matchExpressions": [_expr(SCOPE_LABEL, "In", labels), *not_excluded]}),
    ]
    names = sorted({n for r in rules for n in r.namespaces} - set(excluded))
    if names:
        out.append(("-named", {"matchExpressions": [_expr(NAME_LABEL, "In", names), unlabelled,
                                                     *exempt[1:]]}))
    for rule, label in zip(rules, labels, strict=True):
        if rule.selector:
            exprs = [unlabelled, _expr(NAME_LABEL, "NotIn", sorted(set(excluded) | set(names))), *exempt[1:]]
            exprs += [_expr(k, "In", [v]) for k, v in sorted(rule.selector.items())]
            out.append((f"-selected-{label}", {"matchExpressions": exprs}))
    return out


# --- the export ---------------------------------------------------------------------------------


def _resource_rules(check: Check) -> list[dict[str, Any]]:
    kinds: set[str] = set()
    for target in check.meta.targets:
        if target == "workload":
            kinds |= set(WORKLOAD_KINDS)
        elif target == "namespace":
            kinds.add("Namespace")
        elif target in KIND_RESOURCES:
            kinds.add(target)
        else:
            raise ValueError(f"{check.id}: target {target!r} has no admission resource")
    grouped: dict[tuple[str, str], list[str]] = {}
    for kind in kinds:
        group, version, resource = KIND_RESOURCES[kind]
        grouped.setdefault((group, version), []).extend((resource, *_EXTRA_SUBRESOURCES.get(kind, ())))
    return [
        {"apiGroups": [group], "apiVersions": [version], "operations": ["CREATE", "UPDATE"],
         "resources": sorted(resources)}
        for (group, version), resources in sorted(grouped.items())
    ]


#: checks whose body reads configuration that decides where (or whether) the rule applies
_EFFECTIVE_SCOPE: Mapping[str, Callable[[Config], str | None]] = {
    "image-digest-pinned": lambda c: {"none": None, "cde": "cde", "all": "all"}[c.require_digest],
    "image-allowed-registry": lambda c: "all" if c.allowed_registries else None,
}


@dataclass(frozen=True, slots=True)
class ExportedCheck:
    """One check as a policy and its bindings."""

    check_id: str
    policy: Mapping[str, Any]
    bindings: tuple[Mapping[str, Any], ...]

    def documents(self) -> Iterator[Mapping[str, Any]]:
        yield self.policy
        yield from self.bindings


def _action(check: Check, config: Config, action: str | None) -> str:
    if action is not None:
        if action not in ACTIONS.values():
            raise ValueError(f"action must be one of {', '.join(ACTIONS.values())}, got {action!r}")
        return action
    override = config.checks.get(check.id)
    enforcement = override.enforcement if override and override.enforcement else check.meta.enforcement
    return ACTIONS[enforcement]


def export_check(check: Check, config: Config, action: str | None = None) -> ExportedCheck | None:
    """The policy and bindings for one check, or None when it has no CEL or is disabled by config."""
    meta = check.meta
    override = config.checks.get(meta.id)
    if meta.cel is None or not meta.admission or (override is not None and not override.enabled):
        return None
    scope_of = _EFFECTIVE_SCOPE.get(meta.id)
    applies_to = scope_of(config) if scope_of is not None else meta.applies_to
    if applies_to is None:
        return None
    workload = "workload" in meta.targets
    name = f"kubepci-{meta.id}"
    requirements = ", ".join(meta.requirements)
    message, message_expression = _messages(check, requirements)
    severity = override.severity if override is not None and override.severity else meta.severity
    labels = {"app.kubernetes.io/managed-by": "kubepci", "kubepci.io/check": meta.id}
    spec: dict[str, Any] = {
        "failurePolicy": "Fail",
        "matchConstraints": {"resourceRules": _resource_rules(check)},
    }
    if workload and applies_to in ("cde", "in-scope"):
        spec["matchConditions"] = [_narrowing(applies_to)]
    variables = variables_for([meta.cel, message_expression], config, workload=workload)
    if variables:
        spec["variables"] = variables
    spec["validations"] = [
        {"expression": meta.cel, "messageExpression": message_expression, "message": message, "reason": "Invalid"}
    ]
    policy = {
        "apiVersion": API_VERSION,
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {
                "kubepci.io/title": meta.title,
                "kubepci.io/requirements": requirements,
                "kubepci.io/severity": severity.label,
                "kubepci.io/applies-to": applies_to,
            },
        },
        "spec": spec,
    }
    actions = [_action(check, config, action)]
    bindings = tuple(
        {
            "apiVersion": API_VERSION,
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name + suffix, "labels": labels},
            "spec": {"policyName": name, "validationActions": actions,
                     "matchResources": {"namespaceSelector": selector}},
        }
        for suffix, selector in namespace_selectors(config, applies_to, meta.include_exempt)
    )
    return ExportedCheck(meta.id, policy, bindings)


def export_checks(catalog: Catalog, config: Config, action: str | None = None) -> list[ExportedCheck]:
    """Every exportable check of ``catalog`` under ``config``, in catalog (id) order."""
    out = []
    for check in catalog:
        exported = export_check(check, config, action)
        if exported is not None:
            out.append(exported)
    return out


def export_documents(catalog: Catalog, config: Config, action: str | None = None) -> list[Mapping[str, Any]]:
    return [doc for exported in export_checks(catalog, config, action) for doc in exported.documents()]


class _Dumper(yaml.CSafeDumper):
    """Long CEL expressions as literal blocks: no doubled quotes, readable in review."""


def _represent_str(dumper: _Dumper, value: str) -> yaml.Node:
    style = "|" if len(value) > 100 and "\n" not in value and value == value.strip() else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def render_yaml(documents: Sequence[Mapping[str, Any]]) -> str:
    """Multi-document YAML, byte-stable: insertion order, no timestamps, no line folding."""
    return yaml.dump_all(
        [dict(d) for d in documents], Dumper=_Dumper, sort_keys=False, default_flow_style=False,
        allow_unicode=True, width=1_000_000, explicit_start=True,
    )

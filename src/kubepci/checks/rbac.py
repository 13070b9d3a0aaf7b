"""Need-to-know access in RBAC (controls.md ACC-001..ACC-005; PCI DSS 7.2, 7.3, 8.2; blog R7).

These checks read one Role, ClusterRole or binding at a time; "who can" questions across
bindings belong to the RBAC analyzer. Rule matching follows the upstream authorizer
(``evaluation_helpers.go``): verbs and API groups match exactly or through ``*``; a resource
matches ``*``, the exact ``resource/subresource`` or ``*/subresource``; ``pods`` does not match
``pods/exec``. Roles named ``system:*`` and the built-in cluster-admin/admin/edit/view roles when
they carry the bootstrap label are Kubernetes' own and are not reported.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from kubepci.checks._registry import CheckContext, check
from kubepci.checks._util import mapping
from kubepci.inventory import Inventory
from kubepci.model import Resource, Severity, Violation

__all__: list[str] = []

_BOOTSTRAP_LABEL = "kubernetes.io/bootstrapping"
_BUILTIN_ROLES = frozenset({"cluster-admin", "admin", "edit", "view"})
_ALL_CRUD = frozenset({"get", "list", "watch", "create", "update", "patch", "delete"})
_RBAC = "rbac.authorization.k8s.io"
_AUTHN = "authentication.k8s.io"
#: identities that stand for "everyone" (anonymous, unauthenticated or any authenticated user)
_PUBLIC = frozenset({"system:anonymous", "system:unauthenticated", "system:authenticated"})
#: the only default ClusterRoleBindings that grant those groups anything, with their subjects
_DEFAULT_PUBLIC_BINDINGS: Mapping[str, frozenset[str]] = {
    "system:basic-user": frozenset({"system:authenticated"}),
    "system:discovery": frozenset({"system:authenticated"}),
    "system:public-info-viewer": frozenset({"system:authenticated", "system:unauthenticated"}),
}
#: (verbs that count, API group, resource, label) for subresource grants that escalate
_SUBRESOURCE_GRANTS: tuple[tuple[frozenset[str], str, str], ...] = (
    # get suffices for exec/attach/portforward over WebSocket before Kubernetes 1.35 (netpol-rbac.md §6.7)
    (frozenset({"create", "get"}), "", "pods/exec"),
    (frozenset({"create", "get"}), "", "pods/attach"),
    (frozenset({"create", "get"}), "", "pods/portforward"),
    (frozenset({"create", "get"}), "", "nodes/proxy"),
    (frozenset({"create"}), "", "serviceaccounts/token"),
    (frozenset({"update", "patch"}), "certificates.k8s.io", "certificatesigningrequests/approval"),
)
#: what bind/escalate/impersonate act on, for rules that grant them only through verbs: ["*"]
_VERB_TARGETS: Mapping[str, tuple[tuple[str, str], ...]] = {
    "bind": ((_RBAC, "roles"), (_RBAC, "clusterroles")),
    "escalate": ((_RBAC, "roles"), (_RBAC, "clusterroles")),
    "impersonate": (("", "users"), ("", "groups"), ("", "serviceaccounts"), (_AUTHN, "uids"),
                    (_AUTHN, "userextras")),
}


def _strs(value: Any) -> tuple[str, ...]:
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


@dataclass(frozen=True, slots=True)
class _Rule:
    index: int
    verbs: tuple[str, ...]
    groups: tuple[str, ...]
    resources: tuple[str, ...]
    names: tuple[str, ...]

    def verb(self, verb: str) -> bool:
        return verb in self.verbs or "*" in self.verbs

    def resource(self, group: str, resource: str) -> bool:
        """ResourceMatches + APIGroupMatches; ``userextras`` stands for every ``userextras/<key>``."""
        if group not in self.groups and "*" not in self.groups:
            return False
        sub = resource.partition("/")[2]
        for r in self.resources:
            if r in ("*", resource) or (sub and r == f"*/{sub}"):
                return True
            if resource == "userextras" and r.startswith("userextras/"):
                return True
        return False

    @property
    def path(self) -> str:
        return f"rules[{self.index}]"


def _rules(role: Resource) -> Iterator[_Rule]:
    raw = role.body.get("rules")
    if not isinstance(raw, list):
        return
    for i, rule in enumerate(raw):
        if isinstance(rule, Mapping):
            yield _Rule(i, _strs(rule.get("verbs")), _strs(rule.get("apiGroups")),
                        _strs(rule.get("resources")), _strs(rule.get("resourceNames")))


def _bootstrap(resource: Resource) -> bool:
    return resource.labels.get(_BOOTSTRAP_LABEL) == "rbac-defaults"


def _kubernetes_own(role: Resource) -> bool:
    return role.name.startswith("system:") or (role.name in _BUILTIN_ROLES and _bootstrap(role))


@check(
    id="rbac-wildcard",
    title="Roles must not grant wildcard permissions",
    requirements=("7.2.2", "7.3.2"),
    blog=("R7",),
    severity=Severity.HIGH,
    targets=("Role", "ClusterRole"),
    remediation="Replace every '*' in verbs, resources and apiGroups with the explicit values needed.",
    refs=("ACC-002", "KSV-0044", "KSV-0045", "KSV-0046", "C-0187", "CIS 5.1.3", "CKV_K8S_49"),
    cel=(
        "(object.metadata.name.startsWith('system:') || (object.metadata.name in ['cluster-admin', "
        "'admin', 'edit', 'view'] && has(object.metadata.labels) && 'kubernetes.io/bootstrapping' in "
        "object.metadata.labels && object.metadata.labels['kubernetes.io/bootstrapping'] == "
        "'rbac-defaults')) || !has(object.rules) || object.rules == null || object.rules.all(r, "
        "!(has(r.verbs) && '*' in r.verbs) && !(has(r.resources) && '*' in r.resources) && "
        "!(has(r.apiGroups) && '*' in r.apiGroups))"
    ),
)
def wildcard(role: Resource, ctx: CheckContext) -> Iterator[Violation]:
    """A ``*`` grants everything that exists and everything a future API version or CRD adds, which
    is the opposite of least privilege (PCI 7.2.2)."""
    if _kubernetes_own(role):
        return
    for rule in _rules(role):
        fields = (("verbs", rule.verbs), ("resources", rule.resources), ("apiGroups", rule.groups))
        for field, values in fields:
            if "*" in values:
                yield Violation(f"{rule.path} grants '*' in {field}", f"{rule.path}.{field}")


def _resolve_role(inventory: Inventory, binding: Resource, kind: str, name: str) -> Resource | None:
    pool = inventory.of_kind("ClusterRole") if kind == "ClusterRole" else (
        inventory.in_namespace(binding.namespace, "Role") if kind == "Role" and binding.namespace else ())
    return next((r for r in pool if r.name == name), None)


def _admin_equivalent(role: Resource) -> bool:
    """Every verb (or the full CRUD set) on every resource of every API group: cluster-admin by
    another name (the Polaris clusterrolebindingClusterAdmin semantics)."""
    return any(
        "*" in r.groups and "*" in r.resources and ("*" in r.verbs or _ALL_CRUD <= set(r.verbs))
        for r in _rules(role)
    )


def _subjects(binding: Resource) -> Iterator[tuple[int, str, str, str]]:
    """(index, kind, name, namespace) of each subject; RoleBinding SAs default to its namespace."""
    raw = binding.body.get("subjects")
    if not isinstance(raw, list):
        return
    for j, s in enumerate(raw):
        s = mapping(s)
        kind, name, ns = s.get("kind"), s.get("name"), s.get("namespace")
        if not isinstance(kind, str) or not isinstance(name, str):
            continue
        if kind == "ServiceAccount" and not ns and binding.kind == "RoleBinding":
            ns = binding.namespace
        yield j, kind, name, ns if isinstance(ns, str) else ""


def _subject_key(kind: str, name: str, namespace: str) -> str:
    return f"{kind}:{namespace}/{name}" if kind == "ServiceAccount" else f"{kind}:{name}"


def _platform_identity(name: str) -> bool:
    """Kubernetes' own system: users and groups; service-account and everyone-groups are not."""
    return name.startswith("system:") and not name.startswith("system:serviceaccount") and name not in _PUBLIC


#: binding-name prefixes that the control plane (system:) and managed providers reserve for themselves
RESERVED_BINDING_PREFIXES = ("system:", "gce:", "eks:")


def _reserved_name(binding: Resource) -> bool:
    return binding.name.startswith(RESERVED_BINDING_PREFIXES)


def _admin_grants(binding: Resource, ctx: CheckContext) -> Iterator[tuple[int, str, str]]:
    """(subject index, subject description, role description) for each unapproved, non-platform
    subject that the binding gives cluster-admin or an equivalent role."""
    ref = mapping(binding.body.get("roleRef"))
    kind, name = ref.get("kind"), ref.get("name")
    if not isinstance(kind, str) or not isinstance(name, str):
        return
    if name == "cluster-admin" and kind in ("ClusterRole", "Role"):
        why = f"{kind} cluster-admin"
    else:
        role = _resolve_role(ctx.inventory, binding, kind, name)
        if role is None or not _admin_equivalent(role):
            return
        why = f"{kind} {name!r}, which grants every verb on every resource"
    allowed = set(ctx.config.allowed_admin_subjects)
    for j, skind, sname, sns in _subjects(binding):
        if _platform_identity(sname) or _subject_key(skind, sname, sns) in allowed:
            continue
        who = f"{sns}/{sname}" if skind == "ServiceAccount" else sname
        yield j, f"{skind} {who!r}", why


@check(
    id="rbac-cluster-admin-binding",
    title="cluster-admin must be bound only to approved subjects",
    requirements=("7.2.1", "7.2.2", "7.2.5"),
    blog=("R7",),
    severity=Severity.CRITICAL,
    targets=("ClusterRoleBinding", "RoleBinding"),
    remediation="Bind a narrower role or add the subject to rbac.allowed_admin_subjects after review.",
    refs=("ACC-001", "KSV-0111", "C-0035", "C-0185", "CIS 5.1.1", "polaris clusterrolebindingClusterAdmin"),
)
def cluster_admin_binding(binding: Resource, ctx: CheckContext) -> Iterator[Violation]:
    """cluster-admin (or a role granting ``*`` on ``*`` in ``*``) is total control; PCI 7.2.2 wants such
    privilege assigned only to the people whose job needs it, so each holder must be on the allowlist
    (``Kind:namespace/name`` for service accounts, ``User:name`` or ``Group:name`` otherwise). The
    Kubernetes bootstrap binding and system: identities are not reported, nor are bindings under the
    names the control plane and managed providers reserve (``system:``, ``gce:``, ``eks:``):
    rbac-reserved-name-binding judges those, so a grant hidden behind a reserved name is still found."""
    if _bootstrap(binding) or _reserved_name(binding):
        return
    for j, who, why in _admin_grants(binding, ctx):
        yield Violation(f"{who} is bound to {why} and is not an approved admin subject", f"subjects[{j}]")


@check(
    id="rbac-reserved-name-binding",
    title="Reserved control-plane binding names must not carry admin grants to other subjects",
    requirements=("7.2.1", "7.2.2", "7.2.5"),
    blog=("R7",),
    severity=Severity.CRITICAL,
    targets=("ClusterRoleBinding", "RoleBinding"),
    remediation="Rename the binding without the reserved prefix and bind a narrower role to the subject.",
    refs=("ACC-001", "polaris clusterrolebindingClusterAdmin"),
)
def reserved_name_binding(binding: Resource, ctx: CheckContext) -> Iterator[Violation]:
    """Kubernetes reserves the ``system:`` prefix for objects the control plane manages, and GKE and EKS
    reserve ``gce:`` and ``eks:``; reviewers and peer tools skip such bindings. Any user can still
    create one, so a binding under a reserved name that is not a labelled bootstrap default and gives
    cluster-admin (or an equivalent role) to a non-platform subject is an admin grant in disguise."""
    if not _reserved_name(binding) or _bootstrap(binding):
        return
    for j, who, why in _admin_grants(binding, ctx):
        yield Violation(
            f"binding {binding.name!r} uses a reserved name but gives {who} {why}", f"subjects[{j}]"
        )


@check(
    id="rbac-anonymous-binding",
    title="Roles must not be bound to anonymous or all authenticated users",
    requirements=("7.3.3", "8.2.1"),
    blog=("R7",),
    severity=Severity.HIGH,
    targets=("ClusterRoleBinding", "RoleBinding"),
    remediation="Bind the role to named users, groups or service accounts instead of system:* groups.",
    refs=("ACC-005", "KSV-0122", "C-0262", "C-0265", "gatekeeper K8sDisallowAnonymous"),
    cel=(
        "!has(object.subjects) || object.subjects.all(s, !(has(s.kind) && has(s.name) && s.kind in "
        "['User', 'Group'] && s.name in ['system:anonymous', 'system:authenticated', "
        "'system:unauthenticated']) || (object.kind == 'ClusterRoleBinding' && has(object.roleRef) && "
        "object.roleRef.kind == 'ClusterRole' && object.roleRef.name == object.metadata.name && "
        "((object.metadata.name in ['system:basic-user', 'system:discovery'] && s.name == "
        "'system:authenticated') || (object.metadata.name == 'system:public-info-viewer' && s.name in "
        "['system:authenticated', 'system:unauthenticated']))))"
    ),
)
def anonymous_binding(binding: Resource, ctx: CheckContext) -> Iterator[Violation]:
    """system:anonymous, system:unauthenticated and system:authenticated are everyone: a grant to them
    is not deny-by-default (PCI 7.3.3) and has no user behind it (8.2.1). Only the three default
    discovery bindings are accepted, and only with their default role and subjects."""
    ref = mapping(binding.body.get("roleRef"))
    ref_kind, ref_name = ref.get("kind"), ref.get("name")
    defaults = _DEFAULT_PUBLIC_BINDINGS.get(binding.name, frozenset())
    is_default = (binding.kind == "ClusterRoleBinding" and ref_kind == "ClusterRole"
                  and ref_name == binding.name)
    for j, skind, sname, _ns in _subjects(binding):
        if sname not in _PUBLIC or skind not in ("User", "Group"):
            continue
        if is_default and sname in defaults:
            continue
        yield Violation(f"{skind} {sname!r} is bound to {ref_kind} {ref_name!r}", f"subjects[{j}]")


def _escalations(rule: _Rule) -> list[str]:
    if "*" in rule.verbs and "*" in rule.groups and "*" in rule.resources:
        return ["'*' on '*' in every API group: bind, escalate, impersonate, pods/exec and every other"
                " escalation"]
    found: list[str] = []
    for verb, targets in _VERB_TARGETS.items():
        if verb in rule.verbs and rule.resources:
            found.append(f"{verb} on {', '.join(rule.resources)}")
        elif "*" in rule.verbs:
            hits = [res for group, res in targets if rule.resource(group, res)]
            if hits:
                found.append(f"{verb} (via '*') on {', '.join(hits)}")
    for verbs, group, res in _SUBRESOURCE_GRANTS:
        granted = sorted(v for v in verbs if rule.verb(v))
        if granted and rule.resource(group, res):
            shown = "*" if "*" in rule.verbs else "/".join(granted)
            found.append(f"{shown} on {res}")
    return found


_BUILTIN_USER_ROLES = frozenset({"cluster-admin", "admin", "edit"})


@check(
    id="rbac-builtin-role-redefined",
    title="Built-in ClusterRoles must not be redefined",
    requirements=("7.2.1", "7.2.2"),
    blog=("R7",),
    severity=Severity.HIGH,
    targets=("ClusterRole",),
    remediation="Give the role its own name, or drop it and rely on the built-in one the API server maintains.",
    refs=("ACC-002", "ACC-004"),
    cel=(
        "!(object.metadata.name in ['cluster-admin', 'admin', 'edit', 'view']) || "
        "(has(object.metadata.labels) && 'kubernetes.io/bootstrapping' in object.metadata.labels && "
        "object.metadata.labels['kubernetes.io/bootstrapping'] == 'rbac-defaults')"
    ),
)
def builtin_role_redefined(role: Resource, ctx: CheckContext) -> Iterator[Violation]:
    """cluster-admin, admin, edit and view are maintained by the API server (labelled
    ``kubernetes.io/bootstrapping: rbac-defaults``); reviewers read those names as the well-known
    grants. A manifest that defines a role under one of these names changes what every existing
    binding to it grants, without any binding changing."""
    if role.name in (*_BUILTIN_USER_ROLES, "view") and not _bootstrap(role):
        yield Violation(f"ClusterRole {role.name!r} redefines a built-in role without the bootstrap label",
                        "metadata.name")


@check(
    id="rbac-escalation-verbs",
    title="Roles must not grant privilege-escalation permissions",
    requirements=("7.2.2", "7.2.5"),
    blog=("R7",),
    severity=Severity.HIGH,
    targets=("Role", "ClusterRole"),
    remediation="Remove bind, escalate, impersonate and exec/attach/portforward/proxy/token/approval grants.",
    refs=("ACC-004", "C-0002", "C-0063", "C-0065", "C-0191", "KSV-0053", "CKV_K8S_156", "CKV_K8S_157",
          "CKV_K8S_158", "polaris clusterrolePodExecAttach"),
    cel=(
        "(object.metadata.name.startsWith('system:') || (object.metadata.name in ['cluster-admin', "
        "'admin', 'edit', 'view'] && has(object.metadata.labels) && 'kubernetes.io/bootstrapping' in "
        "object.metadata.labels && object.metadata.labels['kubernetes.io/bootstrapping'] == "
        "'rbac-defaults')) || (object.kind == 'ClusterRole' && object.metadata.name in ['cluster-admin', "
        "'admin', 'edit']) || !has(object.rules) || object.rules == null || object.rules.all(r, !(('*' "
        "in (has(r.verbs) ? r.verbs : []) && '*' in (has(r.apiGroups) ? r.apiGroups : []) && '*' in "
        "(has(r.resources) ? r.resources : [])) || (((has(r.verbs) ? r.verbs : []).exists(v, v in "
        "['bind', 'escalate', 'impersonate'])) && size((has(r.resources) ? r.resources : [])) > 0) || "
        "('*' in (has(r.verbs) ? r.verbs : []) && ((('rbac.authorization.k8s.io' in (has(r.apiGroups) ? "
        "r.apiGroups : []) || '*' in (has(r.apiGroups) ? r.apiGroups : [])) && (has(r.resources) ? "
        "r.resources : []).exists(x, x in ['*', 'roles', 'clusterroles'])) || (('' in (has(r.apiGroups) "
        "? r.apiGroups : []) || '*' in (has(r.apiGroups) ? r.apiGroups : [])) && (has(r.resources) ? "
        "r.resources : []).exists(x, x in ['*', 'users', 'groups', 'serviceaccounts'])) || "
        "(('authentication.k8s.io' in (has(r.apiGroups) ? r.apiGroups : []) || '*' in (has(r.apiGroups) "
        "? r.apiGroups : [])) && (has(r.resources) ? r.resources : []).exists(x, x in ['*', 'uids', "
        "'userextras'] || x.startsWith('userextras/'))))) || ((has(r.verbs) ? r.verbs : []).exists(v, v "
        "in ['*', 'create', 'get']) && ('' in (has(r.apiGroups) ? r.apiGroups : []) || '*' in "
        "(has(r.apiGroups) ? r.apiGroups : [])) && (has(r.resources) ? r.resources : []).exists(x, x in "
        "['*', 'pods/exec', '*/exec', 'pods/attach', '*/attach', 'pods/portforward', '*/portforward', "
        "'nodes/proxy', '*/proxy'])) || ((has(r.verbs) ? r.verbs : []).exists(v, v in ['*', 'create']) "
        "&& ('' in (has(r.apiGroups) ? r.apiGroups : []) || '*' in (has(r.apiGroups) ? r.apiGroups : "
        "[])) && (has(r.resources) ? r.resources : []).exists(x, x in ['*', 'serviceaccounts/token', "
        "'*/token'])) || ((has(r.verbs) ? r.verbs : []).exists(v, v in ['*', 'update', 'patch']) && "
        "('certificates.k8s.io' in (has(r.apiGroups) ? r.apiGroups : []) || '*' in (has(r.apiGroups) ? "
        "r.apiGroups : [])) && (has(r.resources) ? r.resources : []).exists(x, x in ['*', "
        "'certificatesigningrequests/approval', '*/approval']))))"
    ),
)
def escalation_verbs(role: Resource, ctx: CheckContext) -> Iterator[Violation]:
    """Each of these turns a limited grant into more: bind/escalate create roles beyond your own,
    impersonate borrows another identity, exec/attach/portforward and nodes/proxy run code in pods,
    serviceaccounts/token mints credentials and CSR approval mints client certificates. ``get`` on
    exec/attach/portforward/proxy counts, because it suffices over WebSocket before Kubernetes 1.35.
    The built-in user-facing ClusterRoles (cluster-admin, admin, edit) grant these by design: who may
    use them is judged where they are bound, and a manifest that redefines one is reported by
    rbac-builtin-role-redefined."""
    if _kubernetes_own(role) or (role.kind == "ClusterRole" and role.name in _BUILTIN_USER_ROLES):
        return
    for rule in _rules(role):
        found = _escalations(rule)
        if found:
            yield Violation(f"{rule.path} grants {'; '.join(found)}", rule.path)


@check(
    id="rbac-secret-read",
    title="Roles should not grant read access to Secrets",
    requirements=("7.2.2", "7.2.5", "8.3.2"),
    blog=("R7",),
    severity=Severity.MEDIUM,
    targets=("Role", "ClusterRole"),
    remediation="Limit Secret reads to named secrets with resourceNames or to the workloads that mount them.",
    refs=("ACC-003", "KSV-0041", "C-0015", "C-0186", "CIS 5.1.2"),
    cel=(
        "(object.metadata.name.startsWith('system:') || (object.metadata.name in ['cluster-admin', "
        "'admin', 'edit', 'view'] && has(object.metadata.labels) && 'kubernetes.io/bootstrapping' in "
        "object.metadata.labels && object.metadata.labels['kubernetes.io/bootstrapping'] == "
        "'rbac-defaults')) || !has(object.rules) || object.rules == null || object.rules.all(r, !(('' in "
        "(has(r.apiGroups) ? r.apiGroups : []) || '*' in (has(r.apiGroups) ? r.apiGroups : [])) && "
        "(has(r.resources) ? r.resources : []).exists(x, x in ['*', 'secrets']) && (has(r.verbs) ? "
        "r.verbs : []).exists(v, v in ['*', 'get', 'list', 'watch'])))"
    ),
)
def secret_read(role: Resource, ctx: CheckContext) -> Iterator[Violation]:
    """get, list and watch on secrets return their data (list and watch: all of them at once), which
    includes credentials PCI 8.3.2 requires to be protected."""
    if _kubernetes_own(role):
        return
    for rule in _rules(role):
        if not rule.resource("", "secrets"):
            continue
        verbs = ["*"] if "*" in rule.verbs else [v for v in ("get", "list", "watch") if v in rule.verbs]
        if verbs:
            limit = f" (limited to resourceNames {', '.join(rule.names)})" if rule.names else ""
            yield Violation(f"{rule.path} grants {'/'.join(verbs)} on secrets{limit}", rule.path)

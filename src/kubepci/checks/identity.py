"""Service-account identity hygiene (controls.md WKL-011 and IDN-002).

A pod's ServiceAccount token is a credential to the Kubernetes API. PCI DSS 7.2.5 and 8.6.1 want
system accounts to hold only the access they need and to be individually managed, so tokens are
mounted only where the API is used, workloads do not share the namespace's ``default`` account,
and no long-lived token Secrets exist (8.2.1/8.3.2: credentials must be unique and revocable).
"""

from __future__ import annotations

from collections.abc import Iterator

from kubepci.checks._registry import CheckContext, check
from kubepci.checks._util import is_true, mapping
from kubepci.checks._workload import is_false, service_account_name
from kubepci.inventory import Workload
from kubepci.model import Resource, Severity, Violation

__all__: list[str] = []

_TOKEN_SECRET_TYPE = "kubernetes.io/service-account-token"  # noqa: S105 - a Secret type, not a password
_SA_NAME_ANNOTATION = "kubernetes.io/service-account.name"
#: set by the LegacyServiceAccountTokenCleanUp controller once the token no longer authenticates
_INVALIDATED_LABEL = "kubernetes.io/legacy-token-invalid-since"


def _service_account(ctx: CheckContext, namespace: str, name: str) -> Resource | None:
    for sa in ctx.inventory.in_namespace(namespace, "ServiceAccount"):
        if sa.name == name:
            return sa
    return None


@check(
    id="workload-automount-sa-token",
    title="Pods must not automount a service-account token",
    requirements=("7.2.5", "8.6.1"),
    blog=("R7",),
    severity=Severity.MEDIUM,
    targets=("workload",),
    remediation="Set automountServiceAccountToken: false on the pod spec or its ServiceAccount.",
    refs=("WKL-011", "C-0034", "KSV-0036", "CIS 5.1.6", "CKV_K8S_38"),
)
def automount_sa_token(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """A mounted token lets anyone who gets code execution in the pod call the API as its ServiceAccount.
    The pod's own setting wins; when it is unset, a ServiceAccount in the inventory that sets false
    covers the pod. An unseen ServiceAccount cannot be assumed to disable it."""
    value = wl.pod_spec.get("automountServiceAccountToken")
    path = wl.spec_field("automountServiceAccountToken")
    if is_false(value):
        return
    if is_true(value):
        yield Violation("pod sets automountServiceAccountToken: true", path)
        return
    name = service_account_name(wl)
    sa = _service_account(ctx, wl.namespace, name)
    if sa is None:
        yield Violation(
            f"pod does not set automountServiceAccountToken: false and its ServiceAccount {name!r} "
            "is not in the inventory",
            path,
        )
    elif not is_false(sa.body.get("automountServiceAccountToken")):
        yield Violation(
            f"neither the pod nor its ServiceAccount {name!r} sets automountServiceAccountToken: false", path
        )


@check(
    id="workload-default-service-account",
    title="Pods must run under a dedicated service account",
    requirements=("7.2.5", "8.6.1"),
    blog=("R7",),
    severity=Severity.MEDIUM,
    targets=("workload",),
    remediation="Create a ServiceAccount for the workload and set serviceAccountName to it.",
    refs=("WKL-011", "C-0189", "CIS 5.1.5", "accounts_unique_service_account"),
    cel=(
        "(has(variables.podSpec.serviceAccountName) && variables.podSpec.serviceAccountName != '') ? "
        "variables.podSpec.serviceAccountName != 'default' : (has(variables.podSpec.serviceAccount) && "
        "variables.podSpec.serviceAccount != '' && variables.podSpec.serviceAccount != 'default')"
    ),
)
def default_service_account(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """Every pod that names no account shares the namespace's default one, so a permission granted for one
    workload silently reaches all of them and API actions cannot be told apart (8.6.1)."""
    if service_account_name(wl) != "default":
        return
    path = wl.spec_field("serviceAccountName")
    if wl.pod_spec.get("serviceAccountName") or wl.pod_spec.get("serviceAccount"):
        yield Violation("pod names the default ServiceAccount", path)
    else:
        yield Violation("pod sets no serviceAccountName, so it runs as default", path)


@check(
    id="serviceaccount-default-automount",
    title="Default service accounts must not automount tokens",
    requirements=("7.2.5", "8.6.1"),
    blog=("R7",),
    severity=Severity.MEDIUM,
    targets=("ServiceAccount",),
    remediation="Set automountServiceAccountToken: false on every namespace's default ServiceAccount.",
    refs=("WKL-011", "C-0189", "CIS 5.1.5", "CKV_K8S_41"),
    cel=(
        "object.metadata.name != 'default' || (has(object.automountServiceAccountToken) && "
        "object.automountServiceAccountToken == false)"
    ),
)
def default_sa_automount(sa: Resource, ctx: CheckContext) -> Iterator[Violation]:
    """Pods that name no account get the default one; if it automounts, each of them carries an API
    credential nobody asked for."""
    if sa.name != "default":
        return
    value = sa.body.get("automountServiceAccountToken")
    if not is_false(value):
        state = "is not set" if value is None else f"is {value!r}"
        yield Violation(f"default ServiceAccount: automountServiceAccountToken {state}",
                        "automountServiceAccountToken")


@check(
    id="rolebinding-default-service-account",
    title="Bindings must not grant roles to a default service account",
    requirements=("7.2.5", "8.6.1"),
    blog=("R7",),
    severity=Severity.HIGH,
    targets=("RoleBinding", "ClusterRoleBinding"),
    remediation="Bind the role to a dedicated ServiceAccount instead of default.",
    refs=("WKL-011", "CKV_K8S_42", "accounts_no_rolebindings_default_service_account"),
    cel=(
        "!has(object.subjects) || object.subjects.all(s, !(has(s.kind) && s.kind == 'ServiceAccount' && "
        "has(s.name) && s.name == 'default'))"
    ),
)
def binding_default_sa(binding: Resource, ctx: CheckContext) -> Iterator[Violation]:
    """A role bound to a default ServiceAccount is held by every pod in that namespace that names no
    account, which is the opposite of need-to-know."""
    subjects = binding.body.get("subjects")
    if not isinstance(subjects, list):
        return
    for i, subject in enumerate(subjects):
        s = mapping(subject)
        if s.get("kind") == "ServiceAccount" and s.get("name") == "default":
            ns = s.get("namespace") or binding.namespace or "?"
            yield Violation(f"binds role to ServiceAccount {ns}/default", f"subjects[{i}]")


@check(
    id="serviceaccount-token-secret",
    title="No long-lived service-account token Secrets",
    requirements=("8.2.1", "8.3.1", "8.3.2"),
    blog=("R8",),
    severity=Severity.MEDIUM,
    targets=("Secret",),
    remediation="Delete the token Secret and let pods use projected, time-bound tokens (TokenRequest).",
    refs=("IDN-002", "IDN-008"),
    cel=(
        "!has(object.type) || object.type != 'kubernetes.io/service-account-token' || "
        "(has(object.metadata.labels) && 'kubernetes.io/legacy-token-invalid-since' in "
        "object.metadata.labels)"
    ),
)
def token_secret(secret: Resource, ctx: CheckContext) -> Iterator[Violation]:
    """A kubernetes.io/service-account-token Secret holds a token that never expires and is valid until the
    Secret is deleted: a static credential anyone who can read Secrets can copy. Tokens the cleanup
    controller has already invalidated are no longer credentials and pass."""
    if secret.body.get("type") != _TOKEN_SECRET_TYPE or _INVALIDATED_LABEL in secret.labels:
        return
    owner = secret.annotations.get(_SA_NAME_ANNOTATION)
    who = f" for ServiceAccount {owner!r}" if isinstance(owner, str) and owner else ""
    yield Violation(f"Secret holds a long-lived service-account token{who}", "type")

"""Namespaces as security boundaries (controls.md CFG-011, CFG-013, WKL-012).

PCI DSS 2.2.3 wants functions with different security needs kept apart, and namespaces are where a
cluster draws those lines: Pod Security Admission levels, quotas and RBAC all attach to them. That
only works if workloads are not dumped into ``default`` or the system namespaces, and if every
namespace states the pod-security level it enforces.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from kubepci.checks._credentials import key_path
from kubepci.checks._registry import CheckContext, check
from kubepci.inventory import NamespaceInfo, Workload
from kubepci.model import Resource, Severity, Violation

__all__: list[str] = []

PSA_ENFORCE = "pod-security.kubernetes.io/enforce"
SYSTEM_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})

#: objects Kubernetes itself creates in ``default``
_DEFAULT_BUILTINS = frozenset({
    ("Service", "kubernetes"),
    ("Endpoints", "kubernetes"),
    ("EndpointSlice", "kubernetes"),
    ("ServiceAccount", "default"),
    ("ConfigMap", "kube-root-ca.crt"),
})
#: kinds that record what happened rather than configure anything
_RECORD_KINDS = frozenset({"Event", "Lease"})

#: components that belong in kube-system: control plane (static pods are <component>-<node>),
#: DNS, CNI, CSI, cloud controllers and cluster add-ons shipped by distributions
_PLATFORM = re.compile(
    r"^(?:kube-|etcd|coredns|kube-dns|node-local-dns|nodelocaldns|dns-autoscaler|metrics-server"
    r"|cilium|calico|tigera|flannel|canal|weave-net|antrea|kindnet|kube-router|aws-node|amazon-vpc-cni"
    r"|konnectivity|csi-|ebs-csi|efs-csi|fsx-csi|azuredisk-csi|azurefile-csi|pdcsi|gce-pd-csi|snapshot-controller"
    r"|cloud-controller-manager|[a-z0-9-]*-cloud-controller-manager|cloud-node-manager|cluster-autoscaler"
    r"|aws-load-balancer-controller|ip-masq-agent|event-exporter|fluentbit-gke|gke-metrics-agent|metadata-proxy"
    r"|l7-default-backend|ama-|azure-|omsagent|nvidia-device-plugin|tiller-deploy|local-path-provisioner"
    r"|eks-pod-identity-agent|vpc-|ebs-|efs-)"
    r"|-csi-(?:node|controller)"
)


def _psa_path() -> str:
    return key_path("metadata.labels", PSA_ENFORCE)


@check(
    id="namespace-default-workloads",
    title="Objects must not be deployed to the default namespace",
    requirements=("2.2.3",),
    blog=("R2",),
    severity=Severity.LOW,
    targets=("*",),
    remediation="Create a dedicated namespace for the application and deploy the object there.",
    refs=("CFG-011", "C-0061", "C-0212", "KSV-0110", "CIS 5.6.4", "CKV_K8S_21"),
)
def default_namespace(res: Resource, ctx: CheckContext) -> Iterator[Violation]:
    """``default`` carries no pod-security level, quota or policy of its own, so anything there escapes
    the per-namespace separation 2.2.3 relies on. Like checkov, every namespaced object counts, not
    only workloads; the objects Kubernetes creates there itself (the ``kubernetes`` Service and its
    endpoints, the ``default`` ServiceAccount, ``kube-root-ca.crt``) and objects owned by another
    object (reported through their owner) are left out. Manifests without a namespace land here."""
    if res.namespace != "default" or res.kind in _RECORD_KINDS or (res.kind, res.name) in _DEFAULT_BUILTINS:
        return
    if res.metadata.get("ownerReferences"):
        return
    yield Violation(f"{res.kind} {res.name!r} is in the default namespace", "metadata.namespace")


@check(
    id="namespace-system-workloads",
    title="User workloads must not run in system namespaces",
    requirements=("2.2.3",),
    blog=("R2",),
    severity=Severity.MEDIUM,
    targets=("workload",),
    remediation="Move the workload to its own namespace and leave system namespaces to platform components.",
    refs=("CFG-011", "KSV-0037"),
    include_exempt=True,
)
def system_namespace(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """kube-system is exempt from pod-security enforcement and hosts the most privileged service
    accounts; a user workload there inherits both. Recognised platform components (control plane,
    DNS, CNI, CSI, cloud controllers, metrics-server, ...) are expected there and pass."""
    if wl.namespace not in SYSTEM_NAMESPACES:
        return
    name = wl.resource.name
    if _PLATFORM.search(name):
        return
    yield Violation(f"{wl.resource.kind} {name!r} is not a platform component but runs in {wl.namespace}",
                    "metadata.namespace")


@check(
    id="namespace-psa-enforce",
    title="Namespaces must enforce a Pod Security Standard",
    requirements=("2.2.1", "2.2.6"),
    blog=("R2", "R5"),
    severity=Severity.HIGH,
    targets=("namespace",),
    remediation="Label the namespace pod-security.kubernetes.io/enforce=restricted (or baseline at least).",
    refs=("CFG-013", "CIS 5.2.1"),
    cel=(
        "has(object.metadata.labels) && 'pod-security.kubernetes.io/enforce' in object.metadata.labels "
        "&& object.metadata.labels['pod-security.kubernetes.io/enforce'] in ['baseline', 'restricted']"
    ),
)
def psa_enforce(ns: NamespaceInfo, ctx: CheckContext) -> Iterator[Violation]:
    """Pod Security Admission is the built-in, fail-closed floor under every workload check: without an
    ``enforce`` level of ``baseline`` or ``restricted`` a namespace admits privileged pods. Only
    namespaces declared by a Namespace object are judged (a referenced one has no labels to read);
    exempt namespaces are skipped by scope."""
    if not ns.declared:
        return
    level = ns.labels.get(PSA_ENFORCE)
    if level in ("baseline", "restricted"):
        return
    state = "is not set" if level is None else f"is {level!r}"
    yield Violation(f"namespace {ns.name!r}: {PSA_ENFORCE} {state} (need baseline or restricted)",
                    _psa_path())


@check(
    id="namespace-psa-cde-restricted",
    title="CDE namespaces must enforce the restricted Pod Security Standard",
    requirements=("2.2.1", "2.2.6"),
    blog=("R2", "R5"),
    severity=Severity.HIGH,
    targets=("namespace",),
    remediation="Label the CDE namespace pod-security.kubernetes.io/enforce=restricted.",
    refs=("CFG-013", "CIS 5.2.1"),
    applies_to="cde",
    cel=(
        "has(object.metadata.labels) && 'pod-security.kubernetes.io/enforce' in object.metadata.labels "
        "&& object.metadata.labels['pod-security.kubernetes.io/enforce'] == 'restricted'"
    ),
)
def psa_cde_restricted(ns: NamespaceInfo, ctx: CheckContext) -> Iterator[Violation]:
    """``baseline`` still allows running as root and keeping default capabilities; cardholder data
    deserves the hardened profile. Only declared CDE namespaces are judged."""
    if not ns.declared:
        return
    level = ns.labels.get(PSA_ENFORCE)
    if level == "restricted":
        return
    state = "is not set" if level is None else f"is {level!r}"
    yield Violation(f"CDE namespace {ns.name!r}: {PSA_ENFORCE} {state}, not 'restricted'", _psa_path())


@check(
    id="namespace-resource-quota-cde",
    title="CDE namespaces must have a ResourceQuota",
    requirements=("2.2.6",),
    blog=("R5",),
    severity=Severity.LOW,
    targets=("namespace",),
    remediation="Create a ResourceQuota in the namespace that caps CPU, memory and object counts.",
    refs=("WKL-012", "KSV-0040"),
    applies_to="cde",
    admission=False,
)
def resource_quota_cde(ns: NamespaceInfo, ctx: CheckContext) -> Iterator[Violation]:
    """Without a quota one runaway or compromised workload can starve the CDE's other services
    (PCI container guidance §11.1; WKL-012 has no direct DSS requirement, 2.2.6 secure parameters
    is the closest). Only declared CDE namespaces are judged, since the quota is normally shipped
    with the Namespace object."""
    if ns.declared and not ctx.inventory.in_namespace(ns.name, "ResourceQuota"):
        yield Violation(f"CDE namespace {ns.name!r} has no ResourceQuota", "")


@check(
    id="namespace-limitrange-cde",
    title="CDE namespaces must have a LimitRange",
    requirements=("2.2.6",),
    blog=("R5",),
    severity=Severity.LOW,
    targets=("namespace",),
    remediation="Create a LimitRange in the namespace with default container requests and limits.",
    refs=("WKL-012", "KSV-0039"),
    applies_to="cde",
    admission=False,
)
def limitrange_cde(ns: NamespaceInfo, ctx: CheckContext) -> Iterator[Violation]:
    """A LimitRange gives every container default requests and limits, so a pod that forgot them
    cannot take the whole node (PCI container guidance §11.1). Only declared CDE namespaces."""
    if ns.declared and not ctx.inventory.in_namespace(ns.name, "LimitRange"):
        yield Violation(f"CDE namespace {ns.name!r} has no LimitRange", "")

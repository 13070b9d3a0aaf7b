"""Read a live cluster into the same resources a file scan produces.

Only ``get``/``list`` requests are made, one list (paginated) per resource type the catalog reads.
Each item comes back as ``kubectl get -o json`` would print it (``kind``/``apiVersion`` set,
``managedFields`` dropped), so the checks cannot tell a live object from a dumped one except by
the fields the API server itself adds.

A type that cannot be listed (403 for a scanner identity without that permission, 404 for an API
that went away, 5xx for a broken aggregated API) becomes an ``Unreadable`` naming the type and the
server's reason: the report counts it as lost coverage and the scan goes on. Only a cluster that
cannot be reached or rejects the credentials altogether aborts the scan (``KubeAPIError``, exit 3).

The server's ``/version`` document is added as a ``kubepci.io/v1`` ``ClusterInfo`` object named
``cluster`` in ``kube-system`` (the namespace that holds the control plane, so scope rules for
system namespaces apply to it as they do to the static pods). Checks such as the supported-version
check read it; a file scan can supply one by hand to get the same verdict.

Secret objects are read in full because the TLS and card-number checks need ``type`` and ``data``.
Nothing here logs or prints an object, and error messages carry only the type and the server's
Status message.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from kubepci.inventory.loaders.manifests import LoadResult
from kubepci.kube.client import APIResource, KubeAPIError, KubeClient
from kubepci.model import Resource, ResourceRef, SourceLocation, Unreadable

__all__ = ["CLUSTER_INFO_KIND", "RESOURCE_TYPES", "ResourceType", "load_cluster"]

CLUSTER_INFO_KIND = "ClusterInfo"
CLUSTER_INFO_API_VERSION = "kubepci.io/v1"
CLUSTER_INFO_NAMESPACE = "kube-system"


@dataclass(frozen=True, slots=True)
class ResourceType:
    """A type to list: group, versions in order of preference, plural name, kind.

    ``required`` types are part of every conformant cluster: when discovery does not serve them,
    that is itself lost coverage. Optional ones (CRDs) are listed only when served.
    """

    group: str
    versions: tuple[str, ...]
    resource: str
    kind: str
    required: bool = True


def _t(group: str, versions: str, resource: str, kind: str, required: bool = True) -> ResourceType:
    return ResourceType(group, tuple(versions.split()), resource, kind, required)


#: every type the catalog and the analyzers read
RESOURCE_TYPES: tuple[ResourceType, ...] = (
    _t("", "v1", "namespaces", "Namespace"),
    _t("", "v1", "nodes", "Node"),
    _t("", "v1", "pods", "Pod"),
    _t("", "v1", "replicationcontrollers", "ReplicationController"),
    _t("", "v1", "services", "Service"),
    _t("", "v1", "serviceaccounts", "ServiceAccount"),
    _t("", "v1", "secrets", "Secret"),
    _t("", "v1", "configmaps", "ConfigMap"),
    _t("", "v1", "resourcequotas", "ResourceQuota"),
    _t("", "v1", "limitranges", "LimitRange"),
    _t("apps", "v1", "deployments", "Deployment"),
    _t("apps", "v1", "statefulsets", "StatefulSet"),
    _t("apps", "v1", "daemonsets", "DaemonSet"),
    _t("apps", "v1", "replicasets", "ReplicaSet"),
    _t("batch", "v1", "jobs", "Job"),
    _t("batch", "v1", "cronjobs", "CronJob"),
    _t("networking.k8s.io", "v1", "ingresses", "Ingress"),
    _t("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy"),
    _t("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    _t("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole"),
    _t("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    _t("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding"),
    _t("node.k8s.io", "v1", "runtimeclasses", "RuntimeClass"),
    _t("storage.k8s.io", "v1", "storageclasses", "StorageClass"),
    _t("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations", "ValidatingWebhookConfiguration"),
    _t("admissionregistration.k8s.io", "v1 v1beta1", "validatingadmissionpolicies", "ValidatingAdmissionPolicy"),
    _t("admissionregistration.k8s.io", "v1 v1beta1", "validatingadmissionpolicybindings",
       "ValidatingAdmissionPolicyBinding"),
    # served only where the add-on is installed
    _t("policy.networking.k8s.io", "v1alpha1", "adminnetworkpolicies", "AdminNetworkPolicy", False),
    _t("policy.networking.k8s.io", "v1alpha1", "baselineadminnetworkpolicies", "BaselineAdminNetworkPolicy", False),
    _t("cilium.io", "v2", "ciliumnetworkpolicies", "CiliumNetworkPolicy", False),
    _t("cilium.io", "v2", "ciliumclusterwidenetworkpolicies", "CiliumClusterwideNetworkPolicy", False),
    _t("crd.projectcalico.org", "v1", "networkpolicies", "NetworkPolicy", False),
    _t("crd.projectcalico.org", "v1", "globalnetworkpolicies", "GlobalNetworkPolicy", False),
    _t("cert-manager.io", "v1", "certificates", "Certificate", False),
    _t("cert-manager.io", "v1", "issuers", "Issuer", False),
    _t("cert-manager.io", "v1", "clusterissuers", "ClusterIssuer", False),
)


def _served(rtype: ResourceType, discovery: dict[str, list[APIResource]]) -> APIResource | None:
    for version in rtype.versions:
        gv = f"{rtype.group}/{version}" if rtype.group else version
        for res in discovery.get(gv, ()):
            if res.name == rtype.resource:
                return res
    return None


def _resource(obj: dict[str, Any], location: SourceLocation) -> Resource | None:
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
        return None
    namespace = meta.get("namespace")
    ref = ResourceRef(namespace if isinstance(namespace, str) else "", str(obj.get("kind", "")), meta["name"],
                      str(obj.get("apiVersion", "")))
    return Resource(ref, obj, location)


def _describe(rtype: ResourceType) -> str:
    return f"{rtype.resource}.{rtype.group}" if rtype.group else rtype.resource


def cluster_info(client: KubeClient, version: dict[str, Any]) -> Resource:
    """The synthetic-by-shape but server-sourced ``ClusterInfo`` object (see module docstring)."""
    body = {
        "apiVersion": CLUSTER_INFO_API_VERSION,
        "kind": CLUSTER_INFO_KIND,
        "metadata": {"name": "cluster", "namespace": CLUSTER_INFO_NAMESPACE},
        "context": client.context,
        "server": client.server,
        "version": version,
    }
    ref = ResourceRef(CLUSTER_INFO_NAMESPACE, CLUSTER_INFO_KIND, "cluster", CLUSTER_INFO_API_VERSION)
    return Resource(ref, body, SourceLocation(f"cluster:{client.context}/version"))


def load_cluster(client: KubeClient, namespaces: Sequence[str] | None = None,
                 types: Iterable[ResourceType] = RESOURCE_TYPES) -> LoadResult:
    """List every type in ``types`` (namespaced ones only in ``namespaces`` when given).

    Raises ``KubeAPIError`` when the server is unreachable or rejects the credentials; every other
    failure is returned in ``LoadResult.unreadable``.
    """
    version = client.version()  # unauthenticated-safe and cheap: proves the server answers at all
    discovery = client.discover_resources()
    digest = hashlib.sha256()
    resources: list[Resource] = [cluster_info(client, version)]
    unreadable: list[Unreadable] = []
    wanted_ns = tuple(dict.fromkeys(namespaces or ()))
    for rtype in types:
        served = _served(rtype, discovery)
        if served is None:
            if rtype.required:
                where = SourceLocation(f"cluster:{client.context}/{rtype.group or 'core'}/{rtype.kind}")
                reason = f"cannot list {_describe(rtype)}: the API server does not serve it"
                unreadable.append(Unreadable(where, reason))
            continue
        location = SourceLocation(f"cluster:{client.context}/{served.group_version}/{rtype.kind}")
        try:
            for obj in _list_type(client, rtype, served, wanted_ns, digest):
                res = _resource(obj, location)
                if res is not None:
                    resources.append(res)
        except KubeAPIError as exc:
            if exc.status in (0, 401):
                raise
            unreadable.append(Unreadable(location, f"cannot list {_describe(rtype)}: {exc}"))
    name = f"cluster:{client.context} ({client.server}, {version.get('gitVersion', '?')})"
    return LoadResult(tuple(resources), tuple(unreadable), ((name, digest.hexdigest()),))


def _list_type(client: KubeClient, rtype: ResourceType, served: APIResource, namespaces: tuple[str, ...],
               digest: Any) -> Iterable[dict[str, Any]]:
    gv = served.group_version
    if not namespaces:
        yield from client.list_all(gv, served.name, digest=digest)
    elif served.namespaced:
        for ns in namespaces:
            yield from client.list_all(gv, served.name, ns, digest=digest)
    elif rtype.kind == "Namespace":
        # only the namespaces asked for, so namespace checks do not judge the rest of the cluster
        for ns in namespaces:
            try:
                obj = client.get(f"/api/{gv}/namespaces/{quote(ns, safe='')}")
            except KubeAPIError as exc:
                if exc.status == 404:
                    continue
                raise
            obj.setdefault("kind", "Namespace")
            obj.setdefault("apiVersion", gv)
            meta = obj.get("metadata")
            if isinstance(meta, dict):
                meta.pop("managedFields", None)
            yield obj
    else:
        yield from client.list_all(gv, served.name, digest=digest)

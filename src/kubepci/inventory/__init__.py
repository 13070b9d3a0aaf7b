"""The Inventory: every object of a scan, indexed, plus the Workload view.

The Workload view normalises the eight kinds that carry a pod template so a check about pods is
written once and reports the full field path of the object it actually read.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from kubepci.inventory.loaders.manifests import CONFIG_API_GROUPS
from kubepci.model import Resource, ResourceRef, SourceLocation, Unreadable

__all__ = [
    "CLUSTER_SCOPED_KINDS",
    "CONTAINER_FIELDS",
    "WORKLOAD_KINDS",
    "Container",
    "Inventory",
    "NamespaceInfo",
    "Workload",
    "workload_of",
]

#: kind -> dotted path of the pod spec inside the object
WORKLOAD_KINDS: Mapping[str, tuple[str, ...]] = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "ReplicationController": ("spec", "template", "spec"),
    "DeploymentConfig": ("spec", "template", "spec"),  # OpenShift apps.openshift.io/v1
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}

CONTAINER_FIELDS = ("initContainers", "containers", "ephemeralContainers")

_EMPTY: Mapping[str, Any] = {}


def _get(obj: Any, keys: Sequence[str]) -> Any:
    for key in keys:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


@dataclass(frozen=True, slots=True)
class Container:
    """One container of a pod spec with the path prefix findings should use."""

    field: str  # containers | initContainers | ephemeralContainers
    index: int
    name: str
    body: Mapping[str, Any]
    path: str  # e.g. spec.template.spec.containers[0]
    security_context: Mapping[str, Any]  # {} when unset: checks read it on every call, so it is precomputed

    @property
    def image(self) -> str:
        image = self.body.get("image")
        return image if isinstance(image, str) else ""


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else _EMPTY


@dataclass(frozen=True, slots=True)
class Workload:
    """A pod-template-carrying object seen through its pod spec.

    The derived mappings are computed once at build time: every workload check reads them, and a
    property recomputing them costs more than the checks themselves on a 100k-object scan.
    """

    resource: Resource
    pod_spec: Mapping[str, Any]
    pod_metadata: Mapping[str, Any]
    spec_path: str
    containers: tuple[Container, ...]
    pod_labels: Mapping[str, str]
    pod_annotations: Mapping[str, str]
    pod_security_context: Mapping[str, Any]
    #: its controller (ownerReference) is another workload of the inventory: a live cluster's
    #: Deployment -> ReplicaSet -> Pod chain is judged once, on the top-level object
    owned: bool = False

    @property
    def ref(self) -> ResourceRef:
        return self.resource.ref

    @property
    def namespace(self) -> str:
        return self.resource.ref.namespace

    def spec_field(self, name: str) -> str:
        return f"{self.spec_path}.{name}"

    def volumes(self) -> Iterator[tuple[str, Mapping[str, Any]]]:
        vols = self.pod_spec.get("volumes")
        if isinstance(vols, list):
            for i, vol in enumerate(vols):
                if isinstance(vol, Mapping):
                    yield f"{self.spec_path}.volumes[{i}]", vol


def workload_of(resource: Resource) -> Workload | None:
    """Build the Workload view of ``resource`` or None if it carries no pod spec."""
    keys = WORKLOAD_KINDS.get(resource.kind)
    if keys is None:
        return None
    pod_spec = _get(resource.body, keys)
    if not isinstance(pod_spec, Mapping):
        return None
    if resource.kind == "Pod":
        pod_meta: Any = resource.body.get("metadata")
    else:
        pod_meta = _get(resource.body, (*keys[:-1], "metadata"))
    spec_path = ".".join(keys)
    containers: list[Container] = []
    for fname in CONTAINER_FIELDS:
        items = pod_spec.get(fname)
        if not isinstance(items, list):
            continue
        for i, c in enumerate(items):
            if isinstance(c, Mapping):
                name = c.get("name")
                containers.append(Container(
                    fname, i, name if isinstance(name, str) else f"#{i}", c, f"{spec_path}.{fname}[{i}]",
                    _mapping(c.get("securityContext")),
                ))
    meta = _mapping(pod_meta)
    return Workload(
        resource,
        pod_spec,
        meta,
        spec_path,
        tuple(containers),
        _mapping(meta.get("labels")),
        _mapping(meta.get("annotations")),
        _mapping(pod_spec.get("securityContext")),
    )


@dataclass(frozen=True, slots=True)
class NamespaceInfo:
    """A namespace known to the scan: declared by a Namespace object or only referenced."""

    name: str
    resource: Resource  # the Namespace object, or a synthetic one when only referenced

    @property
    def labels(self) -> Mapping[str, str]:
        return self.resource.labels

    @property
    def declared(self) -> bool:
        return not self.resource.synthetic


@dataclass(frozen=True, slots=True)
class Inventory:
    """Immutable, indexed set of resources for one evaluation."""

    resources: tuple[Resource, ...]
    unreadable: tuple[Unreadable, ...] = ()
    inputs: tuple[tuple[str, str], ...] = ()
    by_kind: Mapping[str, tuple[Resource, ...]] = field(default_factory=dict)
    by_namespace_kind: Mapping[tuple[str, str], tuple[Resource, ...]] = field(default_factory=dict)
    namespaces: Mapping[str, NamespaceInfo] = field(default_factory=dict)
    workloads: tuple[Workload, ...] = ()
    nodes: Mapping[str, Resource] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        resources: Iterable[Resource],
        unreadable: Iterable[Unreadable] = (),
        inputs: Iterable[tuple[str, str]] = (),
        default_namespace: str = "default",
    ) -> Inventory:
        """Index resources. Namespaced objects without a namespace land in ``default_namespace``,
        as ``kubectl apply`` would put them; cluster-scoped kinds keep an empty namespace."""
        res_list: list[Resource] = []
        for r in resources:
            if _cluster_scoped(r):
                if r.namespace:
                    r = Resource(ResourceRef("", r.kind, r.name, r.ref.api_version), r.body, r.location, r.synthetic)
            elif not r.namespace:
                r = Resource(
                    ResourceRef(default_namespace, r.kind, r.name, r.ref.api_version), r.body, r.location, r.synthetic
                )
            res_list.append(r)
        by_kind: dict[str, list[Resource]] = defaultdict(list)
        by_ns_kind: dict[tuple[str, str], list[Resource]] = defaultdict(list)
        namespaces: dict[str, NamespaceInfo] = {}
        workloads: list[Workload] = []
        nodes: dict[str, Resource] = {}
        for r in res_list:
            by_kind[r.kind].append(r)
            if r.namespace:
                by_ns_kind[(r.namespace, r.kind)].append(r)
            if r.kind == "Namespace":
                namespaces[r.name] = NamespaceInfo(r.name, r)
            elif r.kind == "Node":
                nodes[r.name] = r
            else:
                wl = workload_of(r)
                if wl is not None:
                    workloads.append(wl)
        workloads = _mark_owned(workloads)
        for r in res_list:
            if r.namespace and r.namespace not in namespaces:
                synthetic = Resource(
                    ResourceRef("", "Namespace", r.namespace, "v1"),
                    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": r.namespace}},
                    SourceLocation("(referenced)"),
                    synthetic=True,
                )
                namespaces[r.namespace] = NamespaceInfo(r.namespace, synthetic)
        return cls(
            resources=tuple(res_list),
            unreadable=tuple(unreadable),
            inputs=tuple(inputs),
            by_kind={k: tuple(v) for k, v in by_kind.items()},
            by_namespace_kind={k: tuple(v) for k, v in by_ns_kind.items()},
            namespaces=dict(sorted(namespaces.items())),
            workloads=tuple(workloads),
            nodes=nodes,
        )

    def of_kind(self, kind: str) -> tuple[Resource, ...]:
        return self.by_kind.get(kind, ())

    def in_namespace(self, namespace: str, kind: str) -> tuple[Resource, ...]:
        return self.by_namespace_kind.get((namespace, kind), ())

    def workloads_in(self, namespace: str) -> Iterator[Workload]:
        return (w for w in self.workloads if w.namespace == namespace)


def _cluster_scoped(resource: Resource) -> bool:
    """Cluster-scoped API kinds, and component configuration files (audit Policy, EncryptionConfiguration):
    those are not API objects and belong to no namespace."""
    return resource.kind in CLUSTER_SCOPED_KINDS or resource.ref.api_version.startswith(CONFIG_API_GROUPS)


def _mark_owned(workloads: list[Workload]) -> list[Workload]:
    present = {(w.namespace, w.resource.kind, w.resource.name) for w in workloads}
    out = []
    for w in workloads:
        refs = w.resource.metadata.get("ownerReferences")
        if isinstance(refs, list) and any(
            isinstance(ref, Mapping) and (w.namespace, ref.get("kind"), ref.get("name")) in present for ref in refs
        ):
            w = replace(w, owned=True)
        out.append(w)
    return out


#: kinds that are not namespaced (built-ins and the common CRDs the catalog reads)
CLUSTER_SCOPED_KINDS = frozenset(
    {
        "Namespace",
        "Node",
        "PersistentVolume",
        "ClusterRole",
        "ClusterRoleBinding",
        "StorageClass",
        "CustomResourceDefinition",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "MutatingAdmissionPolicy",
        "MutatingAdmissionPolicyBinding",
        "PriorityClass",
        "RuntimeClass",
        "IngressClass",
        "APIService",
        "CertificateSigningRequest",
        "CSIDriver",
        "CSINode",
        "VolumeAttachment",
        "PodSecurityPolicy",
        "ClusterIssuer",
        "AdminNetworkPolicy",
        "BaselineAdminNetworkPolicy",
        "ClusterNetworkPolicy",
        "CiliumClusterwideNetworkPolicy",
        "GlobalNetworkPolicy",
        "GlobalNetworkSet",
        "HostEndpoint",
        "GatewayClass",
        "FlowSchema",
        "PriorityLevelConfiguration",
    }
)

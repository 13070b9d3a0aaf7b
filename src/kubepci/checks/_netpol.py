"""NetworkPolicy semantics shared by the network checks and, later, the reachability analyzer.

Upstream rules encoded here: ``policyTypes`` defaults to Ingress, plus Egress when egress rules
exist; a null rule is the zero rule (allow all); a policy whose selector the API server would
reject selects nothing. For NET-002, CNI-native policies (Cilium, Calico) and admin network
policies count when they *can* select a pod of the namespace: namespace facts are known, pod
labels are not, so selectors are evaluated three-valued (see ``_selectors``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from kubepci.checks._util import mapping
from kubepci.inventory import WORKLOAD_KINDS, Inventory, NamespaceInfo, Workload, workload_of
from kubepci.model import Resource
from kubepci.selectors import CalicoSelector, LabelSelector, Requirement, SelectorError, namespace_labels

__all__ = [
    "K8S_GROUPS",
    "effective_rules",
    "has_workload",
    "is_k8s_network_policy",
    "k8s_policies",
    "other_policy",
    "peers",
    "pod_labels_path",
    "pod_selector",
    "policy_types",
    "rules",
    "spec_of",
]

K8S_GROUPS = ("networking.k8s.io/", "extensions/")
_CALICO_GROUPS = ("crd.projectcalico.org/", "projectcalico.org/")
_ADMIN_POLICY_KINDS = ("AdminNetworkPolicy", "BaselineAdminNetworkPolicy", "ClusterNetworkPolicy")
_BOTH = frozenset(("Ingress", "Egress"))
_INGRESS_ONLY = frozenset(("Ingress",))
_DIRECTIONS = (("ingress", "from", "Ingress"), ("egress", "to", "Egress"))
_CILIUM_NS = "io.kubernetes.pod.namespace"
_CILIUM_NS_LABELS = "io.cilium.k8s.namespace.labels."
_CILIUM_SOURCES = ("k8s:", "any:")
_CALICO_NS = "projectcalico.org/namespace"


def is_k8s_network_policy(resource: Resource) -> bool:
    """A networking.k8s.io NetworkPolicy; Calico's namespaced kind shares the name, not the schema."""
    return resource.kind == "NetworkPolicy" and resource.ref.api_version.startswith(K8S_GROUPS)


def policy_types(spec: Mapping[str, Any]) -> frozenset[str]:
    """Effective policyTypes after API defaulting: Ingress always, Egress if egress rules exist."""
    raw = spec.get("policyTypes")
    if isinstance(raw, list) and raw:
        return frozenset(t for t in raw if t in ("Ingress", "Egress"))
    egress = spec.get("egress")
    return _BOTH if isinstance(egress, list) and egress else _INGRESS_ONLY


@dataclass(frozen=True, slots=True)
class IsolatingPolicy:
    """A NetworkPolicy's pod selector, parsed once, and the directions it isolates."""

    equal: tuple[tuple[str, str], ...]  # matchLabels (and one-value In): checked first, they decide most pods
    other: tuple[Requirement, ...]
    ingress: bool
    egress: bool

    def selects(self, labels: Mapping[str, Any]) -> bool:
        for key, value in self.equal:
            if labels.get(key) != value:
                return False
        for requirement in self.other:
            if not requirement.matches(labels):
                return False
        return True


#: Per namespace, every valid NetworkPolicy as an :class:`IsolatingPolicy`
IsolationIndex = Mapping[str, tuple[IsolatingPolicy, ...]]


def isolation_index(inventory: Inventory) -> IsolationIndex:
    """Every NetworkPolicy's selector parsed once: a per-workload check otherwise re-parses each policy
    of the namespace for each workload (bitnami: 140 policies in one namespace, 40k parses). A policy
    whose pod selector the API server would reject selects nothing and is left out."""
    out: dict[str, list[IsolatingPolicy]] = {}
    for pol in inventory.of_kind("NetworkPolicy"):
        if not is_k8s_network_policy(pol):
            continue
        spec = spec_of(pol)
        try:
            selector = LabelSelector.parse(spec.get("podSelector"))
        except SelectorError:
            continue
        types = policy_types(spec)
        reqs = selector.requirements
        equal = tuple((r.key, r.values[0]) for r in reqs if r.operator == "In" and len(r.values) == 1)
        other = tuple(r for r in reqs if not (r.operator == "In" and len(r.values) == 1))
        out.setdefault(pol.namespace, []).append(IsolatingPolicy(equal, other, "Ingress" in types, "Egress" in types))
    return {ns: tuple(entries) for ns, entries in out.items()}


def pod_labels_path(wl: Workload) -> str:
    """Where the pod labels of a workload live (``metadata.labels`` of the pod or its template)."""
    base = wl.spec_path[: -len(".spec")] if wl.spec_path.endswith(".spec") else ""
    return f"{base}.metadata.labels" if base else "metadata.labels"


def spec_of(resource: Resource) -> Mapping[str, Any]:
    return mapping(resource.body.get("spec"))


def k8s_policies(inventory: Inventory, namespace: str) -> Iterator[Resource]:
    return (r for r in inventory.in_namespace(namespace, "NetworkPolicy") if is_k8s_network_policy(r))


def pod_selector(spec: Mapping[str, Any]) -> LabelSelector | None:
    """The policy's podSelector (absent reads as ``{}``), or None if the API would reject it."""
    try:
        return LabelSelector.parse(spec.get("podSelector"))
    except SelectorError:
        return None


def rules(spec: Mapping[str, Any], field: str) -> Iterator[tuple[int, Mapping[str, Any]]]:
    raw = spec.get(field)
    if isinstance(raw, list):
        for i, rule in enumerate(raw):
            if rule is None:  # a null list entry decodes to the zero rule: allow everything
                yield i, {}
            elif isinstance(rule, Mapping):
                yield i, rule


def effective_rules(spec: Mapping[str, Any]) -> Iterator[tuple[str, str, int, Mapping[str, Any]]]:
    """(field, peer field, index, rule) for the rules of directions the policy enforces."""
    types = policy_types(spec)
    for field, peer_field, ptype in _DIRECTIONS:
        if ptype in types:
            for i, rule in rules(spec, field):
                yield field, peer_field, i, rule


def peers(rule: Mapping[str, Any], peer_field: str) -> list[tuple[int, Mapping[str, Any]]]:
    raw = rule.get(peer_field)
    if not isinstance(raw, list):
        return []
    return [(j, p) for j, p in enumerate(raw) if isinstance(p, Mapping)]


def has_workload(inventory: Inventory, namespace: str) -> bool:
    return any(
        workload_of(r) is not None for kind in WORKLOAD_KINDS for r in inventory.in_namespace(namespace, kind)
    )


def _cilium_could_select(rule: Mapping[str, Any], ns: NamespaceInfo) -> bool:
    """Can a Cilium rule's endpointSelector select some pod of ``ns``? Pod-label terms are unknown."""
    raw = rule.get("endpointSelector")
    if raw is None:  # nodeSelector rules are host policies: they select no pod
        return False
    try:
        sel = LabelSelector.parse(raw, strict=False)
    except SelectorError:
        return False
    labels: dict[str, Any] = {_CILIUM_NS: ns.name}
    for key, value in namespace_labels(ns.name, ns.labels).items():
        labels[_CILIUM_NS_LABELS + key] = value
    for src in _CILIUM_SOURCES:
        labels.update({src + k: v for k, v in list(labels.items()) if ":" not in k})

    def known(key: str) -> bool:
        bare = key.split(":", 1)[1] if key.startswith(_CILIUM_SOURCES) else key
        return bare == _CILIUM_NS or bare.startswith(_CILIUM_NS_LABELS) or key.startswith("reserved:")

    return sel.evaluate(labels, known) is not False


def _calico_could_select(spec: Mapping[str, Any], ns: NamespaceInfo) -> bool:
    """Can a GlobalNetworkPolicy select some pod of ``ns``? Calico exposes namespace labels as pcns.*."""
    ns_labels = namespace_labels(ns.name, ns.labels)
    ns_labels["projectcalico.org/name"] = ns.name
    try:
        ns_sel = CalicoSelector.parse(spec.get("namespaceSelector"))
        sel = CalicoSelector.parse(spec.get("selector"))
    except SelectorError:
        return False
    if not ns_sel.matches(ns_labels):
        return False
    pod_view: dict[str, Any] = {f"pcns.{k}": v for k, v in ns_labels.items()}
    pod_view[_CALICO_NS] = ns.name
    return sel.evaluate(pod_view, lambda k: k == _CALICO_NS or k.startswith("pcns.")) is not False


def _admin_subject_selects(spec: Mapping[str, Any], ns: NamespaceInfo) -> bool:
    subject = mapping(spec.get("subject"))
    ns_labels = namespace_labels(ns.name, ns.labels)
    try:
        if "namespaces" in subject:
            return LabelSelector.parse(subject.get("namespaces")).matches(ns_labels)
        if "pods" in subject:
            pods = mapping(subject.get("pods"))
            return LabelSelector.parse(pods.get("namespaceSelector")).matches(ns_labels)
    except SelectorError:
        return False
    return False


def other_policy(inventory: Inventory, ns: NamespaceInfo) -> str | None:
    """Name a non-NetworkPolicy-v1 policy that covers ``ns`` (NET-002 counts CNI policies too)."""
    for r in inventory.in_namespace(ns.name, "NetworkPolicy"):
        if r.ref.api_version.startswith(_CALICO_GROUPS):
            return f"Calico NetworkPolicy {r.name}"
    for r in inventory.in_namespace(ns.name, "CiliumNetworkPolicy"):
        return f"CiliumNetworkPolicy {r.name}"
    for r in inventory.of_kind("CiliumClusterwideNetworkPolicy"):
        specs = [mapping(r.body.get("spec"))] if "spec" in r.body else []
        raw_specs = r.body.get("specs")
        if isinstance(raw_specs, list):
            specs += [s for s in raw_specs if isinstance(s, Mapping)]
        if any(_cilium_could_select(s, ns) for s in specs):
            return f"CiliumClusterwideNetworkPolicy {r.name}"
    for r in inventory.of_kind("GlobalNetworkPolicy"):
        if r.ref.api_version.startswith(_CALICO_GROUPS) and _calico_could_select(spec_of(r), ns):
            return f"GlobalNetworkPolicy {r.name}"
    for kind in _ADMIN_POLICY_KINDS:
        for r in inventory.of_kind(kind):
            if _admin_subject_selects(spec_of(r), ns):
                return f"{kind} {r.name}"
    return None

"""Endpoint classes are keyed on the labels selectors can tell apart, not on every label.

The projection is only sound if no selector can distinguish a pod from its projection; hypothesis
checks that for arbitrary label maps and selectors, and the compiled model is checked to merge
pods that differ only in labels no policy looks at.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kubepci.analyzers.netpol.bind import project_labels
from kubepci.analyzers.netpol.engine import compile_inventory
from kubepci.config import parse_config
from kubepci.inventory import Inventory
from kubepci.model import Resource, ResourceRef, SourceLocation
from kubepci.selectors import LabelSelector, Requirement

_KEYS = st.sampled_from(["app", "tier", "team", "version"])
_VALUES = st.sampled_from(["a", "b", "c", "d"])
_REQ = st.one_of(
    st.builds(lambda k, op, vs: Requirement(k, op, tuple(sorted(set(vs)))), _KEYS, st.sampled_from(["In", "NotIn"]),
              st.lists(_VALUES, min_size=1, max_size=3)),
    st.builds(lambda k, op: Requirement(k, op), _KEYS, st.sampled_from(["Exists", "DoesNotExist"])),
)
_SELECTOR = st.builds(lambda reqs: LabelSelector(tuple(reqs)), st.lists(_REQ, max_size=3))


@settings(max_examples=300, deadline=None)
@given(st.lists(_SELECTOR, min_size=1, max_size=4), st.dictionaries(_KEYS, _VALUES, max_size=4))
def test_no_selector_tells_a_pod_from_its_projection(selectors: list[LabelSelector], labels: dict[str, str]) -> None:
    vocab: dict[str, set[str]] = {}
    for sel in selectors:
        for req in sel.requirements:
            vocab.setdefault(req.key, set()).update(req.values)
    projected = project_labels(labels, {k: frozenset(v) for k, v in vocab.items()})
    for sel in selectors:
        assert sel.matches(labels) == sel.matches(projected), (str(sel), labels, projected)


def _res(body: dict[str, object]) -> Resource:
    meta = body["metadata"]
    assert isinstance(meta, dict)
    return Resource(ResourceRef(str(meta.get("namespace", "")), str(body["kind"]), str(meta["name"])), body,
                    SourceLocation("test.yaml", 1))


def _deployment(name: str, labels: dict[str, str]) -> Resource:
    return _res({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "shop"},
                 "spec": {"selector": {"matchLabels": labels},
                          "template": {"metadata": {"labels": labels},
                                       "spec": {"containers": [{"name": "c", "image": "x"}]}}}})


def test_pods_differing_only_in_unselected_labels_share_a_class() -> None:
    inventory = Inventory.build([
        _res({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
        _deployment("web-1", {"app": "web-1", "tier": "front"}),
        _deployment("web-2", {"app": "web-2", "tier": "front"}),
        _deployment("db", {"app": "db", "tier": "data"}),
        _deployment("batch", {"app": "batch", "tier": "jobs"}),
        _res({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
              "metadata": {"name": "db-from-front", "namespace": "shop"},
              "spec": {"podSelector": {"matchLabels": {"tier": "data"}}, "policyTypes": ["Ingress"],
                       "ingress": [{"from": [{"podSelector": {"matchLabels": {"tier": "front"}}}]}]}}),
    ])
    model = compile_inventory(inventory)
    def bits(name: str) -> int:
        return model.bits_of(model.endpoint(name))

    assert bits("shop/web-1") == bits("shop/web-2"), "app=web-1/web-2 is not named by any selector"
    assert bits("shop/web-1") != bits("shop/db")
    assert len(model.binding.classes) == 3, [c.labels for c in model.binding.classes]
    assert model.can_reach("shop/web-2", "shop/db", 5432, "TCP").allowed
    assert not model.can_reach("shop/batch", "shop/db", 5432, "TCP").allowed, "tier=jobs is not tier=front"


def test_a_workload_an_approved_flow_names_keeps_its_own_class() -> None:
    """Approvals are matched on class bits: web-1 named by a flow must not share web-2's class."""
    inventory = Inventory.build([
        _res({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
        _deployment("web-1", {"app": "web-1", "tier": "front"}),
        _deployment("web-2", {"app": "web-2", "tier": "front"}),
        _deployment("web-3", {"app": "web-3", "tier": "front"}),
    ])
    config = parse_config("flows:\n  - {from: shop/web-1, to: shop/Deployment/web-3}\n", "kubepci.yaml")
    model = compile_inventory(inventory, config)

    def bits(name: str) -> int:
        return model.bits_of(model.endpoint(name))

    assert len({bits("shop/web-1"), bits("shop/web-2"), bits("shop/web-3")}) == 3
    assert model.can_reach("shop/web-2", "shop/web-1", 80, "TCP").allowed, "still equivalent for reachability"
    assert len(model.binding.classes) == 3

"""The snapshot cache against an in-memory API server that speaks list+watch, including 410 Gone."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import orjson
import pytest

from kubepci.admission.cache import CACHED_KINDS, Snapshot, SnapshotCache, WatchExpiredError, prune
from kubepci.config import Config, ScopeRule
from kubepci.model import Scope


class FakeAPI:
    """Objects, a global resourceVersion, an event log and compaction: what list+watch relies on.

    ``blocking`` watches wait for new events (like a real watch) until the API is told to end them;
    non-blocking ones replay what is there and end, as a server ends a watch at its timeout.
    """

    def __init__(self, *, blocking: bool = False) -> None:
        self.blocking = blocking
        self.rv = 100
        self.compacted = 0
        self.objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {k: {} for k in CACHED_KINDS}
        self.log: list[tuple[int, str, str, dict[str, Any]]] = []
        self.cond = threading.Condition()
        self.generation = 0  # bumping it ends every open watch
        self.closed = False
        self.list_failures = 0
        self.raise_expired = False
        self.lists: list[str] = []

    # -- mutations -----------------------------------------------------------------------------
    def put(self, obj: dict[str, Any]) -> None:
        with self.cond:
            self.rv += 1
            obj = copy.deepcopy(obj)
            obj.setdefault("metadata", {})["resourceVersion"] = str(self.rv)
            key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
            store = self.objects[obj["kind"]]
            etype = "MODIFIED" if key in store else "ADDED"
            store[key] = obj
            self.log.append((self.rv, obj["kind"], etype, obj))
            self.cond.notify_all()

    def delete(self, kind: str, namespace: str, name: str) -> None:
        with self.cond:
            self.rv += 1
            obj = copy.deepcopy(self.objects[kind].pop((namespace, name)))
            obj["metadata"]["resourceVersion"] = str(self.rv)
            self.log.append((self.rv, kind, "DELETED", obj))
            self.cond.notify_all()

    def compact(self) -> None:
        with self.cond:
            self.compacted = self.rv

    def end_watches(self) -> None:
        with self.cond:
            self.generation += 1
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    # -- the ListWatchSource protocol ----------------------------------------------------------
    def list(self, kind: str) -> tuple[Sequence[Mapping[str, Any]], str]:
        self.lists.append(kind)
        if self.list_failures:
            self.list_failures -= 1
            raise OSError("connection refused")
        with self.cond:
            return [copy.deepcopy(o) for o in self.objects[kind].values()], str(self.rv)

    def watch(self, kind: str, resource_version: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
        if self.raise_expired:
            self.raise_expired = False
            raise WatchExpiredError("too old")
        since = int(resource_version)
        with self.cond:
            generation = self.generation
        while True:
            with self.cond:
                if since < self.compacted:
                    pending: list[tuple[int, str, str, dict[str, Any]]] = []
                    expired = True
                else:
                    expired = False
                    pending = [e for e in self.log if e[0] > since and e[1] == kind]
                    if not pending and self.blocking and not self.closed and generation == self.generation:
                        self.cond.wait(0.05)
                        continue
            if expired:
                yield "ERROR", {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
                return
            for rv, _, etype, obj in pending:
                since = rv
                yield etype, copy.deepcopy(obj)
            if not self.blocking or self.closed or generation != self.generation:
                return


def ns(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": dict(labels)},
            "status": {"phase": "Active"}}


def netpol(namespace: str, name: str) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}


def node(name: str, level: str = "", images: int = 0) -> dict[str, Any]:
    labels = {"kubepci.io/security-level": level} if level else {}
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels, "managedFields": [{"manager": "kubelet"}] * 20,
                     "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{" + "x" * 5000 + "}",
                                     "huge": "y" * 10000, "small": "z"}},
        "spec": {"taints": [{"key": "kubepci.io/security-level", "value": level, "effect": "NoSchedule"}],
                 "podCIDR": "10.1.0.0/24"},
        "status": {"images": [{"names": [f"registry.example/img{i}@sha256:{'a' * 64}"], "sizeBytes": i}
                              for i in range(images)], "conditions": [{"type": "Ready", "status": "True"}]},
    }


def _eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def _synced(api: FakeAPI, config: Config | None = None, **kwargs: Any) -> SnapshotCache:
    cache = SnapshotCache(api, config or Config(), **kwargs)
    for kind in CACHED_KINDS:
        cache.relist(kind)
    return cache


def test_list_then_watch_applies_adds_changes_and_deletes() -> None:
    api = FakeAPI()
    api.put(ns("payments", **{"kubepci.io/scope": "cde"}))
    cache = _synced(api)
    assert cache.ready
    rv = str(api.rv)
    api.put(netpol("payments", "deny-all"))
    api.put(netpol("payments", "allow-dns"))
    api.put({**netpol("payments", "deny-all"), "spec": {"podSelector": {}, "policyTypes": ["Egress"]}})
    rv = cache.follow("NetworkPolicy", rv)
    assert rv == str(api.rv)
    pols = cache.snapshot.network_policies["payments"]
    assert [p.name for p in pols] == ["allow-dns", "deny-all"]
    assert pols[1].body["spec"]["policyTypes"] == ["Egress"]
    api.delete("NetworkPolicy", "payments", "allow-dns")
    api.delete("NetworkPolicy", "payments", "deny-all")
    cache.follow("NetworkPolicy", rv)
    assert "payments" not in cache.snapshot.network_policies
    assert cache.stats().objects["NetworkPolicy"] == 0


def test_namespace_labels_drive_scope_and_security_level() -> None:
    api = FakeAPI()
    api.put(ns("shop"))
    cache = _synced(api)
    assert cache.snapshot.scope.of_namespace("shop") is Scope.UNCLASSIFIED
    rv = str(api.rv)
    api.put(ns("shop", **{"kubepci.io/scope": "cde", "kubepci.io/security-level": "high"}))
    cache.follow("Namespace", rv)
    assert cache.snapshot.scope.of_namespace("shop") is Scope.CDE
    assert cache.snapshot.scope.security_levels == {"shop": "high"}


def test_config_lists_count_for_scope_too() -> None:
    api = FakeAPI()
    api.put(ns("vault"))
    cache = _synced(api, Config(cde=ScopeRule(("vault",))))
    assert cache.snapshot.scope.of_namespace("vault") is Scope.CDE


def test_status_only_changes_publish_no_new_snapshot() -> None:
    api = FakeAPI()
    api.put(node("n1", "high"))
    cache = _synced(api)
    before = cache.snapshot
    rv = str(api.rv)
    heartbeat = node("n1", "high")
    heartbeat["status"]["conditions"][0]["lastHeartbeatTime"] = "2026-11-01T00:00:00Z"
    api.put(heartbeat)
    cache.follow("Node", rv)
    assert cache.snapshot is before
    assert cache.stats().events["Node"] == 1


def test_pruning_keeps_what_checks_read_and_drops_the_bulk() -> None:
    raw = node("n1", "high", images=200)
    kept = prune("Node", raw)
    assert kept["metadata"]["labels"] == {"kubepci.io/security-level": "high"}
    assert kept["metadata"]["annotations"] == {"small": "z"}
    assert kept["spec"] == {"taints": raw["spec"]["taints"]}
    assert "status" not in kept
    assert "managedFields" not in kept["metadata"]
    assert len(orjson.dumps(kept)) < 400 < len(orjson.dumps(raw)) // 100
    sa = prune("ServiceAccount", {"apiVersion": "v1", "kind": "ServiceAccount", "automountServiceAccountToken": False,
                                  "metadata": {"name": "api", "namespace": "payments", "uid": "u"}})
    assert sa == {"apiVersion": "v1", "kind": "ServiceAccount", "automountServiceAccountToken": False,
                  "metadata": {"name": "api", "namespace": "payments"}}


def test_watch_error_410_makes_the_loop_relist_and_forget_deleted_objects() -> None:
    api = FakeAPI(blocking=True)
    api.put(ns("payments"))
    api.put(netpol("payments", "deny-all"))
    api.put(netpol("payments", "old"))
    cache = SnapshotCache(api, Config(), backoff=(0.01, 0.05))
    cache.start()
    try:
        assert cache.wait_ready(5)
        api.put(netpol("payments", "new"))
        _eventually(lambda: "new" in {p.name for p in cache.snapshot.network_policies.get("payments", ())})
        # the watch drops; meanwhile an object is deleted and etcd compacts past the cache's version
        with api.cond:
            api.generation += 1
            api.rv += 1
            del api.objects["NetworkPolicy"][("payments", "old")]  # deletion the cache never sees as an event
            api.compacted = api.rv
            api.cond.notify_all()
        _eventually(lambda: cache.stats().relists_gone["NetworkPolicy"] >= 1)
        _eventually(lambda: {p.name for p in cache.snapshot.network_policies["payments"]} == {"deny-all", "new"})
    finally:
        cache.stop()
        api.close()


def test_source_raising_watch_expired_also_relists() -> None:
    api = FakeAPI(blocking=True)
    api.put(ns("a"))
    api.raise_expired = True
    cache = SnapshotCache(api, Config(), kinds=("Namespace",), backoff=(0.01, 0.05))
    cache.start()
    try:
        _eventually(lambda: cache.stats().relists_gone["Namespace"] == 1)
        _eventually(lambda: api.lists.count("Namespace") >= 2)
        assert cache.ready
    finally:
        cache.stop()
        api.close()


def test_transient_list_failures_are_retried_until_ready() -> None:
    api = FakeAPI(blocking=True)
    api.put(ns("a"))
    api.list_failures = 2
    cache = SnapshotCache(api, Config(), kinds=("Namespace",), backoff=(0.01, 0.02))
    cache.start()
    try:
        assert cache.wait_ready(5)
        assert cache.stats().errors["Namespace"] == 2
        assert "a" in cache.snapshot.namespaces
    finally:
        cache.stop()
        api.close()


def test_not_ready_until_every_kind_is_listed() -> None:
    api = FakeAPI()
    cache = SnapshotCache(api, Config())
    for kind in CACHED_KINDS[:-1]:
        cache.relist(kind)
        assert not cache.ready
    cache.relist(CACHED_KINDS[-1])
    assert cache.ready
    assert cache.stats().synced == tuple(sorted(CACHED_KINDS))


def test_over_budget_list_is_not_ready_until_it_fits_again() -> None:
    api = FakeAPI()
    for name in ("a", "b", "c"):
        api.put(ns(name))
    cache = _synced(api, max_objects_per_kind=2)
    assert not cache.ready
    assert cache.stats().over_budget == ("Namespace",)
    assert len(cache.snapshot.namespaces) == 2
    api.delete("Namespace", "", "c")
    cache.relist("Namespace")
    assert cache.ready
    assert sorted(cache.snapshot.namespaces) == ["a", "b"]


def test_over_budget_watch_event_is_refused_and_flagged() -> None:
    api = FakeAPI()
    api.put(ns("a"))
    cache = _synced(api, max_objects_per_kind=1)
    assert cache.ready
    rv = str(api.rv)
    api.put(ns("b"))
    api.put(ns("a", team="x"))  # updates to known objects still apply
    cache.follow("Namespace", rv)
    assert not cache.ready
    assert sorted(cache.snapshot.namespaces) == ["a"]
    assert cache.snapshot.namespaces["a"].labels == {"team": "x"}


def test_wait_for_namespace_returns_when_its_event_arrives() -> None:
    api = FakeAPI()
    cache = _synced(api)
    assert not cache.wait_for_namespace("late", 0.01)
    rv = str(api.rv)
    api.put(ns("late"))
    timer = threading.Timer(0.05, cache.follow, ("Namespace", rv))
    timer.start()
    try:
        assert cache.wait_for_namespace("late", 5)
    finally:
        timer.join()


def test_stop_ends_every_watch_thread() -> None:
    api = FakeAPI(blocking=True)
    cache = SnapshotCache(api, Config(), backoff=(0.01, 0.02))
    cache.start()
    assert cache.wait_ready(5)
    threads = [t for t in threading.enumerate() if t.name.startswith("kubepci-watch-")]
    assert len(threads) == len(CACHED_KINDS)
    cache.stop(timeout=5)
    assert not any(t.is_alive() for t in threads)


def test_snapshot_context_is_the_namespace_slice_plus_cluster_runtime_classes() -> None:
    objs = [ns("payments"), ns("shop"), netpol("payments", "deny"), netpol("shop", "other"), node("n1"),
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "api", "namespace": "payments"}},
            {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": "gvisor"},
             "handler": "runsc"}]
    snap = Snapshot.from_objects(objs, Config())
    assert [str(r.ref) for r in snap.context("payments")] == [
        "Namespace/payments", "payments/NetworkPolicy/deny", "payments/ServiceAccount/api", "RuntimeClass/gvisor"]
    assert [str(r.ref) for r in snap.context("")] == ["RuntimeClass/gvisor"]
    assert set(snap.nodes) == {"n1"}


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="cannot cache"):
        SnapshotCache(FakeAPI(), Config(), kinds=("Secret",))

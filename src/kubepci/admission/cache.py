"""A watch-fed snapshot of the cross-object context admission decisions need.

An AdmissionReview carries one object; several checks also need its namespace (scope and
security level come from namespace labels), the namespace's NetworkPolicies and ServiceAccounts,
the Nodes and the RuntimeClasses, and for a (Cluster)RoleBinding the Roles and ClusterRoles it
may refer to (a binding to a custom role granting everything is cluster-admin by another name).
Asking the apiserver for them on every review would put an API round trip on the hot path and
make the webhook fail whenever the API is slow, so a :class:`SnapshotCache` keeps them with the
standard list+watch protocol: list with a resourceVersion, watch from it, relist on 410 Gone.
Readers get an immutable :class:`Snapshot` (copy-on-write, swapped atomically), so a decision
never sees half an update.

Memory is bounded: only the fields checks read are kept (status, managedFields and the
last-applied annotation are dropped; a node is a few hundred bytes instead of tens of kilobytes)
and each kind has an object budget. Over budget the cache stops claiming to be ready instead of
deciding on a silently truncated view.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from kubepci.config import Config
from kubepci.errors import KubepciError
from kubepci.inventory import Inventory
from kubepci.model import Resource, ResourceRef, SourceLocation
from kubepci.scope import ScopeMap, compute_scope

__all__ = [
    "CACHED_KINDS",
    "CacheStats",
    "ListWatchSource",
    "Snapshot",
    "SnapshotCache",
    "WatchExpiredError",
    "prune",
]

_log = logging.getLogger("kubepci.admission.cache")

CACHED_KINDS = ("Namespace", "NetworkPolicy", "Node", "ServiceAccount", "RuntimeClass", "Role", "ClusterRole")
_NAMESPACED = frozenset({"NetworkPolicy", "ServiceAccount", "Role"})
_RBAC = "rbac.authorization.k8s.io/v1"
_API_VERSIONS = {"Namespace": "v1", "NetworkPolicy": "networking.k8s.io/v1", "Node": "v1",
                 "ServiceAccount": "v1", "RuntimeClass": "node.k8s.io/v1", "Role": _RBAC, "ClusterRole": _RBAC}
#: top-level fields kept per kind besides metadata: what the checks read, nothing else
_KEEP = {
    "Namespace": (),
    "NetworkPolicy": ("spec",),
    "Node": (),
    "ServiceAccount": ("automountServiceAccountToken", "secrets", "imagePullSecrets"),
    "RuntimeClass": ("handler", "scheduling", "overhead"),
    "Role": ("rules",),
    "ClusterRole": ("rules", "aggregationRule"),
}
_NODE_SPEC_KEEP = ("taints", "unschedulable")
_DROP_ANNOTATIONS = frozenset({"kubectl.kubernetes.io/last-applied-configuration"})
_MAX_ANNOTATION_BYTES = 4096
CACHE_LOCATION = SourceLocation("cluster")


class WatchExpiredError(KubepciError):
    """The watch's resourceVersion is too old (HTTP 410 Gone): the only remedy is a fresh list."""


class ListWatchSource(Protocol):
    """What the cache needs from an API client; the fake in the tests and the real client agree on it."""

    def list(self, kind: str) -> tuple[Sequence[Mapping[str, Any]], str]:
        """Every object of ``kind`` and the list's resourceVersion."""
        ...

    def watch(self, kind: str, resource_version: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
        """Events (ADDED, MODIFIED, DELETED, BOOKMARK, ERROR) after ``resource_version``.

        May raise :class:`WatchExpiredError` or yield an ERROR event carrying a 410 Status; ends
        when the server closes the watch.
        """
        ...


def prune(kind: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    """Keep what checks read; drop status, managedFields, the last-applied blob and huge annotations."""
    meta = obj.get("metadata") or {}
    kept_meta: dict[str, Any] = {"name": meta.get("name", "")}
    if meta.get("namespace"):
        kept_meta["namespace"] = meta["namespace"]
    if meta.get("labels"):
        kept_meta["labels"] = dict(meta["labels"])
    annotations = meta.get("annotations")
    if isinstance(annotations, Mapping):
        small = {k: v for k, v in annotations.items()
                 if k not in _DROP_ANNOTATIONS and isinstance(v, str) and len(v) <= _MAX_ANNOTATION_BYTES}
        if small:
            kept_meta["annotations"] = small
    out: dict[str, Any] = {"apiVersion": obj.get("apiVersion") or _API_VERSIONS.get(kind, "v1"), "kind": kind,
                           "metadata": kept_meta}
    for key in _KEEP.get(kind, ()):
        if key in obj:
            out[key] = obj[key]
    if kind == "Node" and isinstance(obj.get("spec"), Mapping):
        spec = {k: obj["spec"][k] for k in _NODE_SPEC_KEEP if k in obj["spec"]}
        if spec:
            out["spec"] = spec
    return out


def _resource(kind: str, obj: Mapping[str, Any]) -> Resource:
    body = prune(kind, obj)
    meta = body["metadata"]
    ns = meta.get("namespace", "") if kind in _NAMESPACED else ""
    return Resource(ResourceRef(ns, kind, meta["name"], body["apiVersion"]), body, CACHE_LOCATION)


def _scope(namespaces: Mapping[str, Resource], config: Config) -> ScopeMap:
    return compute_scope(Inventory.build(namespaces.values()), config)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The cluster context at one moment; never mutated, replaced as a whole."""

    namespaces: Mapping[str, Resource] = field(default_factory=dict)
    network_policies: Mapping[str, tuple[Resource, ...]] = field(default_factory=dict)
    service_accounts: Mapping[str, tuple[Resource, ...]] = field(default_factory=dict)
    nodes: Mapping[str, Resource] = field(default_factory=dict)
    runtime_classes: tuple[Resource, ...] = ()
    roles: Mapping[str, tuple[Resource, ...]] = field(default_factory=dict)
    cluster_roles: tuple[Resource, ...] = ()
    scope: ScopeMap = field(default_factory=ScopeMap)
    revision: int = 0

    @classmethod
    def from_objects(cls, objects: Iterable[Mapping[str, Any]], config: Config) -> Snapshot:
        """A static snapshot (tests, benchmarks, offline decisions) from raw API objects."""
        by_kind: dict[str, dict[tuple[str, str], Resource]] = {k: {} for k in CACHED_KINDS}
        for obj in objects:
            kind = obj.get("kind")
            if kind in by_kind:
                r = _resource(kind, obj)
                by_kind[kind][(r.namespace, r.name)] = r
        namespaces = {r.name: r for r in by_kind["Namespace"].values()}
        return cls(
            namespaces=namespaces,
            network_policies=_group(by_kind["NetworkPolicy"].values()),
            service_accounts=_group(by_kind["ServiceAccount"].values()),
            nodes={r.name: r for r in by_kind["Node"].values()},
            runtime_classes=tuple(sorted(by_kind["RuntimeClass"].values(), key=lambda r: r.name)),
            roles=_group(by_kind["Role"].values()),
            cluster_roles=tuple(sorted(by_kind["ClusterRole"].values(), key=lambda r: r.name)),
            scope=_scope(namespaces, config),
        )

    def context(self, namespace: str) -> tuple[Resource, ...]:
        """What a decision about an object in ``namespace`` may read besides the object itself.

        Nodes are not listed: they reach checks through ``Inventory.nodes`` only, so a
        thousand-node cluster does not make every review iterate a thousand objects.
        """
        out: list[Resource] = []
        if namespace:
            ns = self.namespaces.get(namespace)
            if ns is not None:
                out.append(ns)
            out.extend(self.network_policies.get(namespace, ()))
            out.extend(self.service_accounts.get(namespace, ()))
        out.extend(self.runtime_classes)
        return tuple(out)


def _group(resources: Iterable[Resource]) -> dict[str, tuple[Resource, ...]]:
    grouped: dict[str, list[Resource]] = {}
    for r in resources:
        grouped.setdefault(r.namespace, []).append(r)
    return {ns: tuple(sorted(items, key=lambda r: r.name)) for ns, items in grouped.items()}


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Per-kind counters for /metrics and tests: how the cache got where it is."""

    objects: Mapping[str, int]
    lists: Mapping[str, int]
    relists_gone: Mapping[str, int]
    events: Mapping[str, int]
    errors: Mapping[str, int]
    over_budget: tuple[str, ...]
    synced: tuple[str, ...]


class SnapshotCache:
    """List+watch each cached kind in its own daemon thread and publish immutable snapshots."""

    def __init__(
        self,
        source: ListWatchSource,
        config: Config,
        *,
        kinds: Sequence[str] = CACHED_KINDS,
        max_objects_per_kind: int = 100_000,
        backoff: tuple[float, float] = (0.2, 30.0),
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        unknown = set(kinds) - set(CACHED_KINDS)
        if unknown:
            raise ValueError(f"cannot cache {sorted(unknown)}: known kinds are {CACHED_KINDS}")
        self._source = source
        self._config = config
        self._kinds = tuple(kinds)
        self._max = max_objects_per_kind
        self._backoff = backoff
        self._stop = threading.Event()
        self._sleep = sleep or self._stop.wait
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        # kind -> namespace ("" when cluster-scoped) -> name -> object: a namespace's slice is one lookup
        self._stores: dict[str, dict[str, dict[str, Resource]]] = {k: {} for k in self._kinds}
        self._counts = dict.fromkeys(self._kinds, 0)
        self._snapshot = Snapshot(scope=_scope({}, config))
        self._synced: set[str] = set()
        self._over: set[str] = set()
        self._lists = dict.fromkeys(self._kinds, 0)
        self._gone = dict.fromkeys(self._kinds, 0)
        self._events = dict.fromkeys(self._kinds, 0)
        self._errors = dict.fromkeys(self._kinds, 0)
        self._threads: list[threading.Thread] = []

    # -- reading -------------------------------------------------------------------------------

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot  # one attribute read: atomic, and the object is immutable

    @property
    def ready(self) -> bool:
        """Every kind listed at least once and none over budget: only then are decisions complete."""
        return len(self._synced) == len(self._kinds) and not self._over

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not self.ready:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def wait_for_namespace(self, name: str, timeout: float) -> bool:
        """Block until ``name`` is in the snapshot (a pod can arrive before its namespace's watch event)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while name not in self._snapshot.namespaces:
                left = deadline - time.monotonic()
                if left <= 0 or self._stop.is_set():
                    return False
                self._changed.wait(left)
        return True

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                objects=dict(self._counts),
                lists=dict(self._lists),
                relists_gone=dict(self._gone),
                events=dict(self._events),
                errors=dict(self._errors),
                over_budget=tuple(sorted(self._over)),
                synced=tuple(sorted(self._synced)),
            )

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        if self._threads:
            return
        for kind in self._kinds:
            t = threading.Thread(target=self._run, args=(kind,), name=f"kubepci-watch-{kind}", daemon=True)
            self._threads.append(t)
            t.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every watch; waits at most ``timeout`` in total (the threads are daemons: a watch parked
        in a socket read ends at the latest with the server's watch timeout, and never blocks exit)."""
        self._stop.set()
        close = getattr(self._source, "close", None)
        if callable(close):
            close()
        with self._changed:
            self._changed.notify_all()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._threads = []

    # -- the loop (public pieces so tests can drive it step by step) --------------------------

    def _run(self, kind: str) -> None:
        resource_version: str | None = None
        delay = self._backoff[0]
        while not self._stop.is_set():
            try:
                if resource_version is None:
                    resource_version = self.relist(kind)
                resource_version = self.follow(kind, resource_version)
                delay = self._backoff[0]
            except WatchExpiredError:
                with self._lock:
                    self._gone[kind] += 1
                resource_version = None  # 410 Gone: relist at once, no backoff
                continue
            except Exception as exc:  # the loop must outlive any API hiccup
                with self._lock:
                    self._errors[kind] += 1
                if not self._stop.is_set():
                    _log.warning("watch %s failed (%s: %s); retrying in %.1fs", kind, type(exc).__name__, exc, delay)
            if self._stop.is_set():
                break
            self._sleep(delay)  # also paces a server that ends every watch at once
            delay = min(delay * 2, self._backoff[1])

    def relist(self, kind: str) -> str:
        """List ``kind``, replace its store wholesale (deletions missed while not watching vanish)."""
        items, resource_version = self._source.list(kind)
        fresh: dict[str, dict[str, Resource]] = {}
        count = 0
        over = False
        for obj in items:
            if count >= self._max:
                over = True
                break
            r = _resource(kind, obj)
            slot = fresh.setdefault(r.namespace, {})
            count += r.name not in slot
            slot[r.name] = r
        with self._changed:
            self._lists[kind] += 1
            if over:
                self._over.add(kind)
                _log.error("%s: %d objects exceed the cache budget of %d; not ready", kind, len(items), self._max)
            else:
                self._over.discard(kind)
            self._stores[kind] = fresh
            self._counts[kind] = count
            self._synced.add(kind)
            self._publish(kind, None)
        return resource_version

    def follow(self, kind: str, resource_version: str) -> str:
        """Apply watch events until the server ends the watch; return the last resourceVersion seen."""
        for event_type, obj in self._source.watch(kind, resource_version):
            if self._stop.is_set():
                break
            meta = obj.get("metadata") if isinstance(obj, Mapping) else None
            if event_type == "ERROR":
                code = obj.get("code") if isinstance(obj, Mapping) else None
                if code == 410:
                    raise WatchExpiredError(f"{kind} watch from resourceVersion {resource_version} expired")
                raise KubepciError(f"{kind} watch error: {obj.get('message') if isinstance(obj, Mapping) else obj}")
            rv = meta.get("resourceVersion") if isinstance(meta, Mapping) else None
            if event_type != "BOOKMARK":
                self.apply(kind, event_type, obj)
            if isinstance(rv, str) and rv:
                resource_version = rv
        return resource_version

    def apply(self, kind: str, event_type: str, obj: Mapping[str, Any]) -> None:
        """One watch event. Status-only changes (most Node and Namespace updates) publish nothing."""
        r = _resource(kind, obj)
        with self._changed:
            self._events[kind] += 1
            store = self._stores[kind]
            slot = store.get(r.namespace)
            old = slot.get(r.name) if slot is not None else None
            if event_type == "DELETED":
                if slot is None or old is None:
                    return
                del slot[r.name]
                if not slot:
                    del store[r.namespace]
                self._counts[kind] -= 1
            elif event_type in ("ADDED", "MODIFIED"):
                if old is not None and old.body == r.body:
                    return
                if old is None and self._counts[kind] >= self._max:
                    if kind not in self._over:
                        _log.error("%s: cache budget of %d objects reached; not ready", kind, self._max)
                    self._over.add(kind)
                    return
                store.setdefault(r.namespace, {})[r.name] = r
                self._counts[kind] += old is None
            else:
                return
            self._publish(kind, r.namespace if kind in _NAMESPACED else None)

    def _publish(self, kind: str, namespace: str | None) -> None:
        """Swap in a snapshot with ``kind`` (or only one namespace's slice of it) rebuilt. Lock held."""
        snap = self._snapshot
        store = self._stores[kind]
        cluster = store.get("", {})
        if kind == "Namespace":
            namespaces = dict(cluster)
            snap = replace(snap, namespaces=namespaces, scope=_scope(namespaces, self._config))
        elif kind == "Node":
            snap = replace(snap, nodes=dict(cluster))
        elif kind == "RuntimeClass":
            snap = replace(snap, runtime_classes=tuple(r for _, r in sorted(cluster.items())))
        elif kind == "ClusterRole":
            snap = replace(snap, cluster_roles=tuple(r for _, r in sorted(cluster.items())))
        else:
            before = {"NetworkPolicy": snap.network_policies, "ServiceAccount": snap.service_accounts,
                      "Role": snap.roles}[kind]
            changed = store if namespace is None else {namespace: store.get(namespace, {})}
            grouped: dict[str, tuple[Resource, ...]] = {} if namespace is None else dict(before)
            for ns, slot in changed.items():
                if slot:
                    grouped[ns] = tuple(r for _, r in sorted(slot.items()))
                else:
                    grouped.pop(ns, None)
            if kind == "NetworkPolicy":
                snap = replace(snap, network_policies=grouped)
            elif kind == "Role":
                snap = replace(snap, roles=grouped)
            else:
                snap = replace(snap, service_accounts=grouped)
        self._snapshot = replace(snap, revision=snap.revision + 1)
        self._changed.notify_all()

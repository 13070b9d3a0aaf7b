"""The snapshot cache's :class:`~kubepci.admission.cache.ListWatchSource` over a live API server.

A thin adapter on :class:`kubepci.kube.KubeClient`: the client owns authentication and TLS;
this adds what list+watch needs and the client's ``list_all``/``watch`` hide — the list's
resourceVersion and a handle on each open watch, so stopping the cache ends its watches at once —
and turns "410 Gone" into :class:`WatchExpiredError` so the cache relists instead of retrying a
watch that can never resume.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import orjson
import urllib3

from kubepci.admission.cache import WatchExpiredError
from kubepci.kube.client import KubeAPIError, KubeClient

__all__ = ["RESOURCES", "KubeListWatch"]

#: cached kind -> (group/version, plural): also the webhook ClusterRole's resource list
RESOURCES: Mapping[str, tuple[str, str]] = {
    "Namespace": ("v1", "namespaces"),
    "NetworkPolicy": ("networking.k8s.io/v1", "networkpolicies"),
    "Node": ("v1", "nodes"),
    "ServiceAccount": ("v1", "serviceaccounts"),
    "RuntimeClass": ("node.k8s.io/v1", "runtimeclasses"),
    "Role": ("rbac.authorization.k8s.io/v1", "roles"),
    "ClusterRole": ("rbac.authorization.k8s.io/v1", "clusterroles"),
}


def _path(group_version: str, plural: str) -> str:
    return f"/api/{group_version}/{plural}" if "/" not in group_version else f"/apis/{group_version}/{plural}"


class KubeListWatch:
    """list/watch for the cached kinds; ``watch_timeout_seconds`` bounds how long a stop can wait."""

    def __init__(self, client: KubeClient, *, watch_timeout_seconds: int = 60, page_size: int = 500) -> None:
        self.client = client
        self.watch_timeout_seconds = watch_timeout_seconds
        self.page_size = page_size
        self._lock = threading.Lock()
        self._streams: set[urllib3.BaseHTTPResponse] = set()
        self._closed = False

    def list(self, kind: str) -> tuple[Sequence[Mapping[str, Any]], str]:
        group_version, plural = RESOURCES[kind]
        path = _path(group_version, plural)
        items: list[Mapping[str, Any]] = []
        token: str | None = None
        resource_version = ""
        while True:
            try:
                page = self.client.get(path, {"limit": self.page_size, "continue": token})
            except KubeAPIError as exc:
                if exc.status == 410:  # the continue token outlived etcd's compaction: start over
                    raise WatchExpiredError(f"list of {kind} expired mid-pagination") from None
                raise
            raw_meta = page.get("metadata")
            meta: Mapping[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
            if not resource_version:
                resource_version = str(meta.get("resourceVersion") or "")
            for item in page.get("items") or ():
                if isinstance(item, dict):
                    item.setdefault("kind", kind)
                    item.setdefault("apiVersion", group_version)
                    items.append(item)
            token = meta.get("continue") or None
            if not token:
                return items, resource_version

    def watch(self, kind: str, resource_version: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
        """Stream events; ``close()`` shuts the socket down so a parked read ends at once.

        It opens the stream itself (``KubeClient._open``) rather than through ``KubeClient.watch``
        because it must hold the response to shut it down: an apiserver waits for open watches before
        it exits, and a webhook that cannot drop them delays every rollout of it.
        """
        group_version, plural = RESOURCES[kind]
        path = _path(group_version, plural)
        params = {"watch": "1", "resourceVersion": resource_version, "allowWatchBookmarks": "true",
                  "timeoutSeconds": self.watch_timeout_seconds}
        timeout = urllib3.Timeout(connect=10.0, read=float(self.watch_timeout_seconds) + 30.0)
        try:
            resp = self.client._open(path, params, timeout=timeout)
        except KubeAPIError as exc:
            if exc.status == 410:
                raise WatchExpiredError(f"{kind} watch from resourceVersion {resource_version} expired") from None
            raise
        with self._lock:
            if self._closed:
                resp.release_conn()
                return
            self._streams.add(resp)
        try:
            yield from self._events(kind, path, resp)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            if not self._closed:
                raise KubeAPIError(f"watch of {path} broke: {exc}") from None
        finally:
            with self._lock:
                self._streams.discard(resp)
            resp.release_conn()

    def _events(self, kind: str, path: str, resp: urllib3.BaseHTTPResponse) -> Iterator[tuple[str, Mapping[str, Any]]]:
        buffer = b""
        for chunk in resp.stream(65536):
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line.strip():
                    yield self._event(kind, path, line)
        if buffer.strip():
            yield self._event(kind, path, buffer)

    @staticmethod
    def _event(kind: str, path: str, line: bytes) -> tuple[str, Mapping[str, Any]]:
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise KubeAPIError(f"{path}: watch event is not JSON") from None
        obj = event.get("object") if isinstance(event, dict) else None
        if not isinstance(obj, dict):
            raise KubeAPIError(f"{path}: watch event without an object")
        event_type = str(event.get("type", ""))
        if event_type == "ERROR":
            if obj.get("code") == 410:
                raise WatchExpiredError(f"{kind} watch expired: {obj.get('message', '')}")
            code = obj.get("code")
            raise KubeAPIError(f"watch of {path}: {obj.get('message', 'error event')}",
                               code if isinstance(code, int) else 0)
        obj.setdefault("kind", kind)
        meta = obj.get("metadata")
        if isinstance(meta, dict):
            meta.pop("managedFields", None)
        return event_type, obj

    def close(self) -> None:
        """End every open watch now and release the connection pool."""
        with self._lock:
            self._closed = True
            streams = list(self._streams)
        for resp in streams:
            with contextlib.suppress(Exception):  # already finished, or never bound to a socket
                resp.shutdown()
        self.client.close()

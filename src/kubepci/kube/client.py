"""A small read-only Kubernetes API client that hands back raw JSON dicts.

Why this shape: authentication is the hard, security-relevant part of a Kubernetes client
(kubeconfig merging, exec credential plugins, OIDC refresh, rotated in-cluster tokens), so it is
delegated to the official ``kubernetes`` package. Its generated model classes are not used: a
100,000-object scan deserialised into models costs many times the scan itself, and every check
reads plain mappings anyway. Requests go through the urllib3 pool the package configures (TLS
verified against the kubeconfig's CA unless the kubeconfig itself says otherwise) and bodies are
decoded with orjson.

Every failure to talk to the server is a :class:`KubeAPIError` (an ``InputError``, exit code 3):
connection refused, TLS failure, credentials rejected. Callers that can carry on without one
resource type (the cluster loader) catch it per type and look at ``status``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import orjson
import urllib3

from kubepci.errors import InputError

if TYPE_CHECKING:
    from kubernetes.client import Configuration

__all__ = ["APIResource", "KubeAPIError", "KubeClient"]

#: aggregated discovery (GA in 1.30): every group's resources in one response per root
_AGGREGATED = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
_TIMEOUT = urllib3.Timeout(connect=10.0, read=120.0)
_USER_AGENT = "kubepci (read-only scanner)"


class KubeAPIError(InputError):
    """The API server could not be reached or refused a request.

    ``status`` is the HTTP status (0 when no HTTP answer came back), ``reason`` the server's
    Status reason (``Forbidden``, ``NotFound``, ``Expired``...) or the transport error.
    """

    def __init__(self, message: str, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class APIResource:
    """One served resource type, as discovery describes it."""

    group_version: str
    name: str  # plural, e.g. "networkpolicies"
    kind: str
    namespaced: bool
    verbs: tuple[str, ...]


class KubeClient:
    """Read-only access to one API server; build it with :meth:`from_kubeconfig` or :meth:`in_cluster`."""

    def __init__(self, configuration: Configuration, context: str) -> None:
        from kubernetes.client import rest

        self._config = configuration
        self.context = context
        self.server = str(configuration.host).rstrip("/")
        self._pool = rest.RESTClientObject(configuration).pool_manager

    # -- construction --------------------------------------------------------------------------

    @classmethod
    def from_kubeconfig(cls, path: str | Path | None = None, context: str | None = None) -> KubeClient:
        """Load ``path`` (default: $KUBECONFIG or ~/.kube/config) and select ``context``."""
        from kubernetes import config as kconfig
        from kubernetes.client import Configuration
        from kubernetes.config.config_exception import ConfigException

        cfg = Configuration()
        location = str(path) if path is not None else None
        try:
            contexts, active = kconfig.list_kube_config_contexts(config_file=location)  # type: ignore[no-untyped-call]
            names = [c.get("name") for c in contexts if isinstance(c, Mapping)]
            if context is not None and context not in names:
                raise KubeAPIError(f"kubeconfig has no context {context!r} (contexts: {', '.join(map(str, names))})")
            kconfig.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=location, context=context, client_configuration=cfg
            )
        except ConfigException as exc:
            where = location or "the default kubeconfig ($KUBECONFIG or ~/.kube/config)"
            raise KubeAPIError(f"cannot use {where}: {exc}") from None
        except OSError as exc:
            raise KubeAPIError(f"cannot read kubeconfig {location}: {exc.strerror}") from None
        chosen = context or (active.get("name") if isinstance(active, Mapping) else None) or "default"
        return cls(cfg, str(chosen))

    @classmethod
    def in_cluster(cls) -> KubeClient:
        """The pod's own ServiceAccount (token re-read as the kubelet rotates it)."""
        from kubernetes import config as kconfig
        from kubernetes.client import Configuration
        from kubernetes.config.config_exception import ConfigException

        cfg = Configuration()
        try:
            kconfig.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        except ConfigException as exc:
            raise KubeAPIError(f"not running in a cluster: {exc}") from None
        return cls(cfg, "in-cluster")

    def close(self) -> None:
        self._pool.clear()

    def __enter__(self) -> KubeClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- requests ------------------------------------------------------------------------------

    def _headers(self, accept: str = "application/json") -> dict[str, str]:
        headers = {"Accept": accept, "User-Agent": _USER_AGENT}
        # auth_settings() runs the loader's refresh hook: exec plugins and in-cluster tokens renew here
        settings: Mapping[str, Mapping[str, Any]] = self._config.auth_settings()  # type: ignore[assignment]
        for setting in settings.values():
            if setting.get("in") == "header" and setting.get("value"):
                headers[str(setting["key"])] = str(setting["value"])
        return headers

    def _open(self, path: str, params: Mapping[str, Any] | None = None, *, accept: str = "application/json",
              timeout: urllib3.Timeout = _TIMEOUT) -> urllib3.BaseHTTPResponse:
        url = self.server + path
        if params:
            url += "?" + urlencode({k: v for k, v in params.items() if v is not None})
        try:
            resp = self._pool.request("GET", url, headers=self._headers(accept), timeout=timeout,
                                      preload_content=False, retries=urllib3.Retry(total=2, status=0, redirect=0))
        except urllib3.exceptions.HTTPError as exc:
            raise KubeAPIError(f"cannot reach the API server at {self.server}: {_transport_reason(exc)}") from None
        if resp.status >= 400:
            body = resp.read()
            resp.release_conn()
            raise _status_error(resp.status, body, path)
        return resp

    def get_raw(self, path: str, params: Mapping[str, Any] | None = None, *,
                accept: str = "application/json") -> bytes:
        resp = self._open(path, params, accept=accept)
        try:
            return bytes(resp.read())
        except urllib3.exceptions.HTTPError as exc:
            raise KubeAPIError(f"reading {path} from {self.server} failed: {_transport_reason(exc)}") from None
        finally:
            resp.release_conn()

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """GET one JSON document (``/version``, ``/api/v1/namespaces/x``...)."""
        data = self.get_raw(path, params)
        return _decode(data, path)

    def version(self) -> dict[str, Any]:
        return self.get("/version")

    def list_all(self, group_version: str, resource: str, namespace: str | None = None,
                 limit: int = 500, *, digest: Any = None) -> Iterator[dict[str, Any]]:
        """Every object of one type, paginated with ``continue`` tokens.

        Items get the ``kind``/``apiVersion`` that list responses leave out, so they look like
        what ``kubectl get -o json`` prints. ``managedFields`` are dropped for the same reason
        (and because they are the bulk of every object). ``digest``: a hashlib object that is
        fed every page's raw bytes, so a report can pin exactly what was read.
        """
        path = _collection_path(group_version, resource, namespace)
        token: str | None = None
        while True:
            data = self.get_raw(path, {"limit": limit, "continue": token})
            if digest is not None:
                digest.update(data)
            page = _decode(data, path)
            list_kind = page.get("kind")
            kind = list_kind[:-4] if isinstance(list_kind, str) and list_kind.endswith("List") else ""
            for item in page.get("items") or ():
                if not isinstance(item, dict):
                    continue
                if kind:
                    item.setdefault("kind", kind)
                item.setdefault("apiVersion", group_version)
                meta = item.get("metadata")
                if isinstance(meta, dict):
                    meta.pop("managedFields", None)
                yield item
            meta = page.get("metadata")
            token = meta.get("continue") if isinstance(meta, dict) else None
            if not token:
                return

    def watch(self, group_version: str, resource: str, resource_version: str, timeout_seconds: int = 300,
              namespace: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        """Stream (event type, object) from ``resource_version`` until the server ends the watch.

        Bookmarks are requested so a caller can resume without a relist. An ``ERROR`` event (for
        instance 410 Gone when the version is too old) is raised as :class:`KubeAPIError` with
        the Status code, so the caller knows to list again.
        """
        path = _collection_path(group_version, resource, namespace)
        params = {"watch": "1", "resourceVersion": resource_version, "timeoutSeconds": timeout_seconds,
                  "allowWatchBookmarks": "true"}
        timeout = urllib3.Timeout(connect=10.0, read=float(timeout_seconds) + 30.0)
        resp = self._open(path, params, timeout=timeout)
        buffer = b""
        try:
            for chunk in resp.stream(65536):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield self._event(line, path, group_version)
            if buffer.strip():
                yield self._event(buffer, path, group_version)
        except urllib3.exceptions.HTTPError as exc:
            raise KubeAPIError(f"watch of {path} broke: {_transport_reason(exc)}") from None
        finally:
            resp.release_conn()

    @staticmethod
    def _event(line: bytes, path: str, group_version: str) -> tuple[str, dict[str, Any]]:
        event = _decode(line, path)
        etype = str(event.get("type", ""))
        obj = event.get("object")
        if not isinstance(obj, dict):
            obj = {}
        if etype == "ERROR":
            code = obj.get("code")
            raise KubeAPIError(f"watch of {path}: {obj.get('message', 'error event')}",
                               code if isinstance(code, int) else 0, str(obj.get("reason", "")))
        obj.setdefault("apiVersion", group_version)
        meta = obj.get("metadata")
        if isinstance(meta, dict):
            meta.pop("managedFields", None)
        return etype, obj

    # -- discovery -----------------------------------------------------------------------------

    def discover_resources(self) -> dict[str, list[APIResource]]:
        """Served group/versions and their top-level resources (subresources left out)."""
        out: dict[str, list[APIResource]] = {}
        for root in ("/api", "/apis"):
            doc = _decode(self.get_raw(root, accept=_AGGREGATED), root)
            if doc.get("kind") == "APIGroupDiscoveryList":
                _from_aggregated(doc, out)
            else:
                self._legacy_discovery(root, doc, out)
        return out

    def discover(self) -> dict[str, list[str]]:
        """Served group/versions (``v1``, ``apps/v1``...) and their resource names."""
        return {gv: sorted(r.name for r in resources) for gv, resources in self.discover_resources().items()}

    def _legacy_discovery(self, root: str, doc: Mapping[str, Any], out: dict[str, list[APIResource]]) -> None:
        if root == "/api":
            versions = [v for v in doc.get("versions") or () if isinstance(v, str)]
        else:
            versions = [str(v.get("groupVersion")) for g in doc.get("groups") or () if isinstance(g, Mapping)
                        for v in g.get("versions") or () if isinstance(v, Mapping) and v.get("groupVersion")]
        for gv in versions:
            path = f"/api/{gv}" if root == "/api" else f"/apis/{gv}"
            try:
                listing = self.get(path)
            except KubeAPIError as exc:
                if exc.status in (0, 401):
                    raise
                continue  # an unavailable aggregated API (503) must not hide the others
            out[gv] = [
                APIResource(gv, str(r["name"]), str(r.get("kind", "")), bool(r.get("namespaced")),
                            tuple(str(v) for v in r.get("verbs") or ()))
                for r in listing.get("resources") or ()
                if isinstance(r, Mapping) and isinstance(r.get("name"), str) and "/" not in r["name"]
            ]


def _from_aggregated(doc: Mapping[str, Any], out: dict[str, list[APIResource]]) -> None:
    for group in doc.get("items") or ():
        if not isinstance(group, Mapping):
            continue
        name = group.get("metadata", {}).get("name", "") if isinstance(group.get("metadata"), Mapping) else ""
        for version in group.get("versions") or ():
            if not isinstance(version, Mapping) or version.get("freshness") == "Stale":
                continue
            gv = f"{name}/{version.get('version')}" if name else str(version.get("version"))
            out[gv] = [
                APIResource(gv, str(r["resource"]), str(r.get("responseKind", {}).get("kind", "")),
                            r.get("scope") == "Namespaced", tuple(str(v) for v in r.get("verbs") or ()))
                for r in version.get("resources") or ()
                if isinstance(r, Mapping) and isinstance(r.get("resource"), str)
            ]


def _collection_path(group_version: str, resource: str, namespace: str | None) -> str:
    base = f"/api/{group_version}" if "/" not in group_version else f"/apis/{group_version}"
    if namespace:
        return f"{base}/namespaces/{quote(namespace, safe='')}/{resource}"
    return f"{base}/{resource}"


def _decode(data: bytes, path: str) -> dict[str, Any]:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise KubeAPIError(f"{path}: the server did not answer with JSON") from None
    if not isinstance(doc, dict):
        raise KubeAPIError(f"{path}: expected a JSON object, got {type(doc).__name__}")
    return doc


def _status_error(status: int, body: bytes, path: str) -> KubeAPIError:
    """Turn an HTTP error into a message a human can act on; the Status message names the verb."""
    reason, message = "", ""
    with contextlib.suppress(orjson.JSONDecodeError, TypeError):
        doc = orjson.loads(body)
        if isinstance(doc, dict):
            reason, message = str(doc.get("reason", "")), str(doc.get("message", ""))
    if status == 401:
        text = "the API server rejected the credentials (401 Unauthorized); log in again or check the kubeconfig user"
    else:
        text = f"GET {path}: HTTP {status}" + (f" {reason}" if reason else "") + (f": {message}" if message else "")
    return KubeAPIError(text, status, reason)


def _transport_reason(exc: Exception) -> str:
    inner = getattr(exc, "reason", None)
    text = str(inner if inner is not None else exc)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return f"TLS verification failed ({text.split('certificate verify failed:')[-1].strip(' )')})"
    return text

"""AdmissionReview v1 ⇄ kubepci values.

The webhook is reachable by anything that can open a socket to it, so the request is parsed
strictly: every field kubepci reads is type-checked and anything malformed raises
:class:`ReviewError` with a reason the server returns as a 400 (and logs). Silently treating a
garbled review as "no object" would turn a parsing bug into an allow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from kubepci.errors import InputError
from kubepci.model import Resource, ResourceRef, SourceLocation

__all__ = [
    "API_VERSION",
    "OPERATIONS",
    "AdmissionRequest",
    "GroupVersionKind",
    "GroupVersionResource",
    "ReviewError",
    "encode_response",
    "make_review",
    "parse_review",
    "request_resource",
]

API_VERSION = "admission.k8s.io/v1"
OPERATIONS = frozenset({"CREATE", "UPDATE", "DELETE", "CONNECT"})
#: where findings about an admitted object say it came from
ADMISSION_LOCATION = SourceLocation("admission")


class ReviewError(InputError):
    """The body is not a well-formed AdmissionReview v1 request; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class GroupVersionKind:
    group: str
    version: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


@dataclass(frozen=True, slots=True)
class GroupVersionResource:
    group: str
    version: str
    resource: str


@dataclass(frozen=True, slots=True)
class AdmissionRequest:
    """The parts of ``AdmissionReview.request`` a decision depends on (and the log names)."""

    uid: str
    kind: GroupVersionKind
    resource: GroupVersionResource
    sub_resource: str
    name: str
    namespace: str
    operation: str
    username: str
    groups: tuple[str, ...]
    object: Mapping[str, Any] | None
    old_object: Mapping[str, Any] | None
    dry_run: bool


def _str(raw: Mapping[str, Any], key: str, where: str, *, required: bool = False) -> str:
    value = raw.get(key)
    if value is None:
        if required:
            raise ReviewError(f"{where}.{key} is required")
        return ""
    if not isinstance(value, str):
        raise ReviewError(f"{where}.{key} must be a string, got {type(value).__name__}")
    if required and not value:
        raise ReviewError(f"{where}.{key} must not be empty")
    return value


def _mapping(raw: Mapping[str, Any], key: str, where: str, *, required: bool = False) -> Mapping[str, Any] | None:
    value = raw.get(key)
    if value is None:
        if required:
            raise ReviewError(f"{where}.{key} is required")
        return None
    if not isinstance(value, dict):
        raise ReviewError(f"{where}.{key} must be an object, got {type(value).__name__}")
    return value


def _required_mapping(raw: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    node = _mapping(raw, key, where, required=True)
    if node is None:  # pragma: no cover - _mapping raised already
        raise ReviewError(f"{where}.{key} is required")
    return node


def _gvk(raw: Mapping[str, Any], key: str) -> GroupVersionKind:
    node = _required_mapping(raw, key, "request")
    where = f"request.{key}"
    return GroupVersionKind(_str(node, "group", where), _str(node, "version", where, required=True),
                            _str(node, "kind", where, required=True))


def _gvr(raw: Mapping[str, Any], key: str) -> GroupVersionResource:
    node = _required_mapping(raw, key, "request")
    where = f"request.{key}"
    return GroupVersionResource(_str(node, "group", where), _str(node, "version", where, required=True),
                                _str(node, "resource", where, required=True))


def _object(raw: Mapping[str, Any], key: str, kind: GroupVersionKind) -> Mapping[str, Any] | None:
    obj = _mapping(raw, key, "request")
    if obj is None:
        return None
    where = f"request.{key}"
    meta = obj.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise ReviewError(f"{where}.metadata must be an object")
    for field in ("name", "namespace", "generateName"):
        if meta and meta.get(field) is not None and not isinstance(meta[field], str):
            raise ReviewError(f"{where}.metadata.{field} must be a string")
    for field in ("labels", "annotations"):
        value = meta.get(field) if meta else None
        if value is not None and (
            not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values())
        ):
            raise ReviewError(f"{where}.metadata.{field} must map strings to strings")
    obj_kind = obj.get("kind")
    if obj_kind is not None and obj_kind != kind.kind:
        # the apiserver sends the object in the kind it names; a mismatch is a forged or broken review
        raise ReviewError(f"{where}.kind {obj_kind!r} does not match request.kind.kind {kind.kind!r}")
    return obj


def parse_review(body: bytes) -> AdmissionRequest:
    """Decode and validate an AdmissionReview v1 request body."""
    if not body:
        raise ReviewError("empty body: expected an AdmissionReview JSON object")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ReviewError(f"body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ReviewError(f"AdmissionReview must be a JSON object, got {type(doc).__name__}")
    if doc.get("apiVersion") != API_VERSION:
        raise ReviewError(f"apiVersion must be {API_VERSION!r}, got {doc.get('apiVersion')!r}")
    if doc.get("kind") != "AdmissionReview":
        raise ReviewError(f"kind must be 'AdmissionReview', got {doc.get('kind')!r}")
    req = _required_mapping(doc, "request", "AdmissionReview")
    uid = _str(req, "uid", "request", required=True)
    operation = _str(req, "operation", "request", required=True)
    if operation not in OPERATIONS:
        raise ReviewError(f"request.operation must be one of {', '.join(sorted(OPERATIONS))}, got {operation!r}")
    kind = _gvk(req, "kind")
    resource = _gvr(req, "resource")
    user = _mapping(req, "userInfo", "request") or {}
    groups = user.get("groups") or []
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise ReviewError("request.userInfo.groups must be a list of strings")
    dry_run = req.get("dryRun", False)
    if dry_run is None:
        dry_run = False
    if not isinstance(dry_run, bool):
        raise ReviewError("request.dryRun must be a boolean")
    obj = _object(req, "object", kind)
    old = _object(req, "oldObject", kind)
    if operation in ("CREATE", "UPDATE") and obj is None:
        raise ReviewError(f"request.object is required for {operation}")
    return AdmissionRequest(
        uid=uid,
        kind=kind,
        resource=resource,
        sub_resource=_str(req, "subResource", "request"),
        name=_str(req, "name", "request"),
        namespace=_str(req, "namespace", "request"),
        operation=operation,
        username=_str(user, "username", "request.userInfo"),
        groups=tuple(groups),
        object=obj,
        old_object=old,
        dry_run=dry_run,
    )


def request_resource(request: AdmissionRequest) -> Resource | None:
    """The object under review as a :class:`Resource` (None for DELETE/CONNECT without one).

    On CREATE a name may still be pending (``generateName``): the prefix stands in for it, so a
    waiver pattern such as ``payments/Pod/web-*`` matches the pods it was written for.
    """
    body = request.object if request.operation in ("CREATE", "UPDATE") else request.old_object
    if body is None:
        return None
    meta = body.get("metadata") or {}
    name = meta.get("name") or request.name or meta.get("generateName") or ""
    namespace = request.namespace or meta.get("namespace") or ""
    kind = body.get("kind") or request.kind.kind
    api_version = body.get("apiVersion") or request.kind.api_version
    if "kind" not in body or "apiVersion" not in body:
        body = {**body, "kind": kind, "apiVersion": api_version}
    return Resource(ResourceRef(namespace, kind, name, api_version), body, ADMISSION_LOCATION)


def make_review(
    obj: Mapping[str, Any],
    *,
    operation: str = "CREATE",
    uid: str = "00000000-0000-0000-0000-000000000000",
    dry_run: bool = False,
    old_object: Mapping[str, Any] | None = None,
    username: str = "kubernetes-admin",
    plural: str | None = None,
) -> dict[str, Any]:
    """The AdmissionReview an apiserver would send for ``obj`` (offline evaluation, tests, benchmarks)."""
    api_version = str(obj.get("apiVersion", "v1"))
    group, _, version = api_version.rpartition("/")
    kind = str(obj.get("kind", ""))
    meta = obj.get("metadata") or {}
    resource = {"group": group, "version": version, "resource": plural or kind.lower() + "s"}
    gvk = {"group": group, "version": version, "kind": kind}
    request: dict[str, Any] = {
        "uid": uid, "kind": gvk, "resource": resource, "requestKind": gvk, "requestResource": resource,
        "name": meta.get("name", ""), "operation": operation,
        "userInfo": {"username": username, "groups": ["system:authenticated"]},
        "object": None if operation == "DELETE" else dict(obj),
        "oldObject": dict(old_object) if old_object is not None else (dict(obj) if operation == "DELETE" else None),
        "dryRun": dry_run,
    }
    if meta.get("namespace"):
        request["namespace"] = meta["namespace"]
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "request": request}


def encode_response(
    uid: str,
    allowed: bool,
    *,
    message: str = "",
    code: int = 403,
    warnings: Sequence[str] = (),
    audit_annotations: Mapping[str, str] | None = None,
) -> bytes:
    """The AdmissionReview response the apiserver expects (``response.uid`` echoes the request)."""
    response: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if not allowed:
        response["status"] = {"code": code, "reason": "Forbidden" if code == 403 else "Invalid",
                              "message": message}
    if warnings:
        response["warnings"] = list(warnings)
    if audit_annotations:
        response["auditAnnotations"] = dict(audit_annotations)
    return orjson.dumps({"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response})

"""Audit events for the trail tests: the published samples in ../shared, plus generated ones.

Generated events follow the ``audit.k8s.io/v1`` Event shape of real apiserver output (annotations,
user extra with a credential id, a Request-level body), 1-2 KB each, deterministic per number, so
a test can ask for hundreds of distinct leaves without shipping a corpus.
"""

from __future__ import annotations

import json
from pathlib import Path

from kubepci.auditlog.envelope import NewEntry, k8s_audit_entry

__all__ = ["DEMO_LOG", "MALFORMED_TRACE", "TRACE_DIR", "demo_lines", "k8s_entries", "synthetic_event", "trace_lines"]

DEMO_LOG = Path("../shared/testdata/audit2rbac/demo.log")
TRACE_DIR = Path("../shared/testdata/falco-k8s-audit/trace_files")
MALFORMED_TRACE = TRACE_DIR / "fal_01_003.json"  # {"kind": 0}: a deliberately malformed event

_USERS = ("alice@example.com", "bob@example.com", "system:serviceaccount:payments:api", "system:kube-scheduler")
_VERBS = ("get", "list", "create", "update", "patch", "delete", "watch")
_RESOURCES = (("pods", ""), ("secrets", ""), ("pods", "exec"), ("deployments", ""), ("configmaps", ""))
_NAMESPACES = ("payments", "vault", "ingress", "monitoring")
_CODES = (200, 200, 201, 403, 404, 409, 200, 401)


def demo_lines() -> list[bytes]:
    """The audit2rbac demo log: 37 v1 Events, one per line, exactly as published."""
    return DEMO_LOG.read_bytes().splitlines()


def trace_lines() -> list[tuple[str, bytes]]:
    """Falco's k8s audit trace events (v1, v1beta1 and no apiVersion), without the malformed one."""
    lines: list[tuple[str, bytes]] = []
    for path in sorted(TRACE_DIR.glob("*.json")):
        if path == MALFORMED_TRACE:
            continue
        lines += [(path.name, line) for line in path.read_bytes().splitlines() if line.strip()]
    return lines


def synthetic_event(number: int, *, stage: str = "ResponseComplete", body_bytes: int = 600) -> bytes:
    """A realistic audit Event line (without newline) that differs for every ``number``."""
    resource, subresource = _RESOURCES[number % len(_RESOURCES)]
    namespace = _NAMESPACES[number % len(_NAMESPACES)]
    verb = _VERBS[number % len(_VERBS)]
    second, micro = divmod(number, 1_000_000)
    stamp = f"2026-03-01T{(second // 3600) % 24:02d}:{(second // 60) % 60:02d}:{second % 60:02d}.{micro:06d}Z"
    object_ref: dict[str, str] = {
        "resource": resource, "namespace": namespace, "name": f"{resource}-{number % 97}", "apiVersion": "v1",
    }
    if subresource:
        object_ref["subresource"] = subresource
    event = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Request",
        "auditID": f"{number:08x}-7b09-4964-af09-b7987367e1ba",
        "stage": stage,
        "requestURI": f"/api/v1/namespaces/{namespace}/{resource}/{resource}-{number % 97}",
        "verb": verb,
        "user": {
            "username": _USERS[number % len(_USERS)],
            "uid": f"uid-{number % 13}",
            "groups": ["system:authenticated", "payments-operators"],
            "extra": {"authentication.kubernetes.io/credential-id": [f"X509SHA256={number % 7:064x}"]},
        },
        "sourceIPs": ["203.0.113.7", f"10.20.{number % 4}.{number % 250 + 1}"],
        "userAgent": "kubectl/v1.31.0 (linux/amd64) kubernetes/9a3f6b2",
        "objectRef": object_ref,
        "responseStatus": {"metadata": {}, "code": _CODES[number % len(_CODES)]},
        "requestObject": {"kind": "ConfigMap", "apiVersion": "v1", "data": {"blob": "x" * body_bytes}},
        "requestReceivedTimestamp": stamp,
        "stageTimestamp": stamp,
        "annotations": {
            "authorization.k8s.io/decision": "allow",
            "authorization.k8s.io/reason": f'RBAC: allowed by RoleBinding "operators/{namespace}"',
        },
    }
    return json.dumps(event, separators=(",", ":")).encode()


def k8s_entries(count: int, received_at: str, *, start: int = 0, source: str = "apiserver") -> list[NewEntry]:
    return [
        k8s_audit_entry(synthetic_event(n), source=source, received_at=received_at) for n in range(start, start + count)
    ]

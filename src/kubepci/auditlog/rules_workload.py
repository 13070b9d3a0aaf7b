"""Review checks that read workload and object bodies: pod specs, Services, Ingresses, ConfigMaps,
namespaces and nodes (detections D03, D15-D20).

They need ``requestObject``, i.e. the audit policy must log these resources at ``Request`` level
or above. At ``Metadata`` level the body checks stay silent rather than guess; the metadata-only
signals (Pod Security ``audit-violations`` annotation, namespace and node names, source address)
still work. Split from :mod:`kubepci.auditlog.rules_k8s` to keep both modules readable.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Mapping, Sequence
from ipaddress import ip_address, ip_network

from kubepci.auditlog.rules_data import SYSTEM_LEVEL_RESOURCES, Alert, ReviewContext
from kubepci.auditlog.rules_k8s import (
    PAST,
    AuditEvent,
    Check,
    as_map,
    as_seq,
    as_str,
    cde_alert,
    matches_any,
    user_alert,
)

__all__ = ["WORKLOAD_CHECKS", "WORKLOAD_RESOURCES"]


def _repository(image: str) -> str:
    ref = image.split("@", 1)[0]
    colon = ref.rfind(":")
    return ref[:colon] if colon > ref.rfind("/") else ref


def _exempt(repos: Sequence[str], trusted: frozenset[str]) -> bool:
    """Falco's ``images in (list)``: exempt only when *every* container image is trusted."""
    return bool(repos) and all(r in trusted for r in repos)


def _pod_spec(ev: AuditEvent, ctx: ReviewContext) -> Iterator[Alert]:
    if ev.resource != "pods" or ev.subresource or ev.verb != "create":
        return
    spec = as_map(ev.body.get("spec"))
    containers = [
        as_map(c)
        for key in ("containers", "initContainers", "ephemeralContainers")
        for c in as_seq(spec.get(key))
    ]
    images = [as_str(c.get("image")) for c in containers]
    repos = [_repository(i) for i in images]
    did = f"{ev.username} created pod {ev.where} images={images}"
    if ctx.allowed_images is not None and spec:
        if outside := sorted({r for r in repos if r not in ctx.allowed_images}):
            yield cde_alert("D15.disallowed_image", ev, ctx, f"{did}: {outside} not in the allowed images")
    if any(as_map(c.get("securityContext")).get("privileged") is True for c in containers):
        if not _exempt(repos, ctx.privileged_images):
            yield cde_alert("D15.privileged", ev, ctx, f"{did} with a privileged container")
    paths = {
        posixpath.normpath(as_str(as_map(as_map(v).get("hostPath")).get("path")) or ".")
        for v in as_seq(spec.get("volumes"))
    }
    if (sensitive := paths & ctx.sensitive_host_paths) and not _exempt(repos, ctx.sensitive_mount_images):
        yield cde_alert("D15.sensitive_mount", ev, ctx, f"{did} mounting host paths {sorted(sensitive)}")
    for field, check, trusted in (
        ("hostNetwork", "D15.host_network", ctx.host_network_images),
        ("hostPID", "D15.host_pid", ctx.host_pid_images),
        ("hostIPC", "D15.host_ipc", ctx.host_ipc_images),
    ):
        if spec.get(field) is True and not _exempt(repos, trusted):
            yield cde_alert(check, ev, ctx, f"{did} with {field}: true")
    if ev.namespace in ctx.kube_namespaces and not _exempt(repos, ctx.kube_namespace_images):
        yield user_alert("D16.pod_in_kube_namespace", ev, f"{did} in protected namespace {ev.namespace}")


def _ephemeral(ev: AuditEvent, ctx: ReviewContext) -> Iterator[Alert]:
    if ev.resource != "pods" or ev.subresource != "ephemeralcontainers":
        return
    if ev.verb not in ("create", "update", "patch"):
        return
    body = ev.body  # a Pod (1.23+) or the old EphemeralContainers kind
    debuggers = [
        *as_seq(as_map(body.get("spec")).get("ephemeralContainers")),
        *as_seq(body.get("ephemeralContainers")),
    ]
    names = [f"{as_str(as_map(c).get('name'))}={as_str(as_map(c).get('image'))}" for c in debuggers]
    detail = f" {names}" if names else ""
    message = f"{ev.username} added ephemeral container(s){detail} to pod {ev.where} ({ev.code})"
    yield cde_alert("D03.ephemeral_container", ev, ctx, message)


def _workload_meta(ev: AuditEvent, ctx: ReviewContext) -> Iterator[Alert]:
    violations = ev.annotations.get("pod-security.kubernetes.io/audit-violations")
    if isinstance(violations, str) and violations:
        yield cde_alert(
            "D15.psa_violation", ev, ctx, f"{ev.username} {ev.verb} {ev.target} {ev.where}: {violations}"
        )
    if (
        ev.resource == "serviceaccounts"
        and not ev.subresource
        and ev.verb == "create"
        and ev.succeeded
        and ev.namespace in ctx.kube_namespaces
        and ev.name not in ctx.kube_namespace_serviceaccounts
    ):
        yield user_alert(
            "D16.serviceaccount_in_kube_namespace", ev, f"{ev.username} created serviceaccount {ev.where}"
        )


def _exposure(ev: AuditEvent, ctx: ReviewContext) -> Iterator[Alert]:
    body = ev.body
    if ev.resource == "services" and not ev.subresource and ev.verb in ("create", "update", "patch"):
        spec = as_map(body.get("spec"))
        node_ports = [p.get("nodePort") for p in map(as_map, as_seq(spec.get("ports"))) if p.get("nodePort")]
        ports = node_ports or "chosen by the cluster"
        if spec.get("type") == "NodePort":
            yield cde_alert(
                "D17.nodeport_service",
                ev,
                ctx,
                f"{ev.username} exposed service {ev.where} on node ports {ports}",
            )
        elif spec.get("type") == "LoadBalancer":
            yield cde_alert(
                "D17.loadbalancer_service",
                ev,
                ctx,
                f"{ev.username} exposed service {ev.where} via a load balancer",
            )
    if ev.resource == "ingresses" and ev.verb in ("create", "update") and ev.succeeded and body:
        if not as_seq(as_map(body.get("spec")).get("tls")):
            yield cde_alert(
                "D17.ingress_without_tls",
                ev,
                ctx,
                f"{ev.username} {PAST[ev.verb]} ingress {ev.where} without TLS",
            )
    if ev.resource == "configmaps" and ev.verb in ("create", "update", "patch"):
        if keys := _credential_keys(ev.request_object, ctx.credential_markers):
            yield cde_alert(
                "D18.configmap_credentials",
                ev,
                ctx,
                f"{ev.username} {PAST[ev.verb]} configmap {ev.where}: credential-like content in keys {keys}",
            )


def _credential_keys(body: object, markers: Sequence[str]) -> list[str]:
    """Names of ConfigMap data keys whose name or value contains a marker (values are never returned)."""
    entries: list[tuple[str, object]] = list(as_map(as_map(body).get("data")).items())
    for op in map(as_map, as_seq(body)):  # JSON patch: [{"op": "add", "path": "/data/x", "value": ...}]
        path = as_str(op.get("path"))
        if path.startswith("/data"):
            value = op.get("value")
            entries += (
                list(value.items()) if isinstance(value, Mapping) else [(path.removeprefix("/data/"), value)]
            )
    lowered = [m.lower() for m in markers]
    return sorted(
        {
            k
            for k, v in entries
            if any(m in f"{k}\n{v if isinstance(v, str) else ''}".lower() for m in lowered)
        }
    )


def _platform(ev: AuditEvent, ctx: ReviewContext) -> Iterator[Alert]:
    if ev.resource == "namespaces" and ev.verb == "create" and ctx.allowed_namespaces is not None:
        if ev.name not in ctx.allowed_namespaces:
            yield user_alert(
                "D19.disallowed_namespace",
                ev,
                f"{ev.username} created namespace {ev.where} outside the allowed set",
            )
    if (
        ev.resource in SYSTEM_LEVEL_RESOURCES
        and ev.verb in ("create", "delete", "deletecollection")
        and ev.succeeded
    ):
        yield user_alert(
            "D19.system_object_changed",
            ev,
            f"{ev.username} {PAST.get(ev.verb, ev.verb)} {ev.target} {ev.where}",
        )
    if ev.resource != "nodes" or ev.subresource or ev.verb != "create":
        return
    if ctx.allowed_nodes is None and ctx.allowed_node_cidrs is None:
        return
    bad_name = ctx.allowed_nodes is not None and not matches_any(ev.name or "", ctx.allowed_nodes)
    bad_ip = ctx.allowed_node_cidrs is not None and not _in_cidrs(ev.source_ip, ctx.allowed_node_cidrs)
    if bad_name or bad_ip:
        why = " and ".join(w for w, bad in (("name", bad_name), (f"source {ev.source_ip}", bad_ip)) if bad)
        if ev.succeeded:
            yield user_alert("D20.untrusted_node_joined", ev, f"node {ev.where} joined; {why} not allowed")
        else:
            yield user_alert(
                "D20.untrusted_node_join_failed",
                ev,
                f"node {ev.where} failed to join ({ev.code}); {why} not allowed",
            )


def _in_cidrs(ip: str | None, cidrs: Sequence[str]) -> bool:
    try:
        address = ip_address(ip or "")
    except ValueError:
        return False
    return any(address in ip_network(c, strict=False) for c in cidrs)


#: Run at ResponseComplete only.
WORKLOAD_CHECKS: tuple[Check, ...] = (_pod_spec, _ephemeral, _workload_meta, _exposure, _platform)
#: As :data:`kubepci.auditlog.rules_k8s.CHECK_RESOURCES`, for these checks.
WORKLOAD_RESOURCES: Mapping[Check, frozenset[str]] = {
    _pod_spec: frozenset({"pods"}),
    _ephemeral: frozenset({"pods"}),
    _exposure: frozenset({"services", "ingresses", "configmaps"}),
    _platform: frozenset({"namespaces", "nodes"}) | SYSTEM_LEVEL_RESOURCES,
}

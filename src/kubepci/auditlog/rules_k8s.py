"""Stateless review checks over one Kubernetes API-server audit event (PCI DSS 10.4.1.1).

This module normalises an ``audit.k8s.io`` Event (:class:`AuditEvent`) and holds the checks that
work from request metadata plus RBAC bodies: interactive access, secrets, RBAC, credentials,
identity and admission/pipeline tampering (D01-D14, D22). Body-heavy workload checks (D15-D20)
are in :mod:`kubepci.auditlog.rules_workload`; state (bursts, duplicates across stages, silence)
belongs to :class:`kubepci.auditlog.rules.Reviewer`.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

from kubepci.auditlog.rules_data import (
    CHECKS,
    DETECTION_PCI,
    Alert,
    Priority,
    ReviewContext,
    parse_time,
)

__all__ = [
    "CHECK_RESOURCES",
    "COMPLETE_CHECKS",
    "PAST",
    "STARTED_CHECKS",
    "WRITE_VERBS",
    "AuditEvent",
    "Check",
    "as_map",
    "as_seq",
    "as_str",
    "cde_alert",
    "matches_any",
    "user_alert",
]

WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
_READ_VERBS = frozenset({"get", "list", "watch"})
_ROLE_RESOURCES = frozenset({"roles", "clusterroles"})
_BINDING_RESOURCES = frozenset({"rolebindings", "clusterrolebindings"})
_RBAC_RESOURCES = _ROLE_RESOURCES | _BINDING_RESOURCES
_ADMISSION_RESOURCES = frozenset(
    {
        "mutatingwebhookconfigurations",
        "validatingwebhookconfigurations",
        "validatingadmissionpolicies",
        "validatingadmissionpolicybindings",
        "mutatingadmissionpolicies",
        "mutatingadmissionpolicybindings",
    }
)
_HEALTH_PATHS = ("/healthz", "/livez", "/readyz")
PAST = {
    "create": "created",
    "update": "updated",
    "patch": "patched",
    "delete": "deleted",
    "deletecollection": "deleted all",
    "get": "read",
}
_ACTIVITY = {
    ("deployments", "create"): "D15.deployment_created",
    ("deployments", "delete"): "D15.deployment_deleted",
    ("services", "create"): "D17.service_created",
    ("services", "delete"): "D17.service_deleted",
    ("configmaps", "create"): "D18.configmap_created",
    ("configmaps", "delete"): "D18.configmap_deleted",
    ("namespaces", "create"): "D19.namespace_created",
    ("namespaces", "delete"): "D19.namespace_deleted",
    ("serviceaccounts", "create"): "D07.serviceaccount_created",
    ("serviceaccounts", "delete"): "D07.serviceaccount_deleted",
    ("secrets", "create"): "D07.secret_created",
    ("secrets", "delete"): "D07.secret_deleted",
    ("roles", "create"): "D06.role_created",
    ("roles", "delete"): "D06.role_deleted",
    ("clusterroles", "create"): "D06.clusterrole_created",
    ("clusterroles", "delete"): "D06.clusterrole_deleted",
    ("rolebindings", "create"): "D06.rolebinding_created",
    ("rolebindings", "delete"): "D06.rolebinding_deleted",
    ("clusterrolebindings", "create"): "D06.clusterrolebinding_created",
    ("clusterrolebindings", "delete"): "D06.clusterrolebinding_deleted",
}


def as_map(value: object) -> Mapping[str, Any]:
    if type(value) is dict:  # what JSON parsing gives; the ABC check below costs ten times more
        return value
    return value if isinstance(value, Mapping) else {}


def as_seq(value: object) -> Sequence[Any]:
    return value if isinstance(value, list | tuple) else ()


def as_str(value: object) -> str:
    return value if isinstance(value, str) else ""


@functools.lru_cache(maxsize=256)
def _matcher(patterns: tuple[str, ...] | frozenset[str]) -> Callable[[str], bool]:
    """``value`` equals one of ``patterns`` or matches it as a :func:`fnmatch.fnmatchcase` glob,
    with every glob compiled into one regular expression once."""
    exact = frozenset(patterns)
    if not patterns:
        return lambda _value: False
    glob = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns)).match
    return lambda value: value in exact or glob(value) is not None


def _strings(value: object) -> tuple[str, ...]:
    return tuple([g for g in as_seq(value) if isinstance(g, str)])


def matches_any(value: str, patterns: Sequence[str] | frozenset[str]) -> bool:
    """True when ``value`` equals or glob-matches one of ``patterns``."""
    return _matcher(patterns if isinstance(patterns, frozenset) else tuple(patterns))(value)


@dataclass(slots=True)
class AuditEvent:
    """The fields of an ``audit.k8s.io`` v1/v1beta1 Event the rules read, normalised once.

    Not frozen, unlike the house style, for speed alone: one is built for every event the trail
    ingests, and a frozen dataclass sets its twenty fields through ``object.__setattr__`` (1.6 us,
    a tenth of the review). Checks only read it.
    """

    stage: str
    verb: str
    audit_id: str | None
    username: str
    groups: tuple[str, ...]
    impersonated_user: str | None
    impersonated_groups: tuple[str, ...]
    source_ip: str | None
    user_agent: str
    resource: str
    subresource: str
    api_group: str
    namespace: str | None
    name: str | None
    generate_name: str
    code: int | None
    request_uri: str
    annotations: Mapping[str, Any]
    request_object: Any
    timestamp: datetime | None

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> AuditEvent | None:
        """None for anything that is not an audit Event (e.g. Falco's ``{"kind": 0}`` trace). Items of
        the apiserver's webhook EventList carry no kind (Go omits TypeMeta in list items): they are
        Events."""
        get = raw.get
        stage = get("stage")
        if get("kind", "Event") != "Event" or not isinstance(stage, str):
            return None
        user, imp, ref = as_map(get("user")), as_map(get("impersonatedUser")), as_map(get("objectRef"))
        code = as_map(get("responseStatus")).get("code")
        request_object = get("requestObject")
        request_meta = as_map(as_map(request_object).get("metadata"))
        name = ref.get("name") or as_map(as_map(get("responseObject")).get("metadata")).get("name")
        name = name or request_meta.get("name")
        source_ip = None
        for ip in reversed(as_seq(get("sourceIPs"))):  # only the last hop is trustworthy
            if isinstance(ip, str):
                source_ip = ip
                break
        # the common string fields, read as as_str would but without a call each (eleven an event)
        verb, audit_id, username, user_agent, resource, subresource, api_group, namespace, request_uri = [
            value if type(value) is str else as_str(value)
            for value in (get("verb"), get("auditID"), user.get("username"), get("userAgent"), ref.get("resource"),
                          ref.get("subresource"), ref.get("apiGroup"), ref.get("namespace"), get("requestURI"))
        ]
        stamp = get("stageTimestamp") or get("requestReceivedTimestamp") or get("timestamp")
        return cls(
            stage=stage,
            verb=verb,
            audit_id=audit_id or None,
            username=username,
            groups=_strings(user.get("groups")),
            impersonated_user=as_str(imp.get("username")) or None,
            impersonated_groups=_strings(imp.get("groups")) if imp else (),
            source_ip=source_ip,
            user_agent=user_agent,
            resource=resource,
            subresource=subresource,
            api_group=api_group,
            namespace=namespace or None,
            name=name if isinstance(name, str) and name else None,
            generate_name=as_str(request_meta.get("generateName")),
            code=code if type(code) is int else None,
            request_uri=request_uri,
            annotations=as_map(get("annotations")),
            request_object=request_object,
            timestamp=parse_time(stamp),
        )

    @property
    def succeeded(self) -> bool:
        return self.code is not None and 200 <= self.code < 300

    @property
    def is_system_user(self) -> bool:
        return self.username.startswith("system:")

    @property
    def target(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource

    @property
    def where(self) -> str:
        """``ns/name`` for messages; ``in ns`` or ``cluster-wide`` for collection requests."""
        name = self.name or (f"{self.generate_name}*" if self.generate_name else "")
        if not name:
            return f"in {self.namespace}" if self.namespace else "cluster-wide"
        cluster_scoped = not self.namespace or self.resource == "namespaces"
        return name if cluster_scoped else f"{self.namespace}/{name}"

    @property
    def body(self) -> Mapping[str, Any]:
        return as_map(self.request_object)


def user_alert(
    check: str, ev: AuditEvent, message: str, priority: Priority | None = None, source: str = "k8s_audit"
) -> Alert:
    """Build the alert for ``check`` with the event's evidence fields (PCI 10.2.2)."""
    spec = CHECKS[check]
    return Alert(
        rule_id=spec.detection,
        check=check,
        title=spec.title,
        priority=spec.priority if priority is None else priority,
        pci=DETECTION_PCI[spec.detection],
        message=message,
        source=source,
        audit_id=ev.audit_id,
        user=ev.username or None,
        verb=ev.verb or None,
        resource=ev.target or None,
        namespace=ev.namespace,
        name=ev.name,
        source_ip=ev.source_ip,
        timestamp=ev.timestamp,
    )


def cde_alert(check: str, ev: AuditEvent, ctx: ReviewContext, message: str) -> Alert:
    """Raise the priority one step when the object lives in a CDE namespace."""
    priority = CHECKS[check].priority
    if ev.namespace is not None and ev.namespace in ctx.cde_namespaces:
        return user_alert(check, ev, f"[CDE] {message}", Priority(min(priority + 1, Priority.EMERGENCY)))
    return user_alert(check, ev, message)


Check = Callable[[AuditEvent, ReviewContext], Iterator[Alert]]


def _uri_parts(uri: str) -> tuple[str, str]:
    """Path and query of a request URI as the API server logs it (path and query, no scheme or
    host). Split by hand: ``urlsplit`` reads ``//[x`` as a host and raises on it."""
    path, _, rest = uri.partition("?")
    return path.partition("#")[0], rest.partition("#")[0]


def _exec_attach(ev: AuditEvent, ctx: ReviewContext) -> Iterator[Alert]:
    if ev.resource != "pods" or ev.subresource not in ("exec", "attach") or ev.verb not in ("create", "get"):
        return
    if ev.code is not None and ev.code >= 400:
        return
    command = " ".join(parse_qs(_uri_parts(ev.request_uri)[1]).get("command", []))
    detail = f" running {command!r}" if command else ""
    yield cde_alert(
        "D01.exec_attach", ev, ctx, f"{ev.username} opened {ev.subresource} into pod {ev.where}{detail}"
    )


def _forward_proxy(ev: AuditEvent, ctx: ReviewContext) -> Iterator[Alert]:
    if ev.code is not None and ev.code >= 400:
        return
    if ev.resource == "pods" and ev.subresource == "portforward":
        yield cde_alert("D02.portforward", ev, ctx, f"{ev.username} port-forwarded into pod {ev.where}")
    elif ev.resource in ("pods", "services", "nodes") and ev.subresource == "proxy":
        alert = cde_alert(
            "D02.proxy", ev, ctx, f"{ev.username} proxied through the API server to {ev.target} {ev.where}"
        )
        if ev.resource == "nodes":  # nodes/proxy is the whole kubelet API
            alert = user_alert("D02.proxy", ev, alert.message, Priority.WARNING)
        yield alert


def _secret_read(ev: AuditEvent, ctx: ReviewContext) -> Iterator[Alert]:
    if ev.resource != "secrets" or ev.subresource or ev.verb not in _READ_VERBS:
        return
    if ev.code == 403:
        yield user_alert("D05.secret_denied", ev, f"{ev.username} was denied {ev.verb} on secrets {ev.where}")
        return
    if not ev.succeeded:
        return
    ns = ev.namespace or ""
    patterns = [*ctx.secret_readers.get("*", ()), *(ctx.secret_readers.get(ns, ()) if ns else ())]
    if matches_any(ev.username, [p.replace("{namespace}", ns) for p in patterns]):
        return
    scope = f"secrets {ev.where}" if ev.name else f"secrets in {ns or 'all namespaces'}"
    yield cde_alert(
        "D04.secret_read", ev, ctx, f"{ev.username} ({ev.verb}) read {scope}, not an allowed reader"
    )


def _role_rules(ev: AuditEvent) -> tuple[set[str], set[str]] | None:
    rules = ev.body.get("rules")
    if (
        ev.resource not in _ROLE_RESOURCES
        or ev.verb not in ("create", "update", "patch")
        or not isinstance(rules, list)
    ):
        return None
    verbs = {v for r in rules for v in as_seq(as_map(r).get("verbs")) if isinstance(v, str)}
    resources = {v for r in rules for v in as_seq(as_map(r).get("resources")) if isinstance(v, str)}
    return verbs, resources


def _rbac(ev: AuditEvent, ctx: ReviewContext) -> Iterator[Alert]:
    if ev.resource not in _RBAC_RESOURCES or ev.api_group not in ("", "rbac.authorization.k8s.io"):
        return
    kind = ev.resource.removesuffix("s")
    did = f"{ev.username} {PAST.get(ev.verb, ev.verb)} {kind} {ev.where}"
    found = _role_rules(ev)
    if found is not None:
        verbs, resources = found
        if "*" in verbs or "*" in resources:
            yield user_alert(
                "D06.wildcard_role",
                ev,
                f"{did} with wildcard verbs={sorted(verbs)} resources={sorted(resources)}",
            )
        if writes := verbs & {"create", "update", "patch", "delete", "deletecollection"}:
            yield user_alert("D06.write_role", ev, f"{did} granting write verbs {sorted(writes)}")
        if interactive := resources & {"pods/exec", "pods/attach", "pods/*"}:
            yield user_alert("D06.pod_exec_role", ev, f"{did} granting {sorted(interactive)}")
        if escalation := verbs & {"escalate", "bind", "impersonate"}:
            yield user_alert("D06.escalation_role", ev, f"{did} granting {sorted(escalation)}")
    role_ref = as_map(ev.body.get("roleRef"))
    if (
        ev.resource in _BINDING_RESOURCES
        and ev.verb in ("create", "update")
        and role_ref.get("name") == "cluster-admin"
    ):
        subjects = ", ".join(
            f"{as_str(s.get('kind'))}:{as_str(s.get('name'))}"
            for s in map(as_map, as_seq(ev.body.get("subjects")))
        )
        yield user_alert("D06.bind_cluster_admin", ev, f"{did} binding cluster-admin to [{subjects}]")
    system_role = (
        ev.resource in _ROLE_RESOURCES
        and (ev.name or "").startswith("system:")
        and (ev.name or "") not in ctx.system_role_exceptions
    )
    if (
        system_role
        and ev.verb in ("create", "update", "patch", "delete")
        and ev.username != "system:apiserver"
    ):
        yield user_alert("D06.system_role_changed", ev, f"{did} (built-in system role)")
    elif (
        ev.verb in ("update", "patch")
        and ev.succeeded
        and not matches_any(ev.username, ctx.trusted_system_users)
    ):
        yield user_alert("D06.rbac_modified", ev, did)


def _activity(ev: AuditEvent, ctx: ReviewContext) -> Iterator[Alert]:
    check = _ACTIVITY.get((ev.resource, ev.verb))
    if check is None or not ctx.activity_events or ev.subresource or not ev.succeeded:
        return
    if ev.resource == "secrets" and (ev.is_system_user or ev.namespace == "kube-system"):
        return  # token controller and bootstrap secrets would drown the stream (Falco does the same)
    yield user_alert(check, ev, f"{ev.username} {PAST[ev.verb]} {ev.resource.removesuffix('s')} {ev.where}")


def _credentials(ev: AuditEvent, ctx: ReviewContext) -> Iterator[Alert]:
    body = ev.body
    if ev.resource == "serviceaccounts" and ev.subresource == "token" and ev.verb == "create":
        if ev.succeeded and not ev.is_system_user:
            yield user_alert(
                "D07.token_requested", ev, f"{ev.username} minted a token for serviceaccount {ev.where}"
            )
    elif ev.resource == "secrets" and ev.verb == "create" and ev.succeeded:
        if body.get("type") == "kubernetes.io/service-account-token":
            yield user_alert(
                "D07.sa_token_secret", ev, f"{ev.username} created long-lived token secret {ev.where}"
            )
    elif ev.resource == "certificatesigningrequests" and ev.succeeded:
        routine = matches_any(ev.username, (*ctx.trusted_system_users, "system:bootstrap:*"))
        if ev.verb == "create" and not ev.subresource and not routine:
            yield user_alert("D07.csr_created", ev, f"{ev.username} requested certificate {ev.where}")
        elif ev.subresource == "approval" and ev.verb in ("update", "patch") and not routine:
            yield user_alert("D07.csr_approved", ev, f"{ev.username} approved certificate request {ev.where}")


def _identity(ev: AuditEvent, ctx: ReviewContext) -> Iterator[Alert]:
    if ev.username == "system:anonymous" and ev.annotations.get("authorization.k8s.io/decision") == "allow":
        path = _uri_parts(ev.request_uri)[0]
        if not any(path == p or path.startswith(p + "/") for p in _HEALTH_PATHS):
            yield user_alert("D08.anonymous_allowed", ev, f"anonymous {ev.verb} {ev.request_uri} was allowed")
    if ev.impersonated_user:
        masters = "system:masters" in ev.impersonated_groups or ev.impersonated_user in ctx.admin_usernames
        acted = f"{ev.username} acted as {ev.impersonated_user} groups={list(ev.impersonated_groups)}"
        message = f"{acted}: {ev.verb} {ev.target} {ev.where}"
        yield user_alert("D11.impersonation", ev, message, Priority.WARNING if masters else None)
    if not ev.username:
        return
    admin = not ev.is_system_user and ev.username in ctx.admin_usernames
    masters = not admin and "system:masters" in ev.groups
    unknown = (
        ctx.allowed_users is not None
        and not ev.is_system_user
        and not matches_any(ev.username, ctx.allowed_users)
    )
    if not (admin or masters or unknown):
        return
    action = f"{ev.verb} {ev.target or ev.request_uri} {ev.where if ev.resource else ''}".rstrip()
    if admin:
        yield user_alert("D12.admin_activity", ev, f"default admin account {ev.username}: {action}")
    elif masters:
        yield user_alert("D12.masters_group", ev, f"system:masters member {ev.username}: {action}")
    if unknown:
        yield user_alert("D12.user_not_allowed", ev, f"{ev.username} is not an allowed user: {action}")


def _control_plane(ev: AuditEvent, ctx: ReviewContext) -> Iterator[Alert]:
    write = ev.verb in WRITE_VERBS and ev.succeeded
    if write and ev.resource in _ADMISSION_RESOURCES:
        own = ev.name in ctx.own_webhook_names
        note = " (kubepci's own admission control)" if own else ""
        yield user_alert(
            "D13.admission_config_changed",
            ev,
            f"{ev.username} {PAST.get(ev.verb, ev.verb)} {ev.resource.removesuffix('s')} {ev.where}{note}",
            Priority.CRITICAL if own else None,
        )
    if write and ev.subresource != "status" and not matches_any(
        ev.username, (*ctx.trusted_system_users, f"system:serviceaccount:{ev.namespace}:*")
    ):
        pipeline = ctx.trail_namespaces | ctx.falco_namespaces
        inside = ev.namespace in pipeline and ev.resource not in ("events", "leases")
        if inside or (ev.resource == "namespaces" and ev.name in pipeline and ev.verb != "create"):
            yield user_alert(
                "D14.pipeline_tampering",
                ev,
                f"{ev.username} {PAST.get(ev.verb, ev.verb)} {ev.target} {ev.where}",
            )
        if ev.resource == "events" and ev.verb in ("delete", "deletecollection"):
            yield user_alert(
                "D14.events_deleted",
                ev,
                f"{ev.username} deleted events in {ev.namespace or 'all namespaces'}",
            )
    failed_open = [key for key in ev.annotations if key.startswith("failed-open.")]
    for key in sorted(failed_open):
        if ".webhook.admission.k8s.io/" in key:
            value = ev.annotations[key]
            own = isinstance(value, str) and value in ctx.own_webhook_names
            yield user_alert(
                "D22.webhook_failed_open",
                ev,
                f"admission webhook {value} failed open on {ev.verb} {ev.target} {ev.where} by {ev.username}",
                Priority.CRITICAL if own else None,
            )


#: Checks for long-running requests (exec, watch, proxy): run at ResponseStarted *and* ResponseComplete;
#: the Reviewer keeps the first alert per auditID and check.
STARTED_CHECKS: tuple[Check, ...] = (_exec_attach, _forward_proxy, _secret_read)
#: Checks that need the outcome: run at ResponseComplete only, like Falco's ``kevt`` macro.
COMPLETE_CHECKS: tuple[Check, ...] = (_rbac, _activity, _credentials, _identity, _control_plane)

#: The only ``objectRef.resource`` values each check can alert on: its own first lines return for
#: any other. The reviewer uses this to skip checks (creating and running a dozen generators was a
#: third of the review's cost); checks not listed run for every event. test_rules.py holds each
#: entry to its check's code.
CHECK_RESOURCES: Mapping[Check, frozenset[str]] = {
    _exec_attach: frozenset({"pods"}),
    _forward_proxy: frozenset({"pods", "services", "nodes"}),
    _secret_read: frozenset({"secrets"}),
    _rbac: _RBAC_RESOURCES,
    _activity: frozenset(resource for resource, _ in _ACTIVITY),
    _credentials: frozenset({"serviceaccounts", "secrets", "certificatesigningrequests"}),
}

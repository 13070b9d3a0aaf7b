"""Behaviour of each review detection D01..D22 on small hand-written audit events and Falco alerts.

Every test names the rule, the evidence fields and what the message must (and must not) say. The
events follow audit.k8s.io/v1 as described in reference/audit-trail.md section 5.1.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubepci.auditlog.rules import Alert, Priority, ReviewContext, Reviewer
from kubepci.auditlog.rules_data import parse_time
from kubepci.auditlog.rules_k8s import CHECK_RESOURCES, AuditEvent
from kubepci.auditlog.rules_workload import WORKLOAD_RESOURCES
from kubepci.model import Severity

SIDEKICK = Path("../shared/testdata/falcosidekick/falco_payload_examples.json")
T0 = datetime(2026, 1, 5, 10, 0, 0, tzinfo=UTC)
_ids = itertools.count(1)


def event(
    verb: str,
    resource: str = "",
    *,
    ns: str | None = None,
    name: str | None = None,
    sub: str | None = None,
    user: str = "alice",
    groups: tuple[str, ...] = ("system:authenticated",),
    code: int | None = 200,
    stage: str = "ResponseComplete",
    audit_id: str | None = None,
    body: Any = None,
    annotations: Mapping[str, str] | None = None,
    uri: str | None = None,
    ips: tuple[str, ...] = ("192.0.2.10",),
    at: datetime = T0,
    api_group: str | None = None,
    impersonate: Mapping[str, Any] | None = None,
    user_agent: str = "kubectl/v1.31.0",
) -> dict[str, Any]:
    """One audit.k8s.io/v1 Event, as the apiserver webhook sends it."""
    ref: dict[str, Any] = {"resource": resource, "apiVersion": "v1"}
    for key, value in (("namespace", ns), ("name", name), ("subresource", sub), ("apiGroup", api_group)):
        if value is not None:
            ref[key] = value
    ev: dict[str, Any] = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "RequestResponse" if body is not None else "Metadata",
        "auditID": audit_id or f"00000000-0000-0000-0000-{next(_ids):012d}",
        "stage": stage,
        "requestURI": uri or f"/api/v1/{resource}",
        "verb": verb,
        "user": {"username": user, "groups": list(groups)} if user else {},
        "sourceIPs": list(ips),
        "userAgent": user_agent,
        "requestReceivedTimestamp": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "stageTimestamp": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "annotations": {"authorization.k8s.io/decision": "allow", **(annotations or {})},
    }
    if resource:
        ev["objectRef"] = ref
    if code is not None:
        ev["responseStatus"] = {"metadata": {}, "code": code}
    if body is not None:
        ev["requestObject"] = body
    if impersonate is not None:
        ev["impersonatedUser"] = impersonate
    return ev


def review(*events: Mapping[str, Any], ctx: ReviewContext | None = None) -> list[Alert]:
    reviewer = Reviewer(ctx or ReviewContext())
    return [alert for ev in events for alert in reviewer.review_k8s_event(ev)]


def only(alerts: list[Alert], check: str) -> Alert:
    found = [a for a in alerts if a.check == check]
    assert len(found) == 1, f"expected one {check}, got {[a.check for a in alerts]}"
    return found[0]


def checks(alerts: list[Alert]) -> set[str]:
    return {a.check for a in alerts}


def pod(*containers: Mapping[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {"name": "web-1"},
        "spec": {"containers": list(containers), **spec},
    }


CDE = ReviewContext(cde_namespaces=frozenset({"payments"}))


# -- D01 exec/attach -------------------------------------------------------------------------


def test_d01_websocket_exec_into_cde_pod_reports_command_and_evidence() -> None:
    ev = event(
        "get",
        "pods",
        ns="payments",
        name="api-7f9",
        sub="exec",
        stage="ResponseStarted",
        code=101,
        uri="/api/v1/namespaces/payments/pods/api-7f9/exec?command=sh&command=-c&command=id&container=api",
        ips=("203.0.113.7", "10.0.0.1"),
    )
    alert = only(review(ev, ctx=CDE), "D01.exec_attach")
    assert alert.rule_id == "D01"
    assert alert.priority is Priority.WARNING  # Notice raised one step inside the CDE
    assert alert.message == "[CDE] alice opened exec into pod payments/api-7f9 running 'sh -c id'"
    assert alert.pci == ("10.2.1.1", "10.2.1.2")
    assert (alert.audit_id, alert.user, alert.verb) == (ev["auditID"], "alice", "get")
    assert (alert.resource, alert.namespace, alert.name) == ("pods/exec", "payments", "api-7f9")
    assert alert.source_ip == "10.0.0.1"  # only the last sourceIPs entry is trustworthy
    assert alert.timestamp == T0
    assert alert.source == "k8s_audit"


def test_d01_is_reported_once_across_stages_and_not_for_denied_exec() -> None:
    started = event("create", "pods", ns="shop", name="p", sub="attach", stage="ResponseStarted", code=101)
    complete = {**started, "stage": "ResponseComplete"}
    alerts = review(started, complete)
    assert [a.check for a in alerts] == ["D01.exec_attach"]
    assert alerts[0].priority is Priority.NOTICE
    assert alerts[0].message == "alice opened attach into pod shop/p"
    denied = event("create", "pods", ns="shop", name="p", sub="exec", code=403)
    assert "D01.exec_attach" not in checks(review(denied))


# -- D02 port-forward / proxy ----------------------------------------------------------------


def test_d02_portforward_and_node_proxy() -> None:
    alerts = review(
        event(
            "create", "pods", ns="payments", name="db-0", sub="portforward", stage="ResponseStarted", code=101
        ),
        event("get", "nodes", name="worker-3", sub="proxy", uri="/api/v1/nodes/worker-3/proxy/pods"),
        ctx=CDE,
    )
    forward = only(alerts, "D02.portforward")
    assert forward.message == "[CDE] alice port-forwarded into pod payments/db-0"
    assert forward.resource == "pods/portforward"
    proxy = only(alerts, "D02.proxy")
    assert proxy.priority is Priority.WARNING
    assert proxy.name == "worker-3"
    assert "nodes/proxy worker-3" in proxy.message


# -- D03 ephemeral containers ----------------------------------------------------------------


def test_d03_kubectl_debug_names_the_debug_container() -> None:
    body = {
        "kind": "Pod",
        "spec": {"ephemeralContainers": [{"name": "debugger-x2", "image": "busybox:1.36"}]},
    }
    ev = event("patch", "pods", ns="shop", name="cart-1", sub="ephemeralcontainers", body=body)
    alert = only(review(ev), "D03.ephemeral_container")
    assert (
        alert.message
        == "alice added ephemeral container(s) ['debugger-x2=busybox:1.36'] to pod shop/cart-1 (200)"
    )
    assert alert.resource == "pods/ephemeralcontainers"


# -- D04 / D05 secrets -----------------------------------------------------------------------


def test_d04_secret_read_by_unexpected_identity_but_not_by_allowed_readers() -> None:
    ctx = ReviewContext(
        cde_namespaces=frozenset({"payments"}),
        secret_readers={"*": ("system:node:*",), "payments": ("system:serviceaccount:{namespace}:api",)},
    )
    alerts = review(
        event("get", "secrets", ns="payments", name="card-keys", user="mallory"),
        event("get", "secrets", ns="payments", name="card-keys", user="system:node:worker-1"),
        event("watch", "secrets", ns="payments", user="system:serviceaccount:payments:api"),
        event("list", "secrets", user="bob", uri="/api/v1/secrets"),
        ctx=ctx,
    )
    reads = [a for a in alerts if a.check == "D04.secret_read"]
    assert [(a.user, a.namespace) for a in reads] == [("mallory", "payments"), ("bob", None)]
    assert reads[0].priority is Priority.ERROR  # CDE
    assert reads[0].message == "[CDE] mallory (get) read secrets payments/card-keys, not an allowed reader"
    assert reads[1].message == "bob (list) read secrets in all namespaces, not an allowed reader"


def test_d05_secret_access_denied_only_for_403() -> None:
    alerts = review(
        event("get", "secrets", ns="payments", name="card-keys", user="mallory", code=403),
        event("get", "secrets", ns="payments", name="missing", user="mallory", code=404),
    )
    denied = only(alerts, "D05.secret_denied")
    assert denied.name == "card-keys"
    assert denied.pci == ("10.2.1.4",)
    assert denied.message == "mallory was denied get on secrets payments/card-keys"


# -- D06 RBAC --------------------------------------------------------------------------------

RBAC = "rbac.authorization.k8s.io"


def test_d06_cluster_admin_binding_lists_subjects() -> None:
    body = {
        "kind": "RoleBinding",
        "roleRef": {"kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "User", "name": "eve"}, {"kind": "ServiceAccount", "name": "ci"}],
    }
    alerts = review(
        event("create", "rolebindings", ns="shop", name="oops", body=body, api_group=RBAC, code=201)
    )
    alert = only(alerts, "D06.bind_cluster_admin")
    assert (
        alert.message
        == "alice created rolebinding shop/oops binding cluster-admin to [User:eve, ServiceAccount:ci]"
    )
    assert alert.pci == ("10.2.1.5",)
    assert "D06.rolebinding_created" in checks(alerts)


def test_d06_role_rules_wildcard_write_exec_and_escalation() -> None:
    rules = [
        {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]},
        {"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "escalate"]},
    ]
    ev = event(
        "update", "clusterroles", name="ops", body={"kind": "ClusterRole", "rules": rules}, api_group=RBAC
    )
    alerts = review(ev)
    assert only(alerts, "D06.wildcard_role").message == (
        "alice updated clusterrole ops with wildcard "
        "verbs=['create', 'escalate', 'get'] resources=['*', 'pods/exec']"
    )
    assert (
        only(alerts, "D06.write_role").message
        == "alice updated clusterrole ops granting write verbs ['create']"
    )
    assert only(alerts, "D06.pod_exec_role").message == "alice updated clusterrole ops granting ['pods/exec']"
    assert (
        only(alerts, "D06.escalation_role").message == "alice updated clusterrole ops granting ['escalate']"
    )
    assert only(alerts, "D06.rbac_modified").name == "ops"


def test_d06_system_role_change_but_not_apiserver_reconciliation() -> None:
    alerts = review(
        event("delete", "clusterroles", name="system:node", api_group=RBAC),
        event("update", "clusterroles", name="system:node", user="system:apiserver", api_group=RBAC),
        event("patch", "clusterroles", name="system:coredns", api_group=RBAC),
    )
    changed = only(alerts, "D06.system_role_changed")
    assert (changed.verb, changed.name) == ("delete", "system:node")
    assert changed.message == "alice deleted clusterrole system:node (built-in system role)"


def test_d06_activity_stream_can_be_switched_off() -> None:
    ev = event("create", "roles", ns="shop", name="reader", api_group=RBAC, code=201, body={"rules": []})
    assert only(review(ev), "D06.role_created").priority is Priority.INFORMATIONAL
    assert "D06.role_created" not in checks(review(ev, ctx=ReviewContext(activity_events=False)))


# -- D07 credentials -------------------------------------------------------------------------


def test_d07_credential_issuance() -> None:
    alerts = review(
        event("create", "serviceaccounts", ns="shop", name="deployer", sub="token", code=201),
        event(
            "create", "serviceaccounts", ns="shop", name="web", sub="token", user="system:node:w1", code=201
        ),
        event(
            "create",
            "secrets",
            ns="shop",
            name="legacy",
            code=201,
            body={"type": "kubernetes.io/service-account-token"},
        ),
        event("create", "certificatesigningrequests", name="eve-csr", user="eve", code=201),
        event("create", "certificatesigningrequests", name="node-csr", user="system:node:w1", code=201),
        event("update", "certificatesigningrequests", name="eve-csr", sub="approval", user="bob"),
        event("create", "serviceaccounts", ns="shop", name="api", code=201),
    )
    token = only(alerts, "D07.token_requested")
    assert token.message == "alice minted a token for serviceaccount shop/deployer"
    assert only(alerts, "D07.sa_token_secret").name == "legacy"
    assert only(alerts, "D07.csr_created").user == "eve"
    approved = only(alerts, "D07.csr_approved")
    assert approved.message == "bob approved certificate request eve-csr"
    assert approved.priority is Priority.WARNING
    created = only(alerts, "D07.serviceaccount_created")  # the TokenRequests above are not SA creations
    assert created.name == "api"


def test_d07_secret_stream_skips_system_users_and_kube_system() -> None:
    alerts = review(
        event("create", "secrets", ns="shop", name="db", code=201),
        event("create", "secrets", ns="shop", name="tok", user="system:kube-controller-manager", code=201),
        event("delete", "secrets", ns="kube-system", name="bootstrap", user="admin"),
    )
    assert [a.name for a in alerts if a.check.startswith("D07.secret")] == ["db"]


# -- D08 anonymous ---------------------------------------------------------------------------


def test_d08_anonymous_allowed_except_health_endpoints() -> None:
    anon = {"user": "system:anonymous", "groups": ("system:unauthenticated",)}
    alerts = review(
        event("get", "", uri="/api/v1/namespaces/kube-system/configmaps", **anon),  # type: ignore[arg-type]
        event("get", "", uri="/readyz?verbose", **anon),  # type: ignore[arg-type]
        event("get", "", uri="/healthz/etcd", **anon),  # type: ignore[arg-type]
    )
    alert = only(alerts, "D08.anonymous_allowed")
    assert alert.message == "anonymous get /api/v1/namespaces/kube-system/configmaps was allowed"
    assert alert.user == "system:anonymous"


# -- D09 / D10 bursts ------------------------------------------------------------------------


def test_d09_failed_authentication_burst_per_source_ip_once_per_window() -> None:
    reviewer = Reviewer(ReviewContext())
    alerts: list[Alert] = []
    for i in range(25):
        ev = event(
            "get",
            "",
            user="",
            code=401,
            stage="ResponseStarted",
            ips=("198.51.100.9",),
            at=T0 + timedelta(seconds=10 * i),
        )
        alerts += reviewer.review_k8s_event(ev)
    bursts = [a for a in alerts if a.check == "D09.authn_failure_burst"]
    # 10th failure at t=90s; the next alert is only allowed after a full window (300 s) -> t=400s.
    assert [a.timestamp for a in bursts] == [T0 + timedelta(seconds=90)]
    assert bursts[0].source_ip == "198.51.100.9"
    assert bursts[0].user is None
    assert bursts[0].message == "10 failed authentications from 198.51.100.9 within 300s"
    assert bursts[0].pci == ("10.2.1.4", "8.3.4")


def test_d09_slow_failures_and_duplicate_deliveries_do_not_add_up() -> None:
    reviewer = Reviewer(ReviewContext())
    alerts: list[Alert] = []
    for i in range(12):  # one failure per minute: never 10 within 300 s
        alerts += reviewer.review_k8s_event(event("get", "", user="", code=401, at=T0 + timedelta(minutes=i)))
    dup = event("get", "", user="", code=401, ips=("198.51.100.77",))
    for _ in range(12):  # the same request re-delivered by the webhook
        alerts += reviewer.review_k8s_event(dup)
    assert alerts == []


def test_d10_authorization_failures_enumeration_and_scanner() -> None:
    reviewer = Reviewer(ReviewContext(authz_failure_threshold=3, access_review_threshold=2))
    alerts: list[Alert] = []
    for i in range(3):
        alerts += reviewer.review_k8s_event(
            event("list", "secrets", ns=f"ns{i}", user="eve", code=403, at=T0 + timedelta(seconds=i))
        )
    for i in range(2):
        alerts += reviewer.review_k8s_event(
            event("create", "selfsubjectrulesreviews", user="eve", code=201, at=T0 + timedelta(seconds=i))
        )
    alerts += reviewer.review_k8s_event(
        event("get", "pods", ns="shop", user="eve", user_agent="kube-hunter/0.6")
    )
    burst = only(alerts, "D10.authz_failure_burst")
    assert burst.message == "3 requests by eve forbidden within 300s (last: list secrets in ns2)"
    assert burst.user == "eve"
    assert only(alerts, "D10.access_review_sweep").message == (
        "eve asked 2 self access reviews within 300s (permission enumeration)"
    )
    scanner = only(alerts, "D10.scanner_user_agent")
    assert scanner.message == "kube-hunter user agent from 192.0.2.10 as eve"


# -- D11 / D12 identity ----------------------------------------------------------------------


def test_d11_impersonation_of_masters_is_a_warning() -> None:
    ev = event(
        "delete",
        "pods",
        ns="shop",
        name="x",
        user="bob",
        impersonate={"username": "ops", "groups": ["system:masters"]},
    )
    alert = only(review(ev), "D11.impersonation")
    assert alert.priority is Priority.WARNING
    assert alert.message == "bob acted as ops groups=['system:masters']: delete pods shop/x"
    assert alert.user == "bob"


def test_d12_admin_masters_and_disallowed_users() -> None:
    ctx = ReviewContext(allowed_users=frozenset({"alice", "ci-*"}))
    alerts = review(
        event("get", "pods", ns="shop", user="kubernetes-admin", groups=("system:masters",)),
        event("get", "pods", ns="shop", user="carol", groups=("system:masters",)),
        event("get", "pods", ns="shop", user="ci-runner"),
        event("get", "pods", ns="shop", user="system:serviceaccount:shop:web"),
        ctx=ctx,
    )
    admin = only(alerts, "D12.admin_activity")
    assert admin.message == "default admin account kubernetes-admin: get pods in shop"
    masters = only(alerts, "D12.masters_group")
    assert masters.user == "carol"
    outsiders = [a.user for a in alerts if a.check == "D12.user_not_allowed"]
    assert outsiders == ["kubernetes-admin", "carol"]


# -- D13 admission ---------------------------------------------------------------------------


def test_d13_admission_change_is_critical_for_our_own_webhook() -> None:
    ctx = ReviewContext(own_webhook_names=frozenset({"kubepci-admission"}))
    alerts = review(
        event(
            "delete",
            "validatingwebhookconfigurations",
            name="kubepci-admission",
            api_group="admissionregistration.k8s.io",
        ),
        event("create", "validatingadmissionpolicies", name="other", code=201),
        ctx=ctx,
    )
    ours, other = [a for a in alerts if a.check == "D13.admission_config_changed"]
    assert ours.priority is Priority.CRITICAL
    assert (
        ours.message
        == "alice deleted validatingwebhookconfiguration kubepci-admission (kubepci's own admission control)"
    )
    assert other.priority is Priority.WARNING
    assert ours.pci == ("10.7.2", "10.2.1.7")


# -- D14 pipeline tampering and silence ------------------------------------------------------


def test_d14_pipeline_tampering_and_event_deletion() -> None:
    alerts = review(
        event("delete", "daemonsets", ns="falco", name="falco", user="mallory"),
        event(
            "patch",
            "configmaps",
            ns="kubepci",
            name="kubepci-config",
            user="system:serviceaccount:kubepci:kubepci",
        ),
        event("update", "deployments", ns="kubepci", name="ingest", sub="status", user="mallory"),
        event("delete", "namespaces", name="falco", user="mallory"),
        event("deletecollection", "events", ns="payments", user="mallory"),
        event(
            "delete", "events", ns="payments", user="system:serviceaccount:kube-system:namespace-controller"
        ),
    )
    tamper = [a for a in alerts if a.check == "D14.pipeline_tampering"]
    assert [(a.resource, a.name) for a in tamper] == [("daemonsets", "falco"), ("namespaces", "falco")]
    assert tamper[0].priority is Priority.ERROR
    assert tamper[0].message == "mallory deleted daemonsets falco/falco"
    deleted = only(alerts, "D14.events_deleted")
    assert deleted.message == "mallory deleted events in payments"


def test_d14_source_silence_and_resumption_record_the_failure_window() -> None:
    reviewer = Reviewer(ReviewContext(silence_thresholds={"k8s_audit": timedelta(minutes=5)}))
    reviewer.review_k8s_event(event("get", "pods", ns="shop"), received_at=T0)
    assert reviewer.tick(T0 + timedelta(minutes=4)) == []
    [silent] = reviewer.tick(T0 + timedelta(minutes=6))
    assert silent.check == "D14.source_silent"
    assert silent.message == "no events from k8s_audit for 360s (limit 300s)"
    assert silent.name == "k8s_audit"
    assert silent.timestamp == T0 + timedelta(minutes=6)
    assert reviewer.tick(T0 + timedelta(minutes=7)) == []  # reported once, not on every tick
    resumed = reviewer.review_k8s_event(
        event("get", "pods", ns="shop"), received_at=T0 + timedelta(minutes=20)
    )
    assert [a.check for a in resumed] == ["D14.source_resumed"]
    assert resumed[0].message == "k8s_audit delivers again after 1200s without events"


# -- D15 / D16 pod specs ---------------------------------------------------------------------


def test_d15_risky_pod_spec_in_cde() -> None:
    spec = pod(
        {
            "name": "app",
            "image": "registry.example/pay/api:1.2@sha256:" + "a" * 64,
            "securityContext": {"privileged": True},
        },
        volumes=[
            {"name": "sock", "hostPath": {"path": "/var/run/docker.sock/"}},
            {"name": "d", "hostPath": {"path": "/data"}},
        ],
        hostNetwork=True,
        hostPID=True,
        hostIPC=True,
    )
    ctx = ReviewContext(
        cde_namespaces=frozenset({"payments"}), allowed_images=frozenset({"registry.example/pay/web"})
    )
    alerts = review(event("create", "pods", ns="payments", body=spec, code=201), ctx=ctx)
    assert checks(alerts) >= {
        "D15.privileged",
        "D15.sensitive_mount",
        "D15.host_network",
        "D15.host_pid",
        "D15.host_ipc",
        "D15.disallowed_image",
    }
    mount = only(alerts, "D15.sensitive_mount")
    assert mount.priority is Priority.ERROR
    assert mount.message.endswith("mounting host paths ['/var/run/docker.sock']")
    assert mount.name == "web-1"
    assert only(alerts, "D15.disallowed_image").message.endswith(
        ": ['registry.example/pay/api'] not in the allowed images"
    )


def test_d15_trusted_images_are_exempt_only_when_every_image_is_trusted() -> None:
    ctx = ReviewContext(privileged_images=frozenset({"calico/node"}))
    privileged = {"securityContext": {"privileged": True}}
    trusted = event("create", "pods", ns="kube-system", body=pod({"image": "calico/node:v3", **privileged}))
    mixed = event(
        "create", "pods", ns="shop", body=pod({"image": "calico/node:v3", **privileged}, {"image": "busybox"})
    )
    alerts = review(trusted, mixed, ctx=ctx)
    assert [a.namespace for a in alerts if a.check == "D15.privileged"] == ["shop"]


PSA_VIOLATION = 'would violate PodSecurity "restricted:latest": privileged (container "app")'


def test_d15_metadata_level_falls_back_to_pod_security_annotation() -> None:
    ev = event(
        "create",
        "pods",
        ns="payments",
        name="p",
        code=201,
        annotations={"pod-security.kubernetes.io/audit-violations": PSA_VIOLATION},
    )
    alerts = review(ev, ctx=CDE)
    alert = only(alerts, "D15.psa_violation")
    assert "privileged" in alert.message
    assert not any(a.check == "D15.privileged" for a in alerts)  # no body, no guessing


def test_d16_pods_and_serviceaccounts_in_kube_namespaces() -> None:
    ctx = ReviewContext(kube_namespace_images=frozenset({"registry.k8s.io/coredns/coredns"}))
    alerts = review(
        event(
            "create",
            "pods",
            ns="kube-system",
            body=pod({"image": "evil/miner"}),
            user="system:serviceaccount:kube-system:replicaset-controller",
        ),
        event(
            "create", "pods", ns="kube-system", body=pod({"image": "registry.k8s.io/coredns/coredns:v1.11"})
        ),
        event("create", "serviceaccounts", ns="kube-public", name="backdoor", code=201),
        event("create", "serviceaccounts", ns="kube-system", name="replicaset-controller", code=201),
        ctx=ctx,
    )
    assert only(alerts, "D16.pod_in_kube_namespace").message.endswith(
        "images=['evil/miner'] in protected namespace kube-system"
    )
    assert only(alerts, "D16.serviceaccount_in_kube_namespace").name == "backdoor"


# -- D17 / D18 exposure and configmaps ---------------------------------------------------------


def test_d17_nodeport_loadbalancer_and_ingress_without_tls() -> None:
    alerts = review(
        event(
            "patch",
            "services",
            ns="shop",
            name="web",
            body={"spec": {"type": "NodePort", "ports": [{"nodePort": 30080}]}},
        ),
        event("create", "services", ns="shop", name="lb", code=201, body={"spec": {"type": "LoadBalancer"}}),
        event(
            "create", "ingresses", ns="shop", name="shop", code=201, body={"spec": {"rules": [], "tls": []}}
        ),
        event(
            "create",
            "ingresses",
            ns="shop",
            name="secure",
            code=201,
            body={"spec": {"tls": [{"secretName": "t"}]}},
        ),
        event("create", "ingresses", ns="shop", name="unlogged", code=201),
    )
    assert (
        only(alerts, "D17.nodeport_service").message == "alice exposed service shop/web on node ports [30080]"
    )
    assert only(alerts, "D17.loadbalancer_service").name == "lb"
    assert only(alerts, "D17.ingress_without_tls").message == "alice created ingress shop/shop without TLS"


def test_d18_configmap_credentials_report_keys_never_values() -> None:
    body = {"data": {"app.ini": "[db]\nPassword = hunter2\n", "colour": "blue"}}
    patch = [{"op": "add", "path": "/data/aws.env", "value": "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI"}]
    alerts = review(
        event("create", "configmaps", ns="shop", name="cfg", body=body, code=201),
        event("patch", "configmaps", ns="shop", name="cfg", body=patch),
    )
    created, patched = [a for a in alerts if a.check == "D18.configmap_credentials"]
    assert created.message == "alice created configmap shop/cfg: credential-like content in keys ['app.ini']"
    assert patched.message == "alice patched configmap shop/cfg: credential-like content in keys ['aws.env']"
    for alert in alerts:
        assert "hunter2" not in alert.message
        assert "wJalrXUtnFEMI" not in alert.message


# -- D19 / D20 platform objects and nodes ----------------------------------------------------


def test_d19_namespace_and_system_objects() -> None:
    ctx = ReviewContext(allowed_namespaces=frozenset({"shop", "payments"}))
    alerts = review(
        event("create", "namespaces", name="crypto-miner", code=201),
        event(
            "delete",
            "customresourcedefinitions",
            name="policies.kyverno.io",
            api_group="apiextensions.k8s.io",
        ),
        ctx=ctx,
    )
    assert (
        only(alerts, "D19.disallowed_namespace").message
        == "alice created namespace crypto-miner outside the allowed set"
    )
    assert only(alerts, "D19.namespace_created").name == "crypto-miner"
    crd = only(alerts, "D19.system_object_changed")
    assert crd.message == "alice deleted customresourcedefinitions policies.kyverno.io"


def test_d20_node_outside_allowed_names_or_cidrs() -> None:
    ctx = ReviewContext(allowed_nodes=("worker-*",), allowed_node_cidrs=("10.20.0.0/16",))
    kubelet = {"user": "system:node:x", "code": 201}
    alerts = review(
        event("create", "nodes", name="worker-7", ips=("10.20.3.4",), **kubelet),  # type: ignore[arg-type]
        event("create", "nodes", name="worker-8", ips=("172.16.0.9",), **kubelet),  # type: ignore[arg-type]
        event("create", "nodes", name="rogue", ips=("10.20.3.5",), user="system:node:rogue", code=403),
        ctx=ctx,
    )
    joined = only(alerts, "D20.untrusted_node_joined")
    assert joined.message == "node worker-8 joined; source 172.16.0.9 not allowed"
    assert joined.priority is Priority.ERROR
    failed = only(alerts, "D20.untrusted_node_join_failed")
    assert failed.message == "node rogue failed to join (403); name not allowed"


def test_d20_is_off_without_an_allow_list() -> None:
    assert review(event("create", "nodes", name="any", user="system:node:any", code=201)) == []


# -- D21 / D22 Falco input and failures of controls --------------------------------------------


def falco(rule: str, priority: str = "Warning", **fields: Any) -> dict[str, Any]:
    return {
        "time": "2026-01-05T10:00:00.123456789Z",
        "rule": rule,
        "priority": priority,
        "source": "syscall",
        "hostname": "worker-1",
        "output": f"10:00:00.123456789: {priority} {rule} (user=root)",
        "output_fields": {"user.name": "root", **fields},
    }


def test_d21_runtime_alerts_only_in_cde_and_above_notice() -> None:
    reviewer = Reviewer(ReviewContext(cde_namespaces=frozenset({"payments"}), runtime_host_alerts=False))
    shell = falco(
        "Terminal shell in container", "Notice", **{"k8s.ns.name": "payments", "k8s.pod.name": "api-1"}
    )
    [alert] = reviewer.review_falco(shell)
    assert (alert.check, alert.rule_id, alert.priority) == ("D21.runtime_alert", "D21", Priority.NOTICE)
    assert alert.message.startswith("Falco 'Terminal shell in container' (Notice) on pod payments/api-1: ")
    assert (alert.namespace, alert.name, alert.resource, alert.user) == ("payments", "api-1", "pods", "root")
    assert alert.timestamp == datetime(2026, 1, 5, 10, 0, 0, 123456, tzinfo=UTC)
    assert alert.source == "falco"
    outside = falco("Terminal shell in container", "Notice", **{"k8s.ns.name": "shop", "k8s.pod.name": "w"})
    debug = falco("Some noise", "Debug", **{"k8s.ns.name": "payments"})
    host = falco("Read sensitive file untrusted", "Warning", **{"k8s.ns.name": "<NA>"})
    assert reviewer.review_falco(outside) == []
    assert reviewer.review_falco(debug) == []
    assert reviewer.review_falco(host) == []
    host_on = Reviewer(ReviewContext())
    [host_alert] = host_on.review_falco(host)
    assert host_alert.message.startswith("Falco 'Read sensitive file untrusted' (Warning) on host worker-1")
    assert host_alert.namespace is None


def test_d14_log_clearing_from_falco_in_any_namespace() -> None:
    [alert] = Reviewer().review_falco(falco("Clear Log Activities", "Warning", **{"k8s.ns.name": "shop"}))
    assert alert.check == "D14.log_clearing"
    assert alert.priority is Priority.ERROR  # at least the check's own priority
    assert alert.namespace == "shop"


def test_falco_k8s_audit_alerts_are_liveness_only() -> None:
    payload = {**falco("Attach/Exec Pod", "Notice", **{"ka.user.name": "bob"}), "source": "k8s_audit"}
    assert Reviewer(ReviewContext(cde_namespaces=frozenset({"shop"}))).review_falco(payload) == []


def test_falcosidekick_payload_examples_are_parsed() -> None:
    examples = json.loads(SIDEKICK.read_text())["payloads"]
    assert len(examples) == 2
    for example in examples:
        payload = json.loads(example["raw"])
        reviewer = Reviewer(ReviewContext(runtime_min_priority=Priority.DEBUG))
        [alert] = reviewer.review_falco(payload)
        assert alert.check == "D21.runtime_alert"
        assert alert.priority is Priority.DEBUG
        assert (
            alert.message == "Falco 'Test rule' (Debug) on host test-host: This is a test from falcosidekick"
        )
        assert alert.timestamp == datetime(2001, 1, 1, 1, 10, tzinfo=UTC)
        assert reviewer.state_sizes()["sources"] == 1  # falco/test-host is now tracked for silence
        # Debug is below the default Notice floor.
        assert Reviewer().review_falco(payload) == []


@pytest.mark.parametrize(
    "payload",
    [{}, {"rule": "x"}, {"rule": "", "priority": "Warning"}, {"rule": "x", "priority": "Loud"}],
)
def test_falco_payloads_without_rule_or_priority_are_ignored(payload: dict[str, Any]) -> None:
    assert Reviewer().review_falco(payload) == []


def test_d22_webhook_failed_open_annotation() -> None:
    ctx = ReviewContext(own_webhook_names=frozenset({"validate.kubepci.io"}))
    ev = event(
        "create",
        "pods",
        ns="payments",
        name="p",
        code=201,
        annotations={
            "failed-open.validating.webhook.admission.k8s.io/round_0_index_1": "validate.kubepci.io",
            "failed-open.mutation.webhook.admission.k8s.io/round_0_index_0": "inject.example.com",
        },
    )
    ours, theirs = sorted(
        (a for a in review(ev, ctx=ctx) if a.check == "D22.webhook_failed_open"), key=lambda a: a.priority
    )[::-1]
    assert ours.priority is Priority.CRITICAL
    assert (
        ours.message == "admission webhook validate.kubepci.io failed open on create pods payments/p by alice"
    )
    assert theirs.priority is Priority.ERROR
    assert ours.pci == ("10.7.2", "10.7.3")


def test_d22_falco_metrics_snapshot_missing_then_resumed() -> None:
    reviewer = Reviewer(ReviewContext(falco_metrics_max_age=timedelta(hours=2)))
    snapshot = {**falco("Falco internal: metrics snapshot", "Informational"), "source": "internal"}
    assert reviewer.review_falco(snapshot) == []  # a heartbeat, not a finding
    first = parse_time(snapshot["time"])
    assert first is not None
    assert reviewer.tick(first + timedelta(hours=1)) == []
    missing = [a for a in reviewer.tick(first + timedelta(hours=3)) if a.check == "D22.falco_metrics_missing"]
    assert [a.name for a in missing] == ["worker-1"]
    assert missing[0].message == "no Falco metrics snapshot from worker-1 for 10800s (limit 7200s)"
    later = {**snapshot, "time": "2026-01-05T14:00:00Z"}
    resumed = [a.check for a in reviewer.review_falco(later)]
    assert resumed == ["D14.source_resumed", "D22.falco_metrics_resumed"]


def test_d22_audit_backend_error_counter() -> None:
    reviewer = Reviewer()
    series = 'apiserver_audit_error_total{plugin="webhook"}'
    assert reviewer.review_counter(series, 3, T0) == []
    assert reviewer.review_counter(series, 3, T0 + timedelta(minutes=1)) == []
    [alert] = reviewer.review_counter(series, 7, T0 + timedelta(minutes=2))
    assert alert.check == "D22.audit_backend_errors"
    assert alert.message == f"{series} rose by 4: the API server dropped or rejected audit events"
    assert reviewer.review_counter(series, 0, T0 + timedelta(minutes=3)) == []  # apiserver restart
    assert reviewer.review_counter("apiserver_request_total", 9e9, T0) == []


# -- input handling, memory bounds, types ------------------------------------------------------


def test_event_list_and_non_events() -> None:
    items = [event("create", "pods", ns="shop", name="a", sub="exec", code=101), {"kind": 0}, "junk"]
    alerts = Reviewer().review_k8s_event(
        {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": items}
    )
    assert [a.check for a in alerts] == ["D01.exec_attach"]
    assert AuditEvent.parse({"kind": 0}) is None
    assert Reviewer().review_k8s_event({"kind": "Event"}) == []


def test_events_without_api_version_or_timestamps_still_review() -> None:
    ev = event("create", "pods", ns="shop", name="a", sub="exec", code=101)
    del ev["apiVersion"], ev["stageTimestamp"], ev["requestReceivedTimestamp"]
    [alert] = Reviewer().review_k8s_event(ev)
    assert alert.timestamp is None


def test_memory_stays_bounded_under_a_flood() -> None:
    reviewer = Reviewer(ReviewContext(max_tracked_keys=50))
    for i in range(2000):
        ev = event(
            "get",
            "",
            user="",
            code=401,
            ips=(f"10.1.{i // 250}.{i % 250}",),
            at=T0 + timedelta(milliseconds=i),
        )
        reviewer.review_k8s_event(ev)
        reviewer.note_source(f"falco/host-{i}", T0)
    sizes = reviewer.state_sizes()
    assert sizes["counted"] <= 50
    assert sizes["bursts"] <= 100
    assert sizes["sources"] <= 50
    reviewer.tick(T0 + timedelta(hours=1))
    assert reviewer.state_sizes()["bursts"] == 0  # time eviction


def test_priority_and_time_parsing() -> None:
    assert Priority.parse("INFO") is Priority.INFORMATIONAL
    assert Priority.parse("warning") is Priority.WARNING
    assert Priority.parse(5) is None
    assert Priority.ERROR.label == "Error"
    assert Priority.EMERGENCY.severity is Severity.CRITICAL
    assert Priority.NOTICE.severity is Severity.LOW
    assert parse_time("2018-10-25T14:09:12.581541Z") == datetime(2018, 10, 25, 14, 9, 12, 581541, tzinfo=UTC)
    assert parse_time("2026-01-05T11:00:00+01:00") == T0
    assert parse_time("yesterday") is None


def test_review_context_is_hashable_so_it_can_key_a_cache() -> None:
    assert hash(ReviewContext()) == hash(ReviewContext())
    assert ReviewContext(allowed_users={"alice"}).allowed_users == frozenset({"alice"})  # type: ignore[arg-type]


def test_review_context_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="authn_failure_threshold"):
        ReviewContext(authn_failure_threshold=0)
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 network"):
        ReviewContext(allowed_node_cidrs=("10.0.0.0/33",))


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
_EVENT_KEYS = (
    "auditID",
    "verb",
    "user",
    "impersonatedUser",
    "sourceIPs",
    "userAgent",
    "objectRef",
    "responseStatus",
    "requestURI",
    "annotations",
    "requestObject",
    "responseObject",
    "stageTimestamp",
)


@settings(max_examples=300, deadline=None)
@given(
    stage=st.sampled_from(["RequestReceived", "ResponseStarted", "ResponseComplete", "Panic"]),
    fields=st.dictionaries(st.sampled_from(_EVENT_KEYS), _json, max_size=len(_EVENT_KEYS)),
    falco_fields=st.dictionaries(
        st.sampled_from(["rule", "priority", "time", "source", "output_fields"]), _json
    ),
)
def test_hostile_input_never_crashes_the_reviewer(
    stage: str, fields: dict[str, Any], falco_fields: dict[str, Any]
) -> None:
    reviewer = Reviewer(ReviewContext(cde_namespaces=frozenset({""})))
    for alert in reviewer.review_k8s_event({"kind": "Event", "stage": stage, **fields}):
        assert alert.rule_id in alert.check
    reviewer.review_falco(falco_fields)
    reviewer.tick(T0)


def test_webhook_eventlist_items_without_kind_are_reviewed() -> None:
    """The apiserver's audit webhook sends EventList items without kind/apiVersion."""
    item = {"level": "Metadata", "auditID": "a1", "stage": "ResponseComplete", "verb": "get",
            "user": {"username": "alice"}, "objectRef": {"resource": "secrets", "namespace": "payments"}}
    parsed = AuditEvent.parse(item)
    assert parsed is not None
    assert AuditEvent.parse({**item, "kind": 0}) is None


# -- the reviewer's resource dispatch ---------------------------------------------------------

_BODIES = (
    None,
    {"spec": {"containers": [{"name": "c", "image": "evil.example/x:1", "securityContext": {"privileged": True}}],
              "hostNetwork": True, "hostPID": True, "volumes": [{"name": "v", "hostPath": {"path": "/etc"}}],
              "ephemeralContainers": [{"name": "dbg", "image": "busybox"}]}},
    {"rules": [{"verbs": ["*", "escalate"], "resources": ["*", "pods/exec"]}]},
    {"roleRef": {"name": "cluster-admin"}, "subjects": [{"kind": "User", "name": "mallory"}]},
    {"type": "kubernetes.io/service-account-token", "data": {"password": "x"}},
    {"spec": {"type": "NodePort", "ports": [{"nodePort": 30000}]}},
    {"spec": {"type": "LoadBalancer", "rules": []}},
    {"data": {"db_password": "hunter2"}},
)
_PERMISSIVE = ReviewContext(
    cde_namespaces=frozenset({"payments"}), allowed_users=frozenset({"bob"}), allowed_namespaces=frozenset(),
    allowed_images=frozenset({"registry.example/ok"}), allowed_nodes=("node-*",), allowed_node_cidrs=("10.0.0.0/8",),
    secret_readers={"*": ()},
)


@settings(max_examples=400, deadline=None)
@given(
    verb=st.sampled_from(["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]),
    sub=st.sampled_from([None, "exec", "attach", "portforward", "proxy", "token", "approval", "status",
                         "ephemeralcontainers"]),
    code=st.sampled_from([200, 201, 401, 403, 404, None]),
    user=st.sampled_from(["alice", "system:anonymous", "admin", "system:serviceaccount:x:y", "mallory"]),
    body=st.sampled_from(_BODIES),
    ns=st.sampled_from([None, "payments", "kube-system", "kubepci"]),
    name=st.sampled_from([None, "system:controller:x", "cluster-admin", "web"]),
    stage=st.sampled_from(["ResponseStarted", "ResponseComplete"]),
    resource=st.sampled_from(sorted({r for rs in CHECK_RESOURCES.values() for r in rs}
                                    | {r for rs in WORKLOAD_RESOURCES.values() for r in rs}
                                    | {"leases", "events", "endpoints", "widgets", ""})),
)
def test_a_check_never_alerts_on_a_resource_its_dispatch_entry_leaves_out(
    verb: str, sub: str | None, code: int | None, user: str, body: Any, ns: str | None, name: str | None,
    stage: str, resource: str,
) -> None:
    """The dispatch table is only an optimisation if every check really is silent elsewhere."""
    raw = event(verb, resource, ns=ns, name=name, sub=sub, user=user, code=code, stage=stage, body=body,
                groups=("system:masters",), annotations={"pod-security.kubernetes.io/audit-violations": "x"},
                uri="/api/v1/x?command=sh")
    ev = AuditEvent.parse(raw)
    assert ev is not None
    for check, resources in {**CHECK_RESOURCES, **WORKLOAD_RESOURCES}.items():
        if resource in resources:
            continue
        for ctx in (ReviewContext(), _PERMISSIVE):
            fired = [alert.check for alert in check(ev, ctx)]
            assert not fired, f"{check.__name__} fired {fired} on resource {resource!r}, outside {sorted(resources)}"


def test_the_dispatch_entries_are_not_vacuous() -> None:
    """Each declared check does fire on one of its resources (so the test above tests something)."""
    fired: set[str] = set()
    for body in _BODIES:
        for resource in {r for rs in (*CHECK_RESOURCES.values(), *WORKLOAD_RESOURCES.values()) for r in rs}:
            for verb, sub, code in itertools.product(("get", "create", "update", "delete"),
                                                     (None, "exec", "proxy", "token", "approval",
                                                      "ephemeralcontainers"), (200, 201, 403)):
                ev = AuditEvent.parse(event(verb, resource, ns="payments", name="web", sub=sub, code=code,
                                            body=body, user="mallory"))
                assert ev is not None
                for check in (*CHECK_RESOURCES, *WORKLOAD_RESOURCES):
                    if any(True for _ in check(ev, _PERMISSIVE)):
                        fired.add(check.__name__)
    assert fired == {c.__name__ for c in (*CHECK_RESOURCES, *WORKLOAD_RESOURCES)}


@settings(max_examples=500)
@given(st.integers(0, 9999), st.integers(0, 14), st.integers(0, 32), st.integers(0, 25), st.integers(0, 61),
       st.integers(0, 61), st.integers(0, 999_999))
def test_micro_time_fast_path_reads_what_the_general_parser_reads(
    year: int, month: int, day: int, hour: int, minute: int, second: int, micros: int
) -> None:
    """MicroTime (``...123456Z``) skips the general RFC 3339 path; '+00:00' still takes that path."""
    stamp = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}.{micros:06d}"
    fast, general = parse_time(stamp + "Z"), parse_time(stamp + "+00:00")
    assert fast == general
    if fast is not None:
        assert fast.utcoffset() == timedelta(0)

"""The webhook behind a real kube-apiserver: deny, warn, dry-run, malformed input and failure policies.

The module starts its own apiserver (with an audit log, to see the annotations the webhook and the
failure policy leave) so the webhook it registers cannot disturb other e2e tests. The webhook is
registered by URL with a caBundle, from the same generator `kubepci admission install` uses.
"""

from __future__ import annotations

import http.client
import json
import logging
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from kubepci.admission.cache import SnapshotCache
from kubepci.admission.decide import Policy
from kubepci.admission.install import issue_certificates, webhook_configuration
from kubepci.admission.kubesource import KubeListWatch
from kubepci.admission.review import make_review
from kubepci.admission.server import DECISION_LOGGER, AdmissionApp, ServerSettings, WebhookServer
from kubepci.checks import default_catalog
from kubepci.config import CheckOverride, Config
from kubepci.kube import KubeClient
from kubepci.model import Enforcement
from tests.e2e.k8s import BinariesMissingError, KubeAPIServer, e2e_optional, find_binaries

pytestmark = pytest.mark.e2e

CDE_NS = "wh-cde"
OTHER_NS = "wh-other"
VWC_PATH = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    resources: [{group: "", resources: ["pods"]}]
  - level: None
"""


@dataclass
class Webhook:
    api: KubeAPIServer
    server: WebhookServer
    app: AdmissionApp
    cache: SnapshotCache
    ca_pem: bytes
    audit_log: Path
    records: list[Mapping[str, Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.port}/validate"


def _pod(name: str, *, privileged: bool = False) -> dict[str, Any]:
    """A pod that passes every deny check in a CDE namespace, or a privileged one.

    The apiserver itself refuses privileged with allowPrivilegeEscalation: false, so the privileged
    pod leaves that field out and fails workload-privilege-escalation too.
    """
    security: dict[str, Any] = {"readOnlyRootFilesystem": True, "runAsNonRoot": True, "runAsUser": 10001,
                                "capabilities": {"drop": ["ALL"]}, "privileged": privileged}
    if not privileged:
        security["allowPrivilegeEscalation"] = False
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "api"}},
        "spec": {
            "serviceAccountName": "api", "automountServiceAccountToken": False, "runtimeClassName": "gvisor",
            "nodeSelector": {"kubepci.io/security-level": "cde"},
            "tolerations": [{"key": "kubepci.io/security-level", "operator": "Equal", "value": "cde",
                             "effect": "NoSchedule"}],
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                "seccompProfile": {"type": "RuntimeDefault"},
                                "appArmorProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "api", "image": "registry.example/payments/api@sha256:" + "b" * 64,
                "imagePullPolicy": "Always", "securityContext": security,
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                              "limits": {"cpu": "500m", "memory": "128Mi"}},
            }],
        },
    }


def _apply(api: KubeAPIServer, path: str, obj: Mapping[str, Any]) -> None:
    status, body = api.request("POST", path, obj)
    if status not in (201, 409):
        raise RuntimeError(f"POST {path}: HTTP {status}: {body}")


def _prepare_cluster(api: KubeAPIServer) -> None:
    api.ensure_namespace(CDE_NS, {"kubepci.io/scope": "cde", "kubepci.io/security-level": "cde"})
    api.ensure_namespace(OTHER_NS, {"kubepci.io/scope": "out-of-scope"})
    for ns in (CDE_NS, OTHER_NS):
        _apply(api, f"/api/v1/namespaces/{ns}/serviceaccounts", {
            "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "api"},
            "automountServiceAccountToken": False})
        _apply(api, f"/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies", {
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "default-deny"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}})
    _apply(api, "/apis/node.k8s.io/v1/runtimeclasses", {
        "apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": "gvisor"}, "handler": "runsc"})


@pytest.fixture(scope="module")
def webhook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    try:
        binaries = find_binaries()
    except BinariesMissingError as exc:
        if e2e_optional():
            pytest.skip(str(exc))
        raise
    work = tmp_path_factory.mktemp("webhook")
    (work / "audit-policy.yaml").write_text(AUDIT_POLICY, encoding="utf-8")
    audit_log = work / "audit.log"
    with KubeAPIServer(binaries=binaries, audit_policy_file=work / "audit-policy.yaml",
                       audit_log_path=audit_log) as api:
        _prepare_cluster(api)
        bundle = issue_certificates([], ["127.0.0.1"], days=1)
        (work / "tls.crt").write_bytes(bundle.cert_pem)
        (work / "tls.key").write_bytes(bundle.key_pem)
        config = Config()
        cache = SnapshotCache(KubeListWatch(KubeClient.from_kubeconfig(api.kubeconfig_path),
                                            watch_timeout_seconds=30), config)
        cache.start()
        assert cache.wait_ready(30), cache.stats()
        records: list[Mapping[str, Any]] = []
        app = AdmissionApp(Policy(default_catalog(), config), cache, on_decision=records.append,
                           cache_stats=cache.stats)
        server = WebhookServer(app, ServerSettings(work / "tls.crt", work / "tls.key", port=0))
        server.start()
        hook = Webhook(api, server, app, cache, bundle.ca_pem, audit_log, records)
        vwc = webhook_configuration(config, default_catalog(), ca_bundle=bundle.ca_pem, url=hook.url,
                                    name="kubepci-e2e")
        status, body = api.request("POST", VWC_PATH, vwc)
        assert status == 201, body
        _wait_for_enforcement(api)
        try:
            yield hook
        finally:
            api.request("DELETE", f"{VWC_PATH}/kubepci-e2e")
            webhook_server = hook.server  # the failure-policy test may have replaced it
            webhook_server.stop()
            cache.stop()


def _create(api: KubeAPIServer, namespace: str, pod: Mapping[str, Any], dry_run: bool = False) -> tuple[int, Any]:
    query = "?dryRun=All" if dry_run else ""
    return api.request("POST", f"/api/v1/namespaces/{namespace}/pods{query}", pod)


def _wait_for_enforcement(api: KubeAPIServer) -> None:
    """Webhook configurations take effect eventually (about a second): poll, bounded, instead of sleeping."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status, _ = _create(api, CDE_NS, _pod("probe", privileged=True), dry_run=True)
        if status == 403:
            return
        time.sleep(0.2)
    raise AssertionError("the webhook did not start denying within 20 s")


def _audit_events(path: Path, name: str) -> list[dict[str, Any]]:
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        ref = event.get("objectRef") or {}
        if ref.get("resource") == "pods" and ref.get("name") == name and event.get("verb") == "create":
            events.append(event)
    return events


def test_privileged_pod_in_cde_is_denied_with_check_field_and_fix(webhook: Webhook) -> None:
    status, body = _create(webhook.api, CDE_NS, _pod("priv", privileged=True))
    assert status == 403, body
    message = body["message"]
    assert message.startswith('admission webhook "cde.admission.kubepci.io" denied the request: '
                              "kubepci denied Pod wh-cde/priv (2 failing checks): ")
    assert "[workload-privileged] spec.containers[0].securityContext.privileged: container 'api' runs privileged" \
        in message
    assert "(fix: Remove securityContext.privileged" in message
    assert "[workload-privilege-escalation] spec.containers[0].securityContext.allowPrivilegeEscalation" in message
    assert webhook.api.request("GET", f"/api/v1/namespaces/{CDE_NS}/pods/priv")[0] == 404
    record = [r for r in webhook.records if r["name"] == "priv"][-1]
    assert record["allowed"] is False
    assert record["dry_run"] is False
    assert record["scope"] == "cde"
    # the apiserver wrote our audit annotations, prefixed with the webhook's name, into its audit event
    deadline = time.monotonic() + 5
    events: list[dict[str, Any]] = []
    while not events and time.monotonic() < deadline:
        events = [e for e in _audit_events(webhook.audit_log, "priv")
                  if "cde.admission.kubepci.io/decision-id" in (e.get("annotations") or {})]
        time.sleep(0.1)
    assert events, "no audit event with the webhook's annotations"
    annotations = events[-1]["annotations"]
    assert annotations["cde.admission.kubepci.io/decision-id"] == record["decision_id"]
    assert annotations["cde.admission.kubepci.io/decision"] == "denied"
    assert annotations["cde.admission.kubepci.io/deny.workload-privileged"].startswith(
        "spec.containers[0].securityContext.privileged")
    assert events[-1]["responseStatus"]["code"] == 403


def test_compliant_pod_in_cde_is_admitted(webhook: Webhook) -> None:
    status, body = _create(webhook.api, CDE_NS, _pod("ok"))
    assert status == 201, body
    record = [r for r in webhook.records if r["name"] == "ok"][-1]
    assert record["allowed"] is True
    assert record["denied"] == []


def test_warn_mode_admits_and_the_client_sees_the_warning(webhook: Webhook) -> None:
    policy = webhook.app.policy
    warn = replace(policy.config, checks={
        "workload-privileged": CheckOverride(enforcement=Enforcement.WARN),
        "workload-privilege-escalation": CheckOverride(enforcement=Enforcement.WARN),
    })
    webhook.app.policy = Policy(default_catalog(), warn)
    try:
        conn = http.client.HTTPSConnection("127.0.0.1", webhook.api.port, context=_admin_context(webhook.api))
        conn.request("POST", f"/api/v1/namespaces/{CDE_NS}/pods", body=json.dumps(_pod("warned", privileged=True)),
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        body = json.loads(response.read())
        warnings = response.headers.get_all("Warning") or []
        conn.close()
    finally:
        webhook.app.policy = policy
    assert response.status == 201, body
    assert body["spec"]["containers"][0]["securityContext"]["privileged"] is True
    ours = [w for w in warnings if "kubepci [workload-privileged]" in w]
    assert len(ours) == 1
    assert "spec.containers[0].securityContext.privileged" in ours[0]


def _admin_context(api: KubeAPIServer) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(api.ca_path))
    ctx.load_cert_chain(str(api.client_cert_path), str(api.client_key_path))
    return ctx


def test_dry_run_leaves_no_trace(webhook: Webhook) -> None:
    before = len(webhook.records)
    status, body = _create(webhook.api, CDE_NS, _pod("dry"), dry_run=True)
    assert status == 201, body
    assert webhook.api.request("GET", f"/api/v1/namespaces/{CDE_NS}/pods/dry")[0] == 404
    status, _ = _create(webhook.api, CDE_NS, _pod("dry-priv", privileged=True), dry_run=True)
    assert status == 403
    new = [r for r in webhook.records[before:] if r["name"] in ("dry", "dry-priv")]
    assert [(r["name"], r["allowed"], r["dry_run"]) for r in new] == [("dry", True, True), ("dry-priv", False, True)]


def test_malformed_review_posted_directly_is_a_logged_400(webhook: Webhook, caplog: pytest.LogCaptureFixture) -> None:
    ctx = ssl.create_default_context(cadata=webhook.ca_pem.decode())
    bad = orjson.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                        "request": {"uid": str(uuid.uuid4()), "operation": "CREATE"}})
    with caplog.at_level(logging.INFO, logger=DECISION_LOGGER):
        conn = http.client.HTTPSConnection("127.0.0.1", webhook.server.port, context=ctx, timeout=10)
        conn.request("POST", "/validate", body=bad, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        body = json.loads(response.read())
        conn.close()
    assert response.status == 400
    assert body == {"error": "request.kind is required"}
    rejected = [orjson.loads(r.getMessage()) for r in caplog.records if r.name == DECISION_LOGGER]
    assert {"event": "admission.rejected", "cause": "bad_request", "reason": "request.kind is required"}.items() \
        <= rejected[-1].items()


def test_cache_follows_the_cluster(webhook: Webhook) -> None:
    """A NetworkPolicy created after the sync reaches the snapshot through the watch, not a relist."""
    lists_before = webhook.cache.stats().lists["NetworkPolicy"]
    dns = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "allow-dns"},
           "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{
               "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}],
               "ports": [{"protocol": "UDP", "port": 53}]}]}}
    status, body = webhook.api.request("POST", f"/apis/networking.k8s.io/v1/namespaces/{OTHER_NS}/networkpolicies",
                                       dns)
    assert status == 201, body
    deadline = time.monotonic() + 10
    while "allow-dns" not in {p.name for p in webhook.cache.snapshot.network_policies.get(OTHER_NS, ())}:
        assert time.monotonic() < deadline, "new NetworkPolicy not seen"
        time.sleep(0.05)
    assert webhook.cache.stats().lists["NetworkPolicy"] == lists_before


def test_webhook_down_fails_closed_in_cde_and_open_elsewhere(webhook: Webhook) -> None:
    port = webhook.server.port
    webhook.server.stop()
    try:
        status, body = _create(webhook.api, CDE_NS, _pod("down-cde"))
        assert status == 500, body
        assert 'failed calling webhook "cde.admission.kubepci.io"' in body["message"]
        status, body = _create(webhook.api, OTHER_NS, _pod("down-other"))
        assert status == 201, body
    finally:  # back on the same port, so the order of the tests in this module does not matter
        settings = replace(webhook.server.settings, port=port)
        webhook.server = WebhookServer(webhook.app, settings)
        webhook.server.start()
    deadline = time.monotonic() + 5
    failed_open: dict[str, str] = {}
    while not failed_open and time.monotonic() < deadline:
        for event in _audit_events(webhook.audit_log, "down-other"):
            failed_open = {k: v for k, v in (event.get("annotations") or {}).items()
                           if k.startswith("failed-open.validating.webhook.admission.k8s.io/")}
        time.sleep(0.1)
    assert list(failed_open.values()) == ["other.admission.kubepci.io"]


def test_serve_command_runs_the_webhook_as_a_process(webhook: Webhook, tmp_path: Path) -> None:
    """`kubepci admission serve`: syncs from the kubeconfig, answers, logs JSON lines, exits on SIGTERM."""
    bundle = issue_certificates([], ["127.0.0.1"], days=1)
    (tmp_path / "tls.crt").write_bytes(bundle.cert_pem)
    (tmp_path / "tls.key").write_bytes(bundle.key_pem)
    (tmp_path / "kubepci.yaml").write_text("checks: {workload-privileged: {enforcement: audit}}\n", encoding="utf-8")
    port = _free_port()
    store = f"sqlite:///{tmp_path / 'trail.db'}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubepci.cli.admission_cmd", "serve", "--config", str(tmp_path / "kubepci.yaml"),
         "--tls-cert", str(tmp_path / "tls.crt"), "--tls-key", str(tmp_path / "tls.key"), "--port", str(port),
         "--kubeconfig", str(webhook.api.kubeconfig_path), "--trail-store", store],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ctx = ssl.create_default_context(cadata=bundle.ca_pem.decode())
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, _ = _https(ctx, port, "GET", "/readyz")
            except OSError:
                status = 0
            if status == 200:
                break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "serve never became ready"
            time.sleep(0.2)
        review = make_review({**_pod("cli", privileged=True), "metadata": {"name": "cli", "namespace": CDE_NS}},
                             uid="cli-1")
        status, body = _https(ctx, port, "POST", "/validate", orjson.dumps(review))
        assert status == 200
        response = orjson.loads(body)["response"]
        assert response["allowed"] is False  # escalation still denies; privileged is audit-only by config
        assert "[workload-privilege-escalation]" in response["status"]["message"]
        assert "[workload-privileged]" not in response["status"]["message"]
        assert response["auditAnnotations"]["audit.workload-privileged"].startswith(
            "spec.containers[0].securityContext.privileged")
        status, metrics = _https(ctx, port, "GET", "/metrics")
        assert 'kubepci_admission_cache_objects{kind="Namespace"}' in metrics.decode()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    # uvicorn drains, then re-raises SIGTERM so the exit status says what ended it
    assert proc.returncode in (0, -signal.SIGTERM), err.decode()
    assert b"Traceback" not in err, err.decode()
    lines = [orjson.loads(x) for x in out.splitlines() if x.startswith(b"{")]
    assert [(x["event"], x["decision_id"], x["allowed"]) for x in lines] == [("admission.decision", "cli-1", False)]
    # the decision is also a leaf of the audit trail, found by the trail's own search
    found = subprocess.run([sys.executable, "-m", "kubepci", "trail", "search", "--store", store, "--kind", "admission",
                            "--outcome", "failure", "-o", "json"], capture_output=True, check=True, timeout=60)
    hits = orjson.loads(found.stdout)
    assert [(h["kind"], h["source"]) for h in hits] == [("admission", "kubepci-admission")], hits
    index = hits[0]["index"]
    assert (index["audit_id"], index["namespace"], index["name"], index["code"], index["rule"]) == (
        "cli-1", CDE_NS, "cli", 403, "workload-privilege-escalation"), index


def _https(ctx: ssl.SSLContext, port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_binding_to_a_custom_admin_equivalent_role_is_denied(webhook: Webhook) -> None:
    """The ClusterRole arrives in the cache through the watch; the binding to it is then judged like a
    binding to cluster-admin, by the real apiserver calling the webhook."""
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "wh-everything"},
            "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}
    policy = webhook.app.policy
    role_checks = [c.id for c in policy.checks_for("ClusterRole")]
    webhook.app.policy = Policy(default_catalog(), replace(policy.config, checks={  # the role itself only warns
        check_id: CheckOverride(enforcement=Enforcement.WARN) for check_id in role_checks}))
    try:
        status, body = webhook.api.request("POST", f"{rbac}/clusterroles", role)
    finally:
        webhook.app.policy = policy
    assert status == 201, body
    deadline = time.monotonic() + 10
    while "wh-everything" not in {r.name for r in webhook.cache.snapshot.cluster_roles}:
        assert time.monotonic() < deadline, "new ClusterRole not seen by the cache"
        time.sleep(0.05)
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": "wh-sneaky"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "wh-everything"},
               "subjects": [{"kind": "User", "name": "mallory@example.com", "apiGroup": "rbac.authorization.k8s.io"}]}
    status, body = webhook.api.request("POST", f"{rbac}/clusterrolebindings", binding)
    assert status == 403, body
    assert "[rbac-cluster-admin-binding] subjects[0]: User 'mallory@example.com' is bound to ClusterRole " \
        "'wh-everything', which grants every verb on every resource" in body["message"]
    assert webhook.api.request("GET", f"{rbac}/clusterrolebindings/wh-sneaky")[0] == 404

"""The real kube-apiserver's audit webhook backend delivering into ``kubepci trail serve`` over mTLS.

Nothing is simulated: the apiserver batches its own audit events (``--audit-webhook-batch-max-wait=1s``)
and POSTs ``audit.k8s.io/v1`` EventLists with the client certificate named in its webhook kubeconfig;
the ingest server accepts them only because that certificate's name is pinned to the ``apiserver``
source. The objects this test creates must show up as leaves with the apiserver's exact bytes, the
review must flag the privileged pod, and the trail must verify.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from kubepci.auditlog.checkpoint import NoteSigner, generate_keypair, parse_skey
from kubepci.auditlog.ingest import Ingestor, split_compact
from kubepci.auditlog.rules import ReviewContext, Reviewer
from kubepci.auditlog.server import IngestServer, IngestSettings
from kubepci.auditlog.sources import load_sources
from kubepci.auditlog.store import SearchQuery, open_store
from kubepci.auditlog.trail import Trail
from tests.e2e.k8s import BinariesMissingError, KubeAPIServer, e2e_optional, find_binaries
from tests.integration.trail_server import Pki

pytestmark = pytest.mark.e2e

NAMESPACE = "trail-e2e"
HEAD = b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":['  # as the apiserver sends
POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: None
    nonResourceURLs: ["/healthz*", "/livez*", "/readyz*", "/version"]
  - level: Request
    namespaces: ["trail-e2e"]
  - level: Metadata
"""


@pytest.fixture(scope="module")
def audited_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KubeAPIServer, str, NoteSigner]]:
    try:
        binaries = find_binaries()
    except BinariesMissingError as exc:
        if e2e_optional():
            pytest.skip(str(exc))
        raise
    work = tmp_path_factory.mktemp("audit-webhook")
    pki = Pki(work / "pki", "trail-e2e-ca")
    server_cert = pki.issue("trail", "kubepci-trail", server=True)
    apiserver_client = pki.issue("apiserver-audit", "kube-apiserver-audit")
    sources = work / "sources.yaml"
    sources.write_text("sources:\n  - {name: apiserver, endpoint: k8s-audit, client_names: [kube-apiserver-audit]}\n",
                       encoding="utf-8")
    url = f"sqlite://{work / 'trail.db'}"
    signer = parse_skey(generate_keypair("kubepci.test/e2e/audit")[0])
    settings = IngestSettings(server_cert[0], server_cert[1], pki.ca_path, port=0, checkpoint_seconds=0.5)
    ingestor = Ingestor(Reviewer(ReviewContext(cde_namespaces=frozenset({NAMESPACE}))))
    ingest = IngestServer(lambda: open_store(url), settings, load_sources(sources), signer=signer, ingestor=ingestor,
                          append_worker_url=url)  # as `kubepci trail serve` runs
    ingest.start()
    kubeconfig = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "trail", "cluster": {
            "server": f"https://127.0.0.1:{ingest.port}/v1/k8s-audit", "certificate-authority": str(pki.ca_path)}}],
        "users": [{"name": "apiserver", "user": {
            "client-certificate": str(apiserver_client[0]), "client-key": str(apiserver_client[1])}}],
        "contexts": [{"name": "trail", "context": {"cluster": "trail", "user": "apiserver"}}],
        "current-context": "trail",
    }
    (work / "audit-webhook.yaml").write_text(json.dumps(kubeconfig), encoding="utf-8")
    (work / "audit-policy.yaml").write_text(POLICY, encoding="utf-8")
    cluster = KubeAPIServer(binaries=binaries, audit_policy_file=work / "audit-policy.yaml",
                            audit_webhook_config_file=work / "audit-webhook.yaml")
    try:
        with cluster:
            yield cluster, url, signer
    finally:
        ingest.stop()


def _wait_for(url: str, predicate: Any, timeout: float = 60.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    hits: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        with open_store(url) as store:
            hits = Trail(store).search(SearchQuery(namespace=NAMESPACE, limit=10_000))
        if predicate(hits):
            return hits
        time.sleep(0.5)
    raise AssertionError(f"audit events did not arrive within {timeout:.0f} s; got {len(hits)} leaves")


def test_apiserver_audit_events_arrive_byte_exact_reviewed_and_verifiable(
    audited_cluster: tuple[KubeAPIServer, str, NoteSigner],
) -> None:
    cluster, url, signer = audited_cluster
    cluster.ensure_namespace(NAMESPACE)
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "trail-proof"}, "data": {"k": "v"}}
    status, _ = cluster.request("POST", f"/api/v1/namespaces/{NAMESPACE}/configmaps", configmap)
    assert status == 201
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "root-shell"},
           "spec": {"containers": [{"name": "c", "image": "registry.example/busybox:1.36",
                                    "securityContext": {"privileged": True}}]}}
    status, _ = cluster.request("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", pod)
    assert status == 201
    status, _ = cluster.request("DELETE", f"/api/v1/namespaces/{NAMESPACE}/configmaps/trail-proof")
    assert status == 200
    # a query with '&', which Go's encoding/json writes as \u0026 in the event's requestURI
    status, _ = cluster.request("GET", f"/api/v1/namespaces/{NAMESPACE}/configmaps?limit=5&labelSelector=app%3Dx")
    assert status == 200

    def seen(hits: list[dict[str, Any]]) -> bool:
        facts = {(h["index"]["verb"], h["index"]["resource"], h["index"]["name"]) for h in hits}
        return {("create", "configmaps", "trail-proof"), ("delete", "configmaps", "trail-proof"),
                ("create", "pods", "root-shell"), ("list", "configmaps", None)} <= facts

    hits = _wait_for(url, seen)
    with open_store(url) as store:
        create = next(h for h in hits if h["kind"] == "k8s-audit" and h["index"]["verb"] == "create"
                      and h["index"]["name"] == "trail-proof")
        raw = store.entry(create["leaf_index"]).raw or b""
        event = json.loads(raw)
        # EventList items come without kind/apiVersion (Go omits TypeMeta in list items)
        assert "kind" not in event
        assert (event["auditID"], event["stage"]) == (create["index"]["audit_id"], "ResponseComplete")
        assert event["objectRef"] == {**event["objectRef"], "resource": "configmaps", "name": "trail-proof",
                                      "namespace": NAMESPACE}
        assert event["requestObject"]["data"] == {"k": "v"}  # Request level in this namespace
        assert create["source"] == "apiserver"
        assert create["index"]["user"] == "kubepci-admin"
        assert create["index"]["code"] == 201
        alerts = [h for h in hits if h["kind"] == "alert"]
        assert any(h["index"]["rule"].startswith("D15.") and h["index"]["name"] == "root-shell" for h in alerts), (
            [h["index"]["rule"] for h in alerts])
        # every event as the apiserver wrote it takes the compact fast path of the split (Go's own
        # escapes of &, <, > included): the benchmark's figures are for this path
        events = [e.raw for e in store.iter_entries() if b'"kind":"k8s-audit"' in e.envelope and e.raw]
        slow = [raw[:200] for raw in events if split_compact(HEAD + raw + b"]}") is None]
        assert events
        assert not slow, f"{len(slow)} of {len(events)} apiserver events missed the fast split: {slow[:3]}"
        assert any(b"\\u0026" in raw for raw in events), "no event exercised Go's escaping"
        result = Trail(store, signer).verify()
    assert result.size >= len(hits)
    assert result.payloads_checked == result.size

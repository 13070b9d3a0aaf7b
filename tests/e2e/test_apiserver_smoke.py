"""Prove the e2e fixture is a real, policy-enforcing kube-apiserver and not a stand-in."""

from __future__ import annotations

import pytest

from tests.e2e.k8s import K8S_VERSION, KubeAPIServer

pytestmark = pytest.mark.e2e


def test_version_reports_pinned_release(kube_apiserver: KubeAPIServer) -> None:
    status, body = kube_apiserver.request("GET", "/version")
    assert status == 200
    assert body["gitVersion"] == K8S_VERSION
    assert (body["major"], body["minor"]) == tuple(K8S_VERSION.removeprefix("v").split(".")[:2])


def test_privileged_pod_is_stored_and_read_back(kube_apiserver: KubeAPIServer) -> None:
    ns = kube_apiserver.ensure_namespace("smoke", {"kubepci.io/scope": "cde"})
    assert ns["metadata"]["labels"]["kubepci.io/scope"] == "cde"
    container = {
        "name": "c",
        "image": "registry.example/busybox:1.36",
        "securityContext": {"privileged": True},
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "priv", "labels": {"app": "smoke"}},
        "spec": {"containers": [container]},
    }
    status, created = kube_apiserver.request("POST", "/api/v1/namespaces/smoke/pods", pod)
    assert status == 201, created
    assert created["metadata"]["uid"]

    status, got = kube_apiserver.request("GET", "/api/v1/namespaces/smoke/pods/priv")
    assert status == 200
    assert got["metadata"]["uid"] == created["metadata"]["uid"]
    assert got["metadata"]["labels"] == {"app": "smoke"}
    got_container = got["spec"]["containers"][0]
    assert got_container["securityContext"]["privileged"] is True
    assert got_container["image"] == "registry.example/busybox:1.36"
    # Defaulting and the ServiceAccount admission plugin ran: a real apiserver filled these in.
    assert got["spec"]["serviceAccountName"] == "default"
    assert got["spec"]["restartPolicy"] == "Always"
    assert got["status"]["phase"] == "Pending"


def test_requests_without_credentials_are_rejected(kube_apiserver: KubeAPIServer) -> None:
    status, body = kube_apiserver.request("GET", "/api/v1/namespaces", anonymous=True)
    assert status in (401, 403)
    assert body["kind"] == "Status"
    if status == 403:
        assert 'User "system:anonymous" cannot list resource "namespaces"' in body["message"]


def test_rbac_denies_a_user_without_bindings(kube_apiserver: KubeAPIServer) -> None:
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": "mallory",
            "resourceAttributes": {"namespace": "default", "verb": "create", "resource": "pods"},
        },
    }
    status, body = kube_apiserver.request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", review)
    assert status == 201
    assert body["status"]["allowed"] is False

    review["spec"]["groups"] = ["system:masters"]  # type: ignore[index]
    status, body = kube_apiserver.request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", review)
    assert status == 201
    assert body["status"]["allowed"] is True

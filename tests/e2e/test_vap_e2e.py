"""A real kube-apiserver enforcing the exported ValidatingAdmissionPolicies agrees with the Python checks.

For every check with CEL, each object of its fixtures is first dry-run created without any policy:
the apiserver's answer is the object as admission sees it (defaults applied, ServiceAccount admission
done), or a refusal (the object cannot be admitted at all). The Python check on that object gives
the expected verdict. Then the exported policy and bindings are applied (fixture namespaces are
recreated under unique names with their labels, and the config's namespace lists renamed alike) and
each object is dry-run created again: a FAIL must come back as HTTP 422 naming the check, a PASS must
be admitted. Every request is a dry run, so nothing but namespaces and ServiceAccounts is stored.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import re
import ssl
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from kubepci.admission.vap import KIND_RESOURCES, export_check, export_documents
from kubepci.checks import default_catalog
from kubepci.checks._registry import Check
from kubepci.config import DEFAULT_EXEMPT, Config, ScopeRule
from kubepci.engine import evaluate
from kubepci.inventory import CLUSTER_SCOPED_KINDS, Inventory
from kubepci.inventory.loaders.manifests import load_paths
from kubepci.model import Resource, ResourceRef, SourceLocation, Status
from tests.checks.harness import FIXTURES, fixture_config
from tests.e2e.k8s import KubeAPIServer
from tests.unit.admission._differential import (
    body_config,
    cel_checks,
    inadmissible,
    matches_kind,
    verdicts,
)

pytestmark = pytest.mark.e2e

ADMISSION = "/apis/admissionregistration.k8s.io/v1"
MANAGED = urllib.parse.quote("app.kubernetes.io/managed-by=kubepci")
POLL_S = 20.0
_COUNTER = itertools.count(1)


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any
    warnings: tuple[str, ...]

    @property
    def message(self) -> str:
        return str(self.body.get("message", "")) if isinstance(self.body, dict) else str(self.body)

    @property
    def admitted(self) -> bool:
        """201 created, or 409: admission passed and only storage found the name taken."""
        return self.status in (200, 201) or (self.status == 409 and "AlreadyExists" in json.dumps(self.body))


class Client:
    """Requests that also return the Warning headers the fixture's helper drops."""

    def __init__(self, api: KubeAPIServer) -> None:
        self.api = api
        self._ssl = ssl.create_default_context(cafile=str(api.ca_path))
        self._ssl.load_cert_chain(str(api.client_cert_path), str(api.client_key_path))

    def call(self, method: str, path: str, body: Any = None) -> Reply:
        conn = http.client.HTTPSConnection("127.0.0.1", self.api.port, timeout=30, context=self._ssl)
        headers = {"Accept": "application/json"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            raw = response.read()
            warnings = tuple(v for k, v in response.getheaders() if k.lower() == "warning")
        finally:
            conn.close()
        try:
            decoded = json.loads(raw) if raw else None
        except ValueError:
            decoded = raw.decode("utf-8", "replace")
        return Reply(response.status, decoded, warnings)

    def dry_run_create(self, body: Mapping[str, Any], namespace: str) -> Reply:
        return self.call("POST", _collection(str(body["kind"]), namespace) + "?dryRun=All", dict(body))

    def apply(self, documents: list[Mapping[str, Any]]) -> None:
        for doc in documents:
            reply = self.call("POST", f"{ADMISSION}/{_admission_plural(doc)}", dict(doc))
            assert reply.status == 201, f"{doc['metadata']['name']}: HTTP {reply.status}: {reply.message}"

    def remove(self, documents: list[Mapping[str, Any]]) -> None:
        for doc in reversed(documents):
            reply = self.call("DELETE", f"{ADMISSION}/{_admission_plural(doc)}/{doc['metadata']['name']}")
            assert reply.status in (200, 404), reply.message

    def remove_all(self) -> None:
        for plural in ("validatingadmissionpolicybindings", "validatingadmissionpolicies"):
            self.call("DELETE", f"{ADMISSION}/{plural}?labelSelector={MANAGED}")


def _admission_plural(doc: Mapping[str, Any]) -> str:
    return "validatingadmissionpolicies" if doc["kind"] == "ValidatingAdmissionPolicy" \
        else "validatingadmissionpolicybindings"


def _collection(kind: str, namespace: str) -> str:
    group, version, plural = KIND_RESOURCES[kind]
    base = f"/apis/{group}/{version}" if group else f"/api/{version}"
    if kind in CLUSTER_SCOPED_KINDS:
        return f"{base}/{plural}"
    return f"{base}/namespaces/{namespace}/{plural}"


@pytest.fixture(scope="module")
def client(kube_apiserver: KubeAPIServer) -> Iterator[Client]:
    c = Client(kube_apiserver)
    c.remove_all()
    yield c
    c.remove_all()
    target = os.environ.get("KUBEPCI_VAP_STATS")
    if target:  # per-check counts for reports: objects denied, admitted, refused before admission
        Path(target).write_text(json.dumps(STATS, indent=1, sort_keys=True), encoding="utf-8")


# --- fixtures, renamed into unique namespaces --------------------------------------------------------


@dataclass
class Case:
    """One fixture object: where it goes, what the apiserver made of it, what Python says."""

    fixture: str
    resource: Resource  # as written, namespace renamed
    config: Config  # the fixture's config with the same renaming
    namespaces: tuple[Resource, ...]  # the fixture's Namespace objects, renamed
    admitted: Resource | None = None  # the object as admission sees it (defaults applied)
    refused: str = ""
    expect_fail: bool = False
    python_messages: tuple[str, ...] = ()

    @property
    def namespace(self) -> str:
        return self.resource.namespace

    @property
    def label(self) -> str:
        return f"{self.fixture}:{self.resource.ref}"


def _rename(resource: Resource, names: Mapping[str, str]) -> Resource:
    body = json.loads(json.dumps(resource.body))
    meta = body.setdefault("metadata", {})
    if resource.kind == "Namespace":
        meta["name"] = names.get(resource.name, resource.name)
        namespace = ""
    elif resource.kind in CLUSTER_SCOPED_KINDS:
        namespace = ""
    else:
        namespace = names.get(resource.namespace, resource.namespace)
        meta["namespace"] = namespace
    name = str(meta.get("name", resource.name))
    return Resource(ResourceRef(namespace, resource.kind, name, resource.ref.api_version), body, resource.location)


def _renamed_config(config: Config, names: Mapping[str, str]) -> Config:
    def rule(r: ScopeRule) -> ScopeRule:
        return ScopeRule(tuple(names.get(n, n) for n in r.namespaces), r.selector)

    return replace(config, cde=rule(config.cde), connected=rule(config.connected),
                   out_of_scope=rule(config.out_of_scope))


def _prepare(client: Client, check: Check, path: Path) -> list[Case]:
    """Recreate the fixture's namespaces under unique names; one Case per object the policy matches."""
    loaded = load_paths([str(path)])
    inventory = Inventory.build(loaded.resources)
    run = next(_COUNTER)
    names = {ns: f"e{run}-{ns}"[:63] for ns in inventory.namespaces if ns not in DEFAULT_EXEMPT}
    renamed = [_rename(r, names) for r in inventory.resources if not r.synthetic]
    namespaces = tuple(r for r in renamed if r.kind == "Namespace")
    labels = {r.name: dict(r.labels) for r in namespaces}
    for ns in names.values():
        client.api.ensure_namespace(ns, labels.get(ns) or None)
    for r in renamed:  # pods naming a ServiceAccount need it to exist, or ServiceAccount admission refuses them
        spec = r.body.get("spec") if r.kind == "Pod" else None
        sa = spec.get("serviceAccountName") if isinstance(spec, Mapping) else None
        if isinstance(sa, str) and sa and r.namespace:
            client.call("POST", f"/api/v1/namespaces/{r.namespace}/serviceaccounts",
                        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa}})
    config = _renamed_config(fixture_config(path.parent), names)
    fixture = f"{path.parent.name}/{path.name}"
    return [Case(fixture, r, config, namespaces) for r in renamed if matches_kind(check, r)]


def _judge(client: Client, check: Check, case: Case) -> None:
    """Ask the apiserver (no policy installed) what admission would see, then ask the engine about it."""
    reply = client.dry_run_create(case.resource.body, case.namespace)
    if reply.status == 409:
        body: Mapping[str, Any] = case.resource.body  # a taken name (built-in roles): admission saw it as sent
    elif reply.admitted:
        body = reply.body
    else:
        case.refused = f"HTTP {reply.status}: {reply.message}"
        return
    case.admitted = Resource(case.resource.ref, body, SourceLocation(case.fixture, 1))
    others = [n for n in case.namespaces if not (case.admitted.kind == "Namespace" and n.name == case.admitted.name)]
    inventory = Inventory.build([*others, case.admitted])
    result = evaluate(default_catalog().select([check.id]), inventory, case.config)
    assert not [f for f in result.findings if f.status is Status.ERROR]
    fails = [f for f in result.findings if f.resource == case.admitted.ref and f.status is Status.FAIL]
    case.expect_fail = bool(fails)
    case.python_messages = tuple(f.message for f in fails)
    # the in-process CEL agrees with the Python body on the apiserver's view of the object as well
    config = body_config(check, case.config)
    exported = export_check(check, config)
    if exported is not None:
        v = verdicts(check, exported, case.admitted, inventory, config)
        assert not v.cel_errors, f"{case.label}: CEL errors {v.cel_errors}"
        assert v.agree, f"{case.label}: CEL {v.cel_failures or 'passes'} vs Python {v.python_messages or 'passes'}"


def _wait(client: Client, probe: Case, *, rejected: bool) -> None:
    """Policies are eventually consistent: poll the probe object until the expected verdict shows."""
    deadline = time.monotonic() + POLL_S
    while time.monotonic() < deadline:
        reply = client.dry_run_create(probe.resource.body, probe.namespace)
        if (reply.status == 422) == rejected:
            return
        time.sleep(0.1)
    state = "rejected" if rejected else "admitted again"
    pytest.fail(f"{probe.label} not {state} within {POLL_S:.0f} s")


def _documents(check: Check, cases: list[Case]) -> list[Mapping[str, Any]]:
    """One policy (action Deny, so every verdict is observable) and the bindings of every fixture's renamed
    configuration (they differ only in namespace names)."""
    docs: list[Mapping[str, Any]] = []
    seen: set[str] = set()
    configs = {repr(c.config): c.config for c in cases}
    for i, config in enumerate(configs.values()):
        exported = export_check(check, config, "Deny")
        assert exported is not None, f"{check.id} not exported under its fixture config"
        if not docs:
            docs.append(exported.policy)
        for binding in exported.bindings:
            b = json.loads(json.dumps(binding))
            b["metadata"]["name"] = f"{b['metadata']['name']}-f{i}"
            if b["metadata"]["name"] not in seen:
                seen.add(b["metadata"]["name"])
                docs.append(b)
    return docs


CHECK_IDS = sorted(c.id for c in cel_checks())

#: checks whose fail fixtures the apiserver refuses outright (a string "true", ephemeral containers on create,
#: procMount Unmasked without hostUsers: false): an admissible failing object, so the policy is still exercised
EXTRA_FAILING: Mapping[str, tuple[dict[str, str], dict[str, Any]]] = {
    "workload-interactive-tty-cde": ({"kubepci.io/scope": "cde"}, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "shell"},
        "spec": {"containers": [{"name": "sh", "image": "registry.example/sh:1", "stdin": True, "tty": True}]},
    }),
    "workload-proc-mount": ({}, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "unmasked"},
        "spec": {"hostUsers": False, "containers": [{"name": "c", "image": "registry.example/c:1",
                                                     "securityContext": {"procMount": "Unmasked"}}]},
    }),
}


def _extra_case(client: Client, check: Check, labels: dict[str, str], body: dict[str, Any]) -> Case:
    namespace = f"e{next(_COUNTER)}-extra"
    client.api.ensure_namespace(namespace, labels or None)
    ns = Resource(ResourceRef("", "Namespace", namespace, "v1"),
                  {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": labels}},
                  SourceLocation("extra"))
    obj = json.loads(json.dumps(body))
    obj["metadata"]["namespace"] = namespace
    resource = Resource(ResourceRef(namespace, obj["kind"], obj["metadata"]["name"], obj["apiVersion"]), obj,
                        SourceLocation("extra", 1))
    return Case(f"extra/{check.id}", resource, fixture_config(FIXTURES / check.id), (ns,))


@pytest.mark.parametrize("check_id", CHECK_IDS)
def test_apiserver_enforcing_the_exported_policy_agrees_with_python(client: Client, check_id: str) -> None:
    check = next(c for c in cel_checks() if c.id == check_id)
    cases = [case for path in sorted((FIXTURES / check_id).glob("*.yaml"))
             if path.name.startswith(("pass.", "fail.")) for case in _prepare(client, check, path)]
    for case in cases:
        _judge(client, check, case)
    for case in cases:  # what the unit differential leaves out as undecodable, the apiserver refuses too
        if inadmissible(case.resource.body):
            assert case.refused, f"{case.label} was flagged undecodable but the apiserver admitted it"
    judged = [c for c in cases if not c.refused]
    if not any(c.expect_fail for c in judged) and check_id in EXTRA_FAILING:
        extra = _extra_case(client, check, *EXTRA_FAILING[check_id])
        _judge(client, check, extra)
        judged.append(extra)
    probe = next((c for c in judged if c.expect_fail), None)
    assert probe is not None, f"no fixture object of {check_id} fails as admitted: {[c.refused for c in cases]}"
    documents = _documents(check, judged)
    disagreements: list[str] = []
    client.apply(documents)
    try:
        _wait(client, probe, rejected=True)
        for case in judged:
            reply = client.dry_run_create(case.resource.body, case.namespace)
            if case.expect_fail:
                if reply.status != 422 or f"[kubepci {check_id}]" not in reply.message:
                    disagreements.append(f"{case.label}: Python FAILs ({case.python_messages}) but the apiserver "
                                         f"answered HTTP {reply.status}: {reply.message}")
            elif not reply.admitted:
                disagreements.append(f"{case.label}: Python PASSes but the apiserver answered HTTP {reply.status}:"
                                     f" {reply.message}")
    finally:
        client.remove(documents)
        _wait(client, probe, rejected=False)
    assert not disagreements, "\n".join(disagreements)
    denied = sum(c.expect_fail for c in judged)
    STATS[check_id] = {"denied": denied, "admitted": len(judged) - denied,
                       "refused": {c.label: c.refused[:160] for c in cases if c.refused}}


#: check id -> objects denied, admitted, and refused before admission (with the reason), for reports
STATS: dict[str, dict[str, Any]] = {}


# --- actions, scope and a full install -------------------------------------------------------------


def _privileged_pod(name: str, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": dict(labels or {})},
            "spec": {"containers": [{"name": "app", "image": "registry.example/app:1",
                                     "securityContext": {"privileged": True}}]}}


def _apply_and_wait(client: Client, documents: list[Mapping[str, Any]], probe: Mapping[str, Any], namespace: str,
                    ready: Any) -> None:
    client.apply(documents)
    deadline = time.monotonic() + POLL_S
    while time.monotonic() < deadline:
        if ready(client.dry_run_create(probe, namespace)):
            return
        time.sleep(0.1)
    pytest.fail("policy did not take effect in time")


def _remove_and_wait(client: Client, documents: list[Mapping[str, Any]], probe: Mapping[str, Any],
                     namespace: str) -> None:
    client.remove(documents)
    deadline = time.monotonic() + POLL_S
    while time.monotonic() < deadline:
        reply = client.dry_run_create(probe, namespace)
        if reply.admitted and not reply.warnings:
            return
        time.sleep(0.1)
    pytest.fail("policy still in effect after deletion")


def test_warn_action_admits_with_a_warning_naming_the_check(client: Client) -> None:
    client.api.ensure_namespace("vap-warn")
    docs = export_documents(default_catalog().select(["workload-privileged"]), Config(), "Warn")
    pod = _privileged_pod("warned")
    _apply_and_wait(client, docs, pod, "vap-warn", lambda r: bool(r.warnings))
    try:
        reply = client.dry_run_create(pod, "vap-warn")
        assert reply.status == 201, reply.message
        assert any("[kubepci workload-privileged]" in w and "Pod warned (containers: app)" in w
                   for w in reply.warnings), reply.warnings
        hardened = json.loads(json.dumps(pod))
        hardened["spec"]["containers"][0]["securityContext"] = {"privileged": False}
        clean = client.dry_run_create(hardened, "vap-warn")
        assert clean.status == 201
        assert not clean.warnings
    finally:
        _remove_and_wait(client, docs, pod, "vap-warn")


def test_audit_action_admits_without_a_warning(client: Client) -> None:
    client.api.ensure_namespace("vap-audit")
    docs = export_documents(default_catalog().select(["workload-privileged"]), Config(), "Audit")
    deny = export_documents(default_catalog().select(["workload-host-pid"]), Config())
    probe = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe"},
             "spec": {"hostPID": True, "containers": [{"name": "a", "image": "registry.example/a:1"}]}}
    # the Audit binding cannot be observed directly; a Deny policy applied after it shows both are live
    client.apply(docs)
    _apply_and_wait(client, deny, probe, "vap-audit", lambda r: r.status == 422)
    try:
        reply = client.dry_run_create(_privileged_pod("audited"), "vap-audit")
        assert reply.status == 201, reply.message
        assert not reply.warnings
    finally:
        client.remove(docs)
        _remove_and_wait(client, deny, probe, "vap-audit")


def test_cde_only_policy_binds_to_labelled_and_configured_namespaces(client: Client) -> None:
    config = replace(Config(), cde=ScopeRule(namespaces=("vap-cde-named",)))
    client.api.ensure_namespace("vap-cde-label", {"kubepci.io/scope": "cde"})
    client.api.ensure_namespace("vap-cde-named")
    client.api.ensure_namespace("vap-plain")
    client.api.ensure_namespace("vap-cde-connected", {"kubepci.io/scope": "connected"})
    docs = export_documents(default_catalog().select(["workload-interactive-tty-cde"]), config)
    assert len(docs) == 3  # policy, label binding, named binding
    tty = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "shell"},
           "spec": {"containers": [{"name": "sh", "image": "registry.example/sh:1", "tty": True, "stdin": True}]}}
    _apply_and_wait(client, docs, tty, "vap-cde-label", lambda r: r.status == 422)
    try:
        for ns in ("vap-cde-label", "vap-cde-named"):
            reply = client.dry_run_create(tty, ns)
            assert reply.status == 422, (ns, reply.message)
            assert "[kubepci workload-interactive-tty-cde] Pod shell (containers: sh)" in reply.message, ns
        for ns in ("vap-plain", "vap-cde-connected"):
            assert client.dry_run_create(tty, ns).status == 201, ns
        narrowed = json.loads(json.dumps(tty))
        narrowed["metadata"]["labels"] = {"kubepci.io/scope": "out-of-scope"}
        assert client.dry_run_create(narrowed, "vap-cde-label").status == 201  # a pod label may narrow scope
    finally:
        _remove_and_wait(client, docs, tty, "vap-cde-label")


def test_every_policy_installs_together_and_a_hardened_pod_passes_all_of_them(client: Client) -> None:
    config = replace(Config(), allowed_registries=("registry.example",), require_digest="all")
    client.api.ensure_namespace("vap-all")  # no Pod Security label: its 403 would hide our 422
    client.call("POST", "/api/v1/namespaces/vap-all/serviceaccounts",
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "api"}})
    docs = export_documents(default_catalog(), config)
    hardened = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "api"},
        "spec": {
            "serviceAccountName": "api", "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "api", "image": "registry.example/pay/api:1.0@sha256:" + "ab" * 32,
                "imagePullPolicy": "Always",
                "resources": {"limits": {"cpu": "500m", "memory": "256Mi"},
                              "requests": {"cpu": "100m", "memory": "128Mi"}},
                "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}},
            }],
        },
    }
    bad = json.loads(json.dumps(hardened))
    bad["metadata"]["name"] = "bad"
    bad["spec"]["containers"][0]["securityContext"] = {"readOnlyRootFilesystem": True, "privileged": True,
                                                       "capabilities": {"drop": ["ALL"]}}
    _apply_and_wait(client, docs, bad, "vap-all", lambda r: r.status == 422)
    try:
        reply = client.dry_run_create(hardened, "vap-all")
        assert reply.status == 201, reply.message
        denied = client.dry_run_create(bad, "vap-all")
        assert denied.status == 422
        # the apiserver reports the first denying policy; it must be one of the two checks the change breaks
        named = re.findall(r"\[kubepci ([a-z-]+)\] Pod bad \(containers: api\)", denied.message)
        assert named, denied.message
        assert named[0] in ("workload-privilege-escalation", "workload-privileged"), denied.message
        # Python agrees on the object the apiserver admitted: no CEL check fails it
        admitted = Resource(ResourceRef("vap-all", "Pod", "api", "v1"), reply.body, SourceLocation("api"))
        catalog = default_catalog().select([c.id for c in cel_checks()])
        result = evaluate(catalog, Inventory.build([admitted]), config)
        assert [f for f in result.findings if f.status is Status.FAIL] == []
        bad_resource = Resource(ResourceRef("vap-all", "Pod", "bad", "v1"), bad, SourceLocation("bad"))
        failing = evaluate(catalog, Inventory.build([bad_resource]), config).findings
        assert sorted({f.check_id for f in failing if f.status is Status.FAIL}) == [
            "workload-privilege-escalation", "workload-privileged"]
    finally:
        _remove_and_wait(client, docs, bad, "vap-all")


def test_debug_containers_added_through_the_subresource_are_checked(client: Client) -> None:
    """`kubectl debug` adds ephemeral containers with an update of pods/ephemeralcontainers, not a pod create."""
    client.api.ensure_namespace("vap-debug")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "target"},
           "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}}
    created = client.call("POST", "/api/v1/namespaces/vap-debug/pods", pod)
    assert created.status == 201, created.message
    docs = export_documents(default_catalog().select(["workload-privileged"]), Config())
    probe = _privileged_pod("probe")
    _apply_and_wait(client, docs, probe, "vap-debug", lambda r: r.status == 422)
    try:
        current = client.call("GET", "/api/v1/namespaces/vap-debug/pods/target").body
        path = "/api/v1/namespaces/vap-debug/pods/target/ephemeralcontainers?dryRun=All"
        debug = {"name": "debugger", "image": "registry.example/busybox:1", "securityContext": {"privileged": True}}
        current["spec"]["ephemeralContainers"] = [debug]
        denied = client.call("PUT", path, current)
        assert denied.status == 422, denied.message
        assert "[kubepci workload-privileged] Pod target (containers: debugger)" in denied.message
        current["spec"]["ephemeralContainers"] = [{**debug, "securityContext": {"privileged": False}}]
        assert client.call("PUT", path, current).status == 200
    finally:
        _remove_and_wait(client, docs, probe, "vap-debug")
        client.call("DELETE", "/api/v1/namespaces/vap-debug/pods/target")

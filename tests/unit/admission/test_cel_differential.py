"""Proof that every exported CEL expression gives its check's Python verdict (DESIGN.md "One engine").

Two sources of objects: every fixture object under tests/checks/ whose kind the policy matches (not
only the check's own fixtures), and hypothesis-generated objects built to hit each rule's edges
(capability spellings, seccomp sources, image references, RBAC rule shapes, ...). The CEL runs with
the same variables as the exported policy, through :func:`kubepci.admission.cel.evaluate_policy`,
on the object as admission would see it (nulls dropped); objects the apiserver would refuse to decode
(a string where a boolean belongs) never reach a policy and are left out.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubepci.admission.vap import ExportedCheck, export_check
from kubepci.checks._registry import Check
from kubepci.config import Config
from kubepci.inventory import Inventory
from kubepci.model import Resource, ResourceRef, SourceLocation
from tests.unit.admission._differential import (
    Verdicts,
    admission_view,
    cel_checks,
    config_for,
    fixture_files,
    fixture_objects,
    inadmissible,
    matches_kind,
    verdicts,
    without_match_conditions,
)

CHECKS = cel_checks()
BY_ID = {c.id: c for c in CHECKS}
#: per family (every check of the family sees each example); KUBEPCI_CEL_EXAMPLES raises it for a soak run
EXAMPLES = int(os.environ.get("KUBEPCI_CEL_EXAMPLES", "300"))
#: checks whose fixtures hold no decodable passing object (the pass fixture writes readOnlyRootFilesystem: "true",
#: which the apiserver refuses); the generated objects cover their passing side
NO_DECODABLE_PASS_FIXTURE = frozenset({"workload-readonly-rootfs"})


@functools.cache
def _fixture(path: Path) -> tuple[Inventory, list[Resource]]:
    return fixture_objects(path)


_EXPORTS: dict[tuple[str, str], tuple[ExportedCheck, dict[str, Any]]] = {}


def _exported(check_id: str, config: Config) -> tuple[ExportedCheck, dict[str, Any]]:
    """The exported policy (and its validations-only copy), memoised per check and configuration."""
    key = (check_id, repr(config))
    if key not in _EXPORTS:
        exported = export_check(BY_ID[check_id], config)
        assert exported is not None, f"{check_id} has CEL but was not exported"
        _EXPORTS[key] = (exported, without_match_conditions(exported.policy))
    return _EXPORTS[key]


def _verdicts(check: Check, resource: Resource, inventory: Inventory, config: Config) -> Verdicts:
    exported, validations = _exported(check.id, config)
    return verdicts(check, exported, resource, inventory, config, validations)


def _disagreement(check: Check, resource: Resource, inventory: Inventory, config: Config) -> str | None:
    v = _verdicts(check, resource, inventory, config)
    if v.cel_errors:
        return f"CEL error on {resource.ref}: {v.cel_errors}"
    if v.agree:
        return None
    python = "passes" if v.python_ok else "fails: " + "; ".join(v.python_messages)
    cel = "passes" if v.cel_ok else "fails: " + "; ".join(v.cel_failures)
    return f"{check.id} on {resource.ref}: Python {python} but CEL {cel}\nobject: {resource.body}"


# --- every fixture object --------------------------------------------------------------------------


@pytest.mark.parametrize("check_id", sorted(BY_ID))
def test_cel_agrees_on_every_fixture_object(check_id: str) -> None:
    check = BY_ID[check_id]
    config = config_for(check)
    problems: list[str] = []
    seen = {True: 0, False: 0}
    own = {True: 0, False: 0}  # the check's own fixtures
    for path in fixture_files():
        inventory, resources = _fixture(path)
        for resource in resources:
            if not matches_kind(check, resource) or inadmissible(resource.body):
                continue
            v = _verdicts(check, resource, inventory, config)
            seen[v.python_ok] += 1
            if path.parent.name == check_id:
                own[v.python_ok] += 1
            problem = _disagreement(check, resource, inventory, config)
            if problem:
                problems.append(f"{path.parent.name}/{path.name}: {problem}")
    assert not problems, "\n".join(problems)
    # both verdicts must occur, and the check's own fail fixtures must count, or the comparison proves little
    assert seen[True] > 0 or check_id in NO_DECODABLE_PASS_FIXTURE, f"{check_id}: no fixture object passes {seen}"
    assert seen[False] > 0, f"{check_id}: no fixture object fails {seen}"
    assert own[False] > 0, f"{check_id}: none of its own fail fixtures reached the comparison"


def test_inadmissible_fixture_objects_are_the_known_string_booleans() -> None:
    """Only objects the apiserver cannot decode are left out; name them so the set cannot grow silently."""
    skipped = sorted(
        f"{p.parent.name}/{p.name}:{r.ref}: {inadmissible(r.body)}"
        for p in fixture_files() for r in _fixture(p)[1] if inadmissible(r.body)
    )
    assert skipped, "expected the fixtures that write hostPID: \"true\" to be flagged"
    assert all("not a boolean" in s or "not an integer" in s or "non-integer" in s for s in skipped), skipped
    assert any("workload-host-pid/fail.host-pid.yaml:default/Pod/" in s and "hostPID is 'true'" in s
               for s in skipped), skipped


# --- generated objects -----------------------------------------------------------------------------

NAMES = ["app", "sidecar", "init", "debug", "proxy"]
CAPS = ["ALL", "all", " all ", "CAP_ALL", "NET_RAW", "net_raw", "CAP_NET_RAW", "cap_sys_admin", "SYS_ADMIN",
        "NET_BIND_SERVICE", "cap_net_bind_service", " NET_BIND_SERVICE", "CHOWN", "KILL", "SETUID", "SETGID",
        "DAC_OVERRIDE", "FOWNER", "FSETID", "MKNOD", "SETFCAP", "SETPCAP", "SYS_CHROOT", "AUDIT_WRITE", "",
        "CAP_", "BPF", "PERFMON", "NET_ADMIN"]
DEFAULT_CAPS = ["AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
                "NET_RAW", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"]
UIDS = [0, 1, 999, 1000, 9999, 10000, 10001, 65534, -1]
SECCOMP_TYPES = ["RuntimeDefault", "Localhost", "Unconfined", "", "Weird"]
SECCOMP_ANNOTATIONS = ["runtime/default", "docker/default", "localhost/prof.json", "unconfined", " unconfined ",
                       "Unconfined", "RuntimeDefault", "Localhost", "", "  ", "other"]
APPARMOR_ANNOTATIONS = ["unconfined", " UNCONFINED ", "Unconfined", "runtime/default", "localhost/p", ""]
HOST_PATHS = ["/", "/run", "/run/", "/var/run", "/var//run/./", "/var/run/docker.sock",
              "/run/containerd/containerd.sock", "/etc", "/var/lib/kubelet", "run", "./run", "/run/k3s/containerd",
              "/home/x/podman.sock", "/var/run/crio/crio.sock", "/run/containerd/", "/data/dockershim.sock/x",
              "", "/./"]
DIGEST = "@sha256:" + "0123456789abcdef" * 4
REGISTRIES = ["", "docker.io/", "Docker.IO/", "index.docker.io/", "registry-1.docker.io/", "harbor.example.com/",
              "HARBOR.example.com/", "harbor.example.com:5000/", "harbor.example.com.evil.io/", "localhost/",
              "localhost:5000/", "registry.k8s.io/", "ghcr.io/", "LOCALHOST/"]
REPOS = ["nginx", "library/nginx", "team/app", "ingress-nginx/controller", "a/b/c", "bitnami/redis",
         "harbor.example.com", "x:1/y", "library"]
TAGS = ["", ":latest", ":1.25", ":", ":LATEST", ":v1-latest"]
DIGESTS = ["", DIGEST, "@sha256:abc", "@", DIGEST + "@x", "@sha256:" + "0123456789ABCDEF" * 4]
RAW_IMAGES = ["nginx@", "a@b@c", "host:5000", "x:1/y", " nginx:1 ", "harbor.example.com/", "localhost",
              "docker.io", "@sha256:abc", "::", "/", "a//b:1"]
ALLOWED_PREFIXES = ["harbor.example.com", "docker.io/library", "registry.k8s.io/ingress-nginx/", "localhost:5000/team",
                    "bitnami", "Index.Docker.io", "library/nginx", "ghcr.io/org/app", "harbor.example.com/team/app",
                    "docker.io", "/", "localhost"]


def _opt(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=fields)


def _sample(values: list[Any]) -> st.SearchStrategy[Any]:
    return st.sampled_from(values)


images = st.one_of(
    st.builds(lambda r, p, t, d: r + p + t + d, _sample(REGISTRIES), _sample(REPOS), _sample(TAGS), _sample(DIGESTS)),
    _sample(RAW_IMAGES),
)
cap_lists = st.one_of(
    st.lists(_sample(CAPS), max_size=5),
    st.permutations(DEFAULT_CAPS).map(list),
    st.permutations(DEFAULT_CAPS).map(lambda caps: [c.lower() for c in caps[1:]]),
)
seccomp = _opt(type=_sample(SECCOMP_TYPES), localhostProfile=st.just("prof.json"))
selinux = _opt(user=_sample(["", "system_u"]), role=_sample(["", "system_r"]),
               type=_sample(["", "container_t", "spc_t", "container_init_t"]), level=st.just("s0:c1"))
quantity = _sample(["", "100m", "1", 1, "128Mi"])
resources = _opt(limits=_opt(cpu=quantity, memory=quantity), requests=_opt(cpu=quantity, memory=quantity))
security_context = _opt(
    privileged=st.booleans(), allowPrivilegeEscalation=st.booleans(), readOnlyRootFilesystem=st.booleans(),
    runAsNonRoot=st.booleans(), runAsUser=_sample(UIDS), runAsGroup=_sample([0, 1000, 10000]),
    capabilities=_opt(add=cap_lists, drop=cap_lists), seccompProfile=seccomp,
    appArmorProfile=_opt(type=_sample(["RuntimeDefault", "Unconfined", "Localhost"])), seLinuxOptions=selinux,
    procMount=_sample(["Default", "Unmasked", ""]), windowsOptions=_opt(hostProcess=st.booleans()),
)
env_entry = st.one_of(
    st.fixed_dictionaries({"name": _sample(["A", "DB_PASSWORD"]), "value": _sample(["x", ""])}),
    st.fixed_dictionaries({"name": st.just("S"), "valueFrom": st.fixed_dictionaries(
        {}, optional={"secretKeyRef": st.fixed_dictionaries({"name": st.just("s"), "key": st.just("k")}),
                      "configMapKeyRef": st.fixed_dictionaries({"name": st.just("c"), "key": st.just("k")})})}),
)
env_from = st.one_of(st.fixed_dictionaries({"secretRef": st.fixed_dictionaries({"name": st.just("s")})}),
                     st.fixed_dictionaries({"configMapRef": st.fixed_dictionaries({"name": st.just("c")})}))
ports = st.lists(st.fixed_dictionaries({"containerPort": st.just(8080)}, optional={"hostPort": _sample([0, 8080])}),
                 max_size=2)


def _container(name: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({"name": st.just(name)}, optional={
        "image": images, "imagePullPolicy": _sample(["Always", "IfNotPresent", "Never", ""]),
        "securityContext": security_context, "ports": ports, "resources": resources, "stdin": st.booleans(),
        "tty": st.booleans(), "env": st.lists(env_entry, max_size=2), "envFrom": st.lists(env_from, max_size=2),
    })


@st.composite
def pod_specs(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, str]]:
    names = draw(st.permutations(NAMES))
    counts = [draw(st.integers(0, 1)), draw(st.integers(1, 2)), draw(st.integers(0, 1))]
    spec: dict[str, Any] = {}
    used = 0
    for field, count in zip(("initContainers", "containers", "ephemeralContainers"), counts, strict=True):
        if count:
            spec[field] = [draw(_container(n)) for n in names[used : used + count]]
            used += count
    spec.update(draw(_opt(
        hostPID=st.booleans(), hostIPC=st.booleans(), hostNetwork=st.booleans(), hostUsers=st.booleans(),
        os=_opt(name=_sample(["linux", "windows", "Windows"])),
        automountServiceAccountToken=st.booleans(),
        serviceAccountName=_sample(["", "default", "app"]), serviceAccount=_sample(["", "default", "legacy"]),
        runtimeClassName=_sample(["gvisor", "runc"]), resources=resources,
        volumes=st.lists(st.one_of(
            st.fixed_dictionaries({"name": st.just("h"), "hostPath": _opt(path=_sample(HOST_PATHS),
                                                                            type=st.just("Directory"))}),
            st.fixed_dictionaries({"name": st.just("e"), "emptyDir": st.just({})}),
        ), max_size=3),
        securityContext=_opt(
            runAsUser=_sample(UIDS), runAsGroup=_sample([0, 1000]), fsGroup=_sample([0, 2000]),
            supplementalGroups=st.lists(_sample([0, 1000, 3000]), max_size=2), runAsNonRoot=st.booleans(),
            seccompProfile=seccomp, appArmorProfile=_opt(type=_sample(["RuntimeDefault", "Unconfined"])),
            seLinuxOptions=selinux, windowsOptions=_opt(hostProcess=st.booleans()),
            sysctls=st.lists(st.fixed_dictionaries({"name": _sample(
                ["net.ipv4.tcp_syncookies", "kernel.shm_rmid_forced", "kernel.msgmax", "net.core.somaxconn"]),
                "value": st.just("1")}), max_size=2),
        ),
    )))
    annotations: dict[str, str] = {}
    if draw(st.booleans()):
        annotations["seccomp.security.alpha.kubernetes.io/pod"] = draw(_sample(SECCOMP_ANNOTATIONS))
    for n in names[:used]:
        if draw(st.integers(0, 3)) == 0:
            annotations[f"container.seccomp.security.alpha.kubernetes.io/{n}"] = draw(_sample(SECCOMP_ANNOTATIONS))
        if draw(st.integers(0, 3)) == 0:
            annotations[f"container.apparmor.security.beta.kubernetes.io/{n}"] = draw(_sample(APPARMOR_ANNOTATIONS))
    return spec, annotations


@st.composite
def workloads(draw: st.DrawFn) -> dict[str, Any]:
    spec, annotations = draw(pod_specs())
    labels = draw(_opt(**{"kubepci.io/scope": _sample(["cde", "connected", "out-of-scope", ""])}))
    meta: dict[str, Any] = {"labels": labels, "annotations": annotations}
    kind = draw(_sample(["Pod", "Deployment", "CronJob", "Job", "StatefulSet", "DaemonSet"]))
    if kind == "Pod":
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "w", **meta}, "spec": spec}
    template = {"metadata": meta, "spec": spec}
    api = {"CronJob": "batch/v1", "Job": "batch/v1"}.get(kind, "apps/v1")
    body: dict[str, Any] = {"apiVersion": api, "kind": kind, "metadata": {"name": "w"}}
    body["spec"] = {"jobTemplate": {"spec": {"template": template}}} if kind == "CronJob" else {"template": template}
    return body


def _resource(body: Mapping[str, Any], namespace: str = "apps") -> Resource:
    kind = str(body["kind"])
    ns = "" if kind in ("Namespace", "ClusterRole", "ClusterRoleBinding") else namespace
    name = str(body.get("metadata", {}).get("name", "x"))
    return Resource(ResourceRef(ns, kind, name, str(body["apiVersion"])), admission_view(body), SourceLocation("gen"))


def _assert_family(body: Mapping[str, Any], config: Config, checks: list[Check]) -> None:
    resource = _resource(body)
    inventory = Inventory.build([resource])
    assert not inadmissible(resource.body), "the strategies must only build decodable objects"
    problems = [p for c in checks if matches_kind(c, resource)
                for p in [_disagreement(c, resource, inventory, config)] if p]
    assert not problems, "\n".join(problems)


def _family(*targets: str) -> list[Check]:
    return [c for c in CHECKS if set(c.meta.targets) & set(targets)]


_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                                  HealthCheck.data_too_large])
_WORKLOAD_CONFIG = replace(Config(), require_digest="all")


@_SETTINGS
@given(workloads())
def test_cel_agrees_on_generated_workloads(body: dict[str, Any]) -> None:
    checks = [c for c in _family("workload") if c.id != "image-allowed-registry"]
    _assert_family(body, _WORKLOAD_CONFIG, checks)


@_SETTINGS
@given(workloads(), st.lists(_sample(ALLOWED_PREFIXES), min_size=1, max_size=3, unique=True))
def test_cel_agrees_on_generated_images_and_registry_allowlists(body: dict[str, Any], prefixes: list[str]) -> None:
    config = replace(Config(), allowed_registries=tuple(prefixes))
    _assert_family(body, config, [BY_ID["image-allowed-registry"], BY_ID["image-tag-not-latest"],
                                  BY_ID["image-pull-policy-always"]])


VERBS = ["get", "list", "watch", "create", "update", "patch", "delete", "*", "bind", "escalate", "impersonate"]
GROUPS = ["", "*", "apps", "rbac.authorization.k8s.io", "authentication.k8s.io", "certificates.k8s.io"]
RESOURCES = ["pods", "pods/exec", "*/exec", "pods/attach", "pods/portforward", "*/portforward", "nodes/proxy",
             "serviceaccounts/token", "*/token", "certificatesigningrequests/approval", "*/approval", "secrets", "*",
             "roles", "clusterroles", "users", "groups", "serviceaccounts", "uids", "userextras", "userextras/scopes",
             "deployments"]
ROLE_NAMES = ["app-reader", "system:foo", "view", "edit", "admin", "cluster-admin", "custom"]
rules = st.lists(st.fixed_dictionaries(
    {"verbs": st.lists(_sample(VERBS), min_size=1, max_size=3, unique=True)},
    optional={"apiGroups": st.lists(_sample(GROUPS), max_size=2, unique=True),
              "resources": st.lists(_sample(RESOURCES), max_size=3, unique=True),
              "resourceNames": st.just(["one"])},
), max_size=3)
bootstrap = _opt(**{"kubernetes.io/bootstrapping": _sample(["rbac-defaults", "other"])})


@_SETTINGS
@given(_sample(["Role", "ClusterRole"]), _sample(ROLE_NAMES), bootstrap, st.one_of(rules, st.none()))
def test_cel_agrees_on_generated_roles(kind: str, name: str, labels: dict[str, str],
                                       rule_list: list[Any] | None) -> None:
    body: dict[str, Any] = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
                            "metadata": {"name": name, "labels": labels}}
    if rule_list is not None:  # unset rules reach admission as null (aggregated ClusterRoles)
        body["rules"] = rule_list
    _assert_family(body, Config(), _family("Role", "ClusterRole"))


BINDING_NAMES = ["system:basic-user", "system:discovery", "system:public-info-viewer", "custom", "system:other"]
SUBJECT_NAMES = ["system:anonymous", "system:authenticated", "system:unauthenticated", "default", "alice",
                 "system:serviceaccounts"]


@_SETTINGS
@given(_sample(["RoleBinding", "ClusterRoleBinding"]), _sample(BINDING_NAMES),
       st.fixed_dictionaries({"apiGroup": st.just("rbac.authorization.k8s.io"),
                              "kind": _sample(["ClusterRole", "Role"]),
                              "name": _sample([*BINDING_NAMES, "cluster-admin"])}),
       st.lists(st.fixed_dictionaries({"kind": _sample(["User", "Group", "ServiceAccount"]),
                                       "name": _sample(SUBJECT_NAMES)}, optional={"namespace": st.just("apps")}),
                max_size=3))
def test_cel_agrees_on_generated_bindings(kind: str, name: str, ref: dict[str, str], subjects: list[Any]) -> None:
    body = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": {"name": name},
            "roleRef": ref, "subjects": subjects}
    _assert_family(body, Config(), _family("RoleBinding", "ClusterRoleBinding"))


HOSTS = ["shop.example.com", "*.example.com", "api.shop.example.com", "*.shop.example.com", "x.example.org",
         "example.com"]
ingress_tls = st.lists(st.fixed_dictionaries({}, optional={
    "hosts": st.lists(_sample(HOSTS), max_size=2), "secretName": _sample(["", "tls"])}), max_size=2)
ingress_rules = st.lists(st.fixed_dictionaries({}, optional={"host": _sample([*HOSTS, ""])}), max_size=3)


@_SETTINGS
@given(ingress_tls, ingress_rules, st.booleans(),
       _opt(**{"alb.ingress.kubernetes.io/certificate-arn": st.just("arn"), "other": st.just("x")}))
def test_cel_agrees_on_generated_ingresses(tls: list[Any], rule_list: list[Any], default_backend: bool,
                                           annotations: dict[str, str]) -> None:
    spec: dict[str, Any] = {"rules": rule_list}
    if tls:
        spec["tls"] = tls
    if default_backend:
        spec["defaultBackend"] = {"service": {"name": "s", "port": {"number": 80}}}
    body = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "i", "annotations": annotations}, "spec": spec}
    _assert_family(body, Config(), _family("Ingress"))


netpol_rules = st.lists(st.fixed_dictionaries({}, optional={
    "ports": st.lists(st.fixed_dictionaries({"port": st.just(80)}), max_size=1),
    "from": st.just([{"podSelector": {}}])}), max_size=2)


@_SETTINGS
@given(_opt(policyTypes=st.lists(_sample(["Ingress", "Egress"]), max_size=2, unique=True),
            ingress=netpol_rules, egress=netpol_rules))
def test_cel_agrees_on_generated_network_policies(spec: dict[str, Any]) -> None:
    body = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "n"},
            "spec": {"podSelector": {}, **spec}}
    _assert_family(body, Config(), _family("NetworkPolicy"))


@_SETTINGS
@given(
    _opt(type=_sample(["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]),
         externalIPs=st.lists(st.just("203.0.113.9"), max_size=2)),
    _sample(["default", "app"]), _opt(automountServiceAccountToken=st.booleans()),
    _sample(["Opaque", "kubernetes.io/service-account-token", "kubernetes.io/tls"]),
    _opt(**{"kubernetes.io/legacy-token-invalid-since": st.just("2026-01-01")}),
    _opt(**{"pod-security.kubernetes.io/enforce": _sample(["privileged", "baseline", "restricted", ""]),
            "kubepci.io/security-level": _sample(["", "high"])}),
)
def test_cel_agrees_on_generated_core_objects(service_spec: dict[str, Any], sa_name: str, sa_fields: dict[str, Any],
                                              secret_type: str, secret_labels: dict[str, str],
                                              ns_labels: dict[str, str]) -> None:
    config = Config()
    _assert_family({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
                    "spec": {"ports": [{"port": 80}], **service_spec}}, config, _family("Service"))
    _assert_family({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa_name}, **sa_fields},
                   config, _family("ServiceAccount"))
    _assert_family({"apiVersion": "v1", "kind": "Secret", "type": secret_type,
                    "metadata": {"name": "t", "labels": secret_labels}}, config, _family("Secret"))
    _assert_family({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps", "labels": ns_labels}},
                   config, _family("namespace"))


def test_every_cel_check_is_covered_by_a_generated_family() -> None:
    families = {"workload", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding", "Ingress", "NetworkPolicy",
                "Service", "ServiceAccount", "Secret", "namespace"}
    uncovered = [c.id for c in CHECKS if not set(c.meta.targets) & families]
    assert not uncovered

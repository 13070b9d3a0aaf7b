"""`kubepci admission install`: hardened manifests that pass kubepci's own scan, and the right webhooks."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from kubepci.admission.install import (
    KIND_RESOURCES,
    PLACEHOLDER_IMAGE,
    InstallOptions,
    issue_certificates,
    manifests,
    render,
    webhook_configuration,
    webhook_rules,
)
from kubepci.checks import default_catalog
from kubepci.checks._registry import VIEWS
from kubepci.cli.admission_cmd import admission
from kubepci.config import Config, load_config, parse_config
from kubepci.engine import evaluate
from kubepci.errors import UsageError
from kubepci.inventory import Inventory
from kubepci.inventory.loaders.manifests import load_paths
from kubepci.model import Status
from tests.unit.admission.platform import CONFIG_PATH

DEPLOY = Path("deploy/admission")
HARBOR_IMAGE = "harbor.example.com/platform/kubepci@sha256:" + "1" * 64


def _generate(tmp_path: Path, *args: str) -> Path:
    out = tmp_path / "out"
    result = CliRunner().invoke(admission, ["install", "-o", str(out), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


def _scan(directory: Path, config: Config) -> list[str]:
    loaded = load_paths([str(directory)])
    assert not loaded.unreadable
    inventory = Inventory.build(loaded.resources)
    findings = evaluate(default_catalog(), inventory, config).findings
    return [f"{f.check_id} {f.resource} {f.path}: {f.message}" for f in findings
            if f.status in (Status.FAIL, Status.ERROR)]


def _objects(directory: Path) -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for path in sorted(directory.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            out[(doc["kind"], doc["metadata"]["name"])] = doc
    return out


@pytest.mark.parametrize("variant", [(), ("--cert-manager",)], ids=["self-signed", "cert-manager"])
def test_generated_manifests_pass_kubepci_scan(tmp_path: Path, variant: tuple[str, ...]) -> None:
    out = _generate(tmp_path, *variant)
    assert _scan(out, Config()) == []


def test_generated_manifests_pass_with_the_example_platform_config(tmp_path: Path) -> None:
    out = _generate(tmp_path, "--config", str(CONFIG_PATH), "--image", HARBOR_IMAGE)
    assert _scan(out, load_config(CONFIG_PATH)) == []
    config_map = _objects(out)[("ConfigMap", "kubepci-admission-config")]
    assert set(config_map["data"]) == {"kubepci.yaml", "waivers.yaml"}
    assert "W-2026-001" in config_map["data"]["waivers.yaml"]


def test_committed_deploy_directory_is_what_the_generator_writes(tmp_path: Path) -> None:
    out = _generate(tmp_path, "--cert-manager")
    generated = {p.name: p.read_text(encoding="utf-8") for p in out.glob("*.yaml")}
    committed = {p.name: p.read_text(encoding="utf-8") for p in DEPLOY.glob("*.yaml")}
    assert committed == generated, "regenerate with: kubepci admission install --cert-manager -o deploy/admission"


def test_two_webhooks_split_the_failure_policy() -> None:
    vwc = webhook_configuration(Config(), default_catalog(), ca_bundle=b"CA")
    hooks = {h["name"]: h for h in vwc["webhooks"]}
    assert list(hooks) == ["cde.admission.kubepci.io", "other.admission.kubepci.io"]
    cde, other = hooks["cde.admission.kubepci.io"], hooks["other.admission.kubepci.io"]
    assert (cde["failurePolicy"], other["failurePolicy"]) == ("Fail", "Ignore")
    excluded = {"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                "values": ["kube-system", "kubepci-system"]}
    assert cde["namespaceSelector"] == {"matchLabels": {"kubepci.io/scope": "cde"}, "matchExpressions": [excluded]}
    assert other["namespaceSelector"] == {"matchExpressions": [
        {"key": "kubepci.io/scope", "operator": "NotIn", "values": ["cde"]}, excluded]}
    for hook in hooks.values():
        assert hook["sideEffects"] == "None"
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["timeoutSeconds"] == 5
        assert hook["clientConfig"]["caBundle"] == base64.b64encode(b"CA").decode()
        assert hook["clientConfig"]["service"] == {"namespace": "kubepci-system", "name": "kubepci-admission",
                                                   "path": "/validate", "port": 443}
    resources = {r for rule in cde["rules"] for r in rule["resources"]}
    assert {"pods", "pods/ephemeralcontainers", "deployments", "cronjobs", "namespaces", "networkpolicies",
            "secrets", "configmaps", "services", "ingresses"} <= resources
    assert not {"clusterroles", "clusterrolebindings"} & resources  # a namespace selector cannot scope them
    other_resources = {r for rule in other["rules"] for r in rule["resources"]}
    assert {"clusterroles", "clusterrolebindings"} <= other_resources
    assert all(rule["operations"] == ["CREATE", "UPDATE"] for rule in cde["rules"])


def test_failure_policies_timeout_and_exclusions_follow_the_config() -> None:
    cfg = parse_config(
        "admission: {failure_policy_cde: Ignore, failure_policy_other: Fail, timeout_seconds: 3,"
        " namespace: guard, exclude_namespaces: [istio-system]}\n"
        "scope: {cde: {namespaces: [vault]}}\n")
    hooks = {h["name"]: h for h in webhook_configuration(cfg, default_catalog(), url="https://127.0.0.1:1/validate")
             ["webhooks"]}
    assert hooks["cde.admission.kubepci.io"]["failurePolicy"] == "Ignore"
    assert hooks["other.admission.kubepci.io"]["failurePolicy"] == "Fail"
    names = hooks["cde-names.admission.kubepci.io"]
    assert names["failurePolicy"] == "Ignore"
    assert names["namespaceSelector"]["matchExpressions"][0] == {
        "key": "kubernetes.io/metadata.name", "operator": "In", "values": ["vault"]}
    for hook in hooks.values():
        assert hook["timeoutSeconds"] == 3
        assert hook["clientConfig"] == {"url": "https://127.0.0.1:1/validate"}
        assert {"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                "values": ["guard", "istio-system", "kube-system"]} in hook["namespaceSelector"]["matchExpressions"]


def test_deployment_is_hardened(tmp_path: Path) -> None:
    objs = _objects(_generate(tmp_path))
    dep = objs[("Deployment", "kubepci-admission")]
    spec = dep["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert dep["spec"]["replicas"] == 2
    assert container["image"] == PLACEHOLDER_IMAGE
    assert "@sha256:" in container["image"]
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    token = next(v for v in spec["volumes"] if v["name"] == "api-token")["projected"]["sources"][0]
    assert token == {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}}
    assert container["resources"]["limits"] == {"cpu": "1", "memory": "384Mi"}
    assert spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0][
        "podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert objs[("PodDisruptionBudget", "kubepci-admission")]["spec"]["minAvailable"] == 1
    assert objs[("Service", "kubepci-admission")]["spec"]["ports"][0]["port"] == 443


def test_cluster_role_only_reads_the_cached_kinds(tmp_path: Path) -> None:
    role = _objects(_generate(tmp_path))[("ClusterRole", "kubepci-admission-cache-reader")]
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["namespaces", "nodes", "serviceaccounts"],
         "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["node.k8s.io"], "resources": ["runtimeclasses"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles", "roles"],
         "verbs": ["get", "list", "watch"]},
    ]


def test_network_policy_admits_only_the_apiserver_on_the_webhook_port(tmp_path: Path) -> None:
    objs = _objects(_generate(tmp_path, "--apiserver-cidr", "10.20.0.0/24"))
    assert objs[("NetworkPolicy", "default-deny")]["spec"] == {"podSelector": {},
                                                               "policyTypes": ["Ingress", "Egress"]}
    pol = objs[("NetworkPolicy", "kubepci-admission")]["spec"]
    assert pol["ingress"] == [{"from": [{"ipBlock": {"cidr": "10.20.0.0/24"}}],
                               "ports": [{"protocol": "TCP", "port": 8443}]}]


def test_self_signed_variant_ships_a_working_certificate_chain(tmp_path: Path) -> None:
    out = _generate(tmp_path)
    objs = _objects(out)
    secret = objs[("Secret", "kubepci-admission-tls")]
    assert (out / "20-tls.yaml").stat().st_mode & 0o777 == 0o600
    ca = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["ca.crt"]))
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    cert.verify_directly_issued_by(ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName)
    assert "kubepci-admission.kubepci-system.svc" in sans
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(days=90)
    vwc = objs[("ValidatingWebhookConfiguration", "kubepci-admission")]
    assert base64.b64decode(vwc["webhooks"][0]["clientConfig"]["caBundle"]) == base64.b64decode(
        secret["data"]["ca.crt"])


def test_cert_manager_variant_has_no_key_material_and_injects_the_ca(tmp_path: Path) -> None:
    objs = _objects(_generate(tmp_path, "--cert-manager"))
    assert not any(kind == "Secret" for kind, _ in objs)
    vwc = objs[("ValidatingWebhookConfiguration", "kubepci-admission")]
    assert vwc["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": "kubepci-system/kubepci-admission-tls"}
    assert "caBundle" not in vwc["webhooks"][0]["clientConfig"]
    serving = objs[("Certificate", "kubepci-admission-tls")]["spec"]
    assert serving["privateKey"]["rotationPolicy"] == "Always"
    assert serving["issuerRef"]["name"] == "kubepci-admission-ca"


def test_issued_certificate_covers_ip_addresses() -> None:
    bundle = issue_certificates([], ["127.0.0.1"], days=1)
    cert = x509.load_pem_x509_certificate(bundle.cert_pem)
    ips = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.IPAddress)
    assert ips == [ipaddress.ip_address("127.0.0.1")]
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)


@pytest.mark.parametrize(("options", "message"), [
    (InstallOptions(image="kubepci:latest"), "pinned by digest"),
    (InstallOptions(apiserver_cidrs=("0.0.0.0/0",)), "must not be /0"),
    (InstallOptions(apiserver_cidrs=("nonsense",)), "is not a CIDR"),
    (InstallOptions(replicas=0), "at least 1"),
])
def test_unsafe_options_are_refused(options: InstallOptions, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        manifests(Config(), default_catalog(), options, None)


def test_install_without_output_dir_prints_every_object(tmp_path: Path) -> None:
    result = CliRunner().invoke(admission, ["install", "--cert-manager"], catch_exceptions=False)
    assert result.exit_code == 0
    kinds = [d["kind"] for d in yaml.safe_load_all(result.output)]
    assert kinds[0] == "Namespace"
    assert kinds[-1] == "ValidatingWebhookConfiguration"
    assert {"Deployment", "PodDisruptionBudget", "Service", "NetworkPolicy", "ClusterRole", "Certificate"} <= set(kinds)


def test_render_is_loadable_yaml() -> None:
    docs = list(yaml.safe_load_all(render([{"kind": "A", "metadata": {"name": "x"}}, {"kind": "B"}])))
    assert docs == [{"kind": "A", "metadata": {"name": "x"}}, {"kind": "B"}]


def test_every_kind_an_admission_check_targets_is_routed_to_the_webhook() -> None:
    """A new check on a new kind must also get a webhook rule, or it would never run at admission."""
    rules = webhook_rules(default_catalog(), cluster_scoped=True)
    routed = {(rule["apiGroups"][0], resource) for rule in rules for resource in rule["resources"]}
    for c in default_catalog():
        if not c.meta.admission:
            continue
        for target in c.meta.targets:
            if target in VIEWS:
                continue
            assert target in KIND_RESOURCES, f"{c.id} targets {target}, which install.py cannot route"
            group, plural, _ = KIND_RESOURCES[target]
            assert (group, plural) in routed, f"{c.id}: {target} has no webhook rule"

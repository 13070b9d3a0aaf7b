"""Run the peer suites' cases (Polaris, Checkov) through kubepci and compare verdicts.

Each peer check whose concept kubepci implements maps to one of our checks, optionally narrowed by
a field-path substring (e.g. Checkov's CPU-limit check is our resource-limits check restricted to
``limits.cpu`` findings). A case agrees when our verdict equals the peer's expected verdict;
every disagreement must be listed, with its reason, in ``disagreements.yaml``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from kubepci.checks import default_catalog
from kubepci.config import Config
from kubepci.engine import evaluate
from kubepci.inventory import CLUSTER_SCOPED_KINDS, Inventory
from kubepci.inventory.loaders.manifests import load_paths
from kubepci.model import Status

ORACLES = Path("../shared/corpora/oracles")
HERE = Path(__file__).parent


@dataclass(frozen=True)
class Mapping:
    check_id: str
    path: str = ""


#: (suite, native check) -> our check (+ path filter)
MAPPINGS: dict[tuple[str, str], Mapping] = {
    ("polaris", "automountServiceAccountToken"): Mapping("workload-automount-sa-token"),
    ("polaris", "clusterrolebindingClusterAdmin"): Mapping("rbac-cluster-admin-binding"),
    ("polaris", "rolebindingClusterAdminClusterRole"): Mapping("rbac-cluster-admin-binding"),
    ("polaris", "rolebindingClusterAdminRole"): Mapping("rbac-cluster-admin-binding"),
    ("polaris", "cpuLimitsMissing"): Mapping("workload-resource-limits", "limits.cpu"),
    ("polaris", "memoryLimitsMissing"): Mapping("workload-resource-limits", "limits.memory"),
    ("polaris", "cpuRequestsMissing"): Mapping("workload-resource-requests", "requests.cpu"),
    ("polaris", "memoryRequestsMissing"): Mapping("workload-resource-requests", "requests.memory"),
    ("polaris", "dangerousCapabilities"): Mapping("workload-dangerous-capabilities"),
    ("polaris", "hostIPCSet"): Mapping("workload-host-ipc"),
    ("polaris", "hostNetworkSet"): Mapping("workload-host-network"),
    ("polaris", "hostPIDSet"): Mapping("workload-host-pid"),
    ("polaris", "hostPathSet"): Mapping("workload-host-path"),
    ("polaris", "hostPortSet"): Mapping("workload-host-port"),
    ("polaris", "insecureCapabilities"): Mapping("workload-capabilities-drop-all"),
    ("polaris", "linuxHardening"): Mapping("workload-seccomp"),
    ("polaris", "missingNetworkPolicy"): Mapping("netpol-workload-covered"),
    ("polaris", "notReadOnlyRootFilesystem"): Mapping("workload-readonly-rootfs"),
    ("polaris", "privilegeEscalationAllowed"): Mapping("workload-privilege-escalation"),
    ("polaris", "pullPolicyNotAlways"): Mapping("image-pull-policy-always"),
    ("polaris", "runAsPrivileged"): Mapping("workload-privileged"),
    ("polaris", "runAsRootAllowed"): Mapping("workload-run-as-non-root"),
    ("polaris", "sensitiveConfigmapContent"): Mapping("secret-configmap-credentials"),
    ("polaris", "sensitiveContainerEnvVar"): Mapping("secret-env-literal"),
    ("polaris", "tagNotSpecified"): Mapping("image-tag-not-latest"),
    ("polaris", "tlsSettingsMissing"): Mapping("ingress-tls"),
    # peer checks the oracle files leave without a concept, but whose concept kubepci implements
    ("polaris", "hostProcess"): Mapping("workload-windows-host-process"),
    ("polaris", "procMount"): Mapping("workload-proc-mount"),
    ("polaris", "clusterrolePodExecAttach"): Mapping("rbac-escalation-verbs"),
    ("polaris", "rolePodExecAttach"): Mapping("rbac-escalation-verbs"),
    ("checkov", "CKV_K8S_10"): Mapping("workload-resource-requests", "requests.cpu"),
    ("checkov", "CKV_K8S_11"): Mapping("workload-resource-limits", "limits.cpu"),
    ("checkov", "CKV_K8S_12"): Mapping("workload-resource-requests", "requests.memory"),
    ("checkov", "CKV_K8S_13"): Mapping("workload-resource-limits", "limits.memory"),
    ("checkov", "CKV_K8S_14"): Mapping("image-tag-not-latest"),
    ("checkov", "CKV_K8S_15"): Mapping("image-pull-policy-always"),
    ("checkov", "CKV_K8S_16"): Mapping("workload-privileged"),
    ("checkov", "CKV_K8S_17"): Mapping("workload-host-pid"),
    ("checkov", "CKV_K8S_18"): Mapping("workload-host-ipc"),
    ("checkov", "CKV_K8S_19"): Mapping("workload-host-network"),
    ("checkov", "CKV_K8S_20"): Mapping("workload-privilege-escalation"),
    ("checkov", "CKV_K8S_21"): Mapping("namespace-default-workloads"),
    ("checkov", "CKV_K8S_22"): Mapping("workload-readonly-rootfs"),
    ("checkov", "CKV_K8S_23"): Mapping("workload-run-as-non-root"),
    ("checkov", "CKV_K8S_25"): Mapping("workload-dangerous-capabilities"),
    ("checkov", "CKV_K8S_26"): Mapping("workload-host-port"),
    ("checkov", "CKV_K8S_27"): Mapping("workload-container-runtime-socket"),
    ("checkov", "CKV_K8S_28"): Mapping("workload-net-raw"),
    ("checkov", "CKV_K8S_31"): Mapping("workload-seccomp"),
    ("checkov", "CKV_K8S_35"): Mapping("secret-env-secretkeyref"),
    ("checkov", "CKV_K8S_37"): Mapping("workload-capabilities-drop-all"),
    ("checkov", "CKV_K8S_38"): Mapping("workload-automount-sa-token"),
    ("checkov", "CKV_K8S_39"): Mapping("workload-dangerous-capabilities"),
    ("checkov", "CKV_K8S_40"): Mapping("workload-high-uid"),
    ("checkov", "CKV_K8S_41"): Mapping("serviceaccount-default-automount"),
    ("checkov", "CKV_K8S_42"): Mapping("rolebinding-default-service-account"),
    ("checkov", "CKV_K8S_43"): Mapping("image-digest-pinned"),
    ("checkov", "CKV_K8S_49"): Mapping("rbac-wildcard"),
    ("checkov", "CKV_K8S_156"): Mapping("rbac-escalation-verbs"),
    ("checkov", "CKV_K8S_157"): Mapping("rbac-escalation-verbs"),
    ("checkov", "CKV_K8S_158"): Mapping("rbac-escalation-verbs"),
}

#: the peers judge every object on its own; kubepci's digest rule is scoped to the CDE by default
ORACLE_CONFIG = Config(require_digest="all", source="(oracle)")
SUITE_ROOT = {"polaris": ORACLES / "polaris", "checkov": ORACLES / "checkov"}


@dataclass(frozen=True)
class Case:
    suite: str
    case_id: str
    native_check: str
    inputs: tuple[str, ...]
    resource: tuple[str, str, str] | None  # kind, namespace, name
    expected: str  # pass | fail


def cases() -> Iterator[tuple[Case, Mapping]]:
    seen: set[tuple[str, str]] = set()
    for suite in ("polaris", "checkov"):
        for line in (ORACLES / suite / "cases.jsonl").read_text().splitlines():
            raw = json.loads(line)
            mapping = MAPPINGS.get((suite, raw["native_check"]))
            if mapping is None or (suite, raw["case_id"]) in seen:
                continue
            seen.add((suite, raw["case_id"]))
            res = raw.get("resource")
            yield Case(
                suite, raw["case_id"], raw["native_check"], tuple(raw["inputs"]),
                (res["kind"], res["namespace"], res["name"]) if res else None, raw["expected"],
            ), mapping


@functools.cache
def _findings(suite: str, inputs: tuple[str, ...], check_id: str) -> tuple[tuple[str, str, str, str], ...]:
    loaded = load_paths([str(SUITE_ROOT[suite] / p) for p in inputs])
    inventory = Inventory.build(loaded.resources, loaded.unreadable, loaded.inputs)
    result = evaluate(default_catalog().select([check_id]), inventory, ORACLE_CONFIG)
    return tuple(
        (f.resource.kind, f.resource.namespace, f.resource.name, f.path)
        for f in result.findings
        if f.status in (Status.FAIL, Status.ERROR)
    )


def verdict(case: Case, mapping: Mapping) -> str:
    found = [f for f in _findings(case.suite, case.inputs, mapping.check_id) if mapping.path in f[3]]
    if case.resource is not None:
        kind, namespace, name = case.resource
        if kind in CLUSTER_SCOPED_KINDS:  # the peers keep a stray metadata.namespace; the API drops it
            namespace = ""
        found = [f for f in found if f[:3] == (kind, namespace, name)]
    return "fail" if found else "pass"


def disagreements() -> dict[str, str]:
    data = yaml.safe_load((HERE / "disagreements.yaml").read_text()) or {}
    return {f"{d['suite']}:{d['case']}": d["reason"] for d in data.get("disagreements", [])}

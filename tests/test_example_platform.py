"""The bundled example platform: every deliberate violation in its README is found, the reference
CDE workload is clean, and the waivers behave as documented."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from kubepci.assess import assess
from kubepci.checks import default_catalog
from kubepci.config import load_config
from kubepci.inventory import Inventory
from kubepci.inventory.loaders.sources import SourceOptions, load_sources
from kubepci.model import Status
from kubepci.model.report import Report
from kubepci.requirements import load_tree
from kubepci.waivers import load_waivers

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "payments-platform"

# (README row, check id, resource) — every row of the README's violation table
VIOLATIONS = [
    ("1", "workload-privileged", "logging/DaemonSet/fluent-bit"),
    ("1", "workload-host-path", "logging/DaemonSet/fluent-bit"),
    ("2", "image-tag-not-latest", "shop/Deployment/shop-web"),
    ("2", "image-allowed-registry", "shop/Deployment/shop-web"),
    ("2", "workload-resource-limits", "shop/Deployment/shop-web"),
    ("2", "workload-run-as-non-root", "shop/Deployment/shop-web"),
    ("3", "vendor-default-password", "monitoring/Deployment/grafana"),
    ("4a", "pan-exposure", "payments/ConfigMap/payment-fixtures"),
    ("4b", "pan-exposure", "payments/Service/payment-api-debug"),
    ("5", "service-cde-external-exposure", "payments/Service/payment-api-debug"),
    ("6", "netpol-cde-default-deny-egress", "Namespace/tokenizer"),
    ("6", "netpol-workload-covered", "tokenizer/StatefulSet/tokenizer"),
    ("6", "netpol-cde-effective-default-deny", "tokenizer/StatefulSet/tokenizer"),
    ("6", "netpol-cde-unapproved-egress", "tokenizer/StatefulSet/tokenizer"),
    ("7a", "node-security-level-affinity", "payments/CronJob/ledger-reconcile"),
    ("7a", "node-security-level-tolerations", "payments/CronJob/ledger-reconcile"),
    ("7b", "node-security-level-nodename", "payments/Pod/payment-api-debug"),
    ("7b", "workload-sandboxed-runtime-cde", "payments/Pod/payment-api-debug"),
    ("8", "serviceaccount-token-secret", "payments/Secret/ledger-token"),
    ("9", "ingress-tls", "monitoring/Ingress/grafana"),
    ("10", "certificate-lifetime", "tokenizer/Certificate/tokenizer-tls"),
    ("10", "certificate-key-size", "tokenizer/Certificate/tokenizer-tls"),
    ("11", "workload-container-runtime-socket", "default/Deployment/ci-runner"),
    ("12", "namespace-default-workloads", "default/Deployment/ci-runner"),
    ("13", "secret-env-literal", "payments/Deployment/ledger-worker"),
    ("14a", "rbac-wildcard", "ClusterRole/platform-ops"),
    ("14b", "rbac-cluster-admin-binding", "ClusterRoleBinding/shop-deployer-cluster-admin"),
    ("15", "namespace-psa-enforce", "Namespace/shop"),
    ("16", "namespace-psa-enforce", "Namespace/logging"),
    ("17", "workload-readonly-rootfs", "ingress/Deployment/ingress-nginx-controller"),
]

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def report() -> Report:
    config = load_config(EXAMPLE / "kubepci.yaml")
    assert config.waivers_path is not None
    exclude = frozenset({(EXAMPLE / "kubepci.yaml").resolve(), config.waivers_path.resolve()})
    loaded = load_sources([str(EXAMPLE)], SourceOptions(exclude=exclude))
    assert not loaded.unreadable, loaded.unreadable
    inventory = Inventory.build(loaded.resources, loaded.unreadable, loaded.inputs)
    return assess(inventory, config, default_catalog(), load_tree(), now=NOW,
                  waivers=load_waivers(config.waivers_path))


@pytest.mark.parametrize(("row", "check_id", "resource"), VIOLATIONS, ids=[f"{r}-{c}" for r, c, _ in VIOLATIONS])
def test_documented_violation_is_found(report: Report, row: str, check_id: str, resource: str) -> None:
    hits = [f for f in report.findings if f.check_id == check_id and str(f.resource) == resource]
    assert hits, f"README row {row}: no {check_id} finding on {resource}"
    assert all(f.status is Status.FAIL for f in hits), [(f.status, f.waiver_id) for f in hits]
    assert all(f.location is not None and f.location.file.startswith(str(EXAMPLE)) for f in hits)


def test_reference_cde_workload_is_clean(report: Report) -> None:
    bad = [f for f in report.findings if str(f.resource) == "payments/Deployment/payment-api"]
    assert not bad, [(f.check_id, f.path, f.message) for f in bad]


def test_approved_flows_keep_the_rest_of_the_cde_clean(report: Report) -> None:
    segmentation_checks = ("netpol-cde-effective-default-deny", "netpol-cde-unapproved-ingress",
                           "netpol-cde-unapproved-egress", "netpol-dmz-to-cde-datastore")
    flagged = {str(f.resource) for f in report.findings if f.check_id in segmentation_checks}
    assert flagged == {"tokenizer/StatefulSet/tokenizer"}
    assert report.segmentation is not None


def test_no_check_errors(report: Report) -> None:
    assert not report.by_status(Status.ERROR), report.by_status(Status.ERROR)


def test_waivers_as_documented(report: Report) -> None:
    waived = [(f.check_id, str(f.resource), f.waiver_id) for f in report.by_status(Status.WAIVED)]
    assert waived == [("workload-readonly-rootfs", "logging/DaemonSet/fluent-bit", "W-2026-001")]
    assert [w.id for w in report.waivers_expired] == ["W-2025-007"]
    assert report.waivers_unused == ()


def test_pan_never_appears_unmasked(report: Report) -> None:
    from kubepci.reporters import FORMATS, render

    for fmt in FORMATS:
        assert b"4111111111111111" not in render(report, fmt), fmt
        assert b"hunter2-prod" not in render(report, fmt), fmt

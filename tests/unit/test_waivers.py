"""Waivers: reviewed, expiring, reported when expired or unused; annotations only request."""

from __future__ import annotations

import datetime as dt

import pytest

from kubepci.errors import ConfigError
from kubepci.inventory import Inventory
from kubepci.model import Finding, Resource, ResourceRef, Scope, Severity, SourceLocation, Status
from kubepci.waivers import apply_waivers, parse_waivers

WAIVERS = """\
waivers:
  - id: W-1
    check: workload-readonly-rootfs
    resources: ["logging/DaemonSet/fluent-*"]
    justification: fluent-bit writes its buffer to the root fs until 3.2
    approved_by: jane@example.com
    ticket: SEC-1
    expires: 2027-06-30
  - id: W-2
    check: workload-privileged
    resources: ["logging/*/*"]
    justification: old
    approved_by: joe@example.com
    ticket: SEC-2
    expires: 2025-12-31
  - id: W-3
    check: image-*
    resources: ["shop/Deployment/web"]
    justification: nothing matches this
    approved_by: joe@example.com
    ticket: SEC-3
    expires: 2027-01-01
"""


def _finding(check: str, ref: str) -> Finding:
    ns, kind, name = ref.split("/")
    return Finding(check, ResourceRef(ns, kind, name), Status.FAIL, Severity.HIGH, "m", "p", ("2.2.6",), Scope.CDE)


def test_live_waiver_applies_expired_and_unused_are_reported() -> None:
    waivers = parse_waivers(WAIVERS)
    findings = [
        _finding("workload-readonly-rootfs", "logging/DaemonSet/fluent-bit"),
        _finding("workload-privileged", "logging/DaemonSet/fluent-bit"),
        _finding("workload-readonly-rootfs", "payments/Deployment/api"),
    ]
    out = apply_waivers(findings, waivers, dt.date(2026, 11, 27))
    statuses = [(str(f.resource), f.check_id, f.status, f.waiver_id) for f in out.findings]
    assert statuses == [
        ("logging/DaemonSet/fluent-bit", "workload-readonly-rootfs", Status.WAIVED, "W-1"),
        ("logging/DaemonSet/fluent-bit", "workload-privileged", Status.FAIL, None),
        ("payments/Deployment/api", "workload-readonly-rootfs", Status.FAIL, None),
    ]
    assert [w.id for w in out.expired] == ["W-2"]
    assert [w.id for w in out.unused] == ["W-3"]
    assert out.applied == {"W-1": 1}


def test_waiver_expires_after_its_date() -> None:
    waivers = parse_waivers(WAIVERS)
    finding = _finding("workload-readonly-rootfs", "logging/DaemonSet/fluent-bit")
    assert apply_waivers([finding], waivers, dt.date(2027, 6, 30)).findings[0].status is Status.WAIVED
    assert apply_waivers([finding], waivers, dt.date(2027, 7, 1)).findings[0].status is Status.FAIL


def test_annotation_requests_but_never_grants() -> None:
    body = {"kind": "Deployment", "metadata": {"name": "web", "namespace": "shop",
                                               "annotations": {"kubepci.io/waiver-request": "please"}}}
    res = Resource(ResourceRef("shop", "Deployment", "web"), body, SourceLocation("x.yaml", 1))
    out = apply_waivers([_finding("image-tag-not-latest", "shop/Deployment/web")], (), dt.date(2026, 1, 1),
                        Inventory.build([res]))
    assert out.findings[0].status is Status.FAIL
    assert [(r.resource, r.text) for r in out.requests] == [("shop/Deployment/web", "please")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("waivers:\n  - {id: W, check: c, resources: [a/b/c]}\n", "missing justification, approved_by, ticket"),
        ("waivers:\n  - {id: W, check: c, resources: [a], justification: j, approved_by: a, ticket: t,"
         " expires: soon}\n", "expires must be a date"),
        ("nope: []\n", "single top-level key 'waivers'"),
    ],
)
def test_invalid_waivers(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_waivers(text)


def test_broken_waivers_yaml_names_file_and_line() -> None:
    with pytest.raises(ConfigError, match=r"^w\.yaml:3: invalid YAML: did not find expected ',' or '\]'"):
        parse_waivers("waivers:\n  - id: [unclosed\n", "w.yaml")

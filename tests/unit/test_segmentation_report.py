"""The report's segmentation evidence: what it says about the example platform, when it is left
out, and how CDE workloads with identical flows are listed together."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from kubepci.analyzers import standard_analyzers
from kubepci.assess import assess
from kubepci.checks import default_catalog
from kubepci.config import Config, load_config
from kubepci.inventory import Inventory
from kubepci.inventory.loaders.manifests import parse_text
from kubepci.inventory.loaders.sources import SourceOptions, load_sources
from kubepci.model.report import Report
from kubepci.reporters import render
from kubepci.reporters.segmentation import render_svg
from kubepci.requirements import load_tree

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "payments-platform"
NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
SEGMENTATION_CHECKS = ("netpol-cde-effective-default-deny", "netpol-cde-unapproved-ingress",
                       "netpol-cde-unapproved-egress", "netpol-dmz-to-cde-datastore")


@pytest.fixture(scope="module")
def example() -> Report:
    config = load_config(EXAMPLE / "kubepci.yaml")
    exclude = frozenset({(EXAMPLE / "kubepci.yaml").resolve(), (EXAMPLE / "waivers.yaml").resolve()})
    loaded = load_sources([str(EXAMPLE)], SourceOptions(exclude=exclude))
    inventory = Inventory.build(loaded.resources, loaded.unreadable, loaded.inputs)
    return assess(inventory, config, default_catalog(), load_tree(), now=NOW)


def _inventory(text: str) -> Inventory:
    resources, problems = parse_text(text, "test.yaml")
    assert not problems, problems
    return Inventory.build(resources)


def _record(section: list[dict[str, Any]], key: str, workload: str) -> dict[str, Any]:
    found = [r for r in section if workload in r[key]]
    assert len(found) == 1, (workload, section)
    return found[0]


def test_example_inbound_flows_with_their_approvals(example: Report) -> None:
    seg = example.segmentation
    assert seg is not None
    assert seg["cde_namespaces"] == ["payments", "tokenizer"]
    api = _record(seg["inbound"], "to", "payments/payment-api")
    by_source = {f["from"]: f for f in api["flows"]}
    assert set(by_source) == {"ingress/ingress-nginx-controller", "monitoring/prometheus"}
    dmz = by_source["ingress/ingress-nginx-controller"]
    assert (dmz["text"], dmz["unapproved_text"]) == ("TCP 8443", "none")
    assert dmz["approved_by"] == ["public payment API via the DMZ, re-encrypted"]
    # the nightly reconcile job accepts nothing: its policy allows no ingress, only the worker serves metrics
    assert not [r for r in seg["inbound"] if "payments/ledger-reconcile" in r["to"]]
    worker = _record(seg["inbound"], "to", "payments/ledger-worker")
    scrape = [f for f in worker["flows"] if f["from"] == "monitoring/prometheus"]
    assert [(f["text"], f["unapproved_text"]) for f in scrape] == [("TCP 9090", "none")]


def test_example_outbound_shows_the_tokenizer_reaching_the_internet(example: Report) -> None:
    seg = example.segmentation
    assert seg is not None
    tokenizer = _record(seg["outbound"], "from", "tokenizer/tokenizer")
    internet = [f for f in tokenizer["flows"] if f["to"] == "zone/internet"]
    assert [(f["kind"], f["text"], f["unapproved_text"]) for f in internet] == [("zone", "all ports", "all ports")]
    assert seg["reaches_internet"] == ["tokenizer/tokenizer"]
    assert seg["not_isolated"] == [{"workload": "tokenizer/tokenizer", "direction": "egress"}]
    card = _record(seg["outbound"], "from", "payments/payment-api")["flows"]
    assert [(f["to"], f["text"], f["unapproved_text"]) for f in card] == [("zone/card-processor", "TCP 443", "none")]


def test_example_dmz_and_matrix_touch_only_the_cde(example: Report) -> None:
    seg = example.segmentation
    assert seg is not None
    assert [d["namespace"] for d in seg["dmz"]] == ["default", "ingress"]
    cells = seg["namespace_matrix"]["cells"]
    assert cells, "the example has flows into and out of the CDE"
    assert all("payments" in (c["from"], c["to"]) or "tokenizer" in (c["from"], c["to"]) for c in cells)
    assert {"from": "ingress", "to": "payments", "ports": {"TCP": [[8443, 8443]]}, "text": "TCP 8443"} in cells
    assert seg["summary"]["unapproved_inbound_flows"] == 0
    assert seg["not_enforceable"] == []
    assert seg["not_analysed"] == []


def test_json_report_and_svg_carry_the_evidence(example: Report) -> None:
    doc = json.loads(render(example, "json"))
    assert doc["segmentation"]["cde_namespaces"] == ["payments", "tokenizer"]
    assert doc["segmentation"]["summary"] == dict(example.segmentation["summary"])  # type: ignore[index]
    svg = render_svg(example)
    assert svg is not None
    text = svg.decode()
    assert text.startswith("<svg ")
    assert 'class="node cde" data-name="payments"' in text
    assert "ingress -&gt; payments: TCP 8443" in text


NO_POLICIES = """
apiVersion: v1
kind: Namespace
metadata: {name: pay, labels: {kubepci.io/scope: cde}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: pay}
spec:
  selector: {matchLabels: {app: api}}
  template: {metadata: {labels: {app: api}}, spec: {containers: [{name: api, image: a:1}]}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: worker, namespace: pay}
spec:
  selector: {matchLabels: {app: worker}}
  template: {metadata: {labels: {app: worker}}, spec: {containers: [{name: w, image: w:1}]}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template: {metadata: {labels: {app: web}}, spec: {containers: [{name: web, image: web:1}]}}
"""


def test_no_evidence_when_nothing_needed_reachability() -> None:
    inventory = _inventory(NO_POLICIES)
    analyzers = standard_analyzers(inventory, Config())
    report = assess(inventory, Config(), default_catalog().select(["workload-privileged"]), load_tree(), now=NOW,
                    analyzers=analyzers)
    assert report.segmentation is None
    assert not analyzers.computed("netpol"), "deciding to leave the evidence out must not compute the model"
    assert json.loads(render(report, "json"))["segmentation"] is None
    assert render_svg(report) is None


def test_policies_alone_bring_the_evidence() -> None:
    policy = ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: pay}\n"
              "spec: {podSelector: {}, policyTypes: [Ingress, Egress]}\n")
    inventory = _inventory(NO_POLICIES + "---\n" + policy)
    report = assess(inventory, Config(), default_catalog().select(["workload-privileged"]), load_tree(), now=NOW)
    assert report.segmentation is not None
    assert report.segmentation["inbound"] == []
    assert report.segmentation["outbound"] == []
    assert report.segmentation["namespace_matrix"]["cells"] == []


def test_identical_flows_are_listed_once_for_all_their_workloads() -> None:
    inventory = _inventory(NO_POLICIES)
    report = assess(inventory, Config(), default_catalog().select(SEGMENTATION_CHECKS), load_tree(), now=NOW)
    seg = report.segmentation
    assert seg is not None
    assert [r["from"] for r in seg["outbound"]] == [["pay/api", "pay/worker"]]
    assert [(f["to"], f["text"]) for f in seg["outbound"][0]["flows"]] == [
        ("zone/internet", "all ports"), ("shop/web", "all ports")]
    assert seg["summary"]["outbound_flows"] == 4  # counted per CDE workload
    assert [r["to"] for r in seg["inbound"]] == [["pay/api", "pay/worker"]]
    assert [(f["from"], f["kind"], f["peer"]) for f in seg["inbound"][0]["flows"]] == [
        ("*", "cluster", "every pod in the cluster (3 workloads)"), ("zone/internet", "zone", "zone/internet")]
    assert sorted((w["workload"], w["direction"]) for w in seg["not_isolated"]) == [
        ("pay/api", "egress"), ("pay/api", "ingress"), ("pay/worker", "egress"), ("pay/worker", "ingress")]

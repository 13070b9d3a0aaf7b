"""The engine: violations -> FAIL, silence -> PASS, exceptions -> ERROR, scope applied."""

from __future__ import annotations

from collections.abc import Iterator

from kubepci.checks._registry import Catalog, CheckContext, check
from kubepci.config import Config
from kubepci.engine import evaluate
from kubepci.inventory import Inventory, Workload
from kubepci.inventory.loaders.manifests import parse_text
from kubepci.model import Scope, Severity, Status, Violation

MANIFESTS = """\
apiVersion: v1
kind: Namespace
metadata: {name: payments, labels: {kubepci.io/scope: cde}}
---
apiVersion: v1
kind: Pod
metadata: {name: api, namespace: payments}
spec: {containers: [{name: a, image: x}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop}
spec: {containers: [{name: w, image: boom}]}
---
apiVersion: v1
kind: Pod
metadata: {name: dns, namespace: kube-system}
spec: {containers: [{name: d, image: x}]}
"""


@check(id="test-image-x", title="Images must be x", requirements=("2.2.6",), blog=("R5",),
       severity=Severity.LOW, targets=("workload",), remediation="Use x.")
def image_x(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """Raises on 'boom' to prove exceptions become ERROR findings."""
    for c in wl.containers:
        if c.image == "boom":
            raise RuntimeError("cannot parse")
        if c.image != "x":
            yield Violation("not x", c.path)


@check(id="test-cde-only", title="CDE pods must be named api", requirements=("2.2.6",), blog=("R5",),
       severity=Severity.HIGH, targets=("Pod",), remediation="Rename.", applies_to="cde")
def cde_only(res: object, ctx: CheckContext) -> Iterator[Violation]:
    yield Violation("always", "metadata.name")


def _inventory() -> Inventory:
    resources, problems = parse_text(MANIFESTS, "m.yaml")
    assert not problems
    return Inventory.build(resources)


def test_error_pass_and_exempt_namespace() -> None:
    result = evaluate(Catalog((image_x,)), _inventory(), Config())
    assert [(str(f.resource), f.status) for f in result.findings] == [("shop/Pod/web", Status.ERROR)]
    error = result.findings[0]
    assert "RuntimeError: cannot parse" in error.message
    assert error.location is not None
    assert error.location.line == 10
    assert [str(r) for r in result.passed["test-image-x"]] == ["payments/Pod/api"]
    assert result.skipped["test-image-x"] == 1  # kube-system is exempt by default


def test_cde_only_check_skips_other_scopes() -> None:
    result = evaluate(Catalog((cde_only,)), _inventory(), Config())
    assert [(str(f.resource), f.scope) for f in result.findings] == [("payments/Pod/api", Scope.CDE)]
    assert result.evaluated["test-cde-only"] == 1


def test_disabled_and_severity_override() -> None:
    from kubepci.config import parse_config

    cfg = parse_config("checks: {test-cde-only: {severity: critical}, test-image-x: {enabled: false}}\n")
    result = evaluate(Catalog((image_x, cde_only)), _inventory(), cfg)
    assert {f.check_id for f in result.findings} == {"test-cde-only"}
    assert result.findings[0].severity is Severity.CRITICAL


def test_controller_owned_pods_are_judged_once_on_their_controller() -> None:
    text = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec: {template: {spec: {containers: [{name: w, image: boom}]}}}
---
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: web-5d8f
  namespace: shop
  ownerReferences: [{apiVersion: apps/v1, kind: Deployment, name: web, controller: true, uid: u1}]
spec: {template: {spec: {containers: [{name: w, image: boom}]}}}
---
apiVersion: v1
kind: Pod
metadata:
  name: web-5d8f-x2
  namespace: shop
  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-5d8f, controller: true, uid: u2}]
spec: {containers: [{name: w, image: boom}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: orphan
  namespace: shop
  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: gone, controller: true, uid: u3}]
spec: {containers: [{name: w, image: boom}]}
"""
    resources, problems = parse_text(text, "live.yaml")
    assert not problems
    inventory = Inventory.build(resources)
    assert [(w.resource.name, w.owned) for w in inventory.workloads] == [
        ("web", False), ("web-5d8f", True), ("web-5d8f-x2", True), ("orphan", False)]
    result = evaluate(Catalog((image_x,)), inventory, Config())
    assert sorted(str(f.resource) for f in result.findings) == ["shop/Deployment/web", "shop/Pod/orphan"]

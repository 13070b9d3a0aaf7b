"""Helm loader: real offline rendering through Helm's own Go code (helm-python-sdk)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kubepci.inventory.loaders.helm import is_helm_chart, merge_values, render_chart
from kubepci.model import Resource, SourceLocation

CHARTS = Path(__file__).parent / "data" / "charts"
PAYMENTS = CHARTS / "payments"
PROD_VALUES = CHARTS / "payments-prod-values.yaml"


def by_kind(resources: list[Resource]) -> dict[str, Resource]:
    found: dict[str, Resource] = {}
    for res in resources:
        assert res.kind not in found, f"two {res.kind} objects"
        found[res.kind] = res
    return found


def container(deployment: Resource) -> dict[str, Any]:
    first: dict[str, Any] = deployment.body["spec"]["template"]["spec"]["containers"][0]
    return first


def test_defaults_render_with_helpers_and_template_locations() -> None:
    resources, problems = render_chart(PAYMENTS)

    assert problems == []
    kinds = by_kind(resources)
    assert set(kinds) == {"Deployment", "Service", "ServiceAccount"}  # NetworkPolicy is off
    deploy = kinds["Deployment"]
    assert deploy.ref.name == "kubepci-payments"
    assert deploy.namespace == "default"
    assert deploy.labels["pci.kubepci.io/scope"] == "cde"  # from _helpers.tpl
    assert deploy.labels["app.kubernetes.io/version"] == "1.4.2"
    assert deploy.body["spec"]["replicas"] == 1
    assert container(deploy)["image"] == "registry.example.test/payments/api:1.4.2"  # appVersion
    assert container(deploy)["securityContext"]["readOnlyRootFilesystem"] is True
    assert deploy.location == SourceLocation(f"{PAYMENTS}/templates/deployment.yaml", 1)
    assert kinds["Service"].location == SourceLocation(f"{PAYMENTS}/templates/service.yaml", 1)
    # Second document of service.yaml: line 21 of the *rendered* template (the labels include
    # expanded to four lines), not line 18 of the source.
    assert kinds["ServiceAccount"].location == SourceLocation(f"{PAYMENTS}/templates/service.yaml", 21)


def test_release_name_and_namespace_reach_the_templates() -> None:
    resources, problems = render_chart(PAYMENTS, release_name="pay", namespace="cde-payments")

    assert problems == []
    kinds = by_kind(resources)
    assert kinds["Deployment"].ref.name == "pay-payments"
    assert kinds["Deployment"].namespace == "cde-payments"
    assert kinds["Service"].body["spec"]["selector"]["app.kubernetes.io/instance"] == "pay"


def test_values_file_overrides_defaults_and_enables_conditional_template() -> None:
    resources, problems = render_chart(PAYMENTS, values_files=[PROD_VALUES])

    assert problems == []
    kinds = by_kind(resources)
    deploy = kinds["Deployment"]
    assert deploy.body["spec"]["replicas"] == 3
    assert container(deploy)["image"] == "registry.example.test/payments/api:1.5.0"
    assert container(deploy)["imagePullPolicy"] == "IfNotPresent"  # untouched default survives
    policy = kinds["NetworkPolicy"]
    assert policy.ref.name == "kubepci-payments-ingress"
    peer = policy.body["spec"]["ingress"][0]["from"][0]
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "checkout"}
    # The template opens with `{{- if }}` and a comment: the object starts on rendered line 3.
    assert policy.location == SourceLocation(f"{PAYMENTS}/templates/networkpolicy.yaml", 3)


def test_set_overrides_nested_value_and_toggles_conditional_template() -> None:
    resources, problems = render_chart(
        PAYMENTS,
        set_values=[
            "securityContext.readOnlyRootFilesystem=false,image.tag=9.9.9",
            "networkPolicy.enabled=true",
            "networkPolicy.allowFromNamespace=pos",
        ],
    )

    assert problems == []
    kinds = by_kind(resources)
    security = container(kinds["Deployment"])["securityContext"]
    assert security == {
        "readOnlyRootFilesystem": False,
        "runAsNonRoot": True,  # siblings of the overridden key are kept
        "allowPrivilegeEscalation": False,
    }
    assert container(kinds["Deployment"])["image"].endswith(":9.9.9")
    peer = kinds["NetworkPolicy"].body["spec"]["ingress"][0]["from"][0]
    assert peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == "pos"


def test_set_wins_over_values_file_and_can_switch_a_template_off() -> None:
    resources, problems = render_chart(
        PAYMENTS, values_files=[PROD_VALUES], set_values=["replicaCount=5,networkPolicy.enabled=false"]
    )

    assert problems == []
    kinds = by_kind(resources)
    assert "NetworkPolicy" not in kinds
    assert kinds["Deployment"].body["spec"]["replicas"] == 5
    assert container(kinds["Deployment"])["image"].endswith(":1.5.0")  # rest of the file applies


def test_broken_template_is_unreadable_and_other_charts_still_render() -> None:
    results = {name: render_chart(CHARTS / name) for name in ("broken-template", "payments")}

    broken_resources, broken_problems = results["broken-template"]
    assert broken_resources == []  # Helm renders a chart all or nothing
    assert len(broken_problems) == 1
    problem = broken_problems[0]
    assert problem.location == SourceLocation(f"{CHARTS}/broken-template/templates/secret.yaml", 6)
    assert "helm chart 'broken-template'" in problem.reason
    assert "database.password must be set" in problem.reason

    resources, problems = results["payments"]
    assert problems == []
    assert by_kind(resources)["Deployment"].ref.name == "kubepci-payments"


def test_broken_template_renders_once_the_required_value_is_given() -> None:
    resources, problems = render_chart(CHARTS / "broken-template", set_values=["database.password=s3cr3t"])

    assert problems == []
    kinds = by_kind(resources)
    assert kinds["Secret"].body["stringData"] == {"password": "s3cr3t"}
    assert kinds["ConfigMap"].location.file == f"{CHARTS}/broken-template/templates/configmap.yaml"


def test_template_runtime_error_names_template_and_line() -> None:
    # A --set list literal makes extraPorts [""], whose items have no .name for the range.
    resources, problems = render_chart(PAYMENTS, set_values=["service.extraPorts={}"])

    assert resources == []
    assert len(problems) == 1
    assert problems[0].location == SourceLocation(f"{PAYMENTS}/templates/service.yaml", 17)
    assert "can't evaluate field name" in problems[0].reason


def test_template_syntax_error_names_template_and_line(tmp_path: Path) -> None:
    chart = tmp_path / "syntax"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: syntax\nversion: 0.1.0\n", encoding="utf-8")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\n{{ if .Values.x }\n", encoding="utf-8"
    )

    resources, problems = render_chart(chart)

    assert resources == []
    assert problems[0].location == SourceLocation(f"{chart}/templates/cm.yaml", 3)
    assert "helm chart 'syntax'" in problems[0].reason


def test_missing_dependency_is_unreadable_naming_chart_and_dependency() -> None:
    resources, problems = render_chart(CHARTS / "missing-dependency")

    assert resources == []
    assert len(problems) == 1
    assert problems[0].location.file == f"{CHARTS}/missing-dependency/Chart.yaml"
    reason = problems[0].reason
    assert "helm chart 'missing-dependency'" in reason
    assert "'postgresql'" in reason
    assert "missing" in reason
    assert "helm dependency build" in reason


def test_subchart_and_crd_sources_point_at_their_files() -> None:
    resources, problems = render_chart(CHARTS / "umbrella", namespace="audit")

    assert problems == []
    kinds = by_kind(resources)
    sink = kinds["ConfigMap"]
    assert sink.ref.name == "kubepci-audit-sink"
    assert sink.body["data"] == {"retentionDays": "365"}  # parent values override the subchart's
    assert sink.location.file == f"{CHARTS}/umbrella/charts/audit-sink/templates/configmap.yaml"
    crd = kinds["CustomResourceDefinition"]
    assert crd.location == SourceLocation(f"{CHARTS}/umbrella/crds/auditpolicies.yaml", 1)
    assert kinds["Namespace"].ref.name == "audit"


def test_subchart_condition_from_set_drops_its_objects() -> None:
    resources, problems = render_chart(CHARTS / "umbrella", set_values=["audit-sink.enabled=false"])

    assert problems == []
    assert {r.kind for r in resources} == {"Namespace", "CustomResourceDefinition"}


def test_schema_violation_is_unreadable() -> None:
    resources, problems = render_chart(PAYMENTS, set_values=["replicaCount=0"])

    assert resources == []
    assert len(problems) == 1
    assert problems[0].location.file == str(PAYMENTS)
    assert "/replicaCount" in problems[0].reason
    assert "minimum" in problems[0].reason


def test_bad_set_expression_is_unreadable() -> None:
    resources, problems = render_chart(PAYMENTS, set_values=["image.tag"])

    assert resources == []
    assert len(problems) == 1
    assert problems[0].location == SourceLocation(str(PAYMENTS))
    assert "invalid --set expression 'image.tag'" in problems[0].reason


def test_bad_values_file_is_unreadable_at_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "values.yaml"
    bad.write_text("image: [unclosed\n", encoding="utf-8")
    missing = tmp_path / "absent.yaml"

    resources, problems = render_chart(PAYMENTS, values_files=[bad, missing])

    assert resources == []
    assert [p.location.file for p in problems] == [str(bad), str(missing)]
    assert problems[0].reason.startswith("invalid Helm values file:")
    assert problems[1].reason.startswith("cannot read Helm values file:")


def test_invalid_release_name_is_unreadable() -> None:
    resources, problems = render_chart(PAYMENTS, release_name="Not_A_DNS_Label")

    assert resources == []
    assert "invalid Helm release name 'Not_A_DNS_Label'" in problems[0].reason


def test_directory_without_chart_yaml_is_unreadable(tmp_path: Path) -> None:
    resources, problems = render_chart(tmp_path)

    assert resources == []
    assert problems[0].reason == "not a Helm chart (no Chart.yaml)"


def test_is_helm_chart(tmp_path: Path) -> None:
    assert is_helm_chart(PAYMENTS)
    assert not is_helm_chart(PAYMENTS / "templates")
    assert not is_helm_chart(PAYMENTS / "Chart.yaml")
    assert not is_helm_chart(tmp_path / "nothing")


@pytest.mark.parametrize(
    ("base", "override", "indexed", "expected"),
    [
        ({"a": {"x": 1, "y": 2}}, {"a": {"y": 3}}, (), {"a": {"x": 1, "y": 3}}),
        ({"a": {"x": 1}}, {"a": "flat"}, (), {"a": "flat"}),
        ({"a": 1}, {"a": None}, (), {"a": None}),  # null survives so Helm can delete the default
        ({"l": ["p", "q", "r"]}, {"l": ["x"]}, (), {"l": ["x"]}),  # -f file or --set l={x}
        ({"l": ["p", "q", "r"]}, {"l": [None, "Q"]}, ("l",), {"l": ["p", "Q", "r"]}),  # l[1]=Q
        ({"l": [{"n": "a", "p": 1}]}, {"l": [{"p": 2}]}, ("l",), {"l": [{"n": "a", "p": 2}]}),
        ({"l": ["p"]}, {"l": [None, None, "z"]}, ("l",), {"l": ["p", None, "z"]}),
    ],
)
def test_merge_values_layers_like_helm(
    base: dict[str, Any], override: dict[str, Any], indexed: tuple[str, ...], expected: dict[str, Any]
) -> None:
    before = repr(base)
    assert merge_values(base, override, indexed) == expected
    assert repr(base) == before  # inputs are not modified


def test_set_with_index_changes_one_list_element_and_keeps_the_rest(tmp_path: Path) -> None:
    values = tmp_path / "ports.yaml"
    values.write_text(
        "service:\n  port: 8443\n  extraPorts:\n    - {name: metrics, port: 9090}\n"
        "    - {name: admin, port: 9000}\n",
        encoding="utf-8",
    )
    resources, problems = render_chart(
        PAYMENTS, values_files=[values], set_values=["service.extraPorts[1].port=9443,service.port=7443"]
    )
    assert problems == []
    assert by_kind(resources)["Service"].body["spec"]["ports"] == [
        {"name": "https", "port": 7443, "targetPort": "https"},
        {"name": "metrics", "port": 9090},
        {"name": "admin", "port": 9443},
    ]

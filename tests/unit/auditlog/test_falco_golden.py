"""Falco's own k8s_audit test suite is the oracle for the Falco-equivalent review checks.

For every case of falco_k8s_audit_tests.yaml (falco@65435d44) the trace file is replayed through a
Reviewer whose ReviewContext is built from the same rule files the case loads: lists come from
the Falco rules at the test commit plus the case's overlay files, and macro overrides come from
``falco_context`` in falco_rule_mapping.yaml. Alerts are translated to Falco rule names through the
mapping, and ``detect_counts`` must match exactly. A ``detect: False`` case must produce no alert
that maps to any Falco rule.
"""

from __future__ import annotations

import fnmatch
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubepci.auditlog.rules import CHECKS, Alert, Priority, ReviewContext, Reviewer

FALCO = Path("../shared/testdata/falco-k8s-audit")
RULES_AT_COMMIT = FALCO / "rules-at-test-commit" / "k8s_audit_rules.yaml"
OVERRIDES = FALCO / "rules-at-test-commit" / "test-overrides"
MAPPING_FILE = Path(__file__).with_name("falco_rule_mapping.yaml")


class _MuxLoader(yaml.CSafeLoader):
    """Safe loader that reads avocado's ``!mux`` tag as a plain mapping."""


_MuxLoader.add_constructor(
    "!mux",
    lambda loader, node: loader.construct_mapping(node, deep=True),  # type: ignore[arg-type]
)

MAPPING: dict[str, Any] = yaml.load(MAPPING_FILE.read_text(), Loader=yaml.CSafeLoader)
# _MuxLoader is a CSafeLoader subclass with one extra *mapping* tag, so it is as safe as its base.
CASES: dict[str, Any] = yaml.load(
    (FALCO / "falco_k8s_audit_tests.yaml").read_text(),
    Loader=_MuxLoader,  # noqa: S506
)["trace_files"]
TO_FALCO: dict[str, str] = {
    check: entry["falco_rule"] for check, entry in MAPPING["checks"].items() if entry["falco_rule"]
}


def _rule_items(path: Path) -> list[dict[str, Any]]:
    return [item for item in yaml.safe_load(path.read_text()) or [] if isinstance(item, dict)]


def _skip_reason(case_name: str) -> str | None:
    for pattern, reason in MAPPING["skipped_cases"].items():
        if fnmatch.fnmatchcase(case_name, pattern):
            return str(reason)
    return None


def _falco_context(rules_files: list[str]) -> ReviewContext:
    """The ReviewContext equal to Falco's configuration after loading ``rules_files`` in order."""
    lists: dict[str, list[str]] = {}
    fields: dict[str, Any] = dict(MAPPING["falco_context"]["fixed"])
    for rules_file in rules_files:
        name = Path(rules_file).name
        if name == "falco_rules.yaml":
            continue  # syscall rules: not part of the k8s_audit review
        path = RULES_AT_COMMIT if rules_file == "../rules/k8s_audit_rules.yaml" else OVERRIDES / name
        for item in _rule_items(path):
            if "list" in item:
                items = [str(i) for i in item.get("items") or []]
                lists[item["list"]] = (lists.get(item["list"], []) if item.get("append") else []) + items
            elif "macro" in item and path != RULES_AT_COMMIT:
                fields.update(MAPPING["falco_context"]["macro_overrides"][name])

    def resolve(list_name: str, seen: frozenset[str] = frozenset()) -> set[str]:
        out: set[str] = set()
        for item in lists.get(list_name, []):
            out |= resolve(item, seen | {list_name}) if item in lists and item not in seen else {item}
        return out

    for field_name, list_names in MAPPING["falco_context"]["lists"].items():
        fields[field_name] = frozenset().union(*(resolve(n) for n in list_names))
    for key in ("admin_usernames", "system_role_exceptions", "sensitive_host_paths", "allowed_images"):
        if fields.get(key) is not None:
            fields[key] = frozenset(fields[key])
    return ReviewContext(**fields)


def _replay(case: dict[str, Any]) -> tuple[list[Alert], list[dict[str, Any]]]:
    ctx = _falco_context(case["rules_file"])
    reviewer = Reviewer(ctx)
    trace = FALCO / "trace_files" / Path(case["trace_file"]).name
    events = [json.loads(line) for line in trace.read_text().splitlines() if line.strip()]
    alerts = [alert for event in events for alert in reviewer.review_k8s_event(event)]
    return alerts, events


@pytest.mark.parametrize("case_name", sorted(CASES))
def test_falco_case(case_name: str) -> None:
    reason = _skip_reason(case_name)
    if reason is not None:
        pytest.skip(reason)
    case = CASES[case_name]
    alerts, events = _replay(case)
    mapped = [a for a in alerts if a.check in TO_FALCO]
    counts = Counter(TO_FALCO[a.check] for a in mapped)
    expected = {rule: n for entry in case.get("detect_counts") or [] for rule, n in entry.items()}
    if not case["detect"]:
        assert counts == Counter(), (
            f"{case_name}: Falco expects no detection, got {[a.message for a in mapped]}"
        )
        return
    for rule, n in expected.items():
        assert counts[rule] == n, f"{case_name}: {rule} expected {n}, got {counts[rule]}"
    level = Priority.parse(case["detect_level"])
    assert any(a.priority == level for a in mapped), f"no alert at Falco's detect_level {level}"
    # Evidence must come from the trace: the very request that triggered Falco.
    audit_ids = {e.get("auditID") for e in events}
    users = {(e.get("user") or {}).get("username") for e in events}
    for alert in mapped:
        assert alert.audit_id in audit_ids
        assert alert.user in users
        assert alert.message


def test_every_case_is_run_or_skipped_for_a_documented_reason() -> None:
    skipped = sorted(name for name in CASES if _skip_reason(name) is not None)
    assert skipped == sorted(
        [name for name in CASES if name.startswith("compat_engine_v4_")] + ["json_pointer_correct_parse"]
    )
    assert len(CASES) - len(skipped) == 58


def test_every_falco_rule_at_the_test_commit_is_mapped_or_explained() -> None:
    falco_rules = {item["rule"] for item in _rule_items(RULES_AT_COMMIT) if "rule" in item}
    explained = set(TO_FALCO.values()) | set(MAPPING["unmodelled_falco_rules"])
    assert falco_rules == explained


def test_mapping_documents_exactly_the_implemented_checks() -> None:
    assert set(MAPPING["checks"]) == set(CHECKS)
    assert {spec.detection for spec in CHECKS.values()} == {f"D{i:02d}" for i in range(1, 23)}
    for check, entry in MAPPING["checks"].items():
        assert check.startswith(CHECKS[check].detection + ".")
        assert isinstance(entry["differences"], list)
        assert entry["falco_rule"] or entry.get("reference") or entry["falco_rule_current"], check


def test_current_plugin_rule_names_exist() -> None:
    current = {
        item["rule"] for item in _rule_items(FALCO / "k8s_audit_rules.current-plugin.yaml") if "rule" in item
    }
    named = {name for entry in MAPPING["checks"].values() for name in entry["falco_rule_current"]}
    assert named <= current
    assert current - named == {"All K8s Audit Events"}


def test_disallowed_user_case_reports_the_user_and_the_target() -> None:
    alerts, _ = _replay(CASES["user_outside_allowed_set"])
    [alert] = [a for a in alerts if a.check == "D12.user_not_allowed"]
    assert alert.user == "some-user"
    assert alert.resource == "namespaces"
    assert alert.name == "foo"
    assert alert.priority is Priority.WARNING
    assert "some-user is not an allowed user" in alert.message


def test_configmap_credentials_case_names_keys_not_values() -> None:
    alerts, events = _replay(CASES["create_configmap_private_creds"])
    found = [a for a in alerts if a.check == "D18.configmap_credentials"]
    assert [a.audit_id for a in found] == [e["auditID"] for e in events]
    for alert in found:
        assert "access.properties" in alert.message
        assert "ui.properties" not in alert.message
        assert "MY-ID" not in alert.message
        assert "MY-KEY" not in alert.message


def test_malformed_trace_line_is_not_an_event() -> None:
    alerts, events = _replay(CASES["fal_01_003"])
    assert events == [{"kind": 0}]
    assert alerts == []

"""SARIF 2.1.0 for code-scanning UIs: one rule per check, one result per FAIL/ERROR/WAIVED finding.

Waived findings are kept as results with an external suppression carrying the waiver id, so a
code-scanning UI shows them as dismissed rather than losing them.
"""

from __future__ import annotations

from typing import Any

import orjson

from kubepci.model import Finding, Severity, Status
from kubepci.model.report import Report

__all__ = ["render"]

_LEVEL = {Severity.CRITICAL: "error", Severity.HIGH: "error", Severity.MEDIUM: "warning",
          Severity.LOW: "note", Severity.INFO: "note"}
_SECURITY_SEVERITY = {Severity.CRITICAL: "9.5", Severity.HIGH: "8.0", Severity.MEDIUM: "5.5",
                      Severity.LOW: "3.0", Severity.INFO: "0.0"}


def _result(f: Finding, rule_index: dict[str, int]) -> dict[str, Any]:
    result: dict[str, Any] = {
        "ruleId": f.check_id,
        "ruleIndex": rule_index[f.check_id],
        "level": "error" if f.status is Status.ERROR else _LEVEL[f.severity],
        "message": {"text": f"{f.resource}: {f.message}"},
        "locations": [{
            "logicalLocations": [{"fullyQualifiedName": f"{f.resource}#{f.path}", "kind": "resource"}],
        }],
        "properties": {"status": f.status.value, "requirements": list(f.requirements), "scope": f.scope.value},
    }
    if f.location is not None and f.location.file and not f.location.file.startswith("("):
        phys: dict[str, Any] = {"artifactLocation": {"uri": f.location.file}}
        if f.location.line:
            phys["region"] = {"startLine": f.location.line}
        result["locations"][0]["physicalLocation"] = phys
    if f.status is Status.WAIVED:
        result["suppressions"] = [{"kind": "external", "status": "accepted",
                                   "justification": f"waiver {f.waiver_id}"}]
    return result


def render(report: Report) -> bytes:
    rules = []
    rule_index: dict[str, int] = {}
    for i, c in enumerate(report.checks):
        rule_index[c.id] = i
        rules.append({
            "id": c.id,
            "name": c.id,
            "shortDescription": {"text": c.title},
            "fullDescription": {"text": c.description or c.title},
            "help": {"text": c.remediation},
            "properties": {
                "tags": ["security", "pci-dss", *[f"PCI-DSS-{r}" for r in c.requirements]],
                "security-severity": _SECURITY_SEVERITY[c.severity],
                "precision": "high",
            },
        })
    results = [_result(f, rule_index) for f in report.findings
               if f.status in (Status.FAIL, Status.ERROR, Status.WAIVED) and f.check_id in rule_index]
    doc = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "kubepci", "version": report.metadata.tool_version, "rules": rules}},
            "results": results,
            "properties": {"catalogDigest": report.metadata.catalog_digest,
                           "generatedAt": report.metadata.generated_at},
        }],
    }
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)

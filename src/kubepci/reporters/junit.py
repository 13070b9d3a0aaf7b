"""JUnit XML for CI dashboards: a testsuite per check, a testcase per evaluated resource."""

from __future__ import annotations

from collections import defaultdict
from xml.etree import ElementTree as ET

from kubepci.model import Finding, Status
from kubepci.model.report import Report

__all__ = ["render"]


def render(report: Report) -> bytes:
    by_check: dict[str, list[Finding]] = defaultdict(list)
    for f in report.findings:
        by_check[f.check_id].append(f)
    root = ET.Element("testsuites", name="kubepci", timestamp=report.metadata.generated_at)
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for c in report.checks:
        findings = by_check.get(c.id, [])
        passed = report.passed.get(c.id, ())
        suite = ET.SubElement(root, "testsuite", name=c.id)
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        grouped: dict[str, list[Finding]] = defaultdict(list)
        for f in findings:
            grouped[str(f.resource)].append(f)
        for ref, items in sorted(grouped.items()):
            case = ET.SubElement(suite, "testcase", classname=c.id, name=ref)
            counts["tests"] += 1
            statuses = {f.status for f in items}
            text = "\n".join(f"{f.path}: {f.message}" + (f" ({f.location})" if f.location else "") for f in items)
            if Status.ERROR in statuses:
                ET.SubElement(case, "error", message=items[0].message).text = text
                counts["errors"] += 1
            elif Status.FAIL in statuses:
                ET.SubElement(case, "failure", message=f"{c.title}: {items[0].message}",
                              type=items[0].severity.label).text = text + f"\nfix: {c.remediation}"
                counts["failures"] += 1
            else:
                waiver = next((f.waiver_id for f in items if f.waiver_id), "")
                ET.SubElement(case, "skipped", message=f"waived by {waiver}")
                counts["skipped"] += 1
        for ref in sorted(str(r) for r in passed):
            ET.SubElement(suite, "testcase", classname=c.id, name=ref)
            counts["tests"] += 1
        for key, value in counts.items():
            suite.set(key, str(value))
            totals[key] += value
    for key, value in totals.items():
        root.set(key, str(value))
    ET.indent(root)
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data + b"\n"

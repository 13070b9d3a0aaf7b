"""The JSON report (schema ``kubepci.report/v1``, documented in docs/report-schema.md).

Byte-stable: fixed key order, sorted findings, no timestamps other than the injected clock.
"""

from __future__ import annotations

import io
from typing import Any, BinaryIO

import orjson

from kubepci.model import Finding
from kubepci.model.report import Report, RequirementResult

__all__ = ["render", "to_dict"]


def _finding(f: Finding) -> dict[str, Any]:
    return {
        "check": f.check_id,
        "status": f.status.value,
        "severity": f.severity.label,
        "resource": {
            "apiVersion": f.resource.api_version,
            "kind": f.resource.kind,
            "namespace": f.resource.namespace,
            "name": f.resource.name,
        },
        "location": str(f.location) if f.location else None,
        "path": f.path,
        "message": f.message,
        "requirements": list(f.requirements),
        "scope": f.scope.value,
        "enforcement_point": f.enforcement_point.value,
        "waiver": f.waiver_id,
    }


def _requirement(r: RequirementResult) -> dict[str, Any]:
    return {
        "id": r.id,
        "title": r.title,
        "status": r.status,
        "verdict": r.verdict,
        "blog": r.blog,
        "v3_2_1": r.v3_2_1,
        "principal": r.principal,
        "checks": list(r.checks),
        "failed": r.failed,
        "waived": r.waived,
        "errors": r.errors,
        "passed": r.passed,
    }


def to_dict(report: Report, *, with_findings: bool = True) -> dict[str, Any]:
    m = report.metadata
    return {
        "schema": report.schema_version,
        "tool": {"name": "kubepci", "version": m.tool_version},
        "standard": {"name": m.standard, "version": m.standard_version},
        "run": {
            "generated_at": m.generated_at,
            "catalog_digest": m.catalog_digest,
            "catalog_size": m.catalog_size,
            "config": m.config_source,
            "fail_on": m.fail_on,
            "resources": m.resources,
            "inputs": [{"source": name, "sha256": digest} for name, digest in m.inputs],
        },
        "summary": {
            "exit_code": report.exit_code,
            "counts": dict(report.counts),
            "principal_requirements": [
                {"id": r.id, "title": r.title, "verdict": r.verdict, "failed": r.failed, "waived": r.waived}
                for r in report.principal()
            ],
        },
        "scope": {k: list(v) for k, v in report.scope.items()},
        "requirements": [_requirement(r) for r in report.requirements],
        "findings": [_finding(f) for f in report.findings] if with_findings else [],
        "passed": {check: len(refs) for check, refs in sorted(report.passed.items())},
        "could_not_read": [{"location": str(u.location), "reason": u.reason} for u in report.unreadable],
        "waivers": {
            "defined": [w.to_dict() for w in report.waivers],
            "expired": [w.id for w in report.waivers_expired],
            "unused": [w.id for w in report.waivers_unused],
            "requests": [{"resource": r.resource, "text": r.text} for r in report.waiver_requests],
        },
        "segmentation": report.segmentation,
        "checks": [c.to_dict() for c in report.checks],
    }


_OPTIONS = orjson.OPT_INDENT_2
_CHUNK = 5000
_EMPTY_FINDINGS = b'\n  "findings": [],\n'


def write(report: Report, out: BinaryIO) -> None:
    """Stream the report: findings go out in chunks, so a 150k-finding report never exists as one
    dict tree plus one bytes object (that alone was ~220 MB of a 100k-object scan's peak).

    orjson (the stdlib encoder falls back to pure Python when indenting: 13 s for 134k findings)
    renders the document with an empty findings list and each chunk separately; a chunk's lines
    are indented one level deeper so the bytes equal a one-shot rendering of the whole dict."""
    head = orjson.dumps(to_dict(report, with_findings=False), option=_OPTIONS)
    split = head.index(_EMPTY_FINDINGS)
    findings = report.findings
    if not findings:
        out.write(head + b"\n")
        return
    out.write(head[:split] + b'\n  "findings": [')
    for start in range(0, len(findings), _CHUNK):
        body = orjson.dumps([_finding(f) for f in findings[start:start + _CHUNK]], option=_OPTIONS)
        out.write(b"\n" if start == 0 else b",\n")
        out.write(b"  " + body[2:-2].replace(b"\n", b"\n  "))
    out.write(b"\n  ],\n" + head[split + len(_EMPTY_FINDINGS):] + b"\n")


def render(report: Report) -> bytes:
    buffer = io.BytesIO()
    write(report, buffer)
    return buffer.getvalue()

"""The Report: everything a reporter may see (reporters never see engine, config or CLI)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kubepci.model import Finding, ResourceRef, Status, Unreadable

if TYPE_CHECKING:
    from kubepci.checks._registry import CheckMeta
    from kubepci.waivers import Waiver, WaiverRequest

__all__ = ["SCHEMA_VERSION", "Report", "RequirementResult", "RunMetadata", "Verdict"]

#: bumped on any incompatible change of the JSON report (documented in docs/report-schema.md)
SCHEMA_VERSION = "kubepci.report/v1"


class Verdict:
    """Per-requirement outcome shown to the auditor."""

    FAIL = "fail"
    ERROR = "error"
    PASS = "pass"  # noqa: S105 - a verdict, not a password
    PARTIAL = "partial"  # automated part passes; the rest needs manual attestation
    MANUAL = "manual"
    NOT_TESTED = "not-tested"  # automatable, but nothing in the input to test
    NOT_APPLICABLE = "not-applicable"
    INHERITED = "inherited"


@dataclass(frozen=True, slots=True)
class RequirementResult:
    id: str
    title: str
    status: str  # automated | partial | manual | not-applicable | inherited (from the tree)
    blog: str
    v3_2_1: str | None
    verdict: str
    checks: tuple[str, ...]
    failed: int
    passed: int
    waived: int
    errors: int
    principal: bool


@dataclass(frozen=True, slots=True)
class RunMetadata:
    tool_version: str
    catalog_digest: str
    catalog_size: int
    generated_at: str
    inputs: tuple[tuple[str, str], ...]
    config_source: str
    fail_on: str
    resources: int
    standard: str = "PCI DSS"
    standard_version: str = "4.0.1"


@dataclass(frozen=True, slots=True)
class Report:
    metadata: RunMetadata
    findings: tuple[Finding, ...]
    passed: Mapping[str, tuple[ResourceRef, ...]]
    checks: tuple[CheckMeta, ...]
    requirements: tuple[RequirementResult, ...]
    scope: Mapping[str, tuple[str, ...]]
    unreadable: tuple[Unreadable, ...]
    waivers: tuple[Waiver, ...] = ()
    waivers_expired: tuple[Waiver, ...] = ()
    waivers_unused: tuple[Waiver, ...] = ()
    waiver_requests: tuple[WaiverRequest, ...] = ()
    schema_version: str = SCHEMA_VERSION
    exit_code: int = 0
    counts: Mapping[str, int] = field(default_factory=dict)
    #: CDE segmentation evidence (JSON-able, kubepci.reporters.segmentation) when reachability was analysed
    segmentation: Mapping[str, Any] | None = None

    def by_status(self, status: Status) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.status is status)

    def principal(self) -> tuple[RequirementResult, ...]:
        return tuple(r for r in self.requirements if r.principal)

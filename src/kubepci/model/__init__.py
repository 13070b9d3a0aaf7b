"""Frozen value types shared by every part of kubepci.

Everything here is immutable so a scan result can be shared between threads, cached by the
admission webhook and rendered by several reporters without defensive copies.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Enforcement",
    "EnforcementPoint",
    "Finding",
    "Resource",
    "ResourceRef",
    "Scope",
    "Severity",
    "SourceLocation",
    "Status",
    "Unreadable",
    "Violation",
]


class Severity(enum.IntEnum):
    """Ordered so ``severity >= Severity.HIGH`` reads naturally."""

    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(s.label for s in cls)
            raise ValueError(f"unknown severity {text!r} (expected one of: {names})") from None


class Status(enum.Enum):
    PASS = "PASS"  # noqa: S105 - a verdict, not a password
    FAIL = "FAIL"
    ERROR = "ERROR"
    SKIPPED = "SKIPPED"
    WAIVED = "WAIVED"
    MANUAL = "MANUAL"


class Enforcement(enum.Enum):
    """What an admission point does with a failing check."""

    DENY = "deny"
    WARN = "warn"
    AUDIT = "audit"


class EnforcementPoint(enum.Enum):
    SCAN = "scan"
    ADMISSION = "admission"
    AUDIT = "audit"


class Scope(enum.Enum):
    """PCI scope of a resource (DESIGN.md "Scope")."""

    CDE = "cde"
    CONNECTED = "connected"
    OUT_OF_SCOPE = "out-of-scope"
    EXEMPT = "exempt"
    UNCLASSIFIED = "unclassified"
    CLUSTER = "cluster"


@dataclass(frozen=True, slots=True, order=True)
class SourceLocation:
    """Where a resource came from: file (or ``-``, ``helm:chart``, ``cluster``) and 1-based line."""

    file: str
    line: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass(frozen=True, slots=True, order=True)
class ResourceRef:
    """Identity of a Kubernetes object, ordered namespace-first for stable reports."""

    namespace: str
    kind: str
    name: str
    api_version: str = ""

    def __str__(self) -> str:
        return f"{self.namespace}/{self.kind}/{self.name}" if self.namespace else f"{self.kind}/{self.name}"


@dataclass(frozen=True, slots=True, eq=False)
class Resource:
    """One Kubernetes object as read, plus where it came from.

    ``body`` is the raw decoded mapping. It is treated as read-only by convention (copying every
    object into an immutable structure would double the cost of a 100k-object scan).
    """

    ref: ResourceRef
    body: Mapping[str, Any]
    location: SourceLocation
    synthetic: bool = False

    @property
    def kind(self) -> str:
        return self.ref.kind

    @property
    def namespace(self) -> str:
        return self.ref.namespace

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def metadata(self) -> Mapping[str, Any]:
        meta = self.body.get("metadata")
        return meta if isinstance(meta, Mapping) else {}

    @property
    def labels(self) -> Mapping[str, str]:
        labels = self.metadata.get("labels")
        return labels if isinstance(labels, Mapping) else {}

    @property
    def annotations(self) -> Mapping[str, str]:
        ann = self.metadata.get("annotations")
        return ann if isinstance(ann, Mapping) else {}


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A document or source that could not be read, kept for the report's "could not read" list."""

    location: SourceLocation
    reason: str


@dataclass(frozen=True, slots=True)
class Violation:
    """What a check body yields: a message and the field path it is about."""

    message: str
    path: str = ""


@dataclass(frozen=True, slots=True)
class Finding:
    """One verdict of one check on one resource (DESIGN.md "Findings")."""

    check_id: str
    resource: ResourceRef
    status: Status
    severity: Severity
    message: str
    path: str
    requirements: tuple[str, ...]
    scope: Scope
    location: SourceLocation | None = None
    enforcement_point: EnforcementPoint = EnforcementPoint.SCAN
    waiver_id: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    def sort_key(self) -> tuple[str, str, str, str, str, str]:
        """Plain strings: comparing ResourceRef dataclasses costs seconds on 100k findings."""
        r = self.resource
        return (self.check_id, r.namespace, r.kind, r.name, self.path, self.message)

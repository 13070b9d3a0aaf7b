"""What a check is: frozen metadata plus a pure body, and the Catalog that holds them.

``@check(...)`` returns a :class:`Check` value and registers nothing: the catalog is built from
an explicit module list (``kubepci.checks.MODULES``), so importing a module has no side effect
and a test can build a catalog from any subset.
"""

from __future__ import annotations

import hashlib
import json
import re
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from kubepci.model import Enforcement, EnforcementPoint, Severity, Violation

if TYPE_CHECKING:
    from kubepci.config import Config
    from kubepci.inventory import Inventory
    from kubepci.scope import ScopeMap

__all__ = [
    "APPLIES_TO",
    "VIEWS",
    "Catalog",
    "Check",
    "CheckContext",
    "CheckFn",
    "CheckMeta",
    "check",
]

#: special target tokens; any other token is a Kubernetes kind
VIEWS = ("workload", "namespace", "inventory", "*")
#: all: every scope; cde: only CDE resources; in-scope: CDE and connected
APPLIES_TO = ("all", "cde", "in-scope")

_ID = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)+$")
_REQ = re.compile(r"^(?:\d+|A\d)(?:\.\d+)*$")
_BLOG = re.compile(r"^R(?:[1-9]|1[0-2])$")

CheckFn = Callable[[Any, "CheckContext"], Iterable[Violation]]


@dataclass(frozen=True, slots=True)
class CheckMeta:
    id: str
    title: str
    requirements: tuple[str, ...]
    blog: tuple[str, ...]
    severity: Severity
    targets: tuple[str, ...]
    remediation: str
    applies_to: str = "all"
    include_exempt: bool = False
    enforcement: Enforcement = Enforcement.DENY
    refs: tuple[str, ...] = ()
    cel: str | None = None
    description: str = ""
    admission: bool = True
    #: optional cheap predicate on the target, evaluated once per target for every check sharing
    #: it (e.g. "runs a control-plane component"), so 17 flag checks do not each visit every workload
    where: Callable[[Any], bool] | None = None

    def problems(self) -> list[str]:
        """Metadata rules the meta-tests enforce (kept here so the CLI can lint user checks too)."""
        out: list[str] = []
        if not _ID.match(self.id):
            out.append(f"{self.id}: id must be kebab-case with at least two words")
        if not self.title or self.title.endswith("."):
            out.append(f"{self.id}: title must be a control phrase without a final period")
        if not self.requirements or not all(_REQ.match(r) for r in self.requirements):
            out.append(f"{self.id}: requirements must be PCI DSS v4.0.1 ids, got {self.requirements}")
        if not self.blog or not all(_BLOG.match(b) for b in self.blog):
            out.append(f"{self.id}: blog must be R1..R12, got {self.blog}")
        if not self.remediation.endswith(".") or self.remediation.count(". ") > 1:
            out.append(f"{self.id}: remediation must be one imperative sentence ending in a period")
        if self.applies_to not in APPLIES_TO:
            out.append(f"{self.id}: applies_to must be one of {APPLIES_TO}")
        if not self.targets:
            out.append(f"{self.id}: no targets")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "requirements": list(self.requirements),
            "blog": list(self.blog),
            "severity": self.severity.label,
            "targets": list(self.targets),
            "remediation": self.remediation,
            "applies_to": self.applies_to,
            "enforcement": self.enforcement.value,
            "refs": list(self.refs),
            "cel": self.cel,
            "description": self.description,
        }


@dataclass(frozen=True, slots=True)
class Check:
    meta: CheckMeta
    body: CheckFn

    @property
    def id(self) -> str:
        return self.meta.id


def check(
    *,
    id: str,
    title: str,
    requirements: Sequence[str],
    blog: Sequence[str],
    severity: Severity,
    targets: Sequence[str],
    remediation: str,
    applies_to: str = "all",
    include_exempt: bool = False,
    enforcement: Enforcement = Enforcement.DENY,
    refs: Sequence[str] = (),
    cel: str | None = None,
    admission: bool = True,
    where: Callable[[Any], bool] | None = None,
) -> Callable[[CheckFn], Check]:
    """Wrap a body into a Check. The body's docstring becomes the long description."""

    def wrap(fn: CheckFn) -> Check:
        meta = CheckMeta(
            id=id, title=title, requirements=tuple(requirements), blog=tuple(blog), severity=severity,
            targets=tuple(targets), remediation=remediation, applies_to=applies_to,
            include_exempt=include_exempt, enforcement=enforcement, refs=tuple(refs), cel=cel,
            description=" ".join((fn.__doc__ or "").split()), admission=admission, where=where,
        )
        return Check(meta, fn)

    return wrap


@dataclass(frozen=True, slots=True)
class CheckContext:
    """Read-only context a check body receives next to its target."""

    inventory: Inventory
    scope: ScopeMap
    config: Config
    point: EnforcementPoint = EnforcementPoint.SCAN
    now: datetime | None = None
    analyzers: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Catalog:
    checks: tuple[Check, ...]

    @classmethod
    def from_modules(cls, modules: Iterable[types.ModuleType]) -> Catalog:
        found: dict[str, Check] = {}
        for module in modules:
            for value in vars(module).values():
                if isinstance(value, Check):
                    if value.id in found and found[value.id] is not value:
                        raise ValueError(f"duplicate check id {value.id} in {module.__name__}")
                    found[value.id] = value
        return cls(tuple(sorted(found.values(), key=lambda c: c.id)))

    def __iter__(self) -> Iterator[Check]:
        return iter(self.checks)

    def __len__(self) -> int:
        return len(self.checks)

    def get(self, check_id: str) -> Check | None:
        for c in self.checks:
            if c.id == check_id:
                return c
        return None

    def select(self, ids: Iterable[str]) -> Catalog:
        wanted = set(ids)
        return Catalog(tuple(c for c in self.checks if c.id in wanted))

    def digest(self) -> str:
        """SHA-256 over the metadata of every check: names the exact catalog a report used."""
        blob = json.dumps([c.meta.to_dict() for c in self.checks], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def by_requirement(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for c in self.checks:
            for req in c.meta.requirements:
                out.setdefault(req, []).append(c.id)
        return out

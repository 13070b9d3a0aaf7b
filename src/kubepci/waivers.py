"""Reviewed exceptions (DESIGN.md "Waivers are reviewed data").

A waiver names the check, the resources (``namespace/Kind/name`` globs), a justification, the
approver, a ticket and an expiry date. Expired waivers never apply and are reported; so are
waivers that matched nothing (stale exceptions are audit findings in their own right). An
annotation on a resource can only *request* an exception: the resource's owner cannot approve
their own deviation.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kubepci.errors import ConfigError
from kubepci.inventory import Inventory
from kubepci.inventory.loaders.manifests import InvalidYAMLError, safe_load
from kubepci.model import Finding, Status

__all__ = [
    "WAIVER_REQUEST_ANNOTATION",
    "Waiver",
    "WaiverOutcome",
    "WaiverRequest",
    "apply_waivers",
    "load_waivers",
    "parse_waivers",
    "waiver_requests",
]

WAIVER_REQUEST_ANNOTATION = "kubepci.io/waiver-request"
_REQUIRED = ("id", "check", "resources", "justification", "approved_by", "ticket", "expires")


@dataclass(frozen=True, slots=True)
class Waiver:
    id: str
    check: str
    resources: tuple[str, ...]
    justification: str
    approved_by: str
    ticket: str
    expires: dt.date

    def matches(self, finding: Finding) -> bool:
        if not fnmatch.fnmatchcase(finding.check_id, self.check):
            return False
        ref = str(finding.resource)
        return any(fnmatch.fnmatchcase(ref, pattern) for pattern in self.resources)

    def expired(self, today: dt.date) -> bool:
        return today > self.expires

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "check": self.check, "resources": list(self.resources),
            "justification": self.justification, "approved_by": self.approved_by,
            "ticket": self.ticket, "expires": self.expires.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class WaiverRequest:
    """An exception asked for by an annotation: shown to reviewers, never applied."""

    resource: str
    text: str


@dataclass(frozen=True, slots=True)
class WaiverOutcome:
    findings: tuple[Finding, ...]
    applied: Mapping[str, int]
    expired: tuple[Waiver, ...]
    unused: tuple[Waiver, ...]
    requests: tuple[WaiverRequest, ...]
    waivers: tuple[Waiver, ...]


def parse_waivers(text: str, source: str = "waivers.yaml") -> tuple[Waiver, ...]:
    try:
        raw = safe_load(text)
    except InvalidYAMLError as exc:
        raise ConfigError(f"{source}:{exc.line + 1}: {exc.reason}") from None
    if raw is None:
        return ()
    if not isinstance(raw, Mapping) or set(raw) != {"waivers"} or not isinstance(raw["waivers"], list):
        raise ConfigError(f"{source}: expected a single top-level key 'waivers' holding a list")
    out: list[Waiver] = []
    seen: set[str] = set()
    for i, item in enumerate(raw["waivers"]):
        where = f"{source}: waivers[{i}]"
        if not isinstance(item, Mapping):
            raise ConfigError(f"{where}: must be a mapping")
        missing = [k for k in _REQUIRED if not item.get(k)]
        if missing:
            raise ConfigError(f"{where}: missing {', '.join(missing)} (a waiver without them is not reviewable)")
        unknown = set(item) - set(_REQUIRED)
        if unknown:
            raise ConfigError(f"{where}: unknown keys {', '.join(sorted(map(str, unknown)))}")
        expires = item["expires"]
        if isinstance(expires, str):
            try:
                expires = dt.date.fromisoformat(expires)
            except ValueError:
                raise ConfigError(f"{where}: expires must be a date (YYYY-MM-DD)") from None
        if isinstance(expires, dt.datetime):
            expires = expires.date()
        if not isinstance(expires, dt.date):
            raise ConfigError(f"{where}: expires must be a date (YYYY-MM-DD)")
        resources = item["resources"]
        if isinstance(resources, str):
            resources = [resources]
        if not isinstance(resources, list) or not all(isinstance(r, str) for r in resources):
            raise ConfigError(f"{where}: resources must be a list of namespace/Kind/name patterns")
        wid = str(item["id"])
        if wid in seen:
            raise ConfigError(f"{where}: duplicate waiver id {wid}")
        seen.add(wid)
        out.append(Waiver(wid, str(item["check"]), tuple(resources), str(item["justification"]),
                          str(item["approved_by"]), str(item["ticket"]), expires))
    return tuple(out)


def load_waivers(path: Path) -> tuple[Waiver, ...]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read waivers: {exc.strerror}") from None
    return parse_waivers(text, str(path))


def waiver_requests(inventory: Inventory) -> tuple[WaiverRequest, ...]:
    out = []
    for r in inventory.resources:
        text = r.annotations.get(WAIVER_REQUEST_ANNOTATION)
        if isinstance(text, str) and text.strip():
            out.append(WaiverRequest(str(r.ref), text.strip()[:500]))
    return tuple(sorted(out, key=lambda w: w.resource))


def apply_waivers(
    findings: Iterable[Finding],
    waivers: Sequence[Waiver],
    today: dt.date,
    inventory: Inventory | None = None,
) -> WaiverOutcome:
    """FAIL findings matched by a live waiver become WAIVED (kept in the report with the waiver id)."""
    live = [w for w in waivers if not w.expired(today)]
    expired = tuple(w for w in waivers if w.expired(today))
    applied: dict[str, int] = {}
    out: list[Finding] = []
    for f in findings:
        if f.status is Status.FAIL:
            for w in live:
                if w.matches(f):
                    applied[w.id] = applied.get(w.id, 0) + 1
                    f = replace(f, status=Status.WAIVED, waiver_id=w.id)
                    break
        out.append(f)
    unused = tuple(w for w in live if w.id not in applied)
    requests = waiver_requests(inventory) if inventory is not None else ()
    return WaiverOutcome(tuple(out), applied, expired, unused, requests, tuple(waivers))

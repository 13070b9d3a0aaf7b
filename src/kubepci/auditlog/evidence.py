"""A scan's evidence in the audit trail: its report digest, and the waiver changes it observed.

``kubepci scan --trail-store URL`` appends, in one transaction, one ``waiver`` leaf for each change
to the reviewed exceptions since the trail last saw them, and one ``scan`` leaf with the SHA-256 of
the JSON report. An auditor can then match a report file to the trail, and see when each
exception appeared, changed, lapsed or went away (PCI DSS 10.2.1.2 and 10.2.2 for the record,
12.5.2 / the customised-approach exceptions for what was waived).

Waivers are files under review (DESIGN.md: reviewed data, never annotations), so kubepci does not
see who edited one; the trail records who ran the scan that *observed* the change (``actor``) and
the waiver itself, which names its approver. The trail's previous state is read from the trail:
per waiver id, its last recorded action and content. A pruned payload (past retention) leaves the
action, known from the envelope index, but not the content; such a waiver counts as unchanged.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubepci.auditlog.envelope import NewEntry, format_time
from kubepci.auditlog.events import scan_entry, waiver_entry
from kubepci.auditlog.store import SearchQuery, TrailStore

__all__ = ["ScanRecord", "record_scan", "recorded_waivers", "waiver_changes"]

_PAGE = 1000


@dataclass(frozen=True, slots=True)
class ScanRecord:
    """What one scan appended: the scan leaf and ``(action, waiver id, leaf)`` per waiver change."""

    scan_leaf: int
    changes: tuple[tuple[str, str, int], ...]


def recorded_waivers(store: TrailStore) -> dict[str, tuple[str, Mapping[str, Any] | None]]:
    """Per waiver id, the last recorded ``(action, waiver)``; the waiver is None once pruned."""
    state: dict[str, tuple[str, Mapping[str, Any] | None]] = {}
    after = -1
    while True:
        hits = store.search(SearchQuery(kind="waiver", after=after, limit=_PAGE))
        for hit in hits:
            index = json.loads(hit.envelope)["index"]
            waiver_id, action = index.get("name"), index.get("verb")
            if not isinstance(waiver_id, str) or not isinstance(action, str):
                continue
            raw = store.entry(hit.index).raw
            waiver = json.loads(raw).get("waiver") if raw is not None else None
            state[waiver_id] = (action, waiver if isinstance(waiver, dict) else None)
        if len(hits) < _PAGE:
            return state
        after = hits[-1].index


def waiver_changes(
    recorded: Mapping[str, tuple[str, Mapping[str, Any] | None]],
    current: Sequence[Mapping[str, Any]],
    today: dt.date,
) -> list[tuple[str, Mapping[str, Any]]]:
    """``(action, waiver)`` for every change from ``recorded`` to ``current``, by waiver id.

    ``added`` for a waiver the trail does not hold (or holds as removed), ``changed`` when its
    content differs, ``expired`` once its date has passed (once), ``removed`` when it is gone.
    """
    changes: list[tuple[str, Mapping[str, Any]]] = []
    present = {str(waiver["id"]): waiver for waiver in current}
    for waiver_id in sorted(present.keys() | recorded.keys()):
        waiver = present.get(waiver_id)
        last_action, last_waiver = recorded.get(waiver_id, ("removed", None))
        if waiver is None:
            if last_action != "removed":
                changes.append(("removed", last_waiver or {"id": waiver_id}))
            continue
        action = last_action
        if last_action == "removed":
            action = "added"
        elif last_waiver is not None and dict(last_waiver) != dict(waiver):
            action = "changed"
        if action != last_action:
            changes.append((action, waiver))
        if today > dt.date.fromisoformat(str(waiver["expires"])) and action != "expired":
            changes.append(("expired", waiver))
    return changes


def record_scan(
    store: TrailStore,
    report_json: bytes,
    waivers: Sequence[Mapping[str, Any]],
    *,
    today: dt.date,
    actor: str,
    at: dt.datetime,
    waivers_source: str = "",
) -> ScanRecord:
    """Append the waiver changes since the trail's last record and the scan digest, in one batch."""
    received_at = format_time(at)
    changes = waiver_changes(recorded_waivers(store), waivers, today)
    reason = f"observed by kubepci scan in {waivers_source}" if waivers_source else "observed by kubepci scan"
    entries: list[NewEntry] = [
        waiver_entry(action, waiver, actor=actor, reason=reason, received_at=received_at)
        for action, waiver in changes
    ]
    entries.append(scan_entry(report_json, received_at=received_at))
    leaves = store.append_batch(entries)
    done = tuple((action, str(waiver["id"]), leaf) for (action, waiver), leaf in zip(changes, leaves, strict=False))
    return ScanRecord(leaves[-1], done)

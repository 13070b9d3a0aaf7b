"""Records kubepci writes into its own trail: review alerts, admission decisions, scan digests,
waiver changes, source silences and the ingest server's start and stop.

Each builder returns a :class:`~kubepci.auditlog.envelope.NewEntry` (so a caller can put several
into one durable batch), and each ``append_*`` function appends one through anything with an
``append(entries)`` method -- a :class:`~kubepci.auditlog.trail.Trail`, or the ingest server's
group committer, which lets the admission webhook record a decision without waiting for a disk
flush on its own hot path.

Builders keep our receive time out of the record itself wherever the record describes something
that happened elsewhere (an alert about an event, a decision): the raw bytes then depend only on
what happened, so re-ingesting the same event after a crash yields the same bytes, the same dedupe
key, and no second leaf.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from kubepci.auditlog.envelope import (
    INDEX_FIELDS,
    EnvelopeError,
    IndexFields,
    NewEntry,
    format_time,
    normalize_time,
    record_entry,
)
from kubepci.auditlog.rules_data import Alert

__all__ = [
    "ADMISSION_SOURCE",
    "REVIEW_SOURCE",
    "SCAN_SOURCE",
    "TRAIL_SOURCE",
    "WAIVER_ACTIONS",
    "WAIVER_SOURCE",
    "Appender",
    "DecisionRecorder",
    "SilenceMonitor",
    "admission_entry",
    "alert_entry",
    "append_admission_decision",
    "append_scan_digest",
    "append_waiver_change",
    "gap_entry",
    "lifecycle_entry",
    "resumed_entry",
    "scan_entry",
    "waiver_entry",
]

REVIEW_SOURCE = "kubepci-review"
ADMISSION_SOURCE = "kubepci-admission"
SCAN_SOURCE = "kubepci-scan"
WAIVER_SOURCE = "kubepci-waivers"
TRAIL_SOURCE = "kubepci-trail"
WAIVER_ACTIONS = ("added", "changed", "removed", "expired")
_MAX_MESSAGE = 2000


class Appender(Protocol):
    """Anything that appends entries durably and returns their leaf indices."""

    def append(self, entries: Sequence[NewEntry]) -> list[int]: ...


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else format_time(moment)


# -- review alerts (10.4.1.1) ---------------------------------------------------------------------


def alert_entry(
    alert: Alert, *, received_at: str, event_source: str | None = None, event_sha256: str | None = None
) -> NewEntry:
    """Leaf for one review finding, linked to the event that raised it by that event's payload hash.

    The record holds only facts of the finding, so the same event reviewed again (a retried
    delivery after a crash) yields byte-identical raw and is recognised as already stored.
    """
    timestamp = _iso(alert.timestamp)
    record = {
        "type": "review-alert",
        "rule_id": alert.rule_id,
        "check": alert.check,
        "title": alert.title,
        "priority": alert.priority.label,
        "pci": list(alert.pci),
        "message": alert.message[:_MAX_MESSAGE],
        "raised_by": alert.source,
        "audit_id": alert.audit_id,
        "user": alert.user,
        "verb": alert.verb,
        "resource": alert.resource,
        "namespace": alert.namespace,
        "name": alert.name,
        "source_ip": alert.source_ip,
        "timestamp": timestamp,
        "event_source": event_source,
        "event_sha256": event_sha256,
    }
    index = IndexFields(
        user=alert.user, verb=alert.verb, resource=alert.resource, namespace=alert.namespace, name=alert.name,
        source_ip=alert.source_ip, audit_id=alert.audit_id, event_time=timestamp,
        rule=alert.check, priority=alert.priority.label,
    )
    return record_entry("alert", record, source=REVIEW_SOURCE, received_at=received_at, index=_bounded(index))


def _bounded(index: IndexFields) -> IndexFields:
    """Index text comes from events; keep it within what the envelope builders accept."""
    values = {name: getattr(index, name) for name in INDEX_FIELDS}
    changed = False
    for name, value in values.items():
        if isinstance(value, str):
            if value and len(value) <= 1024 and value.isascii() and "\x00" not in value:
                continue  # the common case: nothing to cut, replace or escape
            text = value[:1024].replace("\x00", "\ufffd")  # PostgreSQL text cannot hold NUL
            values[name] = text.encode("utf-8", "backslashreplace").decode("utf-8") or None
            changed = True
    return IndexFields(**values) if changed else index


# -- admission decisions --------------------------------------------------------------------------


def admission_entry(decision: Mapping[str, Any], *, received_at: str) -> NewEntry:
    """Leaf for one admission decision record (the webhook's ``on_decision`` payload).

    The record is kept whole (ids, fields and outcomes; the webhook never puts object content in
    it). Index: the requesting user, the operation as verb, kind, namespace and name, and the
    outcome as code (200 allowed, 403 denied), so ``trail search --kind admission --outcome failure``
    lists the denials (PCI DSS 10.2.1.4).
    """
    allowed = decision.get("allowed")
    if not isinstance(allowed, bool):
        raise EnvelopeError("admission decision without a boolean 'allowed'")
    denied = decision.get("denied")
    checks = [str(d.get("check")) for d in denied if isinstance(d, Mapping)] if isinstance(denied, list) else []
    operation = decision.get("operation")
    kind = decision.get("kind")
    index = IndexFields(
        user=_str(decision.get("user")),
        verb=operation.lower() if isinstance(operation, str) and operation else None,
        resource=kind.lower() if isinstance(kind, str) and kind else None,
        namespace=_str(decision.get("namespace")),
        name=_str(decision.get("name")),
        code=200 if allowed else 403,
        audit_id=_str(decision.get("decision_id")),
        event_time=_event_time(decision.get("time")) or received_at,
        rule=",".join(checks)[:1024] or None,
        priority=None if allowed else "Warning",
    )
    return record_entry("admission", _plain(decision), source=ADMISSION_SOURCE, received_at=received_at,
                        index=_bounded(index))


def append_admission_decision(
    trail: Appender,
    decision: Mapping[str, Any],
    *,
    include_dry_run: bool = False,
    clock: Callable[[], dt.datetime] = _utcnow,
) -> int | None:
    """Append one admission decision; dry-run decisions are skipped unless asked for (None)."""
    if decision.get("dry_run") is True and not include_dry_run:
        return None
    return trail.append([admission_entry(decision, received_at=format_time(clock()))])[0]


class Submitter(Protocol):
    """Queues entries for a durable append and returns at once (the group committer)."""

    def submit(self, entries: Sequence[NewEntry]) -> Future[Any]: ...


class DecisionRecorder:
    """The webhook's ``on_decision`` hook when a trail is configured: queue each decision's leaf and
    return, so the review never waits for a disk flush; the committer makes it durable within its
    next transaction. Dry-run decisions are not recorded (nothing was admitted). A leaf the store
    refuses is logged with the decision id: the decision log line on stdout still has it."""

    def __init__(self, committer: Submitter, *, clock: Callable[[], dt.datetime] = _utcnow,
                 on_error: Callable[[str, BaseException], None] | None = None) -> None:
        self._committer = committer
        self._clock = clock
        self._on_error = on_error

    def __call__(self, decision: Mapping[str, Any]) -> None:
        if decision.get("dry_run") is True:
            return
        future = self._committer.submit([admission_entry(decision, received_at=format_time(self._clock()))])
        if self._on_error is not None:
            on_error, decision_id = self._on_error, str(decision.get("decision_id", ""))

            def done(f: Future[Any]) -> None:
                exc = f.exception()
                if exc is not None:
                    on_error(decision_id, exc)

            future.add_done_callback(done)


# -- scan digests ---------------------------------------------------------------------------------


def scan_entry(report_json: bytes, *, received_at: str) -> NewEntry:
    """Leaf binding a scan report by its SHA-256, with the facts an assessor asks about first.

    The report itself can be megabytes and lives elsewhere; its hash in the trail proves later
    that the report shown is the one produced then (PCI DSS 10.4.1.1 / 11.x evidence).
    """
    try:
        report = orjson.loads(report_json)
    except orjson.JSONDecodeError as exc:
        raise EnvelopeError(f"scan report is not JSON: {exc}") from None
    if not isinstance(report, dict):
        raise EnvelopeError("scan report must be a JSON object")
    run, summary, tool = (_dict(report.get(key)) for key in ("run", "summary", "tool"))
    inputs = run.get("inputs")
    inputs = inputs if isinstance(inputs, list) else []
    record = {
        "type": "scan-digest",
        "report_sha256": hashlib.sha256(report_json).hexdigest(),
        "report_bytes": len(report_json),
        "schema": _str(report.get("schema")),
        "tool_version": _str(tool.get("version")),
        "generated_at": _str(run.get("generated_at")),
        "catalog_digest": _str(run.get("catalog_digest")),
        "exit_code": summary.get("exit_code") if type(summary.get("exit_code")) is int else None,
        "counts": _plain(_dict(summary.get("counts"))),
        "inputs": [_plain(item) for item in inputs if isinstance(item, dict)][:1000],
    }
    code = record["exit_code"]
    index = IndexFields(
        verb="scan", event_time=_event_time(record["generated_at"]) or received_at,
        code=code if isinstance(code, int) and 0 <= code < 1000 else None, rule=_str(record["catalog_digest"]),
    )
    return record_entry("scan", record, source=SCAN_SOURCE, received_at=received_at, index=_bounded(index))


def append_scan_digest(
    trail: Appender, report_json_bytes: bytes, *, clock: Callable[[], dt.datetime] = _utcnow
) -> int:
    """Append the digest of one JSON scan report (``kubepci scan -o json``)."""
    return trail.append([scan_entry(report_json_bytes, received_at=format_time(clock()))])[0]


# -- waiver changes (10.4.3: exceptions addressed) ------------------------------------------------


def waiver_entry(
    action: str, waiver: Mapping[str, Any], *, actor: str, received_at: str, reason: str = ""
) -> NewEntry:
    """Leaf for a waiver being added, changed, removed or found expired: who, what, why."""
    if action not in WAIVER_ACTIONS:
        raise EnvelopeError(f"waiver action must be one of {', '.join(WAIVER_ACTIONS)}, not {action!r}")
    if not actor:
        raise EnvelopeError("a waiver change needs the actor who made it")
    waiver_id = _str(waiver.get("id"))
    if waiver_id is None:
        raise EnvelopeError("a waiver change needs the waiver's id")
    record = {"type": "waiver-change", "action": action, "actor": actor, "reason": reason,
              "waiver": _plain(waiver), "at": received_at}
    index = IndexFields(user=actor, verb=action, resource="waivers", name=waiver_id, event_time=received_at,
                        rule=_str(waiver.get("check")))
    return record_entry("waiver", record, source=WAIVER_SOURCE, received_at=received_at, index=_bounded(index))


def append_waiver_change(
    trail: Appender,
    action: str,
    waiver: Mapping[str, Any] | Any,
    *,
    actor: str,
    reason: str = "",
    clock: Callable[[], dt.datetime] = _utcnow,
) -> int:
    """Append one waiver change; ``waiver`` is a mapping or a :class:`kubepci.waivers.Waiver`."""
    data = waiver if isinstance(waiver, Mapping) else waiver.to_dict()
    entry = waiver_entry(action, data, actor=actor, reason=reason, received_at=format_time(clock()))
    return trail.append([entry])[0]


# -- liveness (10.2.1.6, 10.7) ---------------------------------------------------------------------


def gap_entry(source: str, last_seen: dt.datetime, detected: dt.datetime) -> NewEntry:
    """A source went silent: when it was last seen and when that was noticed (10.7.3 start)."""
    record = {
        "type": "source-silent",
        "source": source,
        "last_seen": format_time(last_seen),
        "detected_at": format_time(detected),
        "silent_seconds": max(0, int((detected - last_seen).total_seconds())),
    }
    index = IndexFields(event_time=format_time(last_seen), rule="source-silent", priority="Warning")
    return record_entry("gap", record, source=source, received_at=format_time(detected), index=index)


def resumed_entry(source: str, last_seen: dt.datetime, resumed: dt.datetime) -> NewEntry:
    """A silent source delivers again (10.7.3 end): with :func:`gap_entry`, the failure's duration."""
    record = {
        "type": "source-resumed",
        "source": source,
        "last_seen": format_time(last_seen),
        "resumed_at": format_time(resumed),
        "silent_seconds": max(0, int((resumed - last_seen).total_seconds())),
    }
    index = IndexFields(event_time=format_time(resumed), rule="source-resumed", priority="Notice")
    return record_entry("gap", record, source=source, received_at=format_time(resumed), index=index)


def lifecycle_entry(event: str, at: dt.datetime, **detail: str | int | None) -> NewEntry:
    """The ingest server started or stopped (PCI DSS 10.2.1.6: start and stop of audit logging)."""
    moment = format_time(at)
    record: dict[str, Any] = {"type": event, "at": moment, **detail}
    index = IndexFields(event_time=moment, rule=event)
    return record_entry("heartbeat", record, source=TRAIL_SOURCE, received_at=moment, index=index)


@dataclass(slots=True)
class _Seen:
    last: dt.datetime
    silent: bool = False


class SilenceMonitor:
    """Per-source last-delivery times and the gap/resume entries they imply.

    ``thresholds`` maps a source name to how long it may stay silent. Every configured source
    starts as seen at ``started`` (a source that never connects is a gap too). Not thread-safe.
    """

    def __init__(self, thresholds: Mapping[str, dt.timedelta], started: dt.datetime) -> None:
        self.thresholds = dict(thresholds)
        self._seen = {name: _Seen(started) for name in self.thresholds}

    def seen(self, source: str, at: dt.datetime) -> list[NewEntry]:
        """Note a delivery; a resume entry when the source had been recorded as silent."""
        state = self._seen.get(source)
        if state is None:
            if source in self.thresholds:
                self._seen[source] = _Seen(at)
            return []
        entries = [resumed_entry(source, state.last, at)] if state.silent else []
        state.last = max(state.last, at)
        state.silent = False
        return entries

    def check(self, now: dt.datetime) -> list[NewEntry]:
        """Gap entries for sources silent past their threshold, once per silence."""
        entries: list[NewEntry] = []
        for source, state in sorted(self._seen.items()):
            if not state.silent and now - state.last > self.thresholds[source]:
                state.silent = True
                entries.append(gap_entry(source, state.last, now))
        return entries

    def last_seen(self) -> dict[str, dt.datetime]:
        return {name: state.last for name, state in self._seen.items()}

    def silent(self) -> list[str]:
        return sorted(name for name, state in self._seen.items() if state.silent)


# -- helpers ----------------------------------------------------------------------------------------


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _event_time(value: object) -> str | None:
    return normalize_time(value)


def _plain(value: Any) -> Any:
    """A JSON value made safe for canonical JSON: floats kept (rfc8785 writes them), odd types as text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value)

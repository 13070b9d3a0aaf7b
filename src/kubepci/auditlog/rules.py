"""Automated review of the audit trail (PCI DSS v4.0.1 10.4.1.1), as pure code.

:class:`Reviewer` turns Kubernetes API-server audit events and Falco alerts into :class:`Alert`
objects for the 22 detections D01..D22 of reference/audit-trail.md section 7. It does no I/O and
never reads a clock: time comes from the events, or from the ``now``/``received_at`` arguments the
ingest server passes, so the same input always yields the same alerts (and tests replay traces).

State is kept only where a rule needs history -- failure bursts (D09/D10), duplicate suppression
across the stages of one request, per-source silence (D14) and Falco heartbeats (D22) -- and
every such table is bounded by ``ReviewContext.max_tracked_keys`` so hostile input cannot grow
memory without limit.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Hashable, Mapping
from datetime import datetime, timedelta
from typing import Any

from kubepci.auditlog.rules_data import (
    CHECKS,
    DETECTION_PCI,
    FALCO_METRICS_RULE,
    LOG_CLEARING_RULES,
    Alert,
    CheckSpec,
    Priority,
    ReviewContext,
    parse_time,
)
from kubepci.auditlog.rules_k8s import (
    CHECK_RESOURCES,
    COMPLETE_CHECKS,
    STARTED_CHECKS,
    AuditEvent,
    Check,
    user_alert,
)
from kubepci.auditlog.rules_workload import WORKLOAD_CHECKS, WORKLOAD_RESOURCES

__all__ = [
    "CHECKS",
    "Alert",
    "AuditEvent",
    "CheckSpec",
    "Priority",
    "ReviewContext",
    "Reviewer",
    "review_event",
]

_ACCESS_REVIEWS = frozenset({"selfsubjectrulesreviews", "selfsubjectaccessreviews"})
_AUDIT_LOSS_SERIES = ("apiserver_audit_error_total", "apiserver_audit_requests_rejected_total")
_NO_VALUE = frozenset({"", "<NA>", "N/A"})  # how Falco prints a field it could not resolve


#: Checks for long-running requests (exec, watch, proxy) run at ResponseStarted and ResponseComplete;
#: all others only at ResponseComplete, like Falco's ``kevt`` macro (they need the outcome).
_STAGE_CHECKS: Mapping[str, tuple[Check, ...]] = {
    "ResponseStarted": STARTED_CHECKS,
    "ResponseComplete": STARTED_CHECKS + COMPLETE_CHECKS + WORKLOAD_CHECKS,
}
_RESOURCES: Mapping[Check, frozenset[str]] = {**CHECK_RESOURCES, **WORKLOAD_RESOURCES}


def _by_resource(checks: tuple[Check, ...]) -> tuple[dict[str, tuple[Check, ...]], tuple[Check, ...]]:
    """Per resource the checks that can alert on it, in their order; and those for any other."""
    named = {resource for check in checks for resource in _RESOURCES.get(check, ())}
    table = {resource: tuple(c for c in checks if c not in _RESOURCES or resource in _RESOURCES[c])
             for resource in named}
    return table, tuple(c for c in checks if c not in _RESOURCES)


_DISPATCH = {stage: _by_resource(checks) for stage, checks in _STAGE_CHECKS.items()}


def review_event(ev: AuditEvent, ctx: ReviewContext) -> list[Alert]:
    """All stateless alerts for one event; duplicate suppression is the Reviewer's job."""
    dispatch = _DISPATCH.get(ev.stage)
    if dispatch is None:
        return []
    table, anywhere = dispatch
    return [alert for check in table.get(ev.resource, anywhere) for alert in check(ev, ctx)]


class _BoundedKeys:
    """An insertion-ordered set that forgets its oldest keys beyond ``capacity``."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._keys: OrderedDict[Hashable, None] = OrderedDict()

    def add(self, key: Hashable) -> bool:
        """True if ``key`` is new."""
        if key in self._keys:
            self._keys.move_to_end(key)
            return False
        self._keys[key] = None
        if len(self._keys) > self._capacity:
            self._keys.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._keys)


class _Burst:
    """ "``threshold`` hits for one key within ``window``" with one alert per window per key.

    Each key keeps at most ``threshold`` timestamps (a deque with maxlen), and at most
    ``capacity`` keys are tracked (least recently hit forgotten first).
    """

    def __init__(self, threshold: int, window: timedelta, capacity: int) -> None:
        self._threshold, self._window, self._capacity = threshold, window, capacity
        self._hits: OrderedDict[str, deque[datetime]] = OrderedDict()
        self._fired: OrderedDict[str, datetime] = OrderedDict()

    def hit(self, key: str, at: datetime) -> bool:
        hits = self._hits.pop(key, None)
        if hits is None:
            hits = deque(maxlen=self._threshold)
        hits.append(at)
        self._hits[key] = hits
        if len(self._hits) > self._capacity:
            self._hits.popitem(last=False)
        if len(hits) < self._threshold or max(hits) - min(hits) > self._window:
            return False
        fired = self._fired.pop(key, None)
        if fired is not None and abs(at - fired) <= self._window:
            self._fired[key] = fired
            return False
        self._fired[key] = at
        if len(self._fired) > self._capacity:
            self._fired.popitem(last=False)
        return True

    def evict_before(self, cutoff: datetime) -> None:
        """Forget keys whose newest hit is older than ``cutoff`` (time eviction on tick)."""
        for key in [k for k, hits in self._hits.items() if max(hits) < cutoff]:
            del self._hits[key]
        for key in [k for k, fired in self._fired.items() if fired < cutoff]:
            del self._fired[key]

    def __len__(self) -> int:
        return len(self._hits) + len(self._fired)


def _alert(check: str, message: str, source: str, priority: Priority | None = None, **evidence: Any) -> Alert:
    spec = CHECKS[check]
    return Alert(
        rule_id=spec.detection,
        check=check,
        title=spec.title,
        priority=spec.priority if priority is None else priority,
        pci=DETECTION_PCI[spec.detection],
        message=message,
        source=source,
        **evidence,
    )


def _field(fields: Mapping[str, Any], key: str) -> str | None:
    value = fields.get(key)
    return value if isinstance(value, str) and value not in _NO_VALUE else None


def _duration(delta: timedelta) -> str:
    return f"{int(delta.total_seconds())}s"


class Reviewer:
    """Reviews one stream of audit events and Falco alerts; not thread-safe (one per ingest loop)."""

    def __init__(self, ctx: ReviewContext | None = None) -> None:
        self.ctx = ctx or ReviewContext()
        cap = self.ctx.max_tracked_keys
        window = self.ctx.burst_window
        self._emitted = _BoundedKeys(cap)
        self._counted = _BoundedKeys(cap)
        self._authn = _Burst(self.ctx.authn_failure_threshold, window, cap)
        self._authz = _Burst(self.ctx.authz_failure_threshold, window, cap)
        self._reviews = _Burst(self.ctx.access_review_threshold, window, cap)
        self._scanners = _Burst(1, window, cap)
        self._scanner_markers = tuple((marker, marker.lower()) for marker in self.ctx.scanner_user_agents)
        self._last_seen: OrderedDict[str, datetime] = OrderedDict()
        self._silent: dict[str, datetime] = {}
        self._metrics_seen: OrderedDict[str, datetime] = OrderedDict()
        self._metrics_missing: dict[str, datetime] = {}
        self._counters: OrderedDict[str, float] = OrderedDict()

    # -- Kubernetes audit events -------------------------------------------------------------

    def review_k8s_event(self, event: Mapping[str, Any], received_at: datetime | None = None) -> list[Alert]:
        """Alerts for one audit Event (or every item of an EventList); [] for non-events.

        ``received_at`` (our clock) drives the silence tracking when given; otherwise the
        event's own ``stageTimestamp`` does.
        """
        if event.get("kind") == "EventList":
            items = event.get("items")
            return [
                alert
                for item in (items if isinstance(items, list) else [])
                if isinstance(item, Mapping)
                for alert in self._review_one(item, received_at)  # nested EventLists are not events
            ]
        return self._review_one(event, received_at)

    def _review_one(self, event: Mapping[str, Any], received_at: datetime | None) -> list[Alert]:
        ev = AuditEvent.parse(event)
        if ev is None:
            return []
        seen_at = received_at or ev.timestamp
        alerts = self.note_source("k8s_audit", seen_at) if seen_at is not None else []
        occurrences: dict[str, int] = {}
        for alert in review_event(ev, self.ctx):
            nth = occurrences[alert.check] = occurrences.get(alert.check, 0) + 1
            if ev.audit_id is None or self._emitted.add((ev.audit_id, alert.check, nth)):
                alerts.append(alert)
        alerts.extend(self._windowed(ev))
        return alerts

    def _windowed(self, ev: AuditEvent) -> list[Alert]:
        if ev.code is None or ev.timestamp is None:
            return []
        agent = ev.user_agent.lower()
        scanners = [marker for marker, lowered in self._scanner_markers if lowered in agent]
        sweep = ev.resource in _ACCESS_REVIEWS and ev.verb == "create"
        if not (ev.code == 401 or (ev.code == 403 and ev.username) or sweep or scanners):
            return []  # counts towards no burst (most events): not worth remembering either
        if ev.audit_id is not None and not self._counted.add(ev.audit_id):
            return []  # the same request seen at a second stage, or re-delivered by the webhook
        at, window = ev.timestamp, _duration(self.ctx.burst_window)
        alerts: list[Alert] = []
        if ev.code == 401 and self._authn.hit(ev.source_ip or "?", at):
            n = self.ctx.authn_failure_threshold
            message = f"{n} failed authentications from {ev.source_ip or 'unknown address'} within {window}"
            alerts.append(user_alert("D09.authn_failure_burst", ev, message))
        if ev.code == 403 and ev.username and self._authz.hit(ev.username, at):
            n = self.ctx.authz_failure_threshold
            last = f"{ev.verb} {ev.target} {ev.where}"
            message = f"{n} requests by {ev.username} forbidden within {window} (last: {last})"
            alerts.append(user_alert("D10.authz_failure_burst", ev, message))
        if sweep and self._reviews.hit(ev.username, at):
            n = self.ctx.access_review_threshold
            message = f"{ev.username} asked {n} self access reviews within {window} (permission enumeration)"
            alerts.append(user_alert("D10.access_review_sweep", ev, message))
        for marker in scanners:
            if self._scanners.hit(f"{ev.source_ip}|{marker}", at):
                message = f"{marker} user agent from {ev.source_ip} as {ev.username or 'unauthenticated'}"
                alerts.append(user_alert("D10.scanner_user_agent", ev, message))
        return alerts

    # -- Falco ------------------------------------------------------------------------------

    def review_falco(self, payload: Mapping[str, Any], received_at: datetime | None = None) -> list[Alert]:
        """Alerts for one Falco JSON alert (native ``json_output`` or falcosidekick webhook body).

        Payloads without rule or a known priority yield [] -- falcosidekick rejects those too.
        Falco's own ``k8s_audit`` alerts only count as liveness: we run our rules on the raw
        audit events, so passing Falco's through would double every finding.
        """
        rule, priority = payload.get("rule"), Priority.parse(payload.get("priority"))
        if not isinstance(rule, str) or not rule or priority is None:
            return []
        fields = payload.get("output_fields")
        fields = fields if isinstance(fields, Mapping) else {}
        at = parse_time(payload.get("time"))
        host = _field(payload, "hostname") or _field(fields, "hostname") or "unknown"
        seen_at = received_at or at
        alerts = self.note_source(f"falco/{host}", seen_at) if seen_at is not None else []
        if rule == FALCO_METRICS_RULE:
            return alerts + (self._heartbeat(host, seen_at) if seen_at is not None else [])
        if (_field(payload, "source") or "syscall") not in ("syscall", "syscalls"):
            return alerts
        ns, pod = _field(fields, "k8s.ns.name"), _field(fields, "k8s.pod.name")
        evidence: dict[str, Any] = {
            "audit_id": _field(payload, "uuid"),
            "user": _field(fields, "user.name"),
            "namespace": ns,
            "name": pod,
            "resource": "pods" if pod else None,
            "timestamp": at,
        }
        where = f"pod {ns}/{pod}" if ns and pod else f"namespace {ns}" if ns else f"host {host}"
        output = (_field(payload, "output") or "")[:300]
        message = f"Falco '{rule}' ({priority.label}) on {where}: {output}".rstrip(": ")
        if rule in LOG_CLEARING_RULES:
            floor = CHECKS["D14.log_clearing"].priority
            alerts.append(_alert("D14.log_clearing", message, "falco", max(priority, floor), **evidence))
        elif priority >= self.ctx.runtime_min_priority and (
            (ns is not None and ns in self.ctx.cde_namespaces)
            or (ns is None and self.ctx.runtime_host_alerts)
        ):
            alerts.append(_alert("D21.runtime_alert", message, "falco", priority, **evidence))
        return alerts

    def _heartbeat(self, host: str, at: datetime) -> list[Alert]:
        self._metrics_seen.pop(host, None)
        self._metrics_seen[host] = at
        if len(self._metrics_seen) > self.ctx.max_tracked_keys:
            self._metrics_seen.popitem(last=False)
        missing_since = self._metrics_missing.pop(host, None)
        if missing_since is None:
            return []
        gap = f"{missing_since.isoformat()} and {at.isoformat()}"
        message = f"Falco on {host} sends metrics snapshots again; none between {gap}"
        return [_alert("D22.falco_metrics_resumed", message, "reviewer", name=host, timestamp=at)]

    # -- liveness and failure of controls (10.7) --------------------------------------------

    def note_source(self, source: str, at: datetime) -> list[Alert]:
        """Record that ``source`` delivered something at ``at``; reports the end of a silence."""
        previous = self._last_seen.get(source)
        if previous is not None and source not in self._silent:  # the common case: one dict write
            if at > previous:
                self._last_seen[source] = at
            self._last_seen.move_to_end(source)
            return []
        alerts: list[Alert] = []
        silent_since = self._silent.pop(source, None)
        if silent_since is not None:
            message = f"{source} delivers again after {_duration(at - silent_since)} without events"
            alerts.append(_alert("D14.source_resumed", message, "reviewer", name=source, timestamp=at))
        previous = self._last_seen.pop(source, None)
        self._last_seen[source] = at if previous is None else max(previous, at)
        if len(self._last_seen) > self.ctx.max_tracked_keys:
            self._last_seen.popitem(last=False)
        return alerts

    def review_counter(self, series: str, value: float, at: datetime) -> list[Alert]:
        """Feed a scraped API-server counter; an increase of audit errors means lost events (D22)."""
        if not series.startswith(_AUDIT_LOSS_SERIES):
            return []
        previous = self._counters.pop(series, None)
        self._counters[series] = value
        if len(self._counters) > self.ctx.max_tracked_keys:
            self._counters.popitem(last=False)
        if previous is None or value <= previous:
            return []  # first sample, or a counter reset after an apiserver restart
        message = f"{series} rose by {value - previous:g}: the API server dropped or rejected audit events"
        return [_alert("D22.audit_backend_errors", message, "reviewer", name=series, timestamp=at)]

    def tick(self, now: datetime) -> list[Alert]:
        """Silence checks, called periodically by the ingest server with its clock."""
        alerts: list[Alert] = []
        for source, last in sorted(self._last_seen.items()):
            limit = self.ctx.silence_thresholds.get(source) or self.ctx.silence_thresholds.get(
                source.split("/")[0]
            )
            if limit is not None and source not in self._silent and now - last > limit:
                self._silent[source] = last
                message = f"no events from {source} for {_duration(now - last)} (limit {_duration(limit)})"
                alerts.append(_alert("D14.source_silent", message, "reviewer", name=source, timestamp=now))
        max_age = self.ctx.falco_metrics_max_age
        for host, last in sorted(self._metrics_seen.items()):
            if host not in self._metrics_missing and now - last > max_age:
                self._metrics_missing[host] = last
                age = f"{_duration(now - last)} (limit {_duration(max_age)})"
                message = f"no Falco metrics snapshot from {host} for {age}"
                alerts.append(
                    _alert("D22.falco_metrics_missing", message, "reviewer", name=host, timestamp=now)
                )
        cutoff = now - self.ctx.burst_window
        for burst in (self._authn, self._authz, self._reviews, self._scanners):
            burst.evict_before(cutoff)
        return alerts

    def state_sizes(self) -> dict[str, int]:
        """Entries held per table, so operators (and tests) can see memory stays bounded."""
        return {
            "emitted": len(self._emitted),
            "counted": len(self._counted),
            "bursts": len(self._authn) + len(self._authz) + len(self._reviews) + len(self._scanners),
            "sources": len(self._last_seen),
            "falco_hosts": len(self._metrics_seen),
            "counters": len(self._counters),
        }

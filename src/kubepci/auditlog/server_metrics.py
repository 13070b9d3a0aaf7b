"""Prometheus metrics of the trail ingest server (PCI DSS 10.7.2: detect failing log mechanisms).

What an operator alerts on: requests by endpoint and status (a run of 401/403 is a misconfigured or
hostile sender, 503 a store in trouble), events and rejected items per source, commit latency and
group size, the tree size against the last signed checkpoint, and per-source seconds since the
last delivery together with the sources currently recorded as silent.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from kubepci.auditlog.committer import CommitStats, GroupCommitter
    from kubepci.auditlog.events import SilenceMonitor
    from kubepci.auditlog.ingest import IngestBatch

__all__ = ["IngestMetrics"]

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_SIZES = (1, 5, 10, 50, 100, 400, 1000, 5000, 20000)


class _StateCollector(Collector):
    def __init__(self, metrics: IngestMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        committer, monitor = self._metrics.committer, self._metrics.monitor
        if committer is not None:
            yield GaugeMetricFamily("kubepci_trail_size", "Leaves in the trail", value=committer.size)
            yield GaugeMetricFamily("kubepci_trail_checkpoint_size", "Leaves under the latest signed checkpoint",
                                    value=committer.checkpoint_size)
            yield GaugeMetricFamily("kubepci_trail_ready", "1 when the store is open and commits succeed",
                                    value=1 if committer.ready else 0)
        if monitor is not None:
            now = dt.datetime.now(dt.UTC)
            age = GaugeMetricFamily("kubepci_trail_source_silence_seconds", "Seconds since the source last delivered",
                                    labels=["source"])
            silent = GaugeMetricFamily("kubepci_trail_source_silent", "1 while a gap is open for the source",
                                       labels=["source"])
            flagged = set(monitor.silent())
            for source, last in sorted(monitor.last_seen().items()):
                age.add_metric([source], max(0.0, (now - last).total_seconds()))
                silent.add_metric([source], 1 if source in flagged else 0)
            yield age
            yield silent


class IngestMetrics:
    """One registry per server (tests run several servers in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("kubepci_trail_requests", "Ingest requests by endpoint and HTTP status",
                                ["endpoint", "code"], registry=r)
        self.events = Counter("kubepci_trail_events", "Items received, by source and outcome",
                              ["source", "outcome"], registry=r)
        self.alerts = Counter("kubepci_trail_alerts", "Review alerts appended, by check", ["check"], registry=r)
        self.gaps = Counter("kubepci_trail_gaps", "Source silences recorded as gap entries", registry=r)
        self.checkpoints = Counter("kubepci_trail_checkpoints", "Checkpoints signed", registry=r)
        self.request_seconds = Histogram("kubepci_trail_request_seconds", "Parse-to-durable time of a request",
                                         buckets=_LATENCY, registry=r)
        self.commit_seconds = Histogram("kubepci_trail_commit_seconds", "Duration of one group transaction",
                                        buckets=_LATENCY, registry=r)
        self.commit_entries = Histogram("kubepci_trail_commit_entries", "Entries per group transaction",
                                        buckets=_SIZES, registry=r)
        self.commit_jobs = Histogram("kubepci_trail_commit_requests", "Requests sharing one transaction",
                                     buckets=_SIZES, registry=r)
        self.committer: GroupCommitter | None = None
        self.monitor: SilenceMonitor | None = None
        self.registry.register(_StateCollector(self))

    def bind(self, committer: GroupCommitter, monitor: SilenceMonitor) -> None:
        self.committer, self.monitor = committer, monitor

    def observe(self, batch: IngestBatch, indices: tuple[int, ...], size_before: int, seconds: float) -> None:
        """One answered request: its items as appended, duplicate (a retry) or rejected."""
        self.request_seconds.observe(seconds)
        fresh = sum(1 for position, reason in batch.items if reason is None and indices[position] >= size_before)
        accepted = batch.accepted
        self.events.labels(batch.source, "appended").inc(fresh)
        self.events.labels(batch.source, "duplicate").inc(accepted - fresh)
        self.events.labels(batch.source, "rejected").inc(len(batch.items) - accepted)
        for alert in batch.alerts:
            self.alerts.labels(alert.check).inc()

    def commit(self, stats: CommitStats) -> None:
        self.commit_seconds.observe(stats.seconds)
        self.commit_entries.observe(stats.entries)
        self.commit_jobs.observe(stats.jobs)

    def checkpoint(self, size: int) -> None:
        self.checkpoints.inc()

    def render(self) -> tuple[bytes, bytes]:
        return generate_latest(self.registry), b"text/plain; version=0.0.4; charset=utf-8"

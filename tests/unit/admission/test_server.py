"""The ASGI app without a network: status codes, logging, metrics and the on_decision hook."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
from collections.abc import Mapping, MutableMapping
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from kubepci.admission.cache import CACHED_KINDS, SnapshotCache
from kubepci.admission.decide import Policy
from kubepci.admission.review import make_review
from kubepci.admission.server import DECISION_LOGGER, AdmissionApp, StaticSnapshot
from kubepci.checks import default_catalog
from kubepci.config import Config
from kubepci.waivers import load_waivers
from tests.unit.admission.platform import NOW, PLATFORM, config, one, snapshot
from tests.unit.admission.test_cache import FakeAPI


def _app(ready: bool = True, hook: Any = None, max_body: int = 4 * 1024 * 1024) -> AdmissionApp:
    return AdmissionApp(Policy(default_catalog(), config()), StaticSnapshot(snapshot(), ready=ready),
                        on_decision=hook, clock=lambda: NOW, registry=CollectorRegistry(), max_body_bytes=max_body)


def _call(app: AdmissionApp, method: str, path: str, body: bytes = b"",
          headers: Mapping[str, str] | None = None, chunk: int = 0) -> tuple[int, dict[str, str], bytes]:
    hdrs = {"content-type": "application/json", **(headers or {})}
    pieces = [body[i:i + chunk] for i in range(0, len(body), chunk)] if chunk else [body]
    messages = [{"type": "http.request", "body": p, "more_body": i < len(pieces) - 1} for i, p in enumerate(pieces)]
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "client": ("127.0.0.1", 5555),
             "headers": [(k.encode(), v.encode()) for k, v in hdrs.items()]}
    asyncio.run(app(scope, receive, send))
    start = sent[0]
    return (start["status"], {k.decode(): v.decode() for k, v in start["headers"]},
            b"".join(m.get("body", b"") for m in sent[1:]))


def _review(obj: dict[str, Any], **kw: Any) -> bytes:
    return orjson.dumps(make_review(obj, **kw))


def _privileged() -> dict[str, Any]:
    dep = one("Deployment", "payments", "payment-api")
    dep["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] = True
    return dep


def test_validate_returns_the_decision_and_logs_one_json_line(caplog: pytest.LogCaptureFixture) -> None:
    records: list[Mapping[str, Any]] = []
    app = _app(hook=records.append)
    with caplog.at_level(logging.INFO, logger=DECISION_LOGGER):
        status, headers, body = _call(app, "POST", "/validate", _review(_privileged(), uid="u-42"))
    assert status == 200
    assert headers["content-type"] == "application/json"
    response = orjson.loads(body)["response"]
    assert response["uid"] == "u-42"
    assert response["allowed"] is False
    assert "[workload-privileged]" in response["status"]["message"]
    lines = [orjson.loads(r.getMessage()) for r in caplog.records if r.name == DECISION_LOGGER]
    assert len(lines) == 1
    line = lines[0]
    assert line["event"] == "admission.decision"
    assert line["decision_id"] == "u-42"
    assert line["allowed"] is False
    assert line["denied"] == [{"check": "workload-privileged",
                               "path": "spec.template.spec.containers[0].securityContext.privileged"}]
    assert line["user"] == "kubernetes-admin"
    assert line["time"] == NOW.isoformat()
    assert "payment-api@sha256" not in caplog.text  # no object content in the log
    assert records == [line]


def test_dry_run_decision_reaches_the_hook_flagged() -> None:
    records: list[Mapping[str, Any]] = []
    status, _, _ = _call(_app(hook=records.append), "POST", "/validate", _review(_privileged(), dry_run=True))
    assert status == 200
    assert [r["dry_run"] for r in records] == [True]


def test_malformed_review_is_a_400_with_the_reason_and_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    app = _app()
    with caplog.at_level(logging.INFO, logger=DECISION_LOGGER):
        status, _, body = _call(app, "POST", "/validate", b'{"apiVersion": "admission.k8s.io/v1"}')
    assert status == 400
    assert orjson.loads(body) == {"error": "kind must be 'AdmissionReview', got None"}
    logged = orjson.loads(caplog.records[-1].getMessage())
    assert logged["event"] == "admission.rejected"
    assert logged["cause"] == "bad_request"
    assert logged["reason"] == "kind must be 'AdmissionReview', got None"
    assert logged["peer"] == "127.0.0.1"
    metrics = _call(app, "GET", "/metrics")[2].decode()
    assert 'kubepci_admission_errors_total{cause="bad_request"} 1.0' in metrics


def test_body_over_the_limit_is_refused_whether_announced_or_streamed() -> None:
    app = _app(max_body=2048)
    body = _review(one("Deployment", "payments", "payment-api"))
    assert len(body) > 2048
    assert _call(app, "POST", "/validate", body)[0] == 413
    assert _call(app, "POST", "/validate", body, headers={"content-length": "999999999"})[0] == 413
    status, _, text = _call(app, "POST", "/validate", body, chunk=512)
    assert status == 413
    assert b"exceeds 2048 bytes" in text


def test_chunked_body_within_the_limit_is_reassembled() -> None:
    status, _, body = _call(_app(), "POST", "/validate", _review(_privileged()), chunk=300)
    assert status == 200
    assert orjson.loads(body)["response"]["allowed"] is False


def test_wrong_content_type_and_method_and_path() -> None:
    app = _app()
    assert _call(app, "POST", "/validate", b"{}", headers={"content-type": "text/plain"})[0] == 415
    status, headers, _ = _call(app, "GET", "/validate")
    assert (status, headers["allow"]) == (405, "POST")
    assert _call(app, "GET", "/nope")[0] == 404


def test_not_ready_answers_503_so_the_failure_policy_applies() -> None:
    app = _app(ready=False)
    assert _call(app, "GET", "/readyz")[0] == 503
    assert _call(app, "GET", "/healthz")[0] == 200
    status, _, body = _call(app, "POST", "/validate", _review(_privileged()))
    assert status == 503
    assert orjson.loads(body) == {"error": "snapshot cache not synced"}
    assert _call(_app(), "GET", "/readyz")[0] == 200


def test_metrics_count_decisions_and_failing_checks() -> None:
    app = _app()
    _call(app, "POST", "/validate", _review(_privileged()))
    _call(app, "POST", "/validate", _review(one("Deployment", "payments", "payment-api")))
    status, headers, body = _call(app, "GET", "/metrics")
    text = body.decode()
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    assert 'kubepci_admission_requests_total{decision="denied"} 1.0' in text
    assert 'kubepci_admission_requests_total{decision="allowed"} 1.0' in text
    assert 'kubepci_admission_check_failures_total{check="workload-privileged",enforcement="deny"} 1.0' in text
    assert "kubepci_admission_request_duration_seconds_count 2.0" in text


def test_a_failing_hook_does_not_change_the_answer(caplog: pytest.LogCaptureFixture) -> None:
    def broken(record: Mapping[str, Any]) -> None:
        raise OSError("trail store unavailable")

    app = _app(hook=broken)
    with caplog.at_level(logging.INFO, logger=DECISION_LOGGER):
        status, _, _ = _call(app, "POST", "/validate", _review(_privileged()))
    assert status == 200
    assert any("trail store unavailable" in r.getMessage() for r in caplog.records)
    assert 'kubepci_admission_errors_total{cause="hook"} 1.0' in _call(app, "GET", "/metrics")[2].decode()


def test_clock_is_injected_for_waiver_expiry() -> None:
    fluent_bit = one("DaemonSet", "logging", "fluent-bit")
    policy = Policy(default_catalog(), config(), load_waivers(PLATFORM / "waivers.yaml"))
    late = AdmissionApp(policy, StaticSnapshot(snapshot()), clock=lambda: dt.datetime(2028, 1, 1, tzinfo=dt.UTC),
                        registry=CollectorRegistry())
    body = orjson.loads(_call(late, "POST", "/validate", _review(fluent_bit))[2])["response"]
    assert "(waiver W-2026-001 has expired)" in body["status"]["message"]


def test_review_for_a_namespace_the_cache_has_not_seen_yet_waits_for_its_event() -> None:
    """A pod created right after its namespace can beat the namespace's watch event; the scope must
    still be the namespace's (CDE here), so the app waits briefly for the event."""
    api = FakeAPI()
    cache = SnapshotCache(api, Config())
    for kind in CACHED_KINDS:
        cache.relist(kind)
    rv = str(api.rv)
    api.put({"apiVersion": "v1", "kind": "Namespace",
             "metadata": {"name": "late", "labels": {"kubepci.io/scope": "cde"}}})
    app = AdmissionApp(Policy(default_catalog(), Config()), cache, clock=lambda: NOW, registry=CollectorRegistry(),
                       namespace_wait_seconds=5)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "late"},
           "spec": {"containers": [{"name": "c", "image": "registry.example/app@sha256:" + "c" * 64}]}}
    timer = threading.Timer(0.2, cache.follow, ("Namespace", rv))
    timer.start()
    try:
        status, _, body = _call(app, "POST", "/validate", _review(pod))
    finally:
        timer.join()
    assert status == 200
    annotations = orjson.loads(body)["response"]["auditAnnotations"]
    assert annotations["scope"] == "cde"
    assert annotations["deny.workload-sandboxed-runtime-cde"].startswith("spec.runtimeClassName")  # CDE-only

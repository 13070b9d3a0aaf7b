"""The HTTPS ingest server on 127.0.0.1, on SQLite and on a real PostgreSQL.

What a sender is promised: 200 only once the batch is durable, the exact bytes of every event
kept, a retry never counted twice, bad input refused with a reason and nothing stored, and only
authenticated sources on their own endpoint. What an assessor is promised: review alerts and
source silences are leaves like any other, and the whole trail verifies afterwards.
"""

from __future__ import annotations

import hashlib
import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kubepci.auditlog.checkpoint import NoteSigner
from kubepci.auditlog.events import append_admission_decision
from kubepci.auditlog.ingest import Ingestor
from kubepci.auditlog.rules import ReviewContext, Reviewer
from kubepci.auditlog.server import IngestServer, IngestSettings
from kubepci.auditlog.sources import Sources, default_sources, load_sources
from kubepci.auditlog.store import SearchQuery, TrailStore
from kubepci.auditlog.trail import Trail
from tests.integration.conftest import Backend
from tests.integration.events import MALFORMED_TRACE, TRACE_DIR, demo_lines, synthetic_event
from tests.integration.trail_server import Client, Pki, event_list, sidekick_payloads

K8S, FALCO = "/v1/k8s-audit", "/v1/falco"
FALCO_TOKEN = "falco-token-0123456789abcdef"  # noqa: S105 -- a test credential


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def certs(pki: Pki) -> dict[str, tuple[Path, Path]]:
    return {
        "server": pki.issue("server", "kubepci-trail", server=True),
        "apiserver": pki.issue("apiserver", "kube-apiserver-audit"),
        "falco": pki.issue("falco", "falco-node-1"),
        "stranger": pki.issue("stranger", "someone-else"),
    }


@pytest.fixture
def sources(tmp_path: Path) -> Sources:
    (tmp_path / "falco.token").write_text(FALCO_TOKEN + "\n", encoding="utf-8")
    path = tmp_path / "sources.yaml"
    path.write_text(
        "sources:\n"
        "  - {name: apiserver, endpoint: k8s-audit, client_names: [kube-apiserver-audit], silence: 1h}\n"
        "  - {name: falco, endpoint: falco, client_names: [falco-node-1], silence: 1h}\n"
        "  - {name: falco-sidekick, endpoint: falco, token_file: falco.token}\n",
        encoding="utf-8",
    )
    return load_sources(path)


class Harness:
    def __init__(self, server: IngestServer, backend: Backend, pki: Pki, certs: dict[str, tuple[Path, Path]],
                 signer: NoteSigner) -> None:
        self.server, self.backend, self.pki, self.certs, self.signer = server, backend, pki, certs, signer

    def client(self, cert: str | None = "apiserver", token: str | None = None) -> Client:
        return Client(self.server.port, self.pki.ca_path, self.certs[cert] if cert else None, token)

    def store(self) -> TrailStore:
        return self.backend.open()


MakeHarness = Callable[..., "Harness"]


@pytest.fixture
def harness_factory(backend: Backend, pki: Pki, certs: dict[str, tuple[Path, Path]], signer: NoteSigner,
                    sources: Sources) -> Iterator[MakeHarness]:
    started: list[IngestServer] = []

    def make(*, max_body: int = 16 << 20, tick: float = 5.0, srcs: Sources | None = None,
             ctx: ReviewContext | None = None) -> Harness:
        settings = IngestSettings(certs["server"][0], certs["server"][1], pki.ca_path, port=0, max_body_bytes=max_body,
                                  tick_seconds=tick, checkpoint_seconds=0.2, checkpoint_every=50)
        server = IngestServer(backend.open, settings, srcs or sources, signer=signer,
                              ingestor=Ingestor(Reviewer(ctx)) if ctx else None)
        server.start()
        started.append(server)
        return Harness(server, backend, pki, certs, signer)

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def harness(harness_factory: MakeHarness) -> Harness:
    return harness_factory()


def _verify(h: Harness) -> None:
    with h.store() as store:
        result = Trail(store, h.signer).verify()
    assert result.size > 0
    assert result.payloads_checked == result.size


def test_event_list_items_are_stored_byte_for_byte(harness: Harness) -> None:
    lines = demo_lines()
    answer = harness.client().post(K8S, event_list(lines, b",\n  "))
    assert answer.status == 200, answer.body
    assert (answer.body["items"], answer.body["accepted"], answer.body["rejected"]) == (37, 37, [])
    with harness.store() as store:
        for line, index in zip(lines, answer.body["indices"], strict=True):
            entry = store.entry(index)
            assert entry.raw == line
            envelope = json.loads(entry.envelope)
            assert envelope["source"] == "apiserver"
            assert envelope["kind"] == "k8s-audit"
            assert envelope["payload_sha256"] == hashlib.sha256(line).hexdigest()
            assert envelope["batch_id"] == answer.body["batch_id"]
        forbidden = Trail(store).search(SearchQuery(kind="k8s-audit", outcome="failure", limit=100))
    assert len(forbidden) == 11  # audit2rbac's demo: 11 lists answered 403, all by system:admin impersonating
    assert {(hit["index"]["user"], hit["index"]["verb"]) for hit in forbidden} == {("system:admin", "list")}
    _verify(harness)


def test_a_retried_batch_is_recognised_not_counted_twice(harness: Harness) -> None:
    body = event_list(demo_lines())
    first = harness.client().post(K8S, body)
    second = harness.client().post(K8S, body)
    assert first.status == second.status == 200
    assert second.body["indices"] == first.body["indices"]
    assert (second.body["appended"], second.body["duplicates"]) == (0, 37)
    with harness.store() as store:
        size = store.size()
        keys = [json.loads(e.envelope)["payload_sha256"] for e in store.iter_entries()
                if json.loads(e.envelope)["kind"] == "k8s-audit"]
    assert len(keys) == len(set(keys)) == 37
    assert size == max(first.body["indices"] + [a["index"] for a in first.body["alerts"]]) + 1
    _verify(harness)


def test_concurrent_requests_are_all_durable_and_gapless(harness: Harness) -> None:
    answers: dict[int, dict[str, object]] = {}

    def send(worker: int) -> None:
        client = harness.client()
        for batch in range(5):
            lines = [synthetic_event(worker * 10_000 + batch * 100 + n) for n in range(20)]
            answer = client.post(K8S, event_list(lines))
            assert answer.status == 200
            answers[worker * 100 + batch] = answer.body

    threads = [threading.Thread(target=send, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(answers) == 30
    indices = [i for body in answers.values() for i in body["indices"]]  # type: ignore[attr-defined]
    assert len(indices) == len(set(indices)) == 600
    with harness.store() as store:
        stored = [entry.index for entry in store.iter_entries()]
    assert stored == list(range(len(stored)))
    assert set(indices) <= set(stored)
    _verify(harness)


def test_falco_and_sidekick_payloads_keep_their_exact_bytes(harness: Harness) -> None:
    payloads = sidekick_payloads()
    by_token = harness.client(cert=None, token=FALCO_TOKEN)
    by_cert = harness.client(cert="falco")
    indices = []
    for client, payload in zip((by_token, by_cert), payloads, strict=True):
        answer = client.post(FALCO, payload)
        assert answer.status == 200, answer.body
        indices.append(answer.body["indices"][0])
    with harness.store() as store:
        stored = [store.entry(i) for i in indices]
    assert [s.raw for s in stored] == payloads  # sidekick's odd spacing survives
    envelopes = [json.loads(s.envelope) for s in stored]
    assert [e["source"] for e in envelopes] == ["falco-sidekick", "falco"]
    assert {(e["index"]["rule"], e["index"]["priority"]) for e in envelopes} == {("Test rule", "Debug")}
    _verify(harness)


def test_review_alerts_are_leaves_next_to_their_evidence(harness: Harness) -> None:
    exec_event = (TRACE_DIR / "exec_pod.json").read_bytes().strip()
    answer = harness.client().post(K8S, event_list([exec_event]))
    assert answer.status == 200
    checks = {alert["check"]: alert["index"] for alert in answer.body["alerts"]}
    assert "D01.exec_attach" in checks
    with harness.store() as store:
        hits = Trail(store).search(SearchQuery(kind="alert", limit=50))
        alert_raw = json.loads(store.entry(checks["D01.exec_attach"]).raw or b"{}")
    assert any(hit["index"]["rule"] == "D01.exec_attach" and hit["source"] == "kubepci-review" for hit in hits)
    assert alert_raw["event_sha256"] == hashlib.sha256(exec_event).hexdigest()
    assert alert_raw["pci"] == ["10.2.1.1", "10.2.1.2"]
    _verify(harness)


@pytest.mark.parametrize(
    ("path", "body", "reason"),
    [
        (K8S, b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{"a":1},]}', "Expecting value"),
        (K8S, b'{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"x","stage":"ResponseComplete"}',
         "expected an audit.k8s.io EventList"),
        (K8S, b'{"kind":"EventList","apiVersion":"v1","items":[]}', "expected apiVersion audit.k8s.io/v1"),
        (K8S, b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{"x":NaN}]}', "NaN is not valid JSON"),
        (K8S, b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[]}{}', "extra data"),
        (K8S, b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":["\xff"]}', "not UTF-8"),
        (K8S, b"", "expecting an EventList object"),
        (FALCO, b'{"priority":"Debug","time":"2026-01-01T00:00:00Z","output_fields":{}}', "without a rule"),
        (FALCO, b'"just a string"', "expecting a Falco alert"),
    ],
)
def test_bad_bodies_are_refused_with_the_reason_and_nothing_is_stored(
    harness: Harness, path: str, body: bytes, reason: str
) -> None:
    with harness.store() as store:
        before = store.size()
    client = harness.client("apiserver" if path == K8S else "falco")
    answer = client.post(path, body)
    assert answer.status == 400
    assert reason in answer.body["error"]
    with harness.store() as store:
        assert store.size() == before


def test_a_bad_item_in_a_good_list_is_kept_as_a_rejected_leaf(harness: Harness) -> None:
    good = demo_lines()[0]
    bad = MALFORMED_TRACE.read_bytes().strip()  # {"kind": 0}
    answer = harness.client().post(K8S, event_list([good, bad]))
    assert answer.status == 200
    assert answer.body["rejected"] == [{"item": 1, "reason": "not an audit Event (kind=0)"}]
    with harness.store() as store:
        entry = store.entry(answer.body["indices"][1])
    envelope = json.loads(entry.envelope)
    assert entry.raw == bad
    assert envelope["kind"] == "rejected"
    assert envelope["index"]["rule"] == "invalid-event: not an audit Event (kind=0)"


def test_a_nul_in_an_indexed_field_does_not_poison_the_batch(harness: Harness) -> None:
    """PostgreSQL text cannot hold NUL; a request for /pods/a%00b must not make the store refuse the batch."""
    event = json.loads(demo_lines()[0])
    event["objectRef"]["name"] = "a\u0000b"
    event["user"]["username"] = "ev\u0000il"
    line = json.dumps(event).encode()
    answer = harness.client().post(K8S, event_list([line, demo_lines()[1]]))
    assert answer.status == 200, answer.body
    with harness.store() as store:
        entry = store.entry(answer.body["indices"][0])
    assert entry.raw == line  # the evidence keeps the NUL
    index = json.loads(entry.envelope)["index"]
    assert (index["name"], index["user"]) == ("a\ufffdb", "ev\ufffdil")


def test_a_body_over_the_limit_is_413_and_stores_nothing(harness_factory: MakeHarness) -> None:
    h: Harness = harness_factory(max_body=4096)
    body = event_list([synthetic_event(n) for n in range(10)])
    assert len(body) > 4096
    with h.store() as store:
        before = store.size()
    answer = h.client().post(K8S, body)
    assert answer.status == 413
    assert "exceeds 4096 bytes" in answer.body["error"]
    with h.store() as store:
        assert store.size() == before


@pytest.mark.parametrize(
    ("cert", "token", "path", "status", "reason"),
    [
        (None, None, K8S, 401, "no client certificate or bearer token"),
        ("stranger", None, K8S, 403, "not pinned to any source"),
        ("falco", None, K8S, 403, "may only deliver to falco"),
        (None, FALCO_TOKEN, K8S, 403, "may only deliver to falco"),
        (None, "wrong-token-wrong-token", FALCO, 401, "unknown bearer token"),
        ("apiserver", "wrong-token-wrong-token", K8S, 401, "unknown bearer token"),
    ],
)
def test_only_known_sources_on_their_own_endpoint_may_deliver(
    harness: Harness, cert: str | None, token: str | None, path: str, status: int, reason: str
) -> None:
    with harness.store() as store:
        before = store.size()
    answer = harness.client(cert, token).post(path, event_list(demo_lines()[:2]))
    assert answer.status == status
    assert reason in answer.body["error"]
    if status == 401:
        assert answer.headers["www-authenticate"].startswith("Bearer")
    with harness.store() as store:
        assert store.size() == before


def test_a_certificate_from_another_ca_fails_the_handshake(harness: Harness, tmp_path: Path) -> None:
    other = Pki(tmp_path / "other", "other-ca")
    client = Client(harness.server.port, harness.pki.ca_path, other.issue("intruder", "kube-apiserver-audit"))
    with pytest.raises((ssl.SSLError, ConnectionError)):
        client.post(K8S, event_list(demo_lines()[:1]))


def test_probes_and_metrics(harness: Harness) -> None:
    client = harness.client()
    assert client.request("GET", "/healthz").status == 200
    assert client.request("GET", "/readyz").status == 200
    assert client.request("GET", K8S).status == 405
    client.post(K8S, event_list(demo_lines()[:3]))
    metrics = client.request("GET", "/metrics").body
    assert 'kubepci_trail_requests_total{code="200",endpoint="k8s-audit"} 1.0' in metrics
    assert 'kubepci_trail_events_total{outcome="appended",source="apiserver"} 3.0' in metrics
    assert "kubepci_trail_source_silence_seconds{source=\"apiserver\"}" in metrics


def test_silence_is_recorded_as_a_gap_and_its_end_as_a_resume(harness_factory: MakeHarness, tmp_path: Path) -> None:
    path = tmp_path / "quick.yaml"
    path.write_text("sources:\n  - {name: apiserver, endpoint: k8s-audit, client_names: ['*'], silence: 1s}\n",
                    encoding="utf-8")
    h: Harness = harness_factory(tick=0.1, srcs=load_sources(path))
    deadline = time.monotonic() + 10
    gaps: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not gaps:
        time.sleep(0.2)
        with h.store() as store:
            gaps = Trail(store).search(SearchQuery(kind="gap"))
    assert gaps, "no gap recorded for a source silent past its threshold"
    assert gaps[0]["source"] == "apiserver"
    assert gaps[0]["index"]["rule"] == "source-silent"
    metrics = h.client().request("GET", "/metrics").body
    assert 'kubepci_trail_source_silent{source="apiserver"} 1.0' in metrics
    assert h.client().post(K8S, event_list(demo_lines()[:1])).status == 200
    with h.store() as store:
        records = [json.loads(store.entry(hit["leaf_index"]).raw or b"{}")
                   for hit in Trail(store).search(SearchQuery(kind="gap"))]
    assert [r["type"] for r in records][:2] == ["source-silent", "source-resumed"]
    assert records[1]["last_seen"] == records[0]["last_seen"]
    _verify(h)


def test_admission_decisions_go_through_the_committer(harness: Harness) -> None:
    record = {"event": "admission.decision", "decision_id": "5f3c-uid", "allowed": False, "dry_run": False,
              "operation": "CREATE", "kind": "Pod", "namespace": "payments", "name": "api-0", "scope": "cde",
              "denied": [{"check": "KPCI-WL-001", "path": "spec.containers[0].securityContext.privileged"}],
              "user": "alice@example.com", "time": "2026-03-01T10:00:00+00:00", "duration_ms": 1.25}
    index = append_admission_decision(harness.server.committer, record)
    assert append_admission_decision(harness.server.committer, {**record, "dry_run": True}) is None
    with harness.store() as store:
        hits = Trail(store).search(SearchQuery(kind="admission", outcome="failure"))
    assert [(h["leaf_index"], h["index"]["user"], h["index"]["rule"]) for h in hits] == [
        (index, "alice@example.com", "KPCI-WL-001")]
    _verify(harness)


def test_default_sources_accept_any_certificate_of_the_client_ca(harness_factory: MakeHarness) -> None:
    h: Harness = harness_factory(srcs=default_sources())
    answer = h.client("stranger").post(K8S, event_list(demo_lines()[:2]))
    assert answer.status == 200
    assert answer.body["source"] == "apiserver"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "no trail store"),
        (["--store", "sqlite:x.db"], "nobody could deliver"),
        (["--store", "sqlite:x.db", "--client-ca", "{ca}", "--listen", "localhost"], "--listen: want HOST:PORT"),
    ],
)
def test_serve_refuses_to_start_without_what_it_needs(
    args: list[str], message: str, certs: dict[str, tuple[Path, Path]], pki: Pki
) -> None:
    from click.testing import CliRunner

    from kubepci.cli.trail_cmd import trail as trail_cli

    tls = ["--cert", str(certs["server"][0]), "--key-file", str(certs["server"][1])]
    result = CliRunner().invoke(trail_cli, ["serve", *tls, *[a.format(ca=pki.ca_path) for a in args]])
    assert result.exit_code != 0
    assert message in str(result.exception) + result.output

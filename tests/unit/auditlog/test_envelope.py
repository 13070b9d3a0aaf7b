"""Leaf envelopes: field mapping from real audit and Falco samples, canonical bytes, hashing raw bytes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from kubepci.auditlog.envelope import (
    Envelope,
    EnvelopeError,
    IndexFields,
    NewEntry,
    canonical_json,
    dedupe_key,
    detect_kind,
    falco_entry,
    k8s_audit_entry,
    normalize_time,
    record_entry,
)
from kubepci.auditlog.merkle import leaf_hash

TRACES = Path("../shared/testdata/falco-k8s-audit/trace_files")
DEMO_LOG = Path("../shared/testdata/audit2rbac/demo.log")
SIDEKICK = Path("../shared/testdata/falcosidekick/falco_payload_examples.json")
AT = "2026-11-27T10:00:00.000000Z"


def _trace(name: str) -> bytes:
    return (TRACES / name).read_bytes().splitlines()[0]


def test_k8s_event_fields_map_to_the_index() -> None:
    raw = _trace("attach_pod.json")
    entry = k8s_audit_entry(raw, source="apiserver", received_at=AT)
    assert entry.envelope.index == IndexFields(
        user="minikube-user", verb="create", resource="pods/attach", namespace="default",
        name="nginx-deployment-7998647bdf-phvq7", code=101, source_ip="192.168.99.1",
        audit_id="14933b4e-7b09-4964-af09-b7987367e1ba", stage="ResponseStarted",
        event_time="2018-10-26T13:42:46.808261Z",
    )
    assert entry.envelope.kind == "k8s-audit"
    assert entry.raw == raw


def test_v1_demo_event_with_impersonation_and_legacy_timestamp() -> None:
    raw = DEMO_LOG.read_bytes().splitlines()[0]
    index = k8s_audit_entry(raw, source="apiserver", received_at=AT).envelope.index
    assert (index.user, index.verb, index.resource, index.namespace, index.code) == (
        "system:admin", "list", "pods", "default", 403,
    )
    assert index.name is None  # a list has no object name
    assert index.event_time == "2017-09-11T19:55:05.000000Z"  # only the legacy `timestamp` is present
    assert index.source_ip == "::1"


def test_only_the_last_source_ip_is_indexed() -> None:
    event = json.loads(_trace("attach_pod.json"))
    event["sourceIPs"] = ["1.2.3.4", "10.0.0.9", "192.0.2.10"]  # X-Forwarded-For is client-controlled
    raw = json.dumps(event).encode()
    assert k8s_audit_entry(raw, source="apiserver", received_at=AT).envelope.index.source_ip == "192.0.2.10"


@pytest.mark.parametrize("name", sorted(p.name for p in TRACES.glob("*.json") if p.name != "fal_01_003.json"))
def test_every_falco_trace_event_is_accepted(name: str) -> None:
    for raw in (TRACES / name).read_bytes().splitlines():
        if raw.strip():
            entry = k8s_audit_entry(raw, source="apiserver", received_at=AT)
            assert entry.envelope.index.audit_id
            assert entry.envelope.index.event_time is not None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"kind": 0}', "not an audit Event (kind=0)"),
        (b'{"kind":"Event","apiVersion":"v1","auditID":"a","stage":"s"}', "apiVersion='v1'"),
        (b'{"kind":"Event","stage":"ResponseComplete"}', "without an auditID"),
        (b'{"kind":"Event","auditID":"a"}', "without a stage"),
        (b"[]", "expected a JSON object, got list"),
        (b"{", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b'{"auditID":"a","stage":"s","x":Infinity}', "Infinity is not valid JSON"),
    ],
)
def test_malformed_events_are_rejected_with_a_reason(raw: bytes, message: str) -> None:
    with pytest.raises(EnvelopeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        k8s_audit_entry(raw, source="apiserver", received_at=AT)


def test_payload_hash_is_over_the_exact_received_bytes() -> None:
    """Whitespace and key order in the raw payload survive: nothing is re-serialised."""
    raw = json.loads(SIDEKICK.read_text())["payloads"][0]["raw"].encode()
    assert b', "time"' in raw  # the sample's irregular spacing
    entry = falco_entry(raw, source="falcosidekick", received_at=AT)
    assert entry.envelope.payload_sha256 == hashlib.sha256(raw).hexdigest()
    assert entry.envelope.payload_sha256 != hashlib.sha256(canonical_json(json.loads(raw))).hexdigest()
    assert entry.leaf_hash == leaf_hash(entry.envelope_bytes)


def test_falco_alert_fields_map_to_the_index() -> None:
    alert = {
        "uuid": "7f0f7a3a-7d2b-4c0b-9a9e-3f6c2f1b2c3d", "output": "exec into payments pod",
        "priority": "Notice", "rule": "Attach/Exec Pod", "time": "2026-03-01T12:00:00.123456789Z",
        "source": "k8s_audit", "hostname": "node-1",
        "output_fields": {"ka.user.name": "alice", "ka.verb": "create", "ka.target.resource": "pods",
                          "ka.target.subresource": "exec", "ka.target.namespace": "payments",
                          "ka.target.name": "api-0", "ka.response.code": "101"},
    }
    raw = json.dumps(alert).encode()
    index = falco_entry(raw, source="falcosidekick", received_at=AT).envelope.index
    assert index == IndexFields(
        user="alice", verb="create", resource="pods/exec", namespace="payments", name="api-0", code=101,
        audit_id="7f0f7a3a-7d2b-4c0b-9a9e-3f6c2f1b2c3d", event_time="2026-03-01T12:00:00.123456Z",
        rule="Attach/Exec Pod", priority="Notice",
    )
    assert detect_kind(alert) == "falco"
    with pytest.raises(EnvelopeError, match="without a rule"):
        falco_entry(b'{"priority":"Debug","time":"2026-01-01T00:00:00Z"}', source="falco", received_at=AT)


def test_envelope_bytes_are_rfc8785_and_round_trip() -> None:
    entry = k8s_audit_entry(_trace("exec_pod.json"), source="apiserver", received_at=AT, batch_id="batch-9")
    doc = json.loads(entry.envelope_bytes)
    assert entry.envelope_bytes == rfc8785.dumps(doc)
    assert list(doc) == sorted(doc)
    assert (doc["v"], doc["batch_id"]) == (1, "batch-9")
    assert "seq" not in doc
    assert set(doc["index"]) == {"user", "verb", "resource", "namespace", "name", "code", "source_ip", "audit_id",
                                 "stage", "event_time", "rule", "priority"}
    assert Envelope.parse(entry.envelope_bytes) == entry.envelope
    assert "batch_id" not in json.loads(Envelope(**{**_fields(entry.envelope), "batch_id": None}).canonical())


def _fields(envelope: Envelope) -> dict[str, object]:
    return {name: getattr(envelope, name) for name in ("source", "received_at", "payload_sha256", "kind",
                                                       "index", "batch_id")}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"v": 2}, "unsupported envelope version 2"),
        ({"extra": 1}, "unknown envelope field"),
        ({"index": {"user": 5}}, "index field 'user' must be str"),
        ({"index": {"code": "200"}}, "index field 'code' must be int"),
        ({"index": {"colour": "red"}}, "unknown index field"),
        ({"kind": "syslog"}, "unknown record kind 'syslog'"),
        ({"received_at": "2026-11-27T10:00:00Z"}, "not a normalised UTC timestamp"),
        ({"payload_sha256": "ABC"}, "64 lower-case hex digits"),
    ],
)
def test_envelope_parse_is_strict(doc: dict[str, object], message: str) -> None:
    good = json.loads(k8s_audit_entry(_trace("exec_pod.json"), source="apiserver", received_at=AT).envelope_bytes)
    if "index" in doc:
        doc = {"index": {**good["index"], **doc["index"]}}  # type: ignore[dict-item]
    with pytest.raises(EnvelopeError, match=message):
        Envelope.parse(json.dumps({**good, **doc}).encode())


def test_lone_surrogate_in_a_user_name_still_canonicalises() -> None:
    event = json.loads(_trace("attach_pod.json"))
    raw = json.dumps(event).replace("minikube-user", "mini\\ud800kube").encode()
    entry = k8s_audit_entry(raw, source="apiserver", received_at=AT)
    assert entry.envelope.index.user == "mini\\ud800kube"
    assert Envelope.parse(entry.envelope_bytes).index.user == "mini\\ud800kube"


def test_dedupe_key_separates_source_id_stage_and_bytes() -> None:
    base = dedupe_key("apiserver", "id-1", "ResponseComplete", "a" * 64)
    assert base == dedupe_key("apiserver", "id-1", "ResponseComplete", "a" * 64)
    others = {
        dedupe_key("apiserver-2", "id-1", "ResponseComplete", "a" * 64),
        dedupe_key("apiserver", "id-2", "ResponseComplete", "a" * 64),
        dedupe_key("apiserver", "id-1", "RequestReceived", "a" * 64),
        dedupe_key("apiserver", "id-1", "ResponseComplete", "b" * 64),
        dedupe_key("apiserver", None, "ResponseComplete", "a" * 64),
    }
    assert base not in others
    assert len(others) == 5
    # no separator games: moving characters between fields changes the key
    assert dedupe_key("a", "bc", None, "a" * 64) != dedupe_key("ab", "c", None, "a" * 64)
    # the event time leads, so keys sort by event time
    stamped = dedupe_key("apiserver", "id-1", "ResponseComplete", "a" * 64, "2026-03-01T00:00:00.000000Z")
    assert stamped == "2026-03-01T00:00:00.000000Z/" + base.split("/")[1]
    assert base.startswith("-/")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2018-10-26T13:42:46.808261Z", "2018-10-26T13:42:46.808261Z"),
        ("2026-03-01T12:00:00.123456789Z", "2026-03-01T12:00:00.123456Z"),
        ("2017-09-11T19:55:05Z", "2017-09-11T19:55:05.000000Z"),
        ("2017-09-11T21:55:05.5+02:00", "2017-09-11T19:55:05.500000Z"),
        ("2017-09-11 19:55:05-0130", "2017-09-11T21:25:05.000000Z"),
        ("2017-02-30T00:00:00Z", None),
        ("2017-09-11T19:55:05", None),
        ("yesterday", None),
        (1_700_000_000, None),
    ],
)
def test_normalize_time(value: object, expected: str | None) -> None:
    assert normalize_time(value) == expected


def test_record_entry_owns_its_bytes() -> None:
    entry = record_entry("admission", {"decision": "deny", "check": "workload-privileged"}, source="kubepci-webhook",
                         received_at=AT, index=IndexFields(verb="create", namespace="payments"))
    assert entry.raw == b'{"check":"workload-privileged","decision":"deny"}'
    assert entry.envelope.kind == "admission"
    with pytest.raises(EnvelopeError, match="payload_sha256 does not match"):
        NewEntry.build(entry.envelope, entry.raw + b" ")


@given(st.dictionaries(st.sampled_from(["user", "verb", "namespace", "name", "resource"]),
                       st.text(max_size=40)))
def test_any_index_text_round_trips(values: dict[str, str]) -> None:
    index = IndexFields(**{k: v or None for k, v in values.items()})
    try:
        envelope = Envelope("apiserver", AT, "0" * 64, "k8s-audit", index)
        data = envelope.canonical()
    except EnvelopeError:
        return  # lone surrogates cannot be JSON text; builders escape them before this point
    assert Envelope.parse(data) == envelope


_JSON_LEAVES = (
    st.none() | st.booleans() | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.text(alphabet=st.characters(codec="utf-8"), max_size=20)
)
_JSON_VALUES = st.recursive(
    _JSON_LEAVES,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(alphabet=st.characters(codec="utf-8"), max_size=8), inner, max_size=4),
    max_leaves=20,
)


@given(_JSON_VALUES)
def test_canonical_json_fast_path_equals_rfc8785(value: object) -> None:
    """The encoder shortcut must produce rfc8785's bytes for every document, not only envelopes."""
    assert canonical_json(value) == rfc8785.dumps(value)


@pytest.mark.parametrize(
    "value",
    [{"k": "\x00\x1f\x7f\b\f\n\r\t\"\\/\u2028\u00e9\U0001f600"}, {"z": 1, "a": [True, None, -5]},
     {"\u00e9": 1, "e": 2, "\U0001f600": 3, "\uff61": 4}, [2**53 - 1, -(2**53) + 1], {"f": 1.5}],
)
def test_canonical_json_matches_rfc8785_on_edge_cases(value: object) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)


@pytest.mark.parametrize("value", [[2**60], {"x": float("nan")}, "\ud800"])
def test_canonical_json_rejects_what_rfc8785_rejects(value: object) -> None:
    with pytest.raises(EnvelopeError, match="cannot canonicalise"):
        canonical_json(value)


@settings(max_examples=500)
@given(st.integers(0, 9999), st.integers(0, 14), st.integers(0, 32), st.integers(0, 25), st.integers(0, 61),
       st.integers(0, 61), st.integers(0, 999_999))
def test_normalised_times_take_the_fast_path_to_the_same_answer(
    year: int, month: int, day: int, hour: int, minute: int, second: int, micros: int
) -> None:
    """A MicroTime is checked by ``fromisoformat`` only; '+00:00' goes through the general parser
    and :func:`format_time`, which must keep the form fixed-width (year 635 is '0635')."""
    stamp = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}.{micros:06d}"
    fast, general = normalize_time(stamp + "Z"), normalize_time(stamp + "+00:00")
    assert fast == general
    assert fast in (None, stamp + "Z")

"""Request bodies to leaves: exact item bytes, refusal reasons, review, determinism of retries."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubepci.auditlog import ingest
from kubepci.auditlog.events import SilenceMonitor, admission_entry, scan_entry, waiver_entry
from kubepci.auditlog.ingest import IngestError, Ingestor, split_compact, split_event_list, split_falco

AT = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
DEMO = Path("../shared/testdata/audit2rbac/demo.log")
EXEC = Path("../shared/testdata/falco-k8s-audit/trace_files/exec_pod.json")
HEAD = b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":['

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(codec="utf-8")),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)
_WS = st.text(alphabet=" \t\r\n", max_size=3)


@settings(max_examples=200)
@given(st.lists(st.tuples(_JSON, _WS, _WS, st.booleans()), max_size=6), _WS)
def test_items_are_sliced_byte_exact_whatever_the_spacing_and_text(
    items: list[tuple[Any, str, str, bool]], outer: str
) -> None:
    parts, expected = [], []
    for value, before, after, ascii_only in items:
        raw = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8")
        expected.append(raw)
        parts.append(before.encode() + raw + after.encode())
    body = (outer + '{ "apiVersion" : "audit.k8s.io/v1" ,"items":' + outer + "[").encode() + b",".join(parts) + (
        "]" + outer + ', "kind":"EventList"}' + outer).encode()
    members, sliced = split_event_list(body)
    assert members == {"apiVersion": "audit.k8s.io/v1", "kind": "EventList"}
    assert [item.raw for item in sliced] == expected
    assert [item.value for item in sliced] == [json.loads(raw) for raw in expected]


def _go_json(value: Any) -> bytes:
    """Compact JSON escaped as Go's encoding/json writes it (HTML characters, U+2028/9, \\u00XX)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for char, escaped in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"), ("\u2028", "\\u2028"),
                          ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return text.encode("utf-8")


_TEXTY = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.text(st.sampled_from("ab &<>\"\\\n\t\x01\u2028\u00e9\U0001f600/"), max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text("kx&", max_size=3), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300)
@given(st.lists(_TEXTY, max_size=5), st.sampled_from(["go", "plain", "spaced"]), st.booleans())
def test_the_compact_fast_path_agrees_with_the_careful_split(values: list[Any], style: str, newline: bool) -> None:
    """Whatever the writer, both paths give the same members, exact bytes and values; the fast
    one is taken for Go's and orjson's compact output and never for anything else."""
    def encode(value: Any) -> bytes:
        if style == "go":
            return _go_json(value)
        separators = (",", ":") if style == "plain" else (", ", ": ")
        return json.dumps(value, ensure_ascii=False, separators=separators).encode("utf-8")

    doc = {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {"resourceVersion": "<1&2>"},
           "items": values}
    body = encode(doc) + (b"\n" if newline else b"")
    careful = ingest._split_event_list_text(body)
    fast = split_compact(body)
    assert (fast is not None) == (style != "spaced"), f"{style} body: fast path {'missed' if fast is None else 'taken'}"
    if fast is not None:
        assert fast[0] == careful[0]
        assert [i.raw for i in fast[1]] == [i.raw for i in careful[1]]
        assert [i.value for i in fast[1]] == [i.value for i in careful[1]]
    assert [i.raw for i in split_event_list(body)[1]] == [encode(v) for v in values]


@pytest.mark.parametrize(
    "body",
    [
        HEAD + b'{"a":1},{"a":2}]}',  # a valid compact body: the only one here that takes the fast path
        HEAD + b'{"a":1}, {"a":2}]}',  # a space between items
        HEAD + b'{"a":-0}]}',  # -0 parses to 0, which orjson writes as 0
        HEAD + b'{"a":1.0e2}]}',  # another float spelling
        HEAD + b'{"a":1,"a":2}]}',  # a duplicate key
        HEAD + b'{"a":"\\u0041"}]}',  # an escape nobody needs
        HEAD + b'{"a":"&\\u0026"}]}',  # Go's escape and a raw & in one body
        HEAD + b'{"a":184467440737095516160}]}',  # beyond 64 bits
        HEAD + b'{"a":1}],"items":[]}',  # two items members
    ],
)
def test_anything_but_the_exact_compact_form_takes_the_careful_path(body: bytes) -> None:
    fast = split_compact(body)
    assert (fast is not None) == (body == HEAD + b'{"a":1},{"a":2}]}')
    if fast is None:
        try:
            careful = ingest._split_event_list_text(body)
        except IngestError:
            return
        assert split_event_list(body) == careful


def test_demo_log_lines_come_back_exactly() -> None:
    lines = DEMO.read_bytes().splitlines()
    _, items = split_event_list(HEAD + b",\r\n\t".join(lines) + b"]}")
    assert [item.raw for item in items] == lines


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (HEAD + b"]}", None),
        (HEAD + b"1]", "expecting ',' or '}' after an object member"),
        (HEAD + b"1 2]}", "expecting ',' or ']' after an array item"),
        (b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[],"items":[]}', "two 'items' members"),
        (b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":null}', None),
        (b'{kind:"EventList"}', "expecting a member name in double quotes"),
        (b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[Infinity]}', "Infinity is not valid JSON"),
        (b"\xef\xbb\xbf{}", "expecting an EventList object"),
        (HEAD + b"[" * 50_000 + b"]" * 50_000 + b"]}", "nested too deeply"),
    ],
)
def test_event_list_shapes(body: bytes, reason: str | None) -> None:
    if reason is None:
        assert split_event_list(body)[1] == []
    else:
        with pytest.raises(IngestError, match=reason):
            split_event_list(body)


def test_falco_single_object_or_array() -> None:
    single = b' {"rule":"r","priority":"Notice","time":"2026-01-01T00:00:00.123456789Z","output_fields":{}}\n'
    assert split_falco(single)[0] is True
    assert split_falco(single)[1][0].raw == single.strip()
    batch = b"[" + single.strip() + b" , " + single.strip() + b"]"
    many, items = split_falco(batch)
    assert many is False
    assert [item.raw for item in items] == [single.strip()] * 2


def test_event_list_items_without_kind_are_reviewed() -> None:
    """The API server's webhook items carry no kind; the review must see them all the same."""
    event = json.loads(EXEC.read_bytes())
    event.pop("kind")
    batch = Ingestor(clock=lambda: AT).k8s_audit(HEAD + json.dumps(event).encode() + b"]}", source="apiserver")
    assert batch.accepted == 1
    assert "D01.exec_attach" in [alert.check for alert in batch.alerts]


def test_review_alerts_are_byte_identical_on_a_retry_after_restart() -> None:
    body = HEAD + EXEC.read_bytes().strip() + b"]}"
    first = Ingestor(clock=lambda: AT).k8s_audit(body, source="apiserver")
    later = Ingestor(clock=lambda: AT + dt.timedelta(minutes=3)).k8s_audit(body, source="apiserver")
    assert [e.dedupe_key for e in first.entries] == [e.dedupe_key for e in later.entries]
    assert [e.raw for e in first.entries] == [e.raw for e in later.entries]
    assert [e.envelope.kind for e in first.entries] == ["k8s-audit"] + ["alert"] * len(first.alerts)


def test_a_bad_falco_item_in_an_array_is_rejected_not_refused() -> None:
    good = b'{"rule":"Terminal shell in container","priority":"Notice","time":"2026-01-01T00:00:00Z"}'
    batch = Ingestor(clock=lambda: AT).falco(b"[" + good + b',{"priority":"Debug"}]', source="falco")
    assert batch.rejected == [(1, "Falco alert without a rule")]
    rejected = batch.entries[batch.items[1][0]]
    assert (rejected.envelope.kind, rejected.raw) == ("rejected", b'{"priority":"Debug"}')
    assert [a.check for a in batch.alerts] == ["D21.runtime_alert"]  # a shell on a host: passed through
    with pytest.raises(IngestError, match="without a rule"):
        Ingestor().falco(b'{"priority":"Debug"}', source="falco")


def test_silence_monitor_records_start_and_end_once() -> None:
    monitor = SilenceMonitor({"apiserver": dt.timedelta(minutes=5)}, AT)
    assert monitor.check(AT + dt.timedelta(minutes=4)) == []
    gaps = monitor.check(AT + dt.timedelta(minutes=6))
    assert [json.loads(g.raw)["silent_seconds"] for g in gaps] == [360]
    assert monitor.check(AT + dt.timedelta(minutes=9)) == []  # one entry per silence
    resumed = monitor.seen("apiserver", AT + dt.timedelta(minutes=10))
    assert [json.loads(r.raw)["type"] for r in resumed] == ["source-resumed"]
    assert json.loads(resumed[0].raw)["silent_seconds"] == 600
    assert monitor.seen("apiserver", AT + dt.timedelta(minutes=11)) == []


def test_own_records_index_what_a_reviewer_searches_for() -> None:
    decision = admission_entry({"decision_id": "u1", "allowed": False, "operation": "CREATE", "kind": "Pod",
                                "namespace": "payments", "name": "p", "user": "alice",
                                "denied": [{"check": "KPCI-1"}, {"check": "KPCI-2"}]},
                               received_at="2026-03-01T12:00:00.000000Z")
    ix = decision.envelope.index
    assert (ix.verb, ix.resource, ix.code, ix.rule, ix.user) == ("create", "pod", 403, "KPCI-1,KPCI-2", "alice")
    report = json.dumps({"schema": "kubepci.report/v1", "tool": {"version": "0.1.0"},
                         "run": {"generated_at": "2026-03-01T11:00:00Z", "catalog_digest": "sha256:ab"},
                         "summary": {"exit_code": 1, "counts": {"fail": 3}}}).encode()
    scan = json.loads(scan_entry(report, received_at="2026-03-01T12:00:00.000000Z").raw)
    assert scan["report_bytes"] == len(report)
    assert (scan["exit_code"], scan["counts"]) == (1, {"fail": 3})
    waiver = waiver_entry("added", {"id": "W-1", "check": "KPCI-9"}, actor="bob", reason="ticket 42",
                          received_at="2026-03-01T12:00:00.000000Z")
    assert (waiver.envelope.index.name, waiver.envelope.index.user) == ("W-1", "bob")


def test_decision_recorder_queues_real_decisions_and_skips_dry_runs(tmp_path: Path) -> None:
    """The webhook hook on a real group committer and SQLite store: one leaf per admitted decision."""
    from kubepci.auditlog.committer import GroupCommitter
    from kubepci.auditlog.envelope import Envelope
    from kubepci.auditlog.events import DecisionRecorder
    from kubepci.auditlog.store import SearchQuery, open_store

    url = f"sqlite:///{tmp_path / 'trail.db'}"
    committer = GroupCommitter(lambda: open_store(url))
    committer.start()
    errors: list[str] = []
    record = DecisionRecorder(committer, clock=lambda: AT, on_error=lambda uid, exc: errors.append(uid))
    base = {"allowed": False, "operation": "CREATE", "kind": "Pod", "namespace": "payments", "name": "p",
            "denied": [{"check": "workload-privileged"}]}
    record({**base, "decision_id": "real"})
    record({**base, "decision_id": "dry", "dry_run": True})
    committer.stop()
    store = open_store(url)
    try:
        hits = store.search(SearchQuery(kind="admission"))
    finally:
        store.close()
    index = [Envelope.parse(h.envelope).index for h in hits]
    assert [(i.audit_id, i.code, i.rule) for i in index] == [("real", 403, "workload-privileged")]
    assert errors == []

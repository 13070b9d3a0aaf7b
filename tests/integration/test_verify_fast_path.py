"""The bulk verification path agrees with the leaf-by-leaf one, and steps aside at any doubt.

``verify_store`` reads a store through its optional bulk methods (pages of raw rows, one level of
nodes at a time) and reads each envelope's payload hash with a regular expression for the exact
canonical form. These tests pin that the figures equal the slow path's on real mixed trails, that
every envelope the builders write matches the expression, and that tampering still gets the slow
path's precise report (test_trail_verify.py runs all its attacks through this same entry point).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubepci.auditlog import verify
from kubepci.auditlog.checkpoint import NoteSigner
from kubepci.auditlog.envelope import Envelope, IndexFields, format_time
from kubepci.auditlog.events import gap_entry
from kubepci.auditlog.ingest import Ingestor
from kubepci.auditlog.store import StoredEntry, TrailStore
from kubepci.auditlog.trail import Trail, TrailIntegrityError
from tests.integration.conftest import Backend
from tests.integration.events import demo_lines, synthetic_event, trace_lines
from tests.integration.trail_server import event_list, sidekick_payloads

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


class SlowOnly:
    """The store without its bulk methods: forces the leaf-by-leaf path."""

    def __init__(self, store: TrailStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        if name in ("scan_leaves", "node_levels", "scan_node_level"):
            raise AttributeError(name)
        return getattr(self._store, name)

    def iter_entries(self, start: int = 0, stop: int | None = None) -> Iterator[StoredEntry]:
        return self._store.iter_entries(start, stop)


def _mixed_trail(store: TrailStore, signer: NoteSigner) -> Trail:
    trail = Trail(store, signer)
    ingestor = Ingestor(clock=lambda: NOW)
    trail.append(ingestor.k8s_audit(event_list(demo_lines()), source="apiserver").entries)
    trail.append(ingestor.k8s_audit(event_list([line for _, line in trace_lines()[:60]] + [b'{"kind":0}']),
                                    source="apiserver").entries)
    trail.checkpoint()
    for payload in sidekick_payloads():
        trail.append(ingestor.falco(payload, source="falco").entries)
    trail.append([gap_entry("falco", NOW - dt.timedelta(hours=3), NOW)])
    trail.append(ingestor.k8s_audit(event_list([synthetic_event(n) for n in range(300)]), source="apiserver").entries)
    trail.checkpoint()
    return trail


def test_bulk_and_leaf_by_leaf_paths_agree(store: TrailStore, signer: NoteSigner,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    trail = _mixed_trail(store, signer)
    calls: list[int] = []
    real = verify._fast_verify

    def spy(reader: verify.BulkReader, head: int) -> Any:
        result = real(reader, head)
        calls.append(0 if result is None else result[0].tree.size)
        return result

    monkeypatch.setattr(verify, "_fast_verify", spy)
    fast = trail.verify()
    assert calls == [store.size()], "the bulk path was not taken for an intact trail"
    slow = verify.verify_store(SlowOnly(store), trail.verifiers, trail.origin)
    assert fast == slow
    assert fast.nodes_checked == store.size() - bin(store.size()).count("1")  # one per perfect subtree


@pytest.mark.parametrize("tamper", ["payload", "node", "none"])
def test_parallel_chunks_agree_and_step_aside(backend: Backend, signer: NoteSigner, monkeypatch: pytest.MonkeyPatch,
                                              tamper: str) -> None:
    """Chunks of 8 leaves in worker processes: same figures as the slow path, same first bad leaf."""
    with backend.open() as store:
        trail = _mixed_trail(store, signer)
        slow = verify.verify_store(SlowOnly(store), trail.verifiers, trail.origin)
        assert store.size() > 16 * 8
    monkeypatch.setattr(verify, "_CHUNK_LEVEL", 3)
    monkeypatch.setattr(verify, "_PARALLEL_MIN_LEAVES", 16)
    if tamper == "payload":
        backend.tamper([("UPDATE payloads SET raw = ? WHERE seq = ?", (b"[]", 203))])
    elif tamper == "node":
        backend.tamper([("UPDATE nodes SET hash = ? WHERE level = 2 AND idx = 30", (b"\x07" * 32,))])
    with backend.open() as store:
        chunks = verify._fast_verify(store, store.size())  # type: ignore[arg-type]
        if tamper == "none":
            assert chunks is not None
            assert chunks[1] == slow.nodes_checked
            assert Trail(store, signer).verify() == slow
            return
        assert chunks is None
        with pytest.raises(TrailIntegrityError) as info:
            Trail(store, signer).verify()
    assert info.value.leaf_index == (203 if tamper == "payload" else 120)


def test_tampering_falls_back_to_the_precise_report(backend: Backend, signer: NoteSigner) -> None:
    with backend.open() as store:
        _mixed_trail(store, signer)
        victim = 57
        envelope = store.entry(victim).envelope
    backend.tamper([("UPDATE payloads SET raw = ? WHERE seq = ?", (b"{}", victim))])
    with backend.open() as store, pytest.raises(TrailIntegrityError) as info:
        Trail(store, signer).verify()
    assert info.value.leaf_index == victim
    assert "raw payload does not match" in str(info.value)
    assert verify._payload_hash_of(envelope) == Envelope.parse(envelope).payload_sha256


_TEXT = st.text(st.characters(codec="utf-8"), min_size=1, max_size=30)  # utf-8: no lone surrogates


@settings(max_examples=300)
@given(
    st.fixed_dictionaries({}, optional={name: _TEXT for name in ("user", "verb", "resource", "namespace", "name",
                                                                  "source_ip", "audit_id", "stage", "rule",
                                                                  "priority", "event_time")}),
    st.one_of(st.none(), st.integers(0, 999)),
    st.sampled_from(["k8s-audit", "falco", "alert", "gap", "rejected", "admission"]),
    st.one_of(st.none(), _TEXT),
    _TEXT,
)
def test_every_canonical_envelope_matches_the_fast_expression(
    index: dict[str, str], code: int | None, kind: str, batch_id: str | None, source: str
) -> None:
    envelope = Envelope(source, format_time(NOW), "ab" * 32, kind, IndexFields(code=code, **index), batch_id)
    data = envelope.canonical()
    match = verify._ENVELOPE_RE.fullmatch(data)
    assert match is not None, data
    assert match.group(1) == b"ab" * 32


@pytest.mark.parametrize("data", [
    b'{"index":{},"kind":"k8s-audit","payload_sha256":"' + b"a" * 64 + b'","received_at":"x","source":"s","v":1}',
    b'{"v":1}',
    b"not json",
])
def test_what_the_expression_refuses_goes_to_the_parser(data: bytes) -> None:
    assert verify._ENVELOPE_RE.fullmatch(data) is None
    assert verify._payload_hash_of(data) is None

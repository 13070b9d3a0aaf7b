"""Trail verification against real tampering, on every store.

Each attack is carried out the way an insider would: straight in the database, with the append-only
guard rails switched off (SQLite: triggers dropped; PostgreSQL: ``ALTER TABLE ... DISABLE TRIGGER``
as superuser). ``verify`` must notice and name the first bad leaf.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from kubepci.auditlog import merkle
from kubepci.auditlog.checkpoint import NoteSigner, generate_keypair, parse_vkey
from kubepci.auditlog.envelope import canonical_json, format_time, k8s_audit_entry
from kubepci.auditlog.store import EntryNotFoundError, SearchQuery, TrailStore
from kubepci.auditlog.trail import Trail, TrailIntegrityError, verify_proof_bundle
from kubepci.errors import UsageError
from tests.integration.conftest import Backend, Statement
from tests.integration.events import k8s_entries, synthetic_event

NOW = dt.datetime.now(dt.UTC)
RECEIVED = format_time(NOW)


def _filled(store: TrailStore, signer: NoteSigner, count: int = 16, checkpoint_every: int = 4) -> Trail:
    trail = Trail(store, signer)
    for start in range(0, count, checkpoint_every):
        trail.append(k8s_entries(checkpoint_every, RECEIVED, start=start))
        trail.checkpoint()
    return trail


def _fail(trail: Trail, exported: Path | None = None) -> TrailIntegrityError:
    with pytest.raises(TrailIntegrityError) as info:
        trail.verify(exported)
    assert info.value.exit_code == 4
    return info.value


def _nodes_rebuilt(store: TrailStore, leaf_hashes: list[bytes]) -> list[Statement]:
    """Statements replacing every stored node with those of a tree over ``leaf_hashes``."""
    tree = merkle.MemoryTree(leaf_hashes)
    statements: list[Statement] = [("DELETE FROM nodes", ())]
    for level in range(1, tree.size.bit_length()):
        for index in range(tree.size >> level):
            value = tree.subtree_hash(index << level, 1 << level)
            statements.append(("INSERT INTO nodes (level, idx, hash) VALUES (?, ?, ?)", (level, index, value)))
    return statements


def test_untouched_trail_verifies(store: TrailStore, signer: NoteSigner, tmp_path: Path) -> None:
    trail = _filled(store, signer)
    trail.export_checkpoints(tmp_path)
    result = trail.verify(tmp_path)
    assert result.size == 16
    assert result.root == merkle.root_hash(store, 16)
    assert (result.payloads_checked, result.payloads_pruned) == (16, 0)
    assert result.nodes_checked == 8 + 4 + 2 + 1
    assert (result.checkpoints_checked, result.exported_checked, result.latest_checkpoint_size) == (4, 4, 16)


def test_flipped_envelope_byte_names_the_leaf(backend: Backend, store: TrailStore, signer: NoteSigner) -> None:
    trail = _filled(store, signer)
    envelope = bytearray(store.entry(5).envelope)
    envelope[envelope.index(b'"verb":"') + 8] ^= 0x01
    backend.tamper([("UPDATE entries SET envelope = ? WHERE seq = ?", (bytes(envelope), 5))])
    error = _fail(trail)
    assert error.leaf_index == 5
    assert "envelope was altered" in str(error)
    assert str(error).startswith("leaf 5: audit trail verification failed")


def test_altered_raw_payload_names_the_leaf(backend: Backend, store: TrailStore, signer: NoteSigner) -> None:
    trail = _filled(store, signer)
    forged = synthetic_event(7).replace(b'"code":', b'"code":2')
    backend.tamper([("UPDATE payloads SET raw = ? WHERE seq = ?", (forged, 7))])
    error = _fail(trail)
    assert error.leaf_index == 7
    assert "payload was altered" in str(error)


def test_deleted_middle_row_names_the_gap(backend: Backend, store: TrailStore, signer: NoteSigner) -> None:
    trail = _filled(store, signer)
    backend.tamper([("DELETE FROM payloads WHERE seq = ?", (4,)), ("DELETE FROM entries WHERE seq = ?", (4,))])
    error = _fail(trail)
    assert error.leaf_index == 4
    assert "leaf 4 is missing (the next stored leaf is 5)" in str(error)


def test_swapped_rows_are_caught_by_the_stored_nodes(backend: Backend, store: TrailStore,
                                                     signer: NoteSigner) -> None:
    trail = _filled(store, signer)
    a, b = store.entry(2), store.entry(5)
    assert a.envelope != b.envelope
    update = "UPDATE entries SET leaf_hash = ?, envelope = ?, dedupe_key = ? WHERE seq = ?"
    backend.tamper([
        ("UPDATE entries SET dedupe_key = 'tmp' WHERE seq = ?", (2,)),
        (update, (b.leaf_hash, b.envelope, "swap-b", 2)),
        (update, (a.leaf_hash, a.envelope, "swap-a", 5)),
        ("UPDATE payloads SET raw = ? WHERE seq = ?", (b.raw, 2)),
        ("UPDATE payloads SET raw = ? WHERE seq = ?", (a.raw, 5)),
    ])
    error = _fail(trail)
    assert error.leaf_index == 2
    assert "tree node (level 1, index 1) over leaves 2..3 does not match" in str(error)


def test_rewrite_with_fixed_leaf_hash_is_located_to_its_pair(backend: Backend, store: TrailStore,
                                                               signer: NoteSigner) -> None:
    trail = _filled(store, signer)
    forged = Trail(store).search(SearchQuery(after=8, limit=1))[0]
    assert forged["leaf_index"] == 9
    forged["index"]["user"] = "someone-else"
    del forged["leaf_index"]
    envelope = canonical_json(forged)
    backend.tamper([("UPDATE entries SET envelope = ?, leaf_hash = ? WHERE seq = ?",
                     (envelope, merkle.leaf_hash(envelope), 9))])
    error = _fail(trail)
    assert error.leaf_index == 8
    assert "over leaves 8..9" in str(error)


def test_resigned_rewritten_history_is_caught_by_exported_checkpoints(
    backend: Backend, store: TrailStore, signer: NoteSigner, tmp_path: Path
) -> None:
    """The insider has the signing key too: only checkpoints exported before the rewrite catch it."""
    trail = _filled(store, signer)  # checkpoints at 4, 8, 12, 16
    trail.export_checkpoints(tmp_path)
    leaves = [e.leaf_hash for e in store.iter_entries()]
    forged_raw = synthetic_event(10).replace(b"payments-operators", b"auditors")
    forged = k8s_audit_entry(forged_raw, source="apiserver", received_at=RECEIVED)
    leaves[10] = forged.leaf_hash
    backend.tamper([
        ("UPDATE entries SET envelope = ?, leaf_hash = ?, dedupe_key = ? WHERE seq = ?",
         (forged.envelope_bytes, forged.leaf_hash, forged.dedupe_key, 10)),
        ("UPDATE payloads SET raw = ? WHERE seq = ?", (forged_raw, 10)),
        *_nodes_rebuilt(store, leaves),
        ("DELETE FROM checkpoints", ()),
    ])
    trail.checkpoint()  # re-signed with the real key
    assert trail.verify().size == 16  # self-consistent: the store alone cannot tell
    error = _fail(trail, tmp_path)
    assert error.leaf_index == 8
    assert "size 12) does not match the stored leaves: history between leaf 8 and leaf 11" in str(error)
    assert "1 further problem" in str(error)  # the size-16 export fails too
    with pytest.raises(TrailIntegrityError, match="the stored history was rewritten after that export"):
        trail.export_checkpoints(tmp_path)


def test_rollback_to_an_old_snapshot_is_caught_by_exported_checkpoints(
    backend: Backend, store: TrailStore, signer: NoteSigner, tmp_path: Path
) -> None:
    trail = _filled(store, signer, count=20, checkpoint_every=10)
    trail.export_checkpoints(tmp_path)
    # what restoring a backup taken at size 10 leaves behind: no trace of leaves 10..19 at all
    backend.tamper([
        ("DELETE FROM payloads WHERE seq >= ?", (10,)),
        ("DELETE FROM entries WHERE seq >= ?", (10,)),
        ("DELETE FROM nodes WHERE (idx + 1) * (1 << level) > ?", (10,)),
        ("DELETE FROM checkpoints WHERE size > ?", (10,)),
        *backend.set_head(10),
    ])
    assert trail.verify().size == 10
    error = _fail(trail, tmp_path)
    assert error.leaf_index == 10
    assert "covers 20 leaves but the trail has only 10: leaves were removed or the store was rolled back" in str(error)


def test_removed_tail_is_caught_by_leftover_nodes(backend: Backend, store: TrailStore, signer: NoteSigner) -> None:
    trail = _filled(store, signer)
    backend.tamper([
        ("DELETE FROM payloads WHERE seq >= ?", (12,)),
        ("DELETE FROM entries WHERE seq >= ?", (12,)),
        ("DELETE FROM checkpoints WHERE size > ?", (12,)),
        *backend.set_head(12),
    ])
    error = _fail(trail)
    assert error.leaf_index == 12
    assert "exists but only 12 leaves are stored: the tail of the trail was removed" in str(error)


def test_forged_stored_checkpoint_fails_its_signature(backend: Backend, store: TrailStore,
                                                       signer: NoteSigner) -> None:
    trail = _filled(store, signer, count=4)
    note = store.checkpoints()[0].note
    body = note.split("\n")
    body[1] = "5"
    backend.tamper([("UPDATE checkpoints SET note = ?", ("\n".join(body),))])
    error = _fail(trail)
    assert error.leaf_index is None
    assert "stored checkpoint #1 does not verify" in str(error)


def test_verify_needs_the_public_key_and_rejects_another(store: TrailStore, signer: NoteSigner) -> None:
    _filled(store, signer, count=4)
    with pytest.raises(UsageError, match="needs the log's public key"):
        Trail(store).verify()
    _, other_vkey = generate_keypair(signer.name)
    error = _fail(Trail(store, verifiers=[parse_vkey(other_vkey)]))
    assert "no signature from a known key" in str(error)


def test_prune_drops_old_payloads_and_keeps_proofs(store: TrailStore, signer: NoteSigner) -> None:
    old = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    Trail(store, signer, clock=lambda: old).append(k8s_entries(6, format_time(old)))
    trail = Trail(store, signer)
    trail.append(k8s_entries(4, RECEIVED, start=6))
    trail.checkpoint()
    with pytest.raises(UsageError, match="below the 365-day minimum"):
        trail.prune(90)
    assert trail.prune(365) == 6
    assert [e.raw is None for e in store.iter_entries()] == [True] * 6 + [False] * 4
    result = trail.verify()
    assert (result.payloads_checked, result.payloads_pruned) == (4, 6)
    bundle = trail.prove(2)
    assert bundle["payload"] is None
    proven = verify_proof_bundle(bundle, signer.verifier.vkey)
    assert proven.envelope.index.audit_id == "00000002-7b09-4964-af09-b7987367e1ba"
    assert trail.prune(365) == 0


def test_checkpoint_export_is_idempotent_and_consistent(store: TrailStore, signer: NoteSigner,
                                                       tmp_path: Path) -> None:
    trail = Trail(store, signer)
    trail.append(k8s_entries(5, RECEIVED))
    first = trail.checkpoint()
    trail.append(k8s_entries(6, RECEIVED, start=5))
    trail.checkpoint()
    written = trail.export_checkpoints(tmp_path)
    assert [p.name for p in written] == [f"{5:020d}.checkpoint", f"{11:020d}.checkpoint"]
    assert written[0].read_text() == first
    assert first.splitlines()[:2] == [signer.name, "5"]
    assert trail.export_checkpoints(tmp_path) == []
    # the exported heads are provably prefixes of the current tree
    trail.append(k8s_entries(3, RECEIVED, start=11))
    old_root = merkle.root_hash(store, 5)
    proof = merkle.consistency_proof(store, 5, 14)
    merkle.verify_consistency(5, 14, proof, old_root, merkle.root_hash(store, 14))
    result = trail.verify(tmp_path)
    assert (result.exported_checked, result.checkpoints_checked, result.size) == (2, 2, 14)


def test_proof_bundle_verifies_with_the_public_key_only(store: TrailStore, signer: NoteSigner) -> None:
    trail = Trail(store, signer)
    trail.append(k8s_entries(13, RECEIVED))
    assert store.checkpoints() == []
    bundle = trail.prove(6)
    assert len(store.checkpoints()) == 1  # a checkpoint covering the leaf was signed on demand
    bundle = json.loads(json.dumps(bundle))  # what a third party receives
    proven = verify_proof_bundle(bundle, signer.verifier.vkey)
    assert (proven.index, proven.tree_size) == (6, 13)
    assert proven.payload == synthetic_event(6)
    assert proven.envelope.index.user == "system:serviceaccount:payments:api"

    def broken(change: Callable[[dict[str, object]], None]) -> dict[str, object]:
        forged = copy.deepcopy(bundle)
        change(forged)
        return forged

    cases: list[tuple[Callable[[dict[str, object]], None], str]] = [
        (lambda b: b.update(proof=[bundle["proof"][1], *bundle["proof"][1:]]), "inclusion proof does not verify"),
        (lambda b: b.update(leaf_index=7), "inclusion proof does not verify"),
        (lambda b: b.update(tree_size=12), "bundle tree size 12 != signed size 13"),
        (lambda b: b.update(envelope=bundle["envelope"].replace("payments:api", "payments:db")),
         "inclusion proof does not verify"),
        (lambda b: b.update(payload="eA=="), "payload does not match"),
        (lambda b: b.update(checkpoint=bundle["checkpoint"].replace("\n13\n", "\n14\n")), "does not verify"),
    ]
    for change, message in cases:
        with pytest.raises(TrailIntegrityError, match=message):
            verify_proof_bundle(broken(change), signer.verifier.vkey)
    with pytest.raises(TrailIntegrityError, match="no signature from a known key"):
        verify_proof_bundle(bundle, generate_keypair(signer.name)[1])


def test_prove_refuses_unknown_leaves_and_unsigned_trees(store: TrailStore, signer: NoteSigner) -> None:
    Trail(store, signer).append(k8s_entries(3, RECEIVED))
    with pytest.raises(EntryNotFoundError, match="no leaf 3: the trail has 3 leaves"):
        Trail(store, signer).prove(3)
    with pytest.raises(UsageError, match="no signed checkpoint covers leaf 1"):
        Trail(store).prove(1)


def test_gaps_and_heartbeats_are_leaves(store: TrailStore, signer: NoteSigner) -> None:
    trail = Trail(store, signer)
    last_seen = NOW - dt.timedelta(minutes=7)
    assert trail.record_heartbeat("falco/node-1", last_seen) == 0
    assert trail.record_gap("falco/node-1", last_seen, NOW) == 1
    gap = trail.search(SearchQuery(kind="gap"))
    assert [g["leaf_index"] for g in gap] == [1]
    assert gap[0]["index"]["rule"] == "source-silent"
    assert gap[0]["index"]["event_time"] == format_time(last_seen)
    record = json.loads(store.entry(1).raw or b"")
    assert record["silent_seconds"] == 420
    assert record["source"] == "falco/node-1"
    trail.checkpoint()
    assert trail.verify().size == 2

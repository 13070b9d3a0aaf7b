"""One conformance suite for every TrailStore: tree, retries, guard rails, search, concurrency."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable
from typing import Any

import pytest

from kubepci.auditlog import merkle
from kubepci.auditlog.checkpoint import NoteSigner
from kubepci.auditlog.envelope import format_time, k8s_audit_entry
from kubepci.auditlog.store import EntryNotFoundError, SearchQuery, TrailStore
from kubepci.auditlog.trail import Trail, TrailIntegrityError
from tests.integration.conftest import Backend
from tests.integration.events import demo_lines, k8s_entries, synthetic_event

NOW = format_time(dt.datetime.now(dt.UTC))


def _check_tree(store: TrailStore, tree: merkle.MemoryTree) -> None:
    """Root, and proofs for a spread of leaves and earlier sizes, all from the store's own reads."""
    size = tree.size
    assert store.size() == size
    assert merkle.root_hash(store, size) == tree.root()
    for index in sorted({0, size // 3, size // 2, size - 1}):
        proof = merkle.inclusion_proof(store, index, size)
        merkle.verify_inclusion(tree.leaf_hash_at(index), index, size, proof, tree.root())
    for old in sorted({1, size // 2, size - 1, size}):
        if 0 < old <= size:
            proof = merkle.consistency_proof(store, old, size)
            merkle.verify_consistency(old, size, proof, tree.root(old), tree.root())


def test_append_one_by_one_matches_reference_tree_at_every_size(store: TrailStore) -> None:
    entries = k8s_entries(70, NOW)
    tree = merkle.MemoryTree()
    assert store.size() == 0
    assert merkle.root_hash(store, 0) == merkle.EMPTY_ROOT
    for position, entry in enumerate(entries):
        assert store.append_batch([entry]) == [position]
        tree.append(entry.leaf_hash)
        _check_tree(store, tree)


def test_batches_of_uneven_sizes_give_the_same_tree(store: TrailStore) -> None:
    entries = k8s_entries(600, NOW)
    tree = merkle.MemoryTree()
    position = 0
    for width in (1, 2, 3, 5, 8, 13, 64, 127, 128, 129, 100):
        batch = entries[position : position + width]
        assert store.append_batch(batch) == list(range(position, position + width))
        tree.extend(e.leaf_hash for e in batch)
        position += width
        _check_tree(store, tree)
    # every stored interior node is the reference tree's, and there is exactly one per perfect subtree
    nodes = list(store.iter_nodes())
    assert len(nodes) == sum(tree.size >> level for level in range(1, tree.size.bit_length()))
    for level, index, value in nodes:
        assert value == tree.subtree_hash(index << level, 1 << level)
    # all inclusion proofs at the final size
    for index in range(tree.size):
        proof = merkle.inclusion_proof(store, index, tree.size)
        merkle.verify_inclusion(entries[index].leaf_hash, index, tree.size, proof, tree.root())


def test_entries_read_back_byte_for_byte(store: TrailStore) -> None:
    lines = demo_lines()
    entries = [k8s_audit_entry(line, source="apiserver", received_at=NOW) for line in lines]
    store.append_batch(entries)
    for index, line in enumerate(lines):
        stored = store.entry(index)
        assert stored.raw == line
        assert stored.envelope == entries[index].envelope_bytes
        assert stored.leaf_hash == merkle.leaf_hash(stored.envelope)
        assert store.leaf_hash(index) == stored.leaf_hash
    assert [e.index for e in store.iter_entries(5, 9)] == [5, 6, 7, 8]
    with pytest.raises(EntryNotFoundError, match="no leaf 37"):
        store.entry(len(lines))


def test_retried_delivery_is_not_stored_twice(store: TrailStore) -> None:
    first = k8s_entries(10, NOW)
    assert store.append_batch(first) == list(range(10))
    # the apiserver retries a batch after a timeout: events 5..9 again, plus three new ones
    retry = first[5:] + k8s_entries(3, NOW, start=10)
    assert store.append_batch(retry) == [5, 6, 7, 8, 9, 10, 11, 12]
    assert store.size() == 13
    # a repeat inside one batch gets the index of its first occurrence
    fresh = k8s_entries(1, NOW, start=20)[0]
    assert store.append_batch([fresh, first[0], fresh]) == [13, 0, 13]
    assert store.size() == 14
    assert store.find_by_dedupe(first[7].dedupe_key) == 7
    assert store.find_by_dedupe("0" * 64) is None


def test_same_audit_id_with_other_stage_or_bytes_is_a_new_leaf(store: TrailStore) -> None:
    started = k8s_audit_entry(synthetic_event(1, stage="ResponseStarted"), source="apiserver", received_at=NOW)
    complete = k8s_audit_entry(synthetic_event(1), source="apiserver", received_at=NOW)
    other_bytes = k8s_audit_entry(synthetic_event(1) + b" ", source="apiserver", received_at=NOW)
    other_source = k8s_audit_entry(synthetic_event(1), source="apiserver-2", received_at=NOW)
    assert started.envelope.index.audit_id == complete.envelope.index.audit_id
    assert store.append_batch([started, complete, other_bytes, other_source]) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("statement", "sqlite_refusal", "postgres_refusal"),
    [
        ("UPDATE entries SET kind = 'falco' WHERE seq = 1", "append-only: UPDATE on entries",
         "permission denied for table entries"),
        ("DELETE FROM entries WHERE seq = 2", "append-only: DELETE on entries",
         "permission denied for table entries"),
        ("UPDATE nodes SET hash = hash WHERE level = 1", "append-only: UPDATE on nodes",
         "permission denied for table nodes"),
        ("DELETE FROM nodes", "append-only: DELETE on nodes", "permission denied for table nodes"),
        ("DELETE FROM checkpoints", "append-only: DELETE on checkpoints", "permission denied for table checkpoints"),
        ("UPDATE payloads SET raw = raw", "append-only: UPDATE on payloads", "permission denied for table payloads"),
        ("DELETE FROM payloads", "inside the minimum retention period", "inside the minimum retention period"),
    ],
)
def test_writer_cannot_change_history(
    backend: Backend, store: TrailStore, statement: str, sqlite_refusal: str, postgres_refusal: str
) -> None:
    store.append_batch(k8s_entries(4, NOW))
    store.add_checkpoint("note\n", 4, b"\x00" * 32, created_at=NOW)
    expected = sqlite_refusal if backend.name == "sqlite" else postgres_refusal
    assert expected in (backend.writer_sql(statement) or "accepted")
    assert store.size() == 4
    assert [e.raw for e in store.iter_entries()] == [synthetic_event(n) for n in range(4)]


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("statement", "refusal"),
    [
        ("TRUNCATE entries", "permission denied for table entries"),
        ("TRUNCATE nodes", "permission denied for table nodes"),
        ("TRUNCATE checkpoints", "permission denied for table checkpoints"),
        ("TRUNCATE payloads", "permission denied for table payloads"),
        ("UPDATE log_head SET size = 1", "the log head only moves forward (4 -> 1)"),
        ("DELETE FROM log_head", "permission denied for table log_head"),
    ],
)
def test_postgres_writer_cannot_truncate_or_rewind(postgres_backend: Backend, statement: str, refusal: str) -> None:
    with postgres_backend.open() as store:
        store.append_batch(k8s_entries(4, NOW))
        assert refusal in (postgres_backend.writer_sql(statement) or "accepted")
        assert store.size() == 4


@pytest.mark.e2e
@pytest.mark.parametrize(
    "statement",
    ["UPDATE entries SET kind = 'falco'", "DELETE FROM nodes", "TRUNCATE nodes", "TRUNCATE checkpoints",
     "DELETE FROM checkpoints", "UPDATE payloads SET raw = raw", "TRUNCATE payloads", "DELETE FROM meta"],
)
def test_postgres_owner_is_stopped_by_triggers(postgres_backend: Backend, statement: str) -> None:
    """The owner holds every privilege, so only the triggers stand in the way."""
    with postgres_backend.open() as store:
        store.append_batch(k8s_entries(4, NOW))
        store.add_checkpoint("note\n", 4, b"\x00" * 32, created_at=NOW)
    refusal = postgres_backend.owner_sql(statement) or "accepted"
    assert "kubepci audit trail is append-only" in refusal
    assert statement.split()[0] in refusal


def test_out_of_sequence_insert_is_refused_or_detected(backend: Backend, store: TrailStore,
                                                       signer: NoteSigner) -> None:
    trail = Trail(store, signer)
    trail.append(k8s_entries(4, NOW))
    trail.checkpoint()
    refusal = backend.writer_sql(
        "INSERT INTO entries SELECT seq + 100, leaf_hash, envelope, dedupe_key || 'x', kind, source, received_at,"
        " occurred_at, user_name, verb, resource, namespace, name, code, source_ip, audit_id, stage, event_time,"
        " rule, priority FROM entries WHERE seq = 0"
    )
    if backend.name == "postgres":  # refused by the statement trigger
        assert refusal == "kubepci audit trail: leaf index must be the next one (head 4, inserted 100 to 100)"
        assert trail.verify().size == 4
    else:  # SQLite has no per-row INSERT trigger (too slow); verify names the gap
        assert refusal is None
        with pytest.raises(TrailIntegrityError, match="leaf 4 is missing \\(the next stored leaf is 100\\)"):
            trail.verify()


def test_concurrent_writers_get_gapless_indices(backend: Backend) -> None:
    """Three connections append interleaved batches; the sequencer must hand out every index once."""
    backend.open().close()  # create the schema once, not racing
    results: dict[int, list[int]] = {}
    errors: list[BaseException] = []

    def run(worker: int) -> None:
        try:
            with backend.open() as mine:
                indices: list[int] = []
                for batch in range(8):
                    start = 1000 * worker + 10 * batch
                    indices += mine.append_batch(k8s_entries(10, NOW, start=start))
            results[worker] = indices
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(worker,)) for worker in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    every = sorted(i for indices in results.values() for i in indices)
    assert every == list(range(240))
    with backend.open() as reader:
        tree = merkle.MemoryTree(e.leaf_hash for e in reader.iter_entries())
        assert merkle.root_hash(reader, 240) == tree.root()


def test_search_filters_on_index_fields(store: TrailStore) -> None:
    lines = demo_lines()
    store.append_batch([k8s_audit_entry(line, source="apiserver", received_at=NOW) for line in lines])
    events = [json.loads(line) for line in lines]

    def expect(predicate: Callable[[dict[str, Any]], bool]) -> list[int]:
        return [i for i, e in enumerate(events) if predicate(e)]

    def found(**filters: Any) -> list[int]:
        return [hit.index for hit in store.search(SearchQuery(**filters))]

    assert found(user="system:admin") == expect(lambda e: e["user"]["username"] == "system:admin")
    assert found(verb="list") == expect(lambda e: e["verb"] == "list")
    assert found(namespace="ns1") == expect(lambda e: e.get("objectRef", {}).get("namespace") == "ns1")
    assert found(outcome="failure") == expect(lambda e: e["responseStatus"]["code"] >= 400)
    assert found(outcome="success") == expect(lambda e: e["responseStatus"]["code"] < 400)
    assert found(code=403) == expect(lambda e: e["responseStatus"]["code"] == 403)
    assert found(source_ip="::1") == list(range(len(events)))
    assert found(resource="pods", verb="list", outcome="failure") == expect(
        lambda e: e.get("objectRef", {}).get("resource") == "pods" and e["verb"] == "list"
        and e["responseStatus"]["code"] >= 400
    )
    assert found(kind="falco") == []
    assert found(user="nobody") == []
    # time range over the events' own timestamps; since inclusive, until exclusive
    since, until = "2017-09-11T19:55:34.000000Z", "2017-09-11T19:59:03.000000Z"
    assert found(since=since, until=until) == expect(lambda e: "2017-09-11T19:55:34Z" <= e["timestamp"]
                                                     < "2017-09-11T19:59:03Z")
    # paging
    assert found(limit=5) == [0, 1, 2, 3, 4]
    assert found(after=4, limit=3) == [5, 6, 7]


def test_search_resource_matches_subresources(store: TrailStore) -> None:
    # generated events cycle through pods, secrets, pods/exec, deployments, configmaps
    store.append_batch(k8s_entries(10, NOW))
    assert [h.index for h in store.search(SearchQuery(resource="pods"))] == [0, 2, 5, 7]
    assert [h.index for h in store.search(SearchQuery(resource="pods/exec"))] == [2, 7]
    assert [h.index for h in store.search(SearchQuery(resource="pod"))] == []
    hit = store.search(SearchQuery(resource="pods/exec"))[0]
    assert json.loads(hit.envelope)["index"]["resource"] == "pods/exec"

"""Backend-independent pieces of the stores: row layout, node planning, search SQL."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, ClassVar

import orjson

from kubepci.auditlog.envelope import NewEntry, dedupe_key
from kubepci.auditlog.merkle import HASH_SIZE, MerkleError, leaf_hash, node_hash
from kubepci.auditlog.store import (
    CheckpointRecord,
    EntryNotFoundError,
    SearchHit,
    SearchQuery,
    StoredEntry,
    StoreError,
)

__all__ = [
    "DEDUPE_KEY",
    "ENTRY_COLUMNS",
    "LEAF_HASH",
    "MIN_PAYLOAD_RETENTION_DAYS",
    "RAW",
    "RECEIVED_AT",
    "SCHEMA_VERSION",
    "LeafValues",
    "SqlReads",
    "assign_indices",
    "chunked",
    "entry_values",
    "frontier_positions",
    "plan_nodes",
    "search_where",
    "values_from_envelope",
]

SCHEMA_VERSION = "1"
# PCI DSS 10.5.1: audit log history is kept at least 12 months. The databases refuse to drop a raw
# payload younger than this, whatever retention a caller asks for.
MIN_PAYLOAD_RETENTION_DAYS = 365

ENTRY_COLUMNS = (
    "seq", "leaf_hash", "envelope", "dedupe_key", "kind", "source", "received_at", "occurred_at",
    "user_name", "verb", "resource", "namespace", "name", "code", "source_ip", "audit_id", "stage",
    "event_time", "rule", "priority",
)

#: What a store appends per leaf: the :data:`ENTRY_COLUMNS` after ``seq``, then the raw payload
#: (from an entry: :func:`entry_values`; in the append worker, from the envelope bytes:
#: :func:`values_from_envelope`).
LeafValues = tuple[Any, ...]
LEAF_HASH, DEDUPE_KEY, RECEIVED_AT, RAW = 0, 2, 5, len(ENTRY_COLUMNS) - 1


def values_from_envelope(envelope: bytes, raw: bytes) -> LeafValues:
    """The :data:`LeafValues` of an entry from its envelope bytes and raw payload alone.

    This is how the append worker gets its rows: two bytes objects per entry cross the pipe
    instead of twenty values, which took the ingest process 4 us an event to flatten and
    marshal. The worker re-reads the index from the envelope and recomputes the leaf hash and
    dedupe key with the one definition of each, so what it stores always matches the bytes that
    are hashed into the tree.
    """
    doc = orjson.loads(envelope)
    ix = doc["index"]
    get = ix.get
    source, received_at, event_time = doc["source"], doc["received_at"], get("event_time")
    audit_id, stage = get("audit_id"), get("stage")
    return (
        leaf_hash(envelope), envelope, dedupe_key(source, audit_id, stage, doc["payload_sha256"], event_time),
        doc["kind"], source, received_at, event_time or received_at, get("user"), get("verb"), get("resource"),
        get("namespace"), get("name"), get("code"), get("source_ip"), audit_id, stage, event_time, get("rule"),
        get("priority"), raw,
    )


def entry_values(entry: NewEntry) -> LeafValues:
    """The :data:`LeafValues` of one entry."""
    env = entry.envelope
    ix = env.index
    return (
        entry.leaf_hash, entry.envelope_bytes, entry.dedupe_key, env.kind, env.source,
        env.received_at, ix.event_time or env.received_at, ix.user, ix.verb, ix.resource, ix.namespace,
        ix.name, ix.code, ix.source_ip, ix.audit_id, ix.stage, ix.event_time, ix.rule, ix.priority, entry.raw,
    )


def frontier_positions(size: int) -> list[tuple[int, int]]:
    """``(level, index)`` of the perfect subtrees on the right border of a tree of ``size`` leaves.

    These are exactly the left siblings that appending further leaves can need, so a batch reads
    them once (at most log2(n) rows) and computes every new node in memory.
    """
    return [(level, (size >> level) - 1) for level in range(size.bit_length()) if size >> level & 1]


def plan_nodes(
    size: int, frontier: dict[tuple[int, int], bytes], leaf_hashes: Iterable[bytes]
) -> list[tuple[int, int, bytes]]:
    """Interior nodes (level >= 1) completed by appending ``leaf_hashes`` to a tree of ``size``.

    The walk of :func:`~kubepci.auditlog.merkle.nodes_completed_by_append`, directly on a dict of
    the frontier and the nodes this batch made, without a reader object per leaf (the append
    worker runs it for every leaf). test_store_conformance.py checks the stored nodes against a
    reference tree.
    """
    nodes = dict(frontier)
    planned: list[tuple[int, int, bytes]] = []
    for position, value in enumerate(leaf_hashes, start=size):
        if len(value) != HASH_SIZE:
            raise MerkleError(f"leaf hash must be {HASH_SIZE} bytes, got {len(value)}")
        nodes[(0, position)] = value
        level, index = 0, position
        while index & 1:
            left = nodes.get((level, index - 1))
            if left is None:
                raise StoreError(f"stored tree lacks node level {level} index {index - 1}")
            value = node_hash(left, value)
            level += 1
            index >>= 1
            nodes[(level, index)] = value
            planned.append((level, index, value))
    return planned


def search_where(query: SearchQuery, mark: str) -> tuple[str, list[object]]:
    """SQL ``WHERE`` clause and parameters for ``query``; ``mark`` is the placeholder (``?``/``%s``)."""
    clauses: list[str] = [f"seq > {mark}"]
    params: list[object] = [query.after]
    for column, value in (
        ("user_name", query.user), ("verb", query.verb), ("namespace", query.namespace),
        ("source_ip", query.source_ip), ("kind", query.kind), ("code", query.code),
    ):
        if value is not None:
            clauses.append(f"{column} = {mark}")
            params.append(value)
    if query.resource is not None:
        # "pods" matches "pods" and "pods/<sub>": '0' is the character after '/', so this is a range.
        clauses.append(f"(resource = {mark} OR (resource >= {mark} AND resource < {mark}))")
        params += [query.resource, query.resource + "/", query.resource + "0"]
    if query.outcome == "success":
        clauses.append("code < 400")
    elif query.outcome == "failure":
        clauses.append("code >= 400")
    if query.since is not None:
        clauses.append(f"occurred_at >= {mark}")
        params.append(query.since)
    if query.until is not None:
        clauses.append(f"occurred_at < {mark}")
        params.append(query.until)
    return " AND ".join(clauses), params


def chunked(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def assign_indices(
    size: int, rows: Sequence[LeafValues], stored: dict[str, int]
) -> tuple[list[int], list[LeafValues]]:
    """Leaf index for each row (the stored one for a retry) and the rows that are really new.

    ``stored`` maps dedupe keys already in the store to their index; a key repeated within the
    batch gets the index of its first occurrence.
    """
    seen = dict(stored)
    indices: list[int] = []
    fresh: list[LeafValues] = []
    for row in rows:
        key = row[DEDUPE_KEY]
        index = seen.get(key)
        if index is None:
            index = size + len(fresh)
            seen[key] = index
            fresh.append(row)
        indices.append(index)
    return indices, fresh


class SqlReads(ABC):
    """The read side both SQL stores share; only the DB-API placeholder differs (``?`` or ``%s``).

    Queries are written with ``?`` and rewritten once per call; every value still travels as a
    bound parameter."""

    PLACEHOLDER: ClassVar[str]
    PAGE: ClassVar[int] = 2000

    @abstractmethod
    def _one(self, sql: str, params: Sequence[object] = ()) -> tuple[Any, ...] | None: ...

    @abstractmethod
    def _all(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]: ...

    def _q(self, sql: str) -> str:
        return sql if self.PLACEHOLDER == "?" else sql.replace("?", self.PLACEHOLDER)

    def leaf_hash(self, index: int) -> bytes:
        row = self._one(self._q("SELECT leaf_hash FROM entries WHERE seq = ?"), (index,))
        if row is None:
            raise EntryNotFoundError(f"no leaf {index} in the trail")
        return bytes(row[0])

    def leaf_hash_at(self, index: int) -> bytes:
        return self.leaf_hash(index)

    def subtree_hash(self, start: int, size: int) -> bytes:
        level = size.bit_length() - 1
        row = self._one(self._q("SELECT hash FROM nodes WHERE level = ? AND idx = ?"), (level, start >> level))
        if row is None:
            raise StoreError(f"stored tree lacks node level {level} index {start >> level}")
        return bytes(row[0])

    def entry(self, index: int) -> StoredEntry:
        for item in self.iter_entries(index, index + 1):
            if item.index == index:
                return item
        raise EntryNotFoundError(f"no leaf {index} in the trail")

    def iter_entries(self, start: int = 0, stop: int | None = None) -> Iterator[StoredEntry]:
        last = start - 1
        limit = stop if stop is not None else 1 << 62
        query = self._q("SELECT e.seq, e.leaf_hash, e.envelope, p.raw FROM entries e LEFT JOIN payloads p"
                        " ON p.seq = e.seq WHERE e.seq > ? AND e.seq < ? ORDER BY e.seq LIMIT ?")
        while True:
            rows = self._all(query, (last, limit, self.PAGE))
            for seq, leaf, envelope, raw in rows:
                yield StoredEntry(int(seq), bytes(leaf), bytes(envelope), None if raw is None else bytes(raw))
            if len(rows) < self.PAGE:
                return
            last = int(rows[-1][0])

    def iter_nodes(self) -> Iterator[tuple[int, int, bytes]]:
        last = (0, -1)
        query = self._q("SELECT level, idx, hash FROM nodes WHERE (level, idx) > (?, ?) ORDER BY level, idx LIMIT ?")
        while True:
            rows = self._all(query, (*last, self.PAGE))
            for level, idx, value in rows:
                yield int(level), int(idx), bytes(value)
            if len(rows) < self.PAGE:
                return
            last = (int(rows[-1][0]), int(rows[-1][1]))

    def find_by_dedupe(self, key: str) -> int | None:
        row = self._one(self._q("SELECT seq FROM entries WHERE dedupe_key = ?"), (key,))
        return None if row is None else int(row[0])

    def checkpoints(self) -> list[CheckpointRecord]:
        rows = self._all("SELECT ordinal, size, root, note, created_at FROM checkpoints ORDER BY ordinal")
        return [CheckpointRecord(int(o), int(s), bytes(r), str(n), str(c)) for o, s, r, n, c in rows]

    def latest_checkpoint(self) -> CheckpointRecord | None:
        row = self._one("SELECT ordinal, size, root, note, created_at FROM checkpoints ORDER BY ordinal DESC LIMIT 1")
        if row is None:
            return None
        ordinal, size, root, note, created_at = row
        return CheckpointRecord(int(ordinal), int(size), bytes(root), str(note), str(created_at))

    def search(self, query: SearchQuery) -> list[SearchHit]:
        where, params = search_where(query, self.PLACEHOLDER)
        sql = self._q(f"SELECT seq, envelope FROM entries WHERE {where} ORDER BY seq LIMIT ?")  # noqa: S608 -- fixed column names only
        rows = self._all(sql, [*params, query.limit])
        return [SearchHit(int(seq), bytes(env)) for seq, env in rows]

"""Append-only storage for the audit trail, behind one :class:`TrailStore` protocol.

Two backends share one conformance suite: SQLite for a single node (``sqlite:///abs/path.db`` or
``sqlite:relative/path.db``) and PostgreSQL for several writers (``postgresql://user@host:port/db``,
optionally ``?schema=name``). Both persist, at append time, the hash of every perfect subtree the new
leaves complete, so proofs and tree heads need O(log n) reads (see :mod:`kubepci.auditlog.merkle`).

The database refuses UPDATE, DELETE and TRUNCATE on entries, tree nodes and checkpoints; the only
permitted removal is dropping a raw payload after its retention period. Those are guard rails: an
owner or superuser can remove them, which is why tamper *evidence* comes from signed checkpoints
kept elsewhere, not from the database.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Protocol, Self
from urllib.parse import urlsplit

from kubepci.auditlog.envelope import NewEntry
from kubepci.errors import InputError, UsageError

__all__ = [
    "CheckpointRecord",
    "EntryNotFoundError",
    "SearchHit",
    "SearchQuery",
    "StoreError",
    "StoredEntry",
    "TrailStore",
    "open_store",
]


class StoreError(InputError):
    """The store could not be opened, read or written (including a refused modification)."""


class EntryNotFoundError(UsageError):
    """A leaf index outside the tree was asked for."""


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """One leaf as stored; ``raw`` is None once the payload was pruned after retention."""

    index: int
    leaf_hash: bytes
    envelope: bytes
    raw: bytes | None


@dataclass(frozen=True, slots=True)
class SearchHit:
    """A search result: the leaf index and the envelope that was hashed into the tree."""

    index: int
    envelope: bytes


@dataclass(frozen=True, slots=True)
class CheckpointRecord:
    """A signed checkpoint as issued, in issue order (``ordinal`` counts from 1)."""

    ordinal: int
    size: int
    root: bytes
    note: str
    created_at: str


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """Filters over the envelope index; all given filters must match.

    ``resource="pods"`` also matches subresources (``pods/exec``). ``outcome`` is derived from the
    response code: success below 400, failure from 400 up; records without a code match neither.
    ``since``/``until`` bound the event time (our receive time when the event had none), as
    normalised timestamps, ``since`` inclusive and ``until`` exclusive. ``after`` pages by index.
    """

    user: str | None = None
    verb: str | None = None
    resource: str | None = None
    namespace: str | None = None
    source_ip: str | None = None
    outcome: Literal["success", "failure"] | None = None
    code: int | None = None
    kind: str | None = None
    since: str | None = None
    until: str | None = None
    after: int = -1
    limit: int = 1000


class TrailStore(Protocol):
    """What :class:`kubepci.auditlog.trail.Trail` needs from a backend.

    It is also a :class:`kubepci.auditlog.merkle.SubtreeReader` (``subtree_hash``/``leaf_hash_at``).
    """

    def append_batch(self, entries: Sequence[NewEntry]) -> list[int]:
        """Append in one durable transaction; return each entry's leaf index.

        An entry whose dedupe key is already stored (or repeated earlier in the batch) is not
        appended again: the index of the stored copy is returned instead.
        """
        ...

    def append_rows(self, rows: Sequence[tuple[Any, ...]]) -> list[int]:
        """:meth:`append_batch` for entries already flattened to plain values (``_common.entry_values``,
        or ``values_from_envelope`` in the append worker process)."""
        ...

    def size(self) -> int: ...

    def leaf_hash(self, index: int) -> bytes: ...

    def leaf_hash_at(self, index: int) -> bytes: ...

    def subtree_hash(self, start: int, size: int) -> bytes: ...

    def entry(self, index: int) -> StoredEntry: ...

    def iter_entries(self, start: int = 0, stop: int | None = None) -> Iterator[StoredEntry]:
        """Stored rows in index order; a missing row shows up as a jump in ``index``."""
        ...

    def iter_nodes(self) -> Iterator[tuple[int, int, bytes]]:
        """Every stored ``(level, index, hash)`` for levels >= 1, ordered by level then index."""
        ...

    def find_by_dedupe(self, key: str) -> int | None: ...

    def add_checkpoint(self, note: str, size: int, root: bytes, *, created_at: str) -> None: ...

    def checkpoints(self) -> list[CheckpointRecord]: ...

    def latest_checkpoint(self) -> CheckpointRecord | None: ...

    def search(self, query: SearchQuery) -> list[SearchHit]: ...

    def prune_payloads(self, older_than: str) -> int:
        """Drop raw payloads received before ``older_than``; return how many were dropped."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


def open_store(url: str) -> TrailStore:
    """Open (creating if needed) the store a URL names."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from kubepci.auditlog.store.sqlite import SqliteStore

        return SqliteStore.open_url(url)
    if scheme in ("postgresql", "postgres"):
        from kubepci.auditlog.store.postgres import PostgresStore

        return PostgresStore.open_url(url)
    raise UsageError(f"unsupported trail store URL {url!r}: want sqlite:///path or postgresql://...")

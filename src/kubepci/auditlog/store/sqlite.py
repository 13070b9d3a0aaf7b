"""SQLite trail store: the embedded default for a single node.

WAL with ``synchronous=FULL`` (in WAL mode NORMAL can lose the last commits on power failure, and a
webhook must only answer 200 once the event is durable), STRICT tables, and triggers that abort any
UPDATE or DELETE on entries, tree nodes, checkpoints and metadata. Appends take ``BEGIN IMMEDIATE``,
so concurrent writers queue on SQLite's write lock and the leaf index stays gapless.

There is deliberately no per-row INSERT trigger checking that ``seq`` is the next index: SQLite runs
row triggers as sub-programs and that one cost about a third of the append throughput. A row
inserted out of sequence by hand is still caught -- ``verify`` reports the gap -- and anyone able to
write the file could drop a trigger anyway. (PostgreSQL checks it with one statement trigger.)
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from operator import itemgetter
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

from kubepci.auditlog.envelope import NewEntry
from kubepci.auditlog.store import (
    StoreError,
)
from kubepci.auditlog.store._common import (
    DEDUPE_KEY,
    ENTRY_COLUMNS,
    LEAF_HASH,
    MIN_PAYLOAD_RETENTION_DAYS,
    RAW,
    RECEIVED_AT,
    SCHEMA_VERSION,
    LeafValues,
    SqlReads,
    assign_indices,
    chunked,
    entry_values,
    frontier_positions,
    plan_nodes,
)
from kubepci.errors import UsageError

__all__ = ["SqliteStore", "sqlite_path"]

_PAGE = 2000
_PAGE_SIZE = 16384
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY CHECK (seq >= 0),
    leaf_hash BLOB NOT NULL CHECK (length(leaf_hash) = 32),
    envelope BLOB NOT NULL,
    dedupe_key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    source TEXT NOT NULL,
    received_at TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    user_name TEXT, verb TEXT, resource TEXT, namespace TEXT, name TEXT, code INTEGER,
    source_ip TEXT, audit_id TEXT, stage TEXT, event_time TEXT, rule TEXT, priority TEXT
) STRICT;
CREATE TABLE IF NOT EXISTS payloads (
    seq INTEGER PRIMARY KEY REFERENCES entries (seq),
    received_at TEXT NOT NULL,
    raw BLOB NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS nodes (
    level INTEGER NOT NULL CHECK (level >= 1),
    idx INTEGER NOT NULL CHECK (idx >= 0),
    hash BLOB NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (level, idx)
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    ordinal INTEGER PRIMARY KEY,
    size INTEGER NOT NULL CHECK (size >= 0),
    root BLOB NOT NULL,
    note TEXT NOT NULL,
    created_at TEXT NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS entries_occurred_at ON entries (occurred_at);
CREATE INDEX IF NOT EXISTS entries_user ON entries (user_name);
CREATE INDEX IF NOT EXISTS entries_namespace ON entries (namespace);
CREATE INDEX IF NOT EXISTS entries_resource ON entries (resource);
CREATE INDEX IF NOT EXISTS entries_source_ip ON entries (source_ip);
CREATE INDEX IF NOT EXISTS payloads_received_at ON payloads (received_at);
CREATE TRIGGER IF NOT EXISTS payloads_no_update BEFORE UPDATE ON payloads
    BEGIN SELECT RAISE(ABORT, 'kubepci audit trail is append-only: UPDATE on payloads refused'); END;
CREATE TRIGGER IF NOT EXISTS payloads_retention BEFORE DELETE ON payloads
    WHEN OLD.received_at >= strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-@MIN_DAYS@ days')
    BEGIN SELECT RAISE(ABORT, 'kubepci audit trail: payload is inside the minimum retention period'); END;
CREATE TRIGGER IF NOT EXISTS entries_no_update BEFORE UPDATE ON entries
    BEGIN SELECT RAISE(ABORT, 'kubepci audit trail is append-only: UPDATE on entries refused'); END;
CREATE TRIGGER IF NOT EXISTS entries_no_delete BEFORE DELETE ON entries
    BEGIN SELECT RAISE(ABORT, 'kubepci audit trail is append-only: DELETE on entries refused'); END;
CREATE TRIGGER IF NOT EXISTS nodes_no_update BEFORE UPDATE ON nodes
    BEGIN SELECT RAISE(ABORT, 'kubepci audit trail is append-only: UPDATE on nodes refused'); END;
CREATE TRIGGER IF NOT EXISTS nodes_no_delete BEFORE DELETE ON nodes
    BEGIN SELECT RAISE(ABORT, 'kubepci audit trail is append-only: DELETE on nodes refused'); END;
CREATE TRIGGER IF NOT EXISTS checkpoints_no_update BEFORE UPDATE ON checkpoints
    BEGIN SELECT RAISE(ABORT, 'kubepci audit trail is append-only: UPDATE on checkpoints refused'); END;
CREATE TRIGGER IF NOT EXISTS checkpoints_no_delete BEFORE DELETE ON checkpoints
    BEGIN SELECT RAISE(ABORT, 'kubepci audit trail is append-only: DELETE on checkpoints refused'); END;
CREATE TRIGGER IF NOT EXISTS meta_no_update BEFORE UPDATE ON meta
    BEGIN SELECT RAISE(ABORT, 'kubepci audit trail is append-only: UPDATE on meta refused'); END;
CREATE TRIGGER IF NOT EXISTS meta_no_delete BEFORE DELETE ON meta
    BEGIN SELECT RAISE(ABORT, 'kubepci audit trail is append-only: DELETE on meta refused'); END;
""".replace("@MIN_DAYS@", str(MIN_PAYLOAD_RETENTION_DAYS))

_ENTRY_INSERT = "INSERT INTO entries ({}) VALUES ({})".format(  # noqa: S608 -- fixed column names
    ", ".join(ENTRY_COLUMNS), ", ".join("?" * len(ENTRY_COLUMNS))
)


def sqlite_path(url: str) -> Path:
    """File path of ``sqlite:///abs/path.db`` (absolute) or ``sqlite:rel/path.db`` (relative)."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or parts.netloc or parts.query or parts.fragment or not parts.path:
        raise UsageError(f"bad SQLite store URL {url!r}: want sqlite:///absolute/path.db or sqlite:relative.db")
    return Path(unquote(parts.path))


class SqliteStore(SqlReads):
    """A :class:`~kubepci.auditlog.store.TrailStore` in one SQLite file."""

    PLACEHOLDER = "?"
    PAGE = _PAGE

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection
        self.url: str | None = None  # set when opened from a path: lets verification open more readers

    @classmethod
    def open_url(cls, url: str) -> SqliteStore:
        return cls.open(sqlite_path(url))

    @classmethod
    def open(cls, path: Path) -> SqliteStore:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, isolation_level=None, timeout=30.0)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open SQLite trail {path}: {exc}") from None
        try:
            # 16 KiB pages for a new file (an existing one keeps its own): audit events of 1-2 KB fit
            # ten to a page instead of two to a 4 KiB page, which left a quarter of each page empty
            db.execute(f"PRAGMA page_size={_PAGE_SIZE}")
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise StoreError(f"{path}: cannot switch to WAL journal mode (got {mode})")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA cache_size=-32768")  # 32 MiB: index pages of a large trail stay cached
            db.execute("PRAGMA foreign_keys=ON")
            # one script, one transaction: concurrent first opens cannot see half a schema
            db.executescript(
                f"BEGIN IMMEDIATE;\n{_SCHEMA}\nINSERT OR IGNORE INTO meta (key, value)"
                f" VALUES ('schema_version', '{SCHEMA_VERSION}');\nCOMMIT;"
            )
            version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        except sqlite3.Error as exc:
            db.close()
            raise StoreError(f"cannot initialise SQLite trail {path}: {exc}") from None
        if version != SCHEMA_VERSION:
            db.close()
            raise StoreError(f"{path}: trail schema version {version}, this kubepci reads {SCHEMA_VERSION}")
        store = cls(db)
        store.url = f"sqlite://{path.resolve()}"
        return store

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def _one(self, sql: str, params: Sequence[object] = ()) -> tuple[Any, ...] | None:
        try:
            row: tuple[Any, ...] | None = self._db.execute(sql, params).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite trail read failed: {exc}") from None
        return row

    def _all(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        try:
            return list(self._db.execute(sql, params).fetchall())
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite trail read failed: {exc}") from None

    # -- appending -------------------------------------------------------------------------------

    def _size_locked(self) -> int:
        row = self._db.execute("SELECT coalesce(max(seq) + 1, 0) FROM entries").fetchone()
        return int(row[0])

    def _stored_keys(self, keys: Sequence[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for chunk in chunked(sorted(set(keys)), 500):
            marks = ", ".join("?" * len(chunk))
            sql = f"SELECT dedupe_key, seq FROM entries WHERE dedupe_key IN ({marks})"  # noqa: S608 -- only '?'s
            for key, seq in self._db.execute(sql, chunk):
                found[key] = seq
        return found

    def _frontier(self, size: int) -> dict[tuple[int, int], bytes]:
        frontier: dict[tuple[int, int], bytes] = {}
        for level, index in frontier_positions(size):
            if level == 0:
                row = self._db.execute("SELECT leaf_hash FROM entries WHERE seq = ?", (index,)).fetchone()
            else:
                sql = "SELECT hash FROM nodes WHERE level = ? AND idx = ?"
                row = self._db.execute(sql, (level, index)).fetchone()
            if row is None:
                raise StoreError(f"stored tree lacks node level {level} index {index}")
            frontier[(level, index)] = bytes(row[0])
        return frontier

    def append_batch(self, entries: Sequence[NewEntry]) -> list[int]:
        return self.append_rows([entry_values(entry) for entry in entries])

    def append_rows(self, rows: Sequence[LeafValues]) -> list[int]:
        """:meth:`append_batch` for entries already flattened by :func:`entry_values`."""
        if not rows:
            return []
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                size = self._size_locked()
                indices, fresh = assign_indices(size, rows, self._stored_keys([row[DEDUPE_KEY] for row in rows]))
                if fresh:
                    nodes = plan_nodes(size, self._frontier(size), [row[LEAF_HASH] for row in fresh])
                    db.executemany(_ENTRY_INSERT, [(size + i, *row[:RAW]) for i, row in enumerate(fresh)])
                    db.executemany(
                        "INSERT INTO payloads (seq, received_at, raw) VALUES (?, ?, ?)",
                        [(size + i, row[RECEIVED_AT], row[RAW]) for i, row in enumerate(fresh)],
                    )
                    db.executemany("INSERT INTO nodes (level, idx, hash) VALUES (?, ?, ?)", nodes)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite trail append failed: {exc}") from None
        return indices

    # -- reading ---------------------------------------------------------------------------------

    def size(self) -> int:
        row = self._one("SELECT coalesce(max(seq) + 1, 0) FROM entries")
        return int(row[0]) if row else 0

    # -- WAL checkpoints off the commit path (used by the ingest server's group committer) -------

    def defer_wal_checkpoints(self, max_pages: int = 100_000) -> None:
        """Stop this connection checkpointing the WAL after its commits, up to ``max_pages`` of WAL.

        A commit that crosses SQLite's default 1000-page mark also copies the WAL into the database
        and syncs it, inside the committer's time; with another connection calling
        :meth:`wal_checkpoint` periodically that copy runs beside the commits instead (measured:
        ingest 19.3k -> 21k events/s). ``max_pages`` (400 MB) is the safety net if nobody does.
        """
        self._db.execute(f"PRAGMA wal_autocheckpoint={int(max_pages)}")

    def wal_checkpoint(self) -> None:
        """Copy committed WAL frames into the database without blocking writers (PASSIVE)."""
        try:
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite WAL checkpoint failed: {exc}") from None

    # -- bulk reads for verification (optional protocol: see kubepci.auditlog.verify) ---------

    def scan_leaves(
        self, stop: int, page: int = 10_000, start: int = 0
    ) -> Iterator[tuple[list[tuple[int, bytes, bytes]], list[bytes | None]]]:
        """Pages of ``(seq, leaf_hash, envelope)`` rows for seq in ``[start, stop)``, with each row's raw
        payload (None when pruned) in a list alongside; all pages from one read snapshot.

        Each page is two range scans (entries, payloads) rather than a join: the join looked every
        payload up in its B-tree, a third more CPU per row. Pages cover ``page`` indices, so a
        missing row only makes its page shorter.
        """
        db = self._db
        seq_of, raw_of = itemgetter(0), itemgetter(1)
        try:
            db.execute("BEGIN")  # deferred: every page reads the same snapshot
            try:
                for low in range(start, stop, page):
                    span = (low, min(stop, low + page))
                    rows = db.execute(
                        "SELECT seq, leaf_hash, envelope FROM entries WHERE seq >= ? AND seq < ? ORDER BY seq", span
                    ).fetchall()
                    payloads = db.execute(
                        "SELECT seq, raw FROM payloads WHERE seq >= ? AND seq < ? ORDER BY seq", span
                    ).fetchall()
                    if list(map(seq_of, payloads)) == list(map(seq_of, rows)):
                        raws: list[bytes | None] = list(map(raw_of, payloads))
                    else:  # pruned payloads (or a payload without its entry)
                        found = dict(payloads)
                        raws = [found.get(seq) for seq, _, _ in rows]
                    yield rows, raws
            finally:
                if db.in_transaction:
                    db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite trail read failed: {exc}") from None

    def node_levels(self) -> dict[int, tuple[int, int, int]]:
        """``level -> (rows, min idx, max idx)`` of the stored interior nodes."""
        rows = self._all("SELECT level, count(*), min(idx), max(idx) FROM nodes GROUP BY level ORDER BY level")
        return {int(level): (int(count), int(low), int(high)) for level, count, low, high in rows}

    def scan_node_level(self, level: int, start: int = 0, stop: int | None = None) -> tuple[int, int, int, bytes]:
        """``(rows, min idx, max idx, hashes concatenated in idx order)`` of one level, idx in [start, stop)."""
        bounds = (level, start, (1 << 62) if stop is None else stop)
        where = "level = ? AND idx >= ? AND idx < ?"
        row = self._one(f"SELECT count(*), coalesce(min(idx), -1), coalesce(max(idx), -1) FROM nodes WHERE {where}",  # noqa: S608
                        bounds)
        count, low, high = (int(v) for v in row) if row else (0, -1, -1)
        try:
            cursor = self._db.execute(f"SELECT hash FROM nodes WHERE {where} ORDER BY idx", bounds)  # noqa: S608
            data = b"".join([value for (value,) in cursor])
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite trail read failed: {exc}") from None
        return count, low, high, data

    # -- checkpoints, search, retention ----------------------------------------------------------

    def add_checkpoint(self, note: str, size: int, root: bytes, *, created_at: str) -> None:
        try:
            with self._write():
                self._db.execute(
                    "INSERT INTO checkpoints (size, root, note, created_at) VALUES (?, ?, ?, ?)",
                    (size, root, note, created_at),
                )
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite trail checkpoint failed: {exc}") from None

    def prune_payloads(self, older_than: str) -> int:
        try:
            with self._write():
                cursor = self._db.execute("DELETE FROM payloads WHERE received_at < ?", (older_than,))
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite trail prune failed: {exc}") from None
        return cursor.rowcount

    def _write(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any exception."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self._db.execute("COMMIT")
        elif self._db.in_transaction:
            self._db.execute("ROLLBACK")

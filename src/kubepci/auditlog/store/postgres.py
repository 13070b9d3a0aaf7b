"""PostgreSQL trail store: several writers, one sequencer, privileges and triggers as guard rails.

Layout: one schema (default ``kubepci_audit``, ``?schema=`` in the URL picks another) owned by a
NOLOGIN role ``<schema>_owner``; login roles are granted ``<schema>_writer`` (INSERT and SELECT, plus
deleting raw payloads past retention) or ``<schema>_reader`` (SELECT). UPDATE, DELETE and TRUNCATE
are revoked on entries, nodes and checkpoints from PUBLIC, the writer and the reader, and row and
TRUNCATE triggers raise even for the owner. The owner or a superuser can still disable triggers
(``ALTER TABLE ... DISABLE TRIGGER``, ``session_replication_role``); signed checkpoints exported
elsewhere are what detect that.

Sequence numbers must be gapless and PostgreSQL sequences are not (an aborted transaction burns its
values), so an append locks the single ``log_head`` row ``FOR UPDATE``, takes ``size`` as its first
index, inserts with COPY, and advances the head in the same transaction. A statement trigger refuses
any INSERT whose indices do not continue the head exactly, so a writer cannot leave gaps either.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql

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
    entry_values,
    frontier_positions,
    plan_nodes,
)
from kubepci.errors import UsageError

__all__ = ["DEFAULT_SCHEMA", "PostgresStore", "bootstrap", "role_names", "split_url"]

DEFAULT_SCHEMA = "kubepci_audit"
_PAGE = 2000

# {s} is the quoted schema name; every object is schema-qualified so search_path cannot redirect it.
_DDL = """
CREATE TABLE {s}.meta (key text COLLATE "C" PRIMARY KEY, value text NOT NULL);
CREATE TABLE {s}.log_head (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    size bigint NOT NULL CHECK (size >= 0)
);
CREATE TABLE {s}.entries (
    seq bigint PRIMARY KEY CHECK (seq >= 0),
    leaf_hash bytea NOT NULL CHECK (octet_length(leaf_hash) = 32),
    envelope bytea NOT NULL,
    dedupe_key text COLLATE "C" NOT NULL UNIQUE,
    kind text COLLATE "C" NOT NULL,
    source text COLLATE "C" NOT NULL,
    received_at text COLLATE "C" NOT NULL,
    occurred_at text COLLATE "C" NOT NULL,
    user_name text COLLATE "C", verb text COLLATE "C", resource text COLLATE "C",
    namespace text COLLATE "C", name text COLLATE "C", code integer, source_ip text COLLATE "C",
    audit_id text COLLATE "C", stage text COLLATE "C", event_time text COLLATE "C",
    rule text COLLATE "C", priority text COLLATE "C"
);
CREATE TABLE {s}.payloads (
    seq bigint PRIMARY KEY REFERENCES {s}.entries (seq),
    received_at text COLLATE "C" NOT NULL,
    raw bytea NOT NULL
);
CREATE TABLE {s}.nodes (
    level smallint NOT NULL CHECK (level >= 1),
    idx bigint NOT NULL CHECK (idx >= 0),
    hash bytea NOT NULL CHECK (octet_length(hash) = 32),
    PRIMARY KEY (level, idx)
);
CREATE TABLE {s}.checkpoints (
    ordinal bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    size bigint NOT NULL CHECK (size >= 0),
    root bytea NOT NULL,
    note text NOT NULL,
    created_at text COLLATE "C" NOT NULL
);
CREATE INDEX entries_occurred_at ON {s}.entries (occurred_at);
CREATE INDEX entries_user ON {s}.entries (user_name, occurred_at);
CREATE INDEX entries_namespace ON {s}.entries (namespace, occurred_at);
CREATE INDEX entries_resource ON {s}.entries (resource, occurred_at);
CREATE INDEX entries_source_ip ON {s}.entries (source_ip, occurred_at);
CREATE INDEX payloads_received_at ON {s}.payloads (received_at);

CREATE FUNCTION {s}.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'kubepci audit trail is append-only: % on %.% refused', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME;
END $$;
CREATE FUNCTION {s}.payload_retention() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.received_at >= to_char((now() AT TIME ZONE 'UTC') - interval '@MIN_DAYS@ days',
                                  'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') THEN
        RAISE EXCEPTION 'kubepci audit trail: payload % is inside the minimum retention period', OLD.seq;
    END IF;
    RETURN OLD;
END $$;
CREATE FUNCTION {s}.head_advance() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id IS DISTINCT FROM OLD.id OR NEW.size < OLD.size THEN
        RAISE EXCEPTION 'kubepci audit trail: the log head only moves forward (% -> %)', OLD.size, NEW.size;
    END IF;
    IF NEW.size > 0 AND NOT EXISTS (SELECT 1 FROM {s}.entries WHERE seq = NEW.size - 1) THEN
        RAISE EXCEPTION 'kubepci audit trail: head % points past the last entry', NEW.size;
    END IF;
    RETURN NEW;
END $$;
CREATE FUNCTION {s}.entries_sequenced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    lo bigint;
    hi bigint;
    n bigint;
    head bigint;
BEGIN
    SELECT min(seq), max(seq), count(*) INTO lo, hi, n FROM inserted;
    SELECT size INTO head FROM {s}.log_head WHERE id;
    IF n > 0 AND (lo <> head OR hi - lo + 1 <> n) THEN
        RAISE EXCEPTION 'kubepci audit trail: leaf index must be the next one (head %, inserted % to %)',
            head, lo, hi;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER entries_gapless AFTER INSERT ON {s}.entries REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.entries_sequenced();
CREATE TRIGGER payloads_no_update BEFORE UPDATE ON {s}.payloads
    FOR EACH ROW EXECUTE FUNCTION {s}.refuse_change();
CREATE TRIGGER payloads_retention BEFORE DELETE ON {s}.payloads
    FOR EACH ROW EXECUTE FUNCTION {s}.payload_retention();
CREATE TRIGGER payloads_no_truncate BEFORE TRUNCATE ON {s}.payloads
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.refuse_change();
CREATE TRIGGER log_head_advance BEFORE UPDATE ON {s}.log_head
    FOR EACH ROW EXECUTE FUNCTION {s}.head_advance();
CREATE TRIGGER log_head_no_delete BEFORE DELETE ON {s}.log_head
    FOR EACH ROW EXECUTE FUNCTION {s}.refuse_change();
CREATE TRIGGER log_head_no_truncate BEFORE TRUNCATE ON {s}.log_head
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.refuse_change();
CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE ON {s}.entries
    FOR EACH ROW EXECUTE FUNCTION {s}.refuse_change();
CREATE TRIGGER entries_no_truncate BEFORE TRUNCATE ON {s}.entries
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.refuse_change();
CREATE TRIGGER nodes_append_only BEFORE UPDATE OR DELETE ON {s}.nodes
    FOR EACH ROW EXECUTE FUNCTION {s}.refuse_change();
CREATE TRIGGER nodes_no_truncate BEFORE TRUNCATE ON {s}.nodes
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.refuse_change();
CREATE TRIGGER checkpoints_append_only BEFORE UPDATE OR DELETE ON {s}.checkpoints
    FOR EACH ROW EXECUTE FUNCTION {s}.refuse_change();
CREATE TRIGGER checkpoints_no_truncate BEFORE TRUNCATE ON {s}.checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.refuse_change();
CREATE TRIGGER meta_append_only BEFORE UPDATE OR DELETE ON {s}.meta
    FOR EACH ROW EXECUTE FUNCTION {s}.refuse_change();
CREATE TRIGGER meta_no_truncate BEFORE TRUNCATE ON {s}.meta
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.refuse_change();
""".replace("@MIN_DAYS@", str(MIN_PAYLOAD_RETENTION_DAYS))

_GRANTS = """
REVOKE ALL ON SCHEMA {s} FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA {s} FROM PUBLIC, {writer}, {reader};
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {s} FROM PUBLIC;
GRANT USAGE ON SCHEMA {s} TO {writer}, {reader};
GRANT SELECT ON ALL TABLES IN SCHEMA {s} TO {writer}, {reader};
GRANT INSERT ON {s}.entries, {s}.payloads, {s}.nodes, {s}.checkpoints TO {writer};
GRANT DELETE ON {s}.payloads TO {writer};
GRANT UPDATE (size) ON {s}.log_head TO {writer};
"""


def split_url(url: str) -> tuple[str, str]:
    """``(libpq URL without our ?schema=, schema)``; the schema must be a plain lower-case name."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise UsageError(f"bad PostgreSQL store URL {url!r}")
    params = parse_qsl(parts.query, keep_blank_values=True)
    schema = DEFAULT_SCHEMA
    kept = []
    for key, value in params:
        if key == "schema":
            schema = value
        else:
            kept.append((key, value))
    if not schema or not schema.replace("_", "a").isalnum() or not schema.islower() or schema[0].isdigit():
        raise UsageError(f"bad schema name {schema!r}: lower-case letters, digits and '_' only")
    return urlunsplit(parts._replace(query=urlencode(kept))), schema


def role_names(schema: str) -> dict[str, str]:
    return {role: f"{schema}_{role}" for role in ("owner", "writer", "reader")}


def bootstrap(
    conn: psycopg.Connection[Any],
    schema: str = DEFAULT_SCHEMA,
    *,
    writers: Sequence[str] = (),
    readers: Sequence[str] = (),
) -> None:
    """Create roles, schema, tables, triggers and grants; run once by a superuser.

    ``writers``/``readers`` are existing login roles to grant the writer/reader role to. Idempotent
    for roles; the schema must not exist yet.
    """
    roles = role_names(schema)
    ident = {name: sql.Identifier(role) for name, role in roles.items()}
    s = sql.Identifier(schema)
    with conn.transaction(), conn.cursor() as cur:
        for role in roles.values():
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
        cur.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(s, ident["owner"]))
        cur.execute(sql.SQL("SET LOCAL ROLE {}").format(ident["owner"]))
        cur.execute(sql.SQL(_DDL).format(s=s))
        cur.execute(sql.SQL("INSERT INTO {}.log_head (size) VALUES (0)").format(s))
        cur.execute(sql.SQL("INSERT INTO {}.meta VALUES ('schema_version', %s)").format(s), (SCHEMA_VERSION,))
        cur.execute("RESET ROLE")
        cur.execute(sql.SQL(_GRANTS).format(s=s, writer=ident["writer"], reader=ident["reader"]))
        for login in writers:
            cur.execute(sql.SQL("GRANT {} TO {}").format(ident["writer"], sql.Identifier(login)))
        for login in readers:
            cur.execute(sql.SQL("GRANT {} TO {}").format(ident["reader"], sql.Identifier(login)))


class PostgresStore(SqlReads):
    """A :class:`~kubepci.auditlog.store.TrailStore` in a PostgreSQL schema."""

    PLACEHOLDER = "%s"
    PAGE = _PAGE

    def __init__(self, conn: psycopg.Connection[Any], schema: str) -> None:
        self._conn = conn
        self.schema = schema
        self.url: str | None = None  # set by open_url: lets verification open more readers

    @classmethod
    def open_url(cls, url: str, *, create: bool = True) -> PostgresStore:
        """Connect; bootstrap the schema first if it is missing and ``create`` (needs a superuser)."""
        conninfo, schema = split_url(url)
        try:
            conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to the PostgreSQL trail: {exc}") from None
        try:
            exists = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
            if exists is None:
                if not create:
                    raise StoreError(f"PostgreSQL trail schema {schema!r} does not exist")
                bootstrap(conn, schema)
            conn.execute(sql.SQL("SET search_path TO {}, pg_catalog").format(sql.Identifier(schema)))
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(f"cannot open PostgreSQL trail schema {schema!r}: {exc}") from None
        except BaseException:
            conn.close()
            raise
        if row is None or row[0] != SCHEMA_VERSION:
            conn.close()
            raise StoreError(f"trail schema {schema!r} has version {row and row[0]}, want {SCHEMA_VERSION}")
        store = cls(conn, schema)
        store.url = url
        return store

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()

    def _all(self, query: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._conn.execute(query.encode(), params).fetchall()
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL trail read failed: {exc}") from None

    def _one(self, query: str, params: Sequence[object] = ()) -> tuple[Any, ...] | None:
        rows = self._all(query, params)
        return rows[0] if rows else None

    # -- appending -------------------------------------------------------------------------------

    def append_batch(self, entries: Sequence[NewEntry]) -> list[int]:
        return self.append_rows([entry_values(entry) for entry in entries])

    def append_rows(self, rows: Sequence[LeafValues]) -> list[int]:
        """:meth:`append_batch` for entries already flattened by :func:`entry_values`."""
        if not rows:
            return []
        try:
            with self._conn.transaction(), self._conn.cursor() as cur:
                cur.execute("SELECT size FROM log_head WHERE id FOR UPDATE")
                head = cur.fetchone()
                if head is None:
                    raise StoreError("PostgreSQL trail has no log_head row")
                size = int(head[0])
                keys = sorted({row[DEDUPE_KEY] for row in rows})
                cur.execute("SELECT dedupe_key, seq FROM entries WHERE dedupe_key = ANY(%s)", (keys,))
                stored = {str(key): int(seq) for key, seq in cur.fetchall()}
                indices, fresh = assign_indices(size, rows, stored)
                if fresh:
                    nodes = plan_nodes(size, self._frontier(cur, size), [row[LEAF_HASH] for row in fresh])
                    with cur.copy(f"COPY entries ({', '.join(ENTRY_COLUMNS)}) FROM STDIN".encode()) as copy:
                        for offset, row in enumerate(fresh):
                            copy.write_row((size + offset, *row[:RAW]))
                    with cur.copy(b"COPY payloads (seq, received_at, raw) FROM STDIN") as copy:
                        for offset, row in enumerate(fresh):
                            copy.write_row((size + offset, row[RECEIVED_AT], row[RAW]))
                    with cur.copy(b"COPY nodes (level, idx, hash) FROM STDIN") as copy:
                        for node in nodes:
                            copy.write_row(node)
                    cur.execute("UPDATE log_head SET size = %s WHERE id", (size + len(fresh),))
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL trail append failed: {exc}") from None
        return indices

    @staticmethod
    def _frontier(cur: psycopg.Cursor[Any], size: int) -> dict[tuple[int, int], bytes]:
        positions = frontier_positions(size)
        frontier: dict[tuple[int, int], bytes] = {}
        levels = [level for level, _ in positions if level]
        indexes = [index for level, index in positions if level]
        if levels:
            cur.execute(
                "SELECT level, idx, hash FROM nodes WHERE (level, idx) IN"
                " (SELECT * FROM unnest(%s::smallint[], %s::bigint[]))",
                (levels, indexes),
            )
            for level, index, value in cur.fetchall():
                frontier[(int(level), int(index))] = bytes(value)
        if size & 1:
            cur.execute("SELECT leaf_hash FROM entries WHERE seq = %s", (size - 1,))
            row = cur.fetchone()
            if row is not None:
                frontier[(0, size - 1)] = bytes(row[0])
        missing = [pos for pos in positions if pos not in frontier]
        if missing:
            raise StoreError(f"stored tree lacks node(s) (level, index) {missing}")
        return frontier

    # -- reading ---------------------------------------------------------------------------------

    def size(self) -> int:
        row = self._one("SELECT size FROM log_head WHERE id")
        if row is None:
            raise StoreError("PostgreSQL trail has no log_head row")
        return int(row[0])

    # -- bulk reads for verification (optional protocol: see kubepci.auditlog.verify) ---------

    def scan_leaves(
        self, stop: int, page: int = 10_000, start: int = 0
    ) -> Iterator[tuple[list[tuple[int, bytes, bytes]], list[bytes | None]]]:
        """Pages of ``(seq, leaf_hash, envelope)`` rows for seq in ``[start, stop)`` and their raw payloads
        (None when pruned), through a server-side cursor in one transaction."""
        try:
            with self._conn.transaction(), self._conn.cursor(name="kubepci_verify_leaves") as cur:
                cur.execute(
                    "SELECT e.seq, e.leaf_hash, e.envelope, p.raw FROM entries e LEFT JOIN payloads p"
                    " ON p.seq = e.seq WHERE e.seq >= %s AND e.seq < %s ORDER BY e.seq", (start, stop),
                )
                while rows := cur.fetchmany(page):
                    yield [(seq, leaf, envelope) for seq, leaf, envelope, _ in rows], [row[3] for row in rows]
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL trail read failed: {exc}") from None

    def node_levels(self) -> dict[int, tuple[int, int, int]]:
        """``level -> (rows, min idx, max idx)`` of the stored interior nodes."""
        rows = self._all("SELECT level, count(*), min(idx), max(idx) FROM nodes GROUP BY level ORDER BY level")
        return {int(level): (int(count), int(low), int(high)) for level, count, low, high in rows}

    def scan_node_level(self, level: int, start: int = 0, stop: int | None = None) -> tuple[int, int, int, bytes]:
        """``(rows, min idx, max idx, hashes concatenated in idx order)`` of one level, idx in [start, stop)."""
        bounds = (level, start, (1 << 62) if stop is None else stop)
        where = "level = %s AND idx >= %s AND idx < %s"
        row = self._one(
            f"SELECT count(*), coalesce(min(idx), -1), coalesce(max(idx), -1) FROM nodes WHERE {where}",  # noqa: S608
            bounds,
        )
        count, low, high = (int(v) for v in row) if row else (0, -1, -1)
        parts: list[bytes] = []
        try:
            with self._conn.transaction(), self._conn.cursor(name="kubepci_verify_nodes") as cur:
                cur.execute(f"SELECT hash FROM nodes WHERE {where} ORDER BY idx".encode(), bounds)  # noqa: S608
                while rows := cur.fetchmany(50_000):
                    parts.append(b"".join(bytes(value) for (value,) in rows))
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL trail read failed: {exc}") from None
        return count, low, high, b"".join(parts)

    # -- checkpoints, search, retention ----------------------------------------------------------

    def add_checkpoint(self, note: str, size: int, root: bytes, *, created_at: str) -> None:
        try:
            self._conn.execute(
                "INSERT INTO checkpoints (size, root, note, created_at) VALUES (%s, %s, %s, %s)",
                (size, root, note, created_at),
            )
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL trail checkpoint failed: {exc}") from None

    def prune_payloads(self, older_than: str) -> int:
        try:
            cursor = self._conn.execute("DELETE FROM payloads WHERE received_at < %s", (older_than,))
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL trail prune failed: {exc}") from None
        return cursor.rowcount

"""Fixtures for the trail store conformance suite: every test runs on SQLite and on a real PostgreSQL.

``backend`` gives a fresh, empty store location per test plus three ways to reach the database
directly: as the writer role (what a compromised ingester could do), as the table owner (PostgreSQL
only; triggers still apply) and as a superuser with the guard rails switched off (what an insider
with full database access could do -- the case only signed checkpoints can catch).
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from kubepci.auditlog.checkpoint import NoteSigner, generate_keypair, parse_skey
from kubepci.auditlog.store import TrailStore, open_store
from kubepci.auditlog.store.postgres import bootstrap, role_names
from tests.integration.postgres import PostgresBinariesMissingError, PostgresServer, e2e_optional, find_pg_bin

Statement = tuple[str, Sequence[Any]]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """One PostgreSQL per test session (per xdist worker); each test gets its own schema.

    Missing server binaries fail the run -- CI installs them -- unless KUBEPCI_E2E_OPTIONAL=1.
    """
    try:
        find_pg_bin()
    except PostgresBinariesMissingError as exc:
        if e2e_optional():
            pytest.skip(str(exc))
        pytest.fail(str(exc))
    with PostgresServer() as server:
        yield server


class Backend:
    """A fresh store location and raw database access; subclasses per engine."""

    name = ""
    url = ""

    def open(self) -> TrailStore:
        return open_store(self.url)

    def writer_sql(self, statement: str) -> str | None:
        """Run ``statement`` with the store's own credentials; the database's refusal, None if accepted."""
        raise NotImplementedError

    def owner_sql(self, statement: str) -> str | None:
        """Run ``statement`` as the tables' owner (guard rails still on); the refusal, None if accepted."""
        raise NotImplementedError

    def tamper(self, statements: Sequence[Statement]) -> None:
        """Run ``statements`` (``?`` placeholders) with every append-only guard rail disabled."""
        raise NotImplementedError

    def set_head(self, size: int) -> list[Statement]:
        """Statements that make the engine's own idea of the tree size ``size`` (for tampering)."""
        return []


class SqliteBackend(Backend):
    name = "sqlite"

    def __init__(self, directory: Path) -> None:
        self.path = directory / "trail.db"
        self.url = f"sqlite://{self.path}"

    def writer_sql(self, statement: str) -> str | None:
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            db.execute(statement)
        except sqlite3.Error as exc:
            return str(exc)
        finally:
            db.close()
        return None

    def owner_sql(self, statement: str) -> str | None:
        return self.writer_sql(statement)  # a file has no roles: whoever can write it is the owner

    def tamper(self, statements: Sequence[Statement]) -> None:
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            triggers = db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'").fetchall()
            db.execute("BEGIN IMMEDIATE")
            for name, _ in triggers:
                db.execute(f'DROP TRIGGER "{name}"')
            for text, params in statements:
                db.execute(text, tuple(params))
            for _, create in triggers:
                db.execute(create)
            db.execute("COMMIT")
        finally:
            db.close()


class PostgresBackend(Backend):
    name = "postgres"
    _TABLES = ("entries", "payloads", "nodes", "checkpoints", "log_head", "meta")

    def __init__(self, server: PostgresServer) -> None:
        self.server = server
        self.schema = f"t_{uuid.uuid4().hex[:12]}"
        self.login = f"{self.schema}_app"
        with self._superuser() as admin:
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(self.login)))
            bootstrap(admin, self.schema, writers=[self.login])
        self.url = server.url(user=self.login, schema=self.schema)

    def _superuser(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.server.url(), autocommit=True)

    def _search_path(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))

    def _refusal(self, conn: psycopg.Connection[Any], statement: str) -> str | None:
        try:
            conn.execute(statement.encode())
        except psycopg.Error as exc:
            return str(exc).splitlines()[0]
        return None

    def writer_sql(self, statement: str) -> str | None:
        with psycopg.connect(self.server.url(user=self.login), autocommit=True) as conn:
            self._search_path(conn)
            return self._refusal(conn, statement)

    def owner_sql(self, statement: str) -> str | None:
        with self._superuser() as conn:
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role_names(self.schema)["owner"])))
            self._search_path(conn)
            return self._refusal(conn, statement)

    def tamper(self, statements: Sequence[Statement]) -> None:
        with self._superuser() as conn, conn.transaction():
            self._search_path(conn)
            for table in self._TABLES:
                conn.execute(sql.SQL("ALTER TABLE {} DISABLE TRIGGER USER").format(sql.Identifier(table)))
            for text, params in statements:
                conn.execute(text.replace("?", "%s").encode(), tuple(params))
            for table in self._TABLES:
                conn.execute(sql.SQL("ALTER TABLE {} ENABLE TRIGGER USER").format(sql.Identifier(table)))

    def set_head(self, size: int) -> list[Statement]:
        return [("UPDATE log_head SET size = ?", (size,))]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.e2e)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return SqliteBackend(tmp_path)
    server: PostgresServer = request.getfixturevalue("pg_server")
    return PostgresBackend(server)


@pytest.fixture
def postgres_backend(pg_server: PostgresServer) -> PostgresBackend:
    """For the PostgreSQL-only guard rails (TRUNCATE, roles, the log head)."""
    return PostgresBackend(pg_server)


@pytest.fixture
def store(backend: Backend) -> Iterator[TrailStore]:
    opened = backend.open()
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture(scope="session")
def signer() -> NoteSigner:
    return parse_skey(generate_keypair("kubepci.test/cluster-1/audit")[0])

"""Appends in a worker process, so the ingest server's Python work and the store's use two cores.

Why: ingesting an audit event is Python work (split, envelope, review) plus the store's append
(binding some twenty values per row, B-tree inserts, the commit). In one process both need the one
interpreter lock: ``sqlite3`` lets go of it around each row's step but takes it back for the next
row, so the commit thread and the ingest thread mostly took turns, and ingest ran at the sum of
the two costs rather than the larger one. Here a child process owns the write connection; the
server sends each group commit as one frame of bytes and waits for the leaf indices without
holding the lock.

The protocol, on the child's stdin and stdout, is frames of an 8-byte little-endian length and a
``marshal`` body:

* first the store URL goes to the child (not on its command line, where ``ps`` would show a
  PostgreSQL password), which answers ``("ready", size)`` or ``("error", message)``;
* then each request is a list of ``(envelope bytes, raw payload)`` pairs, one per entry, and the
  answer ``("ok", size_before, indices)`` or ``("error", message)``. The child derives the row
  from the envelope (:func:`~._common.values_from_envelope`).

The child ends at EOF on its stdin: when the server closes it, or when the server dies. It ignores
SIGINT and SIGTERM, so a Ctrl-C or a service stop that signals the whole process group lets the
server finish its queued appends through it. A commit in flight when the server is killed still
completes or rolls back as one transaction; nothing was acknowledged for it, and the sender's
retry is deduplicated by the store.

``marshal`` is used only between these two processes of ours, never on input from the network.
"""

from __future__ import annotations

import logging
import marshal
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import IO, Any

from kubepci.auditlog.envelope import NewEntry
from kubepci.auditlog.store import StoreError

__all__ = ["AppendWorker", "main"]

_LOG = logging.getLogger("kubepci.trail.worker")
_HEADER = struct.Struct("<Q")


def _write_frame(stream: IO[bytes], value: Any) -> None:
    data = marshal.dumps(value)
    stream.write(_HEADER.pack(len(data)))
    stream.write(data)
    stream.flush()


def _read_frame(stream: IO[bytes]) -> Any:
    """The next frame's value; EOFError at a clean end of stream or in the middle of a frame."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError("end of stream")
    (length,) = _HEADER.unpack(header)
    data = stream.read(length)
    if len(data) < length:
        raise EOFError("end of stream inside a frame")
    return marshal.loads(data)  # noqa: S302 -- written by our own process on the other end of a pipe


class AppendWorker:
    """A child process that owns a store's write connection and runs ``append_rows`` for us.

    Not thread-safe: one thread (the group committer's) talks to it. Any failure to talk to the
    child closes it; the next :meth:`append_rows` raises until :meth:`start` is called again.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> int:
        """Start the child and open the store in it; returns the tree size. Raises StoreError."""
        if self._proc is not None and self._proc.poll() is not None:
            _LOG.warning("trail append worker %d exited with code %s while idle; starting a new one",
                         self._proc.pid, self._proc.returncode)
        self.close()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "kubepci.auditlog.store.worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True,
        )
        reply = self._call(self.url)
        if reply[0] != "ready":
            self.close()
            raise StoreError(str(reply[1]))
        return int(reply[1])

    def append(self, entries: Sequence[NewEntry]) -> tuple[int, list[int]]:
        """``(size before, leaf index of each entry)`` once the child's transaction committed."""
        reply = self._call([(entry.envelope_bytes, entry.raw) for entry in entries])
        if reply[0] != "ok":
            raise StoreError(str(reply[1]))
        return int(reply[1]), list(reply[2])

    def _call(self, request: object) -> tuple[Any, ...]:
        with self._lock:
            proc = self._proc
            if proc is None or proc.stdin is None or proc.stdout is None:
                raise StoreError("the trail append worker is not running")
            try:
                _write_frame(proc.stdin, request)
                reply = _read_frame(proc.stdout)
            except (OSError, EOFError, ValueError) as exc:
                code = proc.poll()
                self.close()
                state = f"exited with code {code}" if code is not None else f"failed: {exc}"
                raise StoreError(f"the trail append worker {state}") from None
        if not isinstance(reply, tuple) or not reply:
            self.close()
            raise StoreError(f"the trail append worker answered {type(reply).__name__}")
        return reply

    def close(self, timeout: float = 30.0) -> None:
        """Close the child's stdin and wait for it to finish (killed after ``timeout`` seconds)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass  # a broken pipe to a child that is gone
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _reason(exc: Exception) -> str:
    return str(exc) if isinstance(exc, StoreError) else f"{type(exc).__name__}: {exc}"


def _serve(stdin: IO[bytes], stdout: IO[bytes]) -> int:
    """The child's loop. After a failed append the store is reopened for the next request, as the
    in-process committer does: a PostgreSQL connection lost to a server restart comes back."""
    from kubepci.auditlog.store import TrailStore, open_store
    from kubepci.auditlog.store._common import values_from_envelope

    def opened(url: str) -> TrailStore:
        store = open_store(url)
        defer = getattr(store, "defer_wal_checkpoints", None)
        if callable(defer):
            defer()  # the server's WAL checkpointer copies the WAL beside the commits
        return store

    try:
        url = str(_read_frame(stdin))
    except EOFError:
        return 0
    store: TrailStore | None = None
    try:
        store = opened(url)
        _write_frame(stdout, ("ready", store.size()))
    except Exception as exc:
        _write_frame(stdout, ("error", _reason(exc)))
        return 1
    try:
        while True:
            try:
                pairs = _read_frame(stdin)
            except EOFError:
                return 0
            try:
                rows = [values_from_envelope(envelope, raw) for envelope, raw in pairs]
                if store is None:
                    store = opened(url)
                size = store.size()
                indices = store.append_rows(rows)
            except Exception as exc:
                _write_frame(stdout, ("error", _reason(exc)))
                if store is not None:
                    store.close()
                    store = None
                continue
            _write_frame(stdout, ("ok", size, indices))
    finally:
        if store is not None:
            store.close()


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return _serve(sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    sys.exit(main())

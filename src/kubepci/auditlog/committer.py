"""Group commit: one thread owns the trail store and appends queued batches together.

Why one thread: the leaf index must be gapless and the store's append is one transaction, so
appends are serial anyway; the fsync at the end of a commit is the expensive part, and batches
queued while one commit flushes are appended together in the next transaction. No request waits
for a timer and none is answered before its transaction committed: :meth:`GroupCommitter.submit`
returns a future that completes only after ``append_batch`` returned (durable on return).

A failing group is retried job by job, so one batch the database refuses (a poison value) fails
only its own request. A store error closes the store; the next job reopens it (a PostgreSQL
restart costs the requests in flight a 503, and the sender retries).

With ``worker_url`` the appends themselves run in an :class:`~kubepci.auditlog.store.worker.AppendWorker`
process, so the store's share of the work no longer competes with the ingest thread for the
interpreter lock; this thread then only sends each group's envelope and payload bytes and waits.
Reads and checkpoints stay on this thread's own connection.

The same thread signs a checkpoint every ``checkpoint_every`` new leaves or ``checkpoint_seconds``
seconds, whichever comes first, and once more when stopped.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from kubepci.auditlog.checkpoint import NoteSigner
from kubepci.auditlog.envelope import NewEntry
from kubepci.auditlog.store import TrailStore
from kubepci.auditlog.store.worker import AppendWorker
from kubepci.auditlog.trail import Trail

__all__ = ["CommitResult", "CommitStats", "GroupCommitter"]

T = TypeVar("T")
_LOG = logging.getLogger("kubepci.trail.committer")


@dataclass(frozen=True, slots=True)
class CommitResult:
    """Leaf indices of one submitted batch, and the tree size before the shared transaction."""

    indices: tuple[int, ...]
    size_before: int

    @property
    def appended(self) -> int:
        """Distinct leaves this transaction added for the batch (the rest were stored already)."""
        return len({i for i in self.indices if i >= self.size_before})


@dataclass(frozen=True, slots=True)
class CommitStats:
    """One transaction, for metrics."""

    jobs: int
    entries: int
    appended: int
    seconds: float
    size: int


@dataclass(slots=True)
class _Job:
    entries: Sequence[NewEntry]
    future: concurrent.futures.Future[Any]
    call: Callable[[Trail], Any] | None = None


_STOP = object()


class GroupCommitter:
    """Owns a store on a private thread; ``submit`` batches, get futures of their leaf indices."""

    def __init__(
        self,
        open_store: Callable[[], TrailStore],
        *,
        signer: NoteSigner | None = None,
        origin: str | None = None,
        checkpoint_every: int = 10_000,
        checkpoint_seconds: float = 60.0,
        max_group_entries: int = 20_000,
        max_group_bytes: int = 64 << 20,
        on_commit: Callable[[CommitStats], None] | None = None,
        on_checkpoint: Callable[[int], None] | None = None,
        worker_url: str | None = None,
    ) -> None:
        self._open_store = open_store
        self._worker = AppendWorker(worker_url) if worker_url is not None else None
        self._signer = signer
        self._origin = origin
        self.checkpoint_every = checkpoint_every
        self.checkpoint_seconds = checkpoint_seconds
        self.max_group_entries = max_group_entries
        self.max_group_bytes = max_group_bytes
        self._on_commit = on_commit
        self._on_checkpoint = on_checkpoint
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._trail: Trail | None = None
        self._started = threading.Event()
        self._stopping = False
        self.size = 0
        self.checkpoint_size = 0
        self._checkpoint_at = time.monotonic()
        self.last_error: str | None = None
        self._walker: threading.Thread | None = None
        self._done = threading.Event()

    # -- client side -----------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Start the thread and open the store; raises if the store cannot be opened."""
        opened: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(opened,), name="kubepci-trail-commit", daemon=True)
        self._thread.start()
        opened.result(timeout)

    @property
    def ready(self) -> bool:
        """The thread runs, the store is open and the last transaction did not fail."""
        return (self._thread is not None and self._thread.is_alive() and self._trail is not None
                and self.last_error is None and not self._stopping)

    def submit(self, entries: Sequence[NewEntry]) -> concurrent.futures.Future[CommitResult]:
        """Queue ``entries`` for the next transaction; the future resolves once they are durable."""
        future: concurrent.futures.Future[CommitResult] = concurrent.futures.Future()
        if self._stopping:
            future.set_exception(RuntimeError("the trail committer is stopping"))
            return future
        self._queue.put(_Job(entries, future))
        return future

    def append(self, entries: Sequence[NewEntry]) -> list[int]:
        """Blocking :meth:`submit` (the ``Appender`` interface of :mod:`kubepci.auditlog.events`)."""
        return list(self.submit(entries).result().indices)

    def call(self, function: Callable[[Trail], T]) -> concurrent.futures.Future[T]:
        """Run ``function(trail)`` on the committer thread, between transactions."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._queue.put(_Job((), future, function))
        return future

    def stop(self, timeout: float = 30.0) -> None:
        """Finish queued work, sign a last checkpoint, close the store."""
        if self._thread is None:
            return
        self._stopping = True
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self._thread = None

    # -- committer thread ------------------------------------------------------------------------

    def _store(self) -> Trail:
        if self._worker is not None and not self._worker.alive:
            self._worker.start()
        if self._trail is None:
            store = self._open_store()
            defer = getattr(store, "defer_wal_checkpoints", None)
            if callable(defer) and self._walker is None:
                defer()
                self._walker = threading.Thread(target=self._checkpoint_wal, name="kubepci-trail-wal", daemon=True)
                self._walker.start()
            self._trail = Trail(store, self._signer, self._origin)
            self.size = store.size()
            latest = store.latest_checkpoint()
            self.checkpoint_size = latest.size if latest is not None else 0
            self._checkpoint_at = time.monotonic()
        return self._trail

    def _close(self, *, worker: bool = False) -> None:
        """Close this thread's store (reopened by the next job); the worker too if ``worker``.

        A worker that answered an error stays: it reopens its own store for the next request.
        One that could not be talked to has already closed itself.
        """
        if self._trail is not None:
            with contextlib.suppress(Exception):
                self._trail.store.close()
            self._trail = None
        if worker and self._worker is not None:
            self._worker.close()

    def _run(self, opened: concurrent.futures.Future[None]) -> None:
        try:
            self._store()
        except Exception as exc:
            self._close(worker=True)
            opened.set_exception(exc)
            return
        opened.set_result(None)
        stop = False
        while not stop:
            try:
                first = self._queue.get(timeout=self._wait_seconds())
            except queue.Empty:
                self._maybe_checkpoint()
                continue
            jobs: list[_Job] = []
            count = size = 0
            item = first
            while True:
                if item is _STOP:
                    stop = True
                    break
                jobs.append(item)
                count += len(item.entries)
                size += sum(len(entry.raw) for entry in item.entries)
                if count >= self.max_group_entries or size >= self.max_group_bytes:
                    break  # the group is one transaction and, with a worker, one frame in memory
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            appends = [job for job in jobs if job.call is None and job.future.set_running_or_notify_cancel()]
            if appends:
                self._commit(appends)
            for job in jobs:
                if job.call is not None and job.future.set_running_or_notify_cancel():
                    self._run_call(job)
            self._maybe_checkpoint()
        self._maybe_checkpoint(force=True)
        self._close(worker=True)
        self._done.set()
        if self._walker is not None:
            self._walker.join(10)

    def _wait_seconds(self) -> float:
        if self._signer is None or self.size == self.checkpoint_size:
            return 1.0
        return max(0.01, min(1.0, self._checkpoint_at + self.checkpoint_seconds - time.monotonic()))

    def _commit(self, jobs: list[_Job]) -> None:
        entries = [entry for job in jobs for entry in job.entries]
        began = time.perf_counter()
        try:
            trail = self._store()
            if self._worker is not None:
                before, indices = self._worker.append(entries)
            else:
                before = trail.store.size()
                indices = trail.store.append_batch(entries) if entries else []
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            _LOG.error("trail append of %d entries failed: %s", len(entries), self.last_error)
            self._close()
            if len(jobs) > 1:  # find the batch the store refuses; the others go through
                for job in jobs:
                    self._commit([job])
            else:
                jobs[0].future.set_exception(exc)
            return
        self.last_error = None
        seconds = time.perf_counter() - began
        self.size = max(self.size, before, max(indices, default=-1) + 1)
        position = 0
        for job in jobs:
            count = len(job.entries)
            job.future.set_result(CommitResult(tuple(indices[position : position + count]), before))
            position += count
        if self._on_commit is not None:
            appended = len({i for i in indices if i >= before})
            self._on_commit(CommitStats(len(jobs), len(entries), appended, seconds, self.size))

    def _checkpoint_wal(self) -> None:
        """SQLite only: copy the WAL into the database beside the commits (see defer_wal_checkpoints)."""
        try:
            store = self._open_store()
        except Exception as exc:
            _LOG.error("WAL checkpointer cannot open the store: %s", exc)
            return
        try:
            while not self._done.wait(0.2):
                try:
                    store.wal_checkpoint()  # type: ignore[attr-defined]
                except Exception as exc:  # the writer's own checkpoints (max_pages) still bound the WAL
                    _LOG.error("WAL checkpoint failed: %s", exc)
        finally:
            store.close()

    def _run_call(self, job: _Job) -> None:
        call = job.call
        if call is None:
            return
        try:
            job.future.set_result(call(self._store()))
        except Exception as exc:
            job.future.set_exception(exc)

    def _maybe_checkpoint(self, force: bool = False) -> None:
        if self._signer is None or self._trail is None or self.size <= self.checkpoint_size:
            return
        due = (force or self.size - self.checkpoint_size >= self.checkpoint_every
               or time.monotonic() - self._checkpoint_at >= self.checkpoint_seconds)
        if not due:
            return
        try:
            note = self._trail.checkpoint()
        except Exception as exc:
            self.last_error = f"checkpoint failed: {type(exc).__name__}: {exc}"
            _LOG.error("%s", self.last_error)
            self._close()
            return
        self.checkpoint_size = int(note.splitlines()[1])
        self._checkpoint_at = time.monotonic()
        if self._on_checkpoint is not None:
            self._on_checkpoint(self.checkpoint_size)

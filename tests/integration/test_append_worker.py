"""The append worker process: the same leaves as an in-process append, errors that say what
happened, and a child that never outlives its parent."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubepci.auditlog import merkle
from kubepci.auditlog.checkpoint import NoteSigner
from kubepci.auditlog.committer import CommitStats, GroupCommitter
from kubepci.auditlog.envelope import format_time
from kubepci.auditlog.store import SearchQuery, StoreError, open_store
from kubepci.auditlog.store._common import entry_values, values_from_envelope
from kubepci.auditlog.store.worker import AppendWorker
from kubepci.auditlog.trail import Trail
from tests.integration.conftest import Backend
from tests.integration.events import k8s_entries

NOW = format_time(dt.datetime.now(dt.UTC))


@pytest.fixture
def worker(backend: Backend) -> Iterator[AppendWorker]:
    started = AppendWorker(backend.url)
    assert started.start() == 0
    yield started
    started.close()


def test_worker_appends_the_same_rows_and_dedupes_retries(backend: Backend, worker: AppendWorker,
                                                          tmp_path: Path) -> None:
    entries = k8s_entries(300, NOW)
    tree = merkle.MemoryTree()
    position = 0
    for width in (1, 7, 128, 64, 100):
        before, indices = worker.append(entries[position : position + width])
        assert (before, indices) == (position, list(range(position, position + width)))
        tree.extend(entry.leaf_hash for entry in entries[position : position + width])
        position += width
    # a retry of stored leaves gets their indices back and appends nothing
    assert worker.append(entries[5:10] + entries[:2]) == (300, [5, 6, 7, 8, 9, 0, 1])
    # the rows the worker derived from envelopes are the rows an in-process append writes
    with open_store(f"sqlite://{tmp_path}/reference.db") as reference:
        reference.append_batch(entries)
        with backend.open() as store:
            assert store.size() == 300
            assert merkle.root_hash(store, 300) == tree.root()
            for index in (0, 123, 299):
                assert store.entry(index) == reference.entry(index)
            for query in (SearchQuery(user="alice@example.com"), SearchQuery(resource="pods", outcome="failure"),
                          SearchQuery(namespace="vault", since="2000-01-01T00:00:00.000000Z")):
                assert store.search(query) == reference.search(query)
                assert store.search(query)
            assert store.find_by_dedupe(entries[77].dedupe_key) == 77


def test_values_from_envelope_are_the_in_process_values() -> None:
    for entry in k8s_entries(50, NOW):
        assert values_from_envelope(entry.envelope_bytes, entry.raw) == entry_values(entry)


def test_a_refused_batch_is_an_error_and_the_next_request_is_served(backend: Backend, worker: AppendWorker) -> None:
    good, bad = k8s_entries(2, NOW)
    # the database refuses text in the integer column the index's code goes to
    poison = dataclasses.replace(bad, envelope_bytes=bad.envelope_bytes.replace(b'"code":', b'"code":"x",' b'"y":', 1))
    with pytest.raises(StoreError, match="append failed"):
        worker.append([good, poison])
    assert worker.alive, "an answered error must not cost the worker"
    with pytest.raises(StoreError, match="JSONDecodeError"):
        worker.append([good, dataclasses.replace(bad, envelope_bytes=b"{not json")])
    assert worker.append([good, bad]) == (0, [0, 1]), "nothing of the refused batches was kept"


def test_a_killed_worker_is_reported_and_a_new_one_continues(backend: Backend, worker: AppendWorker) -> None:
    rows = k8s_entries(20, NOW)
    assert worker.append(rows[:10])[1] == list(range(10))
    proc = worker._proc
    assert proc is not None
    proc.kill()
    proc.wait()
    with pytest.raises(StoreError, match=r"exited with code -9"):
        worker.append(rows[10:])
    assert not worker.alive
    with pytest.raises(StoreError, match="not running"):
        worker.append(rows[10:])
    assert worker.start() == 10
    assert worker.append(rows[10:]) == (10, list(range(10, 20)))


def test_the_store_url_is_not_on_the_worker_command_line(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/secret-name-trail.db"
    worker = AppendWorker(url)
    worker.start()
    try:
        assert worker._proc is not None
        cmdline = Path(f"/proc/{worker._proc.pid}/cmdline").read_bytes()
        assert b"secret-name" not in cmdline
        assert b"kubepci.auditlog.store.worker" in cmdline
    finally:
        worker.close()


def test_a_worker_whose_store_cannot_open_says_why(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory", encoding="utf-8")
    worker = AppendWorker(f"sqlite://{blocker}/trail.db")
    with pytest.raises(StoreError, match="cannot open SQLite trail"):
        worker.start()
    assert not worker.alive


def test_close_ends_the_worker_cleanly(tmp_path: Path) -> None:
    worker = AppendWorker(f"sqlite://{tmp_path}/trail.db")
    worker.start()
    proc = worker._proc
    assert proc is not None
    worker.close()
    assert proc.returncode == 0


_PARENT = """
import sys, time
from kubepci.auditlog.store.worker import AppendWorker
worker = AppendWorker(sys.argv[1])
worker.start()
print(worker._proc.pid, flush=True)
time.sleep(600)
"""


def test_the_worker_ends_when_its_parent_is_killed(tmp_path: Path) -> None:
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, f"sqlite://{tmp_path}/trail.db"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while _running(child):
            assert time.monotonic() < deadline, f"worker {child} outlived its killed parent"
            time.sleep(0.05)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # the orphan is re-parented to init here, which reaps it; a zombie counts as ended
    stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_group_committer_with_a_worker_signs_what_the_worker_appended(backend: Backend, signer: NoteSigner) -> None:
    committer = GroupCommitter(backend.open, signer=signer, checkpoint_every=100, worker_url=backend.url)
    committer.start()
    entries = k8s_entries(250, NOW)
    try:
        futures = [committer.submit(entries[first : first + 50]) for first in range(0, 250, 50)]
        results = [future.result(30) for future in futures]
        retry = committer.submit(entries[:50]).result(30)
    finally:
        committer.stop()
    assert [list(result.indices) for result in results] == [list(range(n, n + 50)) for n in range(0, 250, 50)]
    assert list(retry.indices) == list(range(50))
    assert retry.appended == 0
    assert committer.checkpoint_size == 250
    with backend.open() as store:
        result = Trail(store, signer).verify()
        assert result.size == 250
        latest = store.latest_checkpoint()
        assert latest is not None
        assert latest.size == 250


@pytest.mark.parametrize(("max_group_bytes", "groups"), [(64 << 20, [30]), (1, [1] * 30)])
def test_group_commits_stop_at_the_byte_bound(tmp_path: Path, max_group_bytes: int, groups: list[int]) -> None:
    """A group is one transaction and one frame to the worker, so it is bounded in bytes as well as
    in entries (audit events can be large when the apiserver does not truncate them)."""
    url = f"sqlite://{tmp_path}/trail.db"
    stats: list[CommitStats] = []
    entries = k8s_entries(60, NOW)
    committer = GroupCommitter(lambda: open_store(url), worker_url=url, max_group_bytes=max_group_bytes,
                               on_commit=stats.append)
    committer.start()
    release = threading.Event()
    try:
        blocked = committer.call(lambda _trail: release.wait(30))  # every job below queues up behind this
        futures = [committer.submit(entries[first : first + 2]) for first in range(0, 60, 2)]
        release.set()
        assert blocked.result(30) is True
        assert [list(f.result(30).indices) for f in futures] == [[n, n + 1] for n in range(0, 60, 2)]
    finally:
        release.set()
        committer.stop()
    assert [stat.jobs for stat in stats] == groups


def test_a_worker_that_died_while_idle_is_replaced_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = f"sqlite://{tmp_path}/trail.db"
    committer = GroupCommitter(lambda: open_store(url), worker_url=url)
    committer.start()
    try:
        entries = k8s_entries(4, NOW)
        assert list(committer.submit(entries[:2]).result(30).indices) == [0, 1]
        worker = committer._worker
        assert worker is not None
        assert worker._proc is not None
        dead = worker._proc.pid
        worker._proc.kill()
        worker._proc.wait()
        with caplog.at_level("WARNING", logger="kubepci.trail.worker"):
            assert list(committer.submit(entries[2:]).result(30).indices) == [2, 3]
        assert f"trail append worker {dead} exited with code -9 while idle" in caplog.text
        assert worker._proc is not None
        assert worker._proc.pid != dead
    finally:
        committer.stop()

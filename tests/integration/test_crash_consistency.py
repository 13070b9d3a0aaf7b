"""Crash consistency of ``kubepci trail serve``: SIGKILL at random moments, dozens of times.

The server runs as a real subprocess (the CLI, as deployed) on one store. Sender threads in this
process post batches of distinct audit events and note which requests were answered 200 and with
which leaf indices; requests that failed are retried later, like the API server does. The server
is killed with SIGKILL at a random moment while they send, restarted on the same store, and
killed again. Afterwards every acknowledged event must be stored exactly once at the index it was
acknowledged with, no event may be stored twice (retries of commits whose answer was lost are
recognised), the leaf indices must be gapless, and the trail must verify against its checkpoints.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kubepci.auditlog.checkpoint import generate_keypair, parse_skey
from kubepci.auditlog.store import open_store
from kubepci.auditlog.trail import Trail
from tests.integration.conftest import PostgresBackend
from tests.integration.events import synthetic_event
from tests.integration.trail_server import Client, Pki, event_list

K8S = "/v1/k8s-audit"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Ledger:
    """What the senders know: acknowledged events (audit id -> index) and batches to retry."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    acked: dict[str, int] = field(default_factory=dict)
    retry: list[list[int]] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    failed_requests: int = 0
    acked_requests: int = 0
    retried_duplicates: int = 0
    unexpected: list[str] = field(default_factory=list)


def _audit_id(number: int) -> str:
    return f"{number:08x}-7b09-4964-af09-b7987367e1ba"


class Sender(threading.Thread):
    def __init__(self, worker: int, port_of: dict[str, int], pki: Pki, cert: tuple[Path, Path], ledger: Ledger,
                 stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.worker, self.port_of, self.pki, self.cert, self.ledger, self.stop_event = (
            worker, port_of, pki, cert, ledger, stop)
        self.next = worker * 10_000_000
        self.rng = random.Random(worker)  # noqa: S311 -- test data, not security

    def batch(self) -> list[int]:
        size = self.rng.randint(5, 40)
        numbers = list(range(self.next, self.next + size))
        self.next += size
        return numbers

    def send(self, numbers: list[int]) -> bool:
        client = Client(self.port_of["port"], self.pki.ca_path, self.cert)
        body = event_list([synthetic_event(n, body_bytes=700 + n % 700) for n in numbers])
        try:
            answer = client.post(K8S, body, timeout=10)
        except (OSError, http.client.HTTPException):
            with self.ledger.lock:
                self.ledger.failed_requests += 1
            return False
        with self.ledger.lock:
            if answer.status != 200:
                if answer.status != 503:
                    self.ledger.unexpected.append(f"{answer.status}: {answer.body}")
                return False
            self.ledger.acked_requests += 1
            self.ledger.retried_duplicates += answer.body["duplicates"]
            for number, index in zip(numbers, answer.body["indices"], strict=True):
                key = _audit_id(number)
                previous = self.ledger.acked.setdefault(key, index)
                if previous != index:
                    self.ledger.conflicts.append(f"{key}: acknowledged at {previous} and at {index}")
        return True

    def run(self) -> None:
        """Like the API server: a batch is retried until it is acknowledged, then the next one."""
        numbers = self.batch()
        while not self.stop_event.is_set():
            if self.send(numbers):
                numbers = self.batch()
            else:
                time.sleep(0.05)
        with self.ledger.lock:
            self.ledger.retry.append(numbers)  # sent, maybe stored, never acknowledged: the finisher retries it


class ServerProcess:
    """``python -m kubepci trail serve`` on a fixed port; killed with SIGKILL, restarted on the same store."""

    def __init__(self, store_url: str, directory: Path, pki: Pki, server_cert: tuple[Path, Path],
                 client_cert: tuple[Path, Path]) -> None:
        skey, _vkey = generate_keypair("kubepci.test/crash/audit")
        self.key_path = directory / "trail.skey"
        self.key_path.write_text(skey + "\n", encoding="utf-8")
        self.signer = parse_skey(skey)
        self.port = _free_port()
        self.store_url, self.pki, self.client_cert = store_url, pki, client_cert
        self.log = directory / "server.log"
        self.argv = [
            sys.executable, "-m", "kubepci", "trail", "serve", "--store", store_url, "--key", str(self.key_path),
            "--cert", str(server_cert[0]), "--key-file", str(server_cert[1]), "--client-ca", str(pki.ca_path),
            "--listen", f"127.0.0.1:{self.port}", "--checkpoint-seconds", "0.3", "--checkpoint-every", "500",
            "--tick-seconds", "0.5",
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
        client = Client(self.port, self.pki.ca_path, self.client_cert)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            try:
                if client.request("GET", "/readyz", timeout=2).status == 200:
                    return
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server not ready: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()  # SIGKILL: no cleanup, no final checkpoint, no stop entry
            self.proc.wait(10)
            self.proc = None

    def terminate(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(20)
            self.proc = None


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


def _crash_cycles(server: ServerProcess, pki: Pki, cycles: int, seed: int) -> Ledger:
    rng = random.Random(seed)  # noqa: S311 -- test timing, not security
    ledger = Ledger()
    stop = threading.Event()
    port_of = {"port": server.port}
    senders = [Sender(w, port_of, pki, server.client_cert, ledger, stop) for w in range(3)]
    server.start()
    for sender in senders:
        sender.start()
    try:
        for _ in range(cycles):
            time.sleep(rng.uniform(0.05, 0.7))
            server.kill()
            server.start()
        time.sleep(0.3)
    except BaseException:
        server.kill()
        raise
    finally:
        stop.set()
        for sender in senders:
            sender.join(30)
    # the last delivery attempts: each sender's unacknowledged batch is retried until it is
    finisher = Sender(99, port_of, pki, server.client_cert, ledger, threading.Event())
    deadline = time.monotonic() + 30
    while ledger.retry and time.monotonic() < deadline:
        if finisher.send(ledger.retry[-1]):
            ledger.retry.pop()
        else:
            time.sleep(0.1)
    server.terminate()  # graceful: the stop entry and a last checkpoint
    return ledger


def _check(store_url: str, server: ServerProcess, ledger: Ledger, cycles: int) -> None:
    assert not ledger.conflicts, ledger.conflicts[:5]
    assert not ledger.unexpected, ledger.unexpected[:5]
    assert not ledger.retry, f"{len(ledger.retry)} batches were never acknowledged"
    assert ledger.failed_requests > 0, "no request was ever cut off: the kills missed the traffic"
    store = open_store(store_url)
    try:
        seen: dict[str, list[int]] = {}
        indices: list[int] = []
        for entry in store.iter_entries():
            indices.append(entry.index)
            if json.loads(entry.envelope)["kind"] == "k8s-audit":
                seen.setdefault(json.loads(entry.raw or b"{}")["auditID"], []).append(entry.index)
        assert indices == list(range(store.size())), "leaf indices are not gapless"
        doubles = {key: where for key, where in seen.items() if len(where) > 1}
        assert not doubles, f"events stored more than once: {list(doubles.items())[:5]}"
        missing = [key for key, index in ledger.acked.items() if seen.get(key) != [index]]
        assert not missing, f"acknowledged events lost or moved: {missing[:5]}"
        result = Trail(store, server.signer).verify()
        assert result.size == len(indices)
        assert result.checkpoints_checked >= cycles // 2
    finally:
        store.close()
    print(f"\n{cycles} SIGKILLs: {ledger.acked_requests} requests acknowledged, {len(ledger.acked)} events, "
          f"{ledger.failed_requests} requests cut off, {ledger.retried_duplicates} retried events recognised as "
          f"stored, {len(indices)} leaves, {result.checkpoints_checked} checkpoints verified")


@pytest.mark.slow
def test_sigkill_sqlite_50_times(tmp_path: Path, pki: Pki) -> None:
    url = f"sqlite://{tmp_path / 'trail.db'}"
    server = ServerProcess(url, tmp_path, pki, pki.issue("server", "trail", server=True),
                           pki.issue("apiserver", "kube-apiserver"))
    ledger = _crash_cycles(server, pki, cycles=50, seed=1)
    _check(url, server, ledger, 50)


@pytest.mark.slow
@pytest.mark.e2e
def test_sigkill_postgres_12_times(tmp_path: Path, pki: Pki, postgres_backend: PostgresBackend) -> None:
    server = ServerProcess(postgres_backend.url, tmp_path, pki, pki.issue("server", "trail", server=True),
                           pki.issue("apiserver", "kube-apiserver"))
    ledger = _crash_cycles(server, pki, cycles=12, seed=2)
    _check(postgres_backend.url, server, ledger, 12)

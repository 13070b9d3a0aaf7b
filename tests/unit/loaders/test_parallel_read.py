"""Two-process file reading gives exactly what reading the files one by one gives.

These run in a subprocess: the parallel path only forks when the process has a single thread,
and a pytest-xdist worker has more.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kubepci.inventory.loaders import parallel

_PROBE = """
import json, sys
from pathlib import Path
from kubepci.inventory.loaders import parallel
paths = [Path(p) for p in sys.argv[1:]]
forked = []
real_fork = parallel.os.fork
def counting_fork():
    forked.append(1)
    return real_fork()
parallel.os.fork = counting_fork
out = []
for resources, problems, digest in parallel.read_files(paths):
    out.append({"resources": [[str(r.ref), r.ref.api_version, r.body, str(r.location)] for r in resources],
                "problems": [[str(p.location), p.reason] for p in problems], "digest": digest})
print(json.dumps({"forked": len(forked), "files": out}, default=str, sort_keys=True))
"""


def _corpus(tmp_path: Path) -> list[Path]:
    """Enough bytes to fork, with a broken document, a YAML-1.1 timestamp (which marshal cannot carry)
    and an unreadable path among them."""
    paths = []
    for i in range(6):
        docs = [f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm-{i}-{j}, namespace: ns{i}}}\n"
                f"data: {{key: \"{'x' * 2000}\", flag: on}}\n" for j in range(120)]
        if i == 2:
            docs.insert(5, "apiVersion: v1\nkind: Pod\nmetadata: {name: broken\n")
        if i == 4:
            docs.append("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: stamped}\ndata: {}\n"
                        "created: 2026-11-27T10:00:00Z\nmode: 0644\n")
        path = tmp_path / f"f{i}.yaml"
        path.write_text("---\n".join(docs))
        paths.append(path)
    paths.insert(3, tmp_path / "missing.yaml")
    return paths


def _run(paths: list[Path], parallel_load: str) -> str:
    env = {**os.environ, "KUBEPCI_PARALLEL_LOAD": parallel_load}
    return subprocess.run([sys.executable, "-c", _PROBE, *map(str, paths)], env=env, capture_output=True,
                          text=True, check=True, timeout=120).stdout


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="the loader forks only with a second core")
def test_parallel_read_equals_sequential_read(tmp_path: Path) -> None:
    paths = _corpus(tmp_path)
    assert sum(p.stat().st_size for p in paths if p.exists()) >= parallel.MIN_PARALLEL_BYTES
    both = _run(paths, "1")
    one = _run(paths, "0")
    assert '"forked": 1' in both, "the parallel path was not taken"
    assert '"forked": 0' in one
    assert both.replace('"forked": 1', "") == one.replace('"forked": 0', "")
    assert "f2.yaml:" in one, "the broken document is listed with its file"
    assert "invalid YAML" in one, "the broken document is listed with the reason"
    assert "cannot read" in one, "the missing file is listed"
    assert "2026-11-27 10:00:00" in both, "libyaml's timestamp is in the result"


def test_a_failed_child_is_reported_as_nothing_received() -> None:
    """read_files then reads the child's share itself; here: the child dies without a payload."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write_end, b"Mgarbage")
        os._exit(3)
    os.close(write_end)
    assert parallel._receive(read_end, pid) is None


@pytest.mark.parametrize("payload", [b"\x00\x01", b"not marshal data", b""])
def test_undecodable_payloads_are_rejected(payload: bytes) -> None:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write_end, payload)
        os._exit(0)
    os.close(write_end)
    assert parallel._receive(read_end, pid) is None


def test_a_file_marshal_cannot_carry_comes_back_as_not_done() -> None:
    """A timestamp from libyaml cannot cross as marshal data: that file alone is left to the parent."""
    plain_ok = ([("ns", "ConfigMap", "a", "v1", {"data": {"k": "v"}}, "a.yaml", 1)], [], ("a.yaml", "00"))
    stamped = ([("ns", "ConfigMap", "b", "v1", {"t": dt.datetime(2026, 11, 27, tzinfo=dt.UTC)}, "b.yaml", 1)],
               [], ("b.yaml", "11"))
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        code = 1
        try:
            parallel._send(write_end, [plain_ok, stamped])
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    received = parallel._receive(read_end, pid)
    assert received is not None
    assert received[1] is None
    resources, problems, digest = parallel._rebuild(received[0])
    assert [(str(r.ref), dict(r.body), str(r.location)) for r in resources] == [
        ("ns/ConfigMap/a", {"data": {"k": "v"}}, "a.yaml:1")]
    assert (problems, digest) == ([], ("a.yaml", "00"))


def test_only_regular_files_go_to_the_child(tmp_path: Path) -> None:
    """A pipe can be read once: if the child took it and then failed, the parent could not re-read it."""
    regular = tmp_path / "a.yaml"
    regular.write_text("x" * 100)
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    sizes = [parallel._size(p) for p in (regular, fifo, tmp_path / "missing.yaml", regular)]
    assert sizes == [100, -1, -1, 100]
    mine, theirs = parallel._split(sizes)
    assert 1 in mine
    assert 2 in mine
    assert theirs == [3] or theirs == [0]

"""Read many manifest files on two cores: a forked child parses part of them while this process
parses the rest.

Parsing is the largest single cost of a scan (yaml-rs plus the YAML-1.1 prescan: 0.14 s of a
0.37 s bitnami scan, 2.2 s of a 100,000-object one) and every file is independent. Threads would
not help (the parsers hold the GIL), so the child is a ``fork`` of this process: it needs no
start-up, parses its share and sends the results back through a pipe as ``marshal`` data (plain
tuples; 4x cheaper to decode than pickle, and unlike pickle it cannot construct arbitrary
objects). A file whose documents hold a value marshal cannot carry (a timestamp libyaml read) is
sent as "not done" and read here. The result is the same list, in the same order, as reading the
files one by one; if the child fails in any way its files are read here instead, so nothing is lost.

The child is only forked when it is safe and worth it: ``os.fork`` exists, this process runs no
other thread (a lock held by another thread at fork time would stay locked in the child), there
are at least two files and enough bytes to repay the fork. ``KUBEPCI_PARALLEL_LOAD=0`` turns it off.
"""

from __future__ import annotations

import marshal
import os
import stat
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kubepci.inventory.loaders.manifests import read_file
from kubepci.model import Resource, ResourceRef, SourceLocation, Unreadable

__all__ = ["FileResult", "read_files"]

FileResult = tuple[list[Resource], list[Unreadable], tuple[str, str] | None]

#: below this many bytes the fork (about 5 ms) and the transfer cost more than they save
MIN_PARALLEL_BYTES = 1 << 20


def read_files(paths: Sequence[Path]) -> list[FileResult]:
    """``[read_file(p) for p in paths]``, on two processes when that is safe and worth it."""
    sizes = [_size(p) for p in paths]
    if not _parallel_ok(len(paths), sum(max(0, n) for n in sizes)):
        return [read_file(p) for p in paths]
    mine, theirs = _split(sizes)
    results: list[FileResult | None] = [None] * len(paths)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: parse, send, leave without running any of the parent's exit handlers
        os.close(read_end)
        code = 1
        try:
            _send(write_end, [_plain(read_file(paths[i])) for i in theirs])
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    for i in mine:
        results[i] = read_file(paths[i])
    received = _receive(read_end, pid)
    if received is not None and len(received) == len(theirs):
        for i, plain in zip(theirs, received, strict=True):
            if plain is not None:
                results[i] = _rebuild(plain)
    for i in theirs:  # what the child could not send, or its whole share if it failed: read here
        if results[i] is None:
            results[i] = read_file(paths[i])
    return [r for r in results if r is not None]


def _size(path: Path) -> int:
    """Bytes of a regular file; -1 for anything else (a pipe given on the command line can be read
    once only, so it must never be in the child's share: a failed child could not give it back)."""
    try:
        st = path.stat()
    except OSError:
        return -1
    return st.st_size if stat.S_ISREG(st.st_mode) else -1


def _parallel_ok(n_files: int, n_bytes: int) -> bool:
    return (n_files >= 2 and n_bytes >= MIN_PARALLEL_BYTES and hasattr(os, "fork")
            and (os.cpu_count() or 1) >= 2 and threading.active_count() == 1
            and os.environ.get("KUBEPCI_PARALLEL_LOAD", "1") != "0")


def _split(sizes: Sequence[int]) -> tuple[list[int], list[int]]:
    """Indices for this process and for the child, balanced by bytes (largest files first)."""
    mine: list[int] = []
    theirs: list[int] = []
    load = [0, 0]
    for i in sorted(range(len(sizes)), key=lambda k: -sizes[k]):
        side = 0 if load[0] <= load[1] or sizes[i] < 0 else 1  # not a regular file: read here
        (mine if side == 0 else theirs).append(i)
        load[side] += sizes[i]
    return sorted(mine), sorted(theirs)


def _plain(result: FileResult) -> tuple[Any, ...]:
    resources, problems, digest = result
    return (
        [(r.ref.namespace, r.ref.kind, r.ref.name, r.ref.api_version, r.body, r.location.file, r.location.line)
         for r in resources],
        [(p.location.file, p.location.line, p.reason) for p in problems],
        digest,
    )


def _rebuild(plain: Any) -> FileResult:
    resources, problems, digest = plain
    return (
        [Resource(ResourceRef(ns, kind, name, api), body, SourceLocation(file, line))
         for ns, kind, name, api, body, file, line in resources],
        [Unreadable(SourceLocation(file, line), reason) for file, line, reason in problems],
        tuple(digest) if digest is not None else None,
    )


def _send(fd: int, payload: list[tuple[Any, ...]]) -> None:
    try:
        data = marshal.dumps(payload)
    except ValueError:  # some file holds a timestamp (or another non-plain value): send it as not done
        data = marshal.dumps([_marshallable(plain) for plain in payload])
    with os.fdopen(fd, "wb") as pipe:
        pipe.write(data)


def _marshallable(plain: tuple[Any, ...]) -> tuple[Any, ...] | None:
    try:
        marshal.dumps(plain)
    except ValueError:
        return None
    return plain


def _receive(fd: int, pid: int) -> list[Any] | None:
    with os.fdopen(fd, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if status != 0 or not data:
        return None
    try:
        payload = marshal.loads(data)  # noqa: S302 - plain values from our own forked child
    except (ValueError, EOFError, TypeError):
        return None
    return payload if isinstance(payload, list) else None

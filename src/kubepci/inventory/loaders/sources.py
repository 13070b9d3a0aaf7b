"""Walk the scan inputs and pick the right loader for each: plain manifests, Helm charts, Kustomize.

A directory that is a Helm chart (``Chart.yaml``) is rendered, never read as raw templates; a
directory with a ``kustomization.yaml`` is built with kustomize. Any other directory is walked
recursively, descending into charts and kustomizations it contains.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kubepci.inventory.loaders import helm, kustomize
from kubepci.inventory.loaders.manifests import MANIFEST_SUFFIXES, LoadResult, parse_text
from kubepci.inventory.loaders.parallel import read_files
from kubepci.model import Resource, SourceLocation, Unreadable

__all__ = ["SourceOptions", "load_sources"]


@dataclass(frozen=True, slots=True)
class SourceOptions:
    values_files: tuple[Path, ...] = ()
    set_values: tuple[str, ...] = ()
    exclude: frozenset[Path] = field(default_factory=frozenset)
    render_kustomize: bool = True


class _Collector:
    """Results in walk order. Plain files are only noted during the walk and read together at the
    end (:func:`read_files` may use a second core); charts and kustomizations render in place."""

    def __init__(self) -> None:
        self._parts: list[tuple[list[Resource], list[Unreadable], list[tuple[str, str]]] | Path] = []

    def input(self, name: str, digest: str) -> None:
        self._parts.append(([], [], [(name, digest)]))

    def problem(self, problem: Unreadable) -> None:
        self._parts.append(([], [problem], []))

    def add(self, res: Sequence[Resource], prob: Sequence[Unreadable]) -> None:
        self._parts.append((list(res), list(prob), []))

    def file(self, path: Path) -> None:
        self._parts.append(path)

    def result(self) -> LoadResult:
        files = [p for p in self._parts if isinstance(p, Path)]
        read = iter(read_files(files))
        resources: list[Resource] = []
        unreadable: list[Unreadable] = []
        inputs: list[tuple[str, str]] = []
        for part in self._parts:
            if isinstance(part, Path):
                res, prob, digest = next(read)
                inputs.extend([digest] if digest is not None else [])
            else:
                res, prob, digests = part
                inputs.extend(digests)
            resources.extend(res)
            unreadable.extend(prob)
        return LoadResult(tuple(resources), tuple(unreadable), tuple(inputs))


def _walk(directory: Path, opts: SourceOptions, out: _Collector) -> None:
    if helm.is_helm_chart(directory):
        out.input(f"{directory} (helm chart)", _tree_digest(directory))
        out.add(*helm.render_chart(directory, opts.values_files, opts.set_values))
        return
    if opts.render_kustomize and kustomize.is_kustomization(directory):
        out.input(f"{directory} (kustomize)", _tree_digest(directory))
        out.add(*kustomize.render_kustomization(directory))
        return
    try:
        entries = sorted(directory.iterdir())
    except OSError as exc:
        out.problem(Unreadable(SourceLocation(str(directory)), f"cannot list: {exc.strerror}"))
        return
    for entry in entries:
        if entry.name.startswith(".") or entry.resolve() in opts.exclude:
            continue
        if entry.is_dir():
            _walk(entry, opts, out)
        elif entry.suffix in MANIFEST_SUFFIXES and entry.is_file():
            out.file(entry)


def _tree_digest(directory: Path) -> str:
    """SHA-256 over the relative paths and bytes of every file, so the report pins chart inputs."""
    h = hashlib.sha256()
    for p in sorted(directory.rglob("*")):
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(directory).parts):
            h.update(str(p.relative_to(directory)).encode() + b"\0")
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def load_sources(paths: Sequence[str], opts: SourceOptions | None = None, stdin_text: str | None = None) -> LoadResult:
    opts = opts or SourceOptions()
    out = _Collector()
    for raw in paths:
        if raw == "-":
            text = stdin_text or ""
            out.input("-", hashlib.sha256(text.encode()).hexdigest())
            out.add(*parse_text(text, "-"))
            continue
        path = Path(raw)
        if not path.exists():
            out.problem(Unreadable(SourceLocation(raw), "no such file or directory"))
        elif path.is_dir():
            _walk(path, opts, out)
        else:
            out.file(path)
    return out.result()

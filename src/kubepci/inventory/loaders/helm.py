"""Render a Helm chart offline into resources, keeping each object's template file as its source.

Rendering goes through ``helm-python-sdk`` (module ``helm_python``), which links Helm v4's own
Go code as a shared library: the templates, ``tpl``/``include``, value coalescing and
``values.schema.json`` validation behave exactly as ``helm template`` does, with no ``helm``
binary, no cluster and no repository access (``lookup`` returns nothing).

Source locations: every rendered object is reported at ``<chart_dir>/templates/<file>`` (the
file Helm's ``# Source:`` comment names, with the chart name swapped for the chart directory;
subchart objects get ``<chart_dir>/charts/<sub>/templates/<file>``). The line is the line of the
object's document **inside the rendered output of that template**, not in the template source:
Go templates can expand one source line into many, so no honest mapping back exists. For a
template without loops or multi-line includes the two coincide closely enough to find the
object. CRDs from ``crds/`` are included (an install applies them) at ``<chart_dir>/crds/<file>``.

Anything that stops a chart from rendering -- a missing dependency, a bad values file or
``--set`` expression, a template error -- becomes an :class:`Unreadable` naming the chart (and
the template and line when Helm reports them), never an exception, so one broken chart does
not stop a scan of many.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from kubepci.inventory.loaders.manifests import parse_text
from kubepci.model import Resource, SourceLocation, Unreadable

__all__ = ["is_helm_chart", "merge_values", "render_chart"]

# Dependency states (from Helm's `helm dependency list`) under which the subchart is present.
_DEPENDENCY_OK = frozenset({"ok", "unpacked"})

# A list key written with an index in a --set expression: "hosts[0].name=x" -> "hosts".
_INDEXED_KEY = re.compile(r"([^\s,.=\[\]{}\\]+)\[\d+\]")

# Helm names the failing template as "(chart/templates/x.yaml:12:3)", "template: chart/x.yaml:12:"
# or "chart/templates/x.yaml:12:3 executing ..." depending on the kind of error.
_ERROR_AT = re.compile(r"(?:^|[\s(])(?P<path>[^\s():\"]+/[^\s():\"]+):(?P<line>\d+)")


def is_helm_chart(path: Path) -> bool:
    """A directory is a chart when it holds ``Chart.yaml`` (Helm's own test)."""
    return path.is_dir() and (path / "Chart.yaml").is_file()


def merge_values(
    base: dict[str, Any], override: Mapping[str, Any], indexed: Collection[str] = ()
) -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base`` the way Helm layers ``-f`` and ``--set``.

    Maps merge key by key; anything else is replaced, as Helm's ``MergeValues`` does for values
    files. A ``--set`` expression, though, is applied *into* the values (``strvals.ParseInto``):
    ``list[1]=x`` or ``list[0].port=80`` changes one element and keeps the rest of an existing
    list. The SDK parses an expression on its own, so the keys written with an index in it are
    passed as ``indexed`` and those lists merge element by element (``None`` holes keep the old
    element); a list literal ``list={a,b}`` still replaces the whole list.
    """
    merged = dict(base)
    for key, value in override.items():
        current = merged.get(key)
        if isinstance(value, Mapping) and isinstance(current, dict):
            merged[key] = merge_values(current, value, indexed)
        elif isinstance(value, list) and isinstance(current, list) and key in indexed:
            merged[key] = _merge_list(current, value, indexed)
        else:
            merged[key] = value
    return merged


def _merge_list(base: list[Any], override: list[Any], indexed: Collection[str]) -> list[Any]:
    result = list(base) + [None] * max(0, len(override) - len(base))
    for index, item in enumerate(override):
        current = result[index]
        if item is None:
            continue  # a hole left by a higher index: Helm keeps the element that is there
        if isinstance(item, Mapping) and isinstance(current, dict):
            result[index] = merge_values(current, item, indexed)
        elif isinstance(item, list) and isinstance(current, list):
            result[index] = _merge_list(current, item, indexed)
        else:
            result[index] = item
    return result


def _indexed_keys(expression: str) -> frozenset[str]:
    """Names written as ``name[<n>]`` in a ``--set`` expression."""
    return frozenset(match[1] for match in _INDEXED_KEY.finditer(expression))


def _source_name(chart_dir: Path, helm_path: str) -> str:
    """``payments/templates/x.yaml`` -> ``<chart_dir>/templates/x.yaml``."""
    parts = PurePosixPath(helm_path).parts
    rest = PurePosixPath(*parts[1:]) if len(parts) > 1 else PurePosixPath(helm_path)
    return str(chart_dir / rest)


def _error_location(chart_dir: Path, message: str) -> SourceLocation:
    match = _ERROR_AT.search(message)
    if match is None:
        return SourceLocation(str(chart_dir))
    return SourceLocation(_source_name(chart_dir, match["path"]), int(match["line"]))


def _one_line(message: str) -> str:
    return " ".join(part.strip() for part in message.strip().splitlines() if part.strip())


def _collect_values(
    chart_dir: Path, values_files: Sequence[Path], set_values: Sequence[str]
) -> tuple[dict[str, Any], list[Unreadable]]:
    """Layer values files, then ``--set`` expressions; both parsed by Helm's own code."""
    import helm_python  # lazy: the SDK loads an 85 MB shared library

    values: dict[str, Any] = {}
    problems: list[Unreadable] = []
    for path in values_files:
        try:
            text = Path(path).read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Unreadable(SourceLocation(str(path)), f"cannot read Helm values file: {exc}"))
            continue
        try:
            layer = helm_python.values_from_yaml(text)
        except helm_python.HelmError as exc:
            problems.append(
                Unreadable(SourceLocation(str(path)), f"invalid Helm values file: {_one_line(str(exc))}")
            )
            continue
        values = merge_values(values, layer)
    for expression in set_values:
        try:
            layer = helm_python.parse_set_string(expression)
        except helm_python.HelmError as exc:
            problems.append(
                Unreadable(
                    SourceLocation(str(chart_dir)),
                    f"invalid --set expression {expression!r}: {_one_line(str(exc))}",
                )
            )
            continue
        values = merge_values(values, layer, _indexed_keys(expression))
    return values, problems


def _missing_dependencies(chart_dir: Path, chart_name: str) -> list[Unreadable]:
    """Helm refuses to install a chart whose declared subcharts are absent; so do we.

    Rendering without them would silently drop objects the real release contains. Nothing is
    fetched: the user runs ``helm dependency build`` (which needs the repositories) first.
    """
    import helm_python  # lazy: the SDK loads an 85 MB shared library

    problems: list[Unreadable] = []
    for dep in helm_python.dependency_list(chart_dir):
        status = str(dep.get("status", ""))
        if status in _DEPENDENCY_OK:
            continue
        name = dep.get("name", "?")
        version = dep.get("version") or "any version"
        repo = dep.get("repository") or "no repository"
        problems.append(
            Unreadable(
                SourceLocation(str(chart_dir / "Chart.yaml")),
                f"helm chart {chart_name!r}: dependency {name!r} ({version} from {repo}) is {status} "
                f"in charts/; run 'helm dependency build' before scanning (kubepci renders offline)",
            )
        )
    return problems


def render_chart(
    chart_dir: Path,
    values_files: Sequence[Path] = (),
    set_values: Sequence[str] = (),
    release_name: str = "kubepci",
    namespace: str = "default",
) -> tuple[list[Resource], list[Unreadable]]:
    """Render ``chart_dir`` as ``helm template`` would, offline, and parse the objects.

    ``values_files`` are layered in order like repeated ``-f``; each ``set_values`` entry is a
    Helm ``--set`` expression (``a.b=c,d=e``, ``list[0]=x``, ``{a,b}``) applied after them, in
    order. Objects come back sorted by template path, in document order within a template.
    ``NOTES.txt`` and ``_*`` partials are not manifests and are skipped, as Helm skips them.
    """
    import helm_python  # lazy: the SDK loads an 85 MB shared library

    chart_dir = Path(chart_dir)
    if not is_helm_chart(chart_dir):
        return [], [Unreadable(SourceLocation(str(chart_dir)), "not a Helm chart (no Chart.yaml)")]
    values, problems = _collect_values(chart_dir, values_files, set_values)
    if problems:
        return [], problems
    try:
        helm_python.validate_release_name(release_name)
    except helm_python.HelmError as exc:
        reason = f"invalid Helm release name {release_name!r}: {_one_line(str(exc))}"
        return [], [Unreadable(SourceLocation(str(chart_dir)), reason)]
    chart_name = chart_dir.name
    try:
        with helm_python.Chart.load(chart_dir) as chart:
            chart_name = chart.name or chart_name
            problems = _missing_dependencies(chart_dir, chart_name)
            if problems:
                return [], problems
            rendered = chart.render(values=values, name=release_name, namespace=namespace, is_install=True)
            crds = chart.crds
    except helm_python.HelmError as exc:
        location = _error_location(chart_dir, str(exc))
        what = "cannot load" if isinstance(exc, helm_python.HelmChartLoadError) else "cannot render"
        reason = f"helm chart {chart_name!r}: {what}: {_one_line(str(exc))}"
        return [], [Unreadable(location, reason)]

    resources: list[Resource] = []
    for crd in crds:
        source = _source_name(chart_dir, str(crd.get("filename", "")))
        res, prob = parse_text(str(crd.get("data", "")), source)
        resources.extend(res)
        problems.extend(prob)
    for helm_path in sorted(rendered):
        text = rendered[helm_path]
        base = PurePosixPath(helm_path).name
        if base.startswith("_") or base.endswith("NOTES.txt") or not text.strip():
            continue
        res, prob = parse_text(text, _source_name(chart_dir, helm_path))
        resources.extend(res)
        problems.extend(prob)
    return resources, problems

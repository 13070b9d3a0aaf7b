"""Read Kubernetes manifests (YAML or JSON) from files, directories and stdin.

Documents are split on ``---`` lines before parsing so each one keeps its own 1-based start line
and one broken document never hides the others.

Parser choice (measured on 100,000 generated resources, 47 MB, 2-core machine, GC off): libyaml's
safe loader through PyYAML takes 17.4 s, the Rust ``yaml-rs`` parser 2.0 s with the same memory.
``yaml-rs`` reads YAML 1.2 while kubectl reads YAML 1.1 (``yes``/``on`` are booleans, ``0644`` is
octal, ``<<`` merges). A document that contains any YAML-1.1-only plain scalar, a merge key or an
explicit tag (yaml-rs silently drops unknown tags, libyaml's safe loader rejects them) is
therefore parsed with PyYAML's safe loader, so every document means what the API server would make
of it. Both loaders only construct plain data; no tag can instantiate an object.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml_rs

from kubepci.model import Resource, ResourceRef, SourceLocation, Unreadable

__all__ = [
    "CONFIG_API_GROUPS",
    "MANIFEST_SUFFIXES",
    "InvalidYAMLError",
    "LoadResult",
    "StrictYAMLError",
    "iter_manifest_files",
    "load_document",
    "load_paths",
    "parse_text",
    "read_file",
    "resources_from_object",
    "safe_load",
]

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
#: API groups of component configuration files (not API objects; cluster-wide, nameless)
CONFIG_API_GROUPS = ("audit.k8s.io/", "apiserver.config.k8s.io/", "apiserver.k8s.io/", "kubelet.config.k8s.io/",
                     "kubeproxy.config.k8s.io/", "kubeadm.k8s.io/", "kubescheduler.config.k8s.io/")

_DOC_SPLIT = re.compile(r"^(?:---|\.\.\.)[ \t]*(?:#.*)?$", re.MULTILINE)
# Plain scalars whose meaning differs between YAML 1.1 (kubectl) and 1.2 (yaml-rs). Three separate
# patterns, each with a literal or charset prefix the regex engine can skip to: one combined
# alternation (tags start at any line) scanned 3-6x slower.
_YAML11_SCALAR = re.compile(
    r"[:?,\[{-]\s*(?<=[\s,\[{])(?=[yYnNoO0-9+<-])"  # block indicators need a space after them; the
    # value may start on the next line ("key:" then "  on", or a flow entry after a line-ending comma)
    r"(?:[yYnN]|[yY]es|YES|[nN]o|NO|[oO]n|ON|[oO]ff|OFF|[-+]?0[0-7_]+|[-+]?0[bB][01_]+"
    r"|[-+]?\d[\d_]*(?::[0-5]?\d)+(?:\.\d*)?|[-+]?\d+_[\d_]*|[-+]?\d+(?:\.\d*)?[eE][-+]?\d+)"
    r"(?=[ \t]*(?:#[^\n]*)?$|[ \t]*[,}\]])",
    re.MULTILINE,
)
_MERGE_KEY = re.compile(r"<<[ \t]*:")
# Standard (!!) and verbatim (!<...>) tags: yaml-rs ignores unknown ones where libyaml rejects them
# (!!python/..., !!binary). Local tags (!foo) are left to yaml-rs, which reads them as go-yaml does:
# the tag is dropped. Matching a bare "!" would send every CRD with a CEL rule ("!has(self.x)") to
# the slow path.
_TAG = re.compile(r"!(?:!|<)")


_FLOW_OPENER = re.compile(r"[\[{]")


def _unclosed(segment: str) -> bool:
    return segment.count("[") + segment.count("{") > segment.count("]") + segment.count("}")


def _spans_lines(chunk: str) -> bool:
    """Does a flow collection opened in value position continue past its first line? An opener alone
    at the start of a line counts only when the line before introduces a value (ends in ``:``, ``-``
    or ``?``) or there is none: otherwise it is text inside a multi-line scalar (a CRD description
    quoting ``{key,value}``)."""
    for m in _FLOW_OPENER.finditer(chunk):
        pos = m.start()
        end = chunk.find("\n", pos)
        if not _unclosed(chunk[pos : end if end >= 0 else len(chunk)]):
            continue
        line_start = chunk.rfind("\n", 0, pos) + 1
        before = chunk[line_start:pos].rstrip(" \t")
        if before[-1:] not in ("", ":", "-", "?") and before.rsplit(" ", 1)[-1][:1] in ("&", "!"):
            before = before.rsplit(" ", 1)[0].rstrip(" \t") if " " in before else ""  # an anchor or tag
        if before:
            if before.endswith((":", "-", "?")) and len(before) < pos - line_start:
                return True
            continue
        previous = chunk[:line_start].rstrip()
        last = previous[previous.rfind("\n") + 1 :].split(" #")[0].rstrip()
        if " " in last and last.rsplit(" ", 1)[1][:1] in ("&", "!"):  # "key: &anchor" then the value
            last = last.rsplit(" ", 1)[0].rstrip()
        if not last or last.endswith((":", "-", "?")):
            return True
    return False


def needs_yaml11(chunk: str) -> bool:
    """True when libyaml must read this document so that it means what kubectl makes of it."""
    if "<<" in chunk and _MERGE_KEY.search(chunk):
        return True
    if "!" in chunk and _TAG.search(chunk):  # "!!"/"!<" anywhere: rare outside tags, so no context
        return True
    spans: bool | None = None
    for m in _YAML11_SCALAR.finditer(chunk):
        if chunk[m.start()] != ",":
            return True
        # ", on" is a flow entry only inside a flow collection: one opened earlier on the comma's line,
        # or one spanning lines. Elsewhere it is prose in a plain scalar (a CRD's "linked below), on").
        if _unclosed(chunk[chunk.rfind("\n", 0, m.start()) + 1 : m.start()]):
            return True
        if spans is None:
            spans = _spans_lines(chunk)
        if spans:
            return True
    return False


@dataclass(frozen=True, slots=True)
class LoadResult:
    resources: tuple[Resource, ...]
    unreadable: tuple[Unreadable, ...]
    inputs: tuple[tuple[str, str], ...] = ()  # (source name, sha256 of bytes)


def _separator_spans(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of each document-separator line. ``str.find`` jumps between "---" candidates;
    a regex anchored at every line start walked all 47 MB of a 100k-object scan (0.3 s)."""
    if text.startswith("...") or "\n..." in text:  # document-end markers are rare: take the general path
        for m in _DOC_SPLIT.finditer(text):
            yield m.start(), m.end()
        return
    pos = 0 if text.startswith("---") else text.find("\n---") + 1
    while pos > 0 or (pos == 0 and text.startswith("---")):
        end = text.find("\n", pos)
        if end < 0:
            end = len(text)
        if _DOC_SPLIT.fullmatch(text, pos, end):
            yield pos, end
        nxt = text.find("\n---", end)
        if nxt < 0:
            return
        pos = nxt + 1


def _split_documents(text: str) -> Iterator[tuple[int, str]]:
    """Yield (1-based first line, document text) for each YAML document."""
    start = 0
    line = 1
    for sep_start, sep_end in _separator_spans(text):
        chunk = text[start:sep_start]
        yield line, chunk
        line += chunk.count("\n") + 1
        start = sep_end + 1
    if start <= len(text):
        yield line, text[start:]


def _first_content_line(first: int, chunk: str) -> int:
    """Line of the first non-blank, non-comment line, so findings point at the object."""
    if chunk[:1].isalpha():  # the usual case (a document starting "apiVersion:"): no split needed
        return first
    for offset, raw in enumerate(chunk.split("\n", 64)[:64]):
        stripped = raw.strip()
        if stripped and not stripped.startswith("#"):
            return first + offset
    return first


class InvalidYAMLError(Exception):
    """libyaml rejected a document: ``line`` is 0-based within it, ``reason`` says what and where."""

    def __init__(self, reason: str, line: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line


class StrictYAMLError(Exception):
    """yaml-rs rejected a document libyaml accepts (e.g. a duplicate key): kubectl rejects it too."""


def safe_load(text: str) -> Any:
    """libyaml's safe loader (plain data only; no tag can build an object). PyYAML is imported on
    first use: most scans never need it, and importing it costs 10 ms of every start."""
    import yaml

    loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml is in every wheel we lock
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - CSafeLoader/SafeLoader are the safe loaders
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context = getattr(exc, "context", None)
        reason = f"invalid YAML: {problem}" + (f" ({context})" if context else "")
        raise InvalidYAMLError(reason, int(mark.line) if mark is not None else 0) from None


def load_document(chunk: str) -> Any:
    """One YAML document as kubectl reads it (YAML 1.1 where it matters), parsed by the fast parser
    when the meaning is the same. Raises ``InvalidYAMLError`` or ``StrictYAMLError``."""
    if needs_yaml11(chunk):
        return safe_load(chunk)
    try:
        return yaml_rs.loads(chunk, parse_datetime=False)
    except yaml_rs.YAMLDecodeError as exc:
        # re-parse with libyaml for a precise line; if libyaml accepts it, keep yaml-rs's verdict
        safe_load(chunk)
        first = str(exc).splitlines()[0] if str(exc) else "rejected"
        raise StrictYAMLError(f"invalid YAML: {first}") from None


def resources_from_object(
    obj: Any, location: SourceLocation
) -> tuple[list[Resource], list[Unreadable]]:
    """Turn one decoded document into resources; expands ``kind: List`` and ``*List`` kinds."""
    resources: list[Resource] = []
    problems: list[Unreadable] = []
    if obj is None:
        return resources, problems
    if not isinstance(obj, Mapping):
        problems.append(Unreadable(location, f"document is a {type(obj).__name__}, not a Kubernetes object"))
        return resources, problems
    kind = obj.get("kind")
    items = obj.get("items")
    if isinstance(kind, str) and kind.endswith("List") and isinstance(items, list):
        for index, item in enumerate(items):
            sub_res, sub_prob = resources_from_object(item, location)
            resources.extend(sub_res)
            problems.extend(Unreadable(p.location, f"items[{index}]: {p.reason}") for p in sub_prob)
        return resources, problems
    if not isinstance(kind, str) or not kind:
        problems.append(Unreadable(location, "missing 'kind'"))
        return resources, problems
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping):
        meta = {}
    name = meta.get("name") or meta.get("generateName") or ""
    api_version = obj.get("apiVersion")
    if (not name) and isinstance(api_version, str) and api_version.startswith(CONFIG_API_GROUPS):
        # component configuration files (an --audit-policy-file, an EncryptionConfiguration) carry no
        # metadata.name: they are named after their file so the control-plane checks can read them
        name = location.file.rsplit("/", 1)[-1]
    if not isinstance(name, str) or not name:
        problems.append(Unreadable(location, f"{kind} has no metadata.name"))
        return resources, problems
    namespace = meta.get("namespace") or ""
    if not isinstance(namespace, str):
        namespace = str(namespace)
    ref = ResourceRef(namespace, kind, name, api_version if isinstance(api_version, str) else "")
    resources.append(Resource(ref, obj, location))
    return resources, problems


def parse_text(text: str, source: str) -> tuple[list[Resource], list[Unreadable]]:
    """Parse one file's text. JSON files (a single value) go through ``json`` for speed."""
    resources: list[Resource] = []
    problems: list[Unreadable] = []
    stripped = text.lstrip()
    if source.endswith(".json") or (stripped.startswith("{") and source == "-"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            problems.append(Unreadable(SourceLocation(source, exc.lineno), f"invalid JSON: {exc.msg}"))
            return resources, problems
        return resources_from_object(obj, SourceLocation(source, 1))
    for first_line, chunk in _split_documents(text):
        if not chunk.strip():
            continue
        try:
            obj = load_document(chunk)
        except InvalidYAMLError as exc:
            problems.append(Unreadable(SourceLocation(source, first_line + exc.line), exc.reason))
            continue
        except StrictYAMLError as exc:
            problems.append(Unreadable(SourceLocation(source, _first_content_line(first_line, chunk)), str(exc)))
            continue
        location = SourceLocation(source, _first_content_line(first_line, chunk))
        res, prob = resources_from_object(obj, location)
        resources.extend(res)
        problems.extend(prob)
    return resources, problems


def iter_manifest_files(root: Path) -> Iterator[Path]:
    """Recursive, sorted walk so the scan order (and the report) is stable."""
    if root.is_file():
        yield root
        return
    for path in sorted(root.rglob("*")):
        if path.suffix in MANIFEST_SUFFIXES and path.is_file():
            if any(part.startswith(".") for part in path.relative_to(root).parts):
                continue
            yield path


def read_file(path: Path) -> tuple[list[Resource], list[Unreadable], tuple[str, str] | None]:
    """Read and parse one manifest file: (resources, problems, (name, sha256 of its bytes) or None
    when it could not be read at all)."""
    name = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        return [], [Unreadable(SourceLocation(name), f"cannot read: {exc.strerror}")], None
    digest = (name, hashlib.sha256(data).hexdigest())
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return [], [Unreadable(SourceLocation(name), f"not UTF-8 text (byte {exc.start})")], digest
    resources, problems = parse_text(text, name)
    return resources, problems, digest


def load_paths(paths: Iterable[str], stdin_text: str | None = None) -> LoadResult:
    """Load every manifest under ``paths`` (``-`` means stdin, whose text the caller passes)."""
    resources: list[Resource] = []
    problems: list[Unreadable] = []
    inputs: list[tuple[str, str]] = []
    for raw in paths:
        if raw == "-":
            text = stdin_text or ""
            inputs.append(("-", hashlib.sha256(text.encode()).hexdigest()))
            res, prob = parse_text(text, "-")
            resources.extend(res)
            problems.extend(prob)
            continue
        root = Path(raw)
        if not root.exists():
            problems.append(Unreadable(SourceLocation(raw), "no such file or directory"))
            continue
        for path in iter_manifest_files(root):
            res, prob, digest = read_file(path)
            resources.extend(res)
            problems.extend(prob)
            if digest is not None:
                inputs.append(digest)
    return LoadResult(tuple(resources), tuple(problems), tuple(inputs))

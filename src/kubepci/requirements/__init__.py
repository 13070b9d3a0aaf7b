"""The PCI DSS v4.0.1 requirement tree kubepci reports against.

The tree lives in ``pci_dss_v4_0_1.yaml`` beside this module as a flat list; the hierarchy is
implied by dotted ids ("1.2.1" sits under "1.2", which sits under "1"). Keeping it as data lets
a QSA read and diff it, while this loader makes sure nothing malformed ever reaches a report:
every problem is a ``RequirementTreeError`` that names the offending requirement.

Besides loading, the module answers the two questions the rest of kubepci asks of the tree:
which checks give evidence for each requirement (``coverage``) and whether the check catalog
and the tree agree with each other (``consistency_errors``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from kubepci.errors import KubepciError
from kubepci.inventory.loaders.manifests import InvalidYAMLError, StrictYAMLError, load_document

__all__ = [
    "BLOG_IDS",
    "MAX_TITLE_LENGTH",
    "STATUSES",
    "CoverageRow",
    "Requirement",
    "RequirementTree",
    "RequirementTreeError",
    "consistency_errors",
    "coverage",
    "load_tree",
    "natural_key",
]

STATUSES: tuple[str, ...] = ("automated", "partial", "manual", "not-applicable", "inherited")
"""What kubepci can do for a requirement; the YAML header explains each value."""

BLOG_IDS: tuple[str, ...] = tuple(f"R{n}" for n in range(1, 13))
"""The v3.2.1 top-level requirements the founding blog is organised by."""

MAX_TITLE_LENGTH = 70
"""Titles are short paraphrases; a long one is a hint that the standard's text crept in."""

PACKAGED_FILE = "pci_dss_v4_0_1.yaml"

# Principal ids are 1-12 or an appendix (A1-A3); v4.0.1 nests at most four levels below them.
_ID_RE = re.compile(r"(?:[1-9]|1[0-2]|A[1-3])(?:\.[1-9][0-9]*){0,4}")
# One or more v3.2.1 numbers, comma-separated ("8.1.6, 8.1.7").
_V3_RE = re.compile(r"A?[0-9]+(?:\.[0-9]+)*(?:, A?[0-9]+(?:\.[0-9]+)*)*")

_TOP_LEVEL_KEYS = frozenset({"standard", "version", "blog", "requirements"})
_REQUIRED_FIELDS = ("id", "title", "blog", "status", "note")
_OPTIONAL_FIELDS = frozenset({"v3_2_1"})


class RequirementTreeError(KubepciError, ValueError):
    """The requirement tree (or a lookup against it) is invalid; the message names the id."""


def natural_key(requirement_id: str) -> tuple[tuple[int, int], ...]:
    """Sort key giving 1 < 2 < ... < 12 < A1 and 1.2.9 < 1.2.10.

    Each component becomes ``(appendix, number)`` so the principal's position is compared
    first and appendices follow the twelve numbered requirements.
    """
    key: list[tuple[int, int]] = []
    for part in requirement_id.split("."):
        if part.startswith("A"):
            key.append((1, int(part[1:])))
        else:
            key.append((0, int(part)))
    return tuple(key)


def _parent_id(requirement_id: str) -> str | None:
    head, dot, _ = requirement_id.rpartition(".")
    return head if dot else None


@dataclass(frozen=True, slots=True)
class Requirement:
    """One requirement: our paraphrased title, what kubepci can do for it, and its place."""

    id: str
    title: str
    status: str
    note: str
    blog: str
    v3_2_1: str | None
    parent: str | None
    children: tuple[str, ...]

    @property
    def is_principal(self) -> bool:
        return self.parent is None


@dataclass(frozen=True, slots=True)
class RequirementTree:
    """The validated tree; ``by_id`` iterates in natural order and is read-only."""

    standard: str
    version: str
    blog_titles: Mapping[str, str]
    by_id: Mapping[str, Requirement]

    def __contains__(self, requirement_id: object) -> bool:
        return requirement_id in self.by_id

    def __len__(self) -> int:
        return len(self.by_id)

    def __iter__(self) -> Iterator[Requirement]:
        return iter(self.by_id.values())

    def get(self, requirement_id: str) -> Requirement:
        """The requirement with this id; an unknown id raises ``KeyError`` naming it."""
        try:
            return self.by_id[requirement_id]
        except KeyError:
            raise KeyError(f"{requirement_id!r} is not in the {self.standard} {self.version} tree") from None

    def principal(self) -> tuple[Requirement, ...]:
        """Top-level requirements: 1..12, then the appendices."""
        return tuple(r for r in self.by_id.values() if r.parent is None)

    def descendants(self, requirement_id: str) -> tuple[Requirement, ...]:
        """Every requirement below this one, at any depth, in natural order."""
        self.get(requirement_id)
        prefix = requirement_id + "."
        return tuple(r for r in self.by_id.values() if r.id.startswith(prefix))

    def principal_of(self, requirement_id: str) -> Requirement:
        """The top-level ancestor (or the requirement itself if it is top-level)."""
        self.get(requirement_id)
        return self.get(requirement_id.split(".", 1)[0])

    def ordered(self) -> tuple[Requirement, ...]:
        """All requirements in natural numeric order."""
        return tuple(self.by_id.values())


@dataclass(frozen=True, slots=True)
class CoverageRow:
    """One line of the coverage matrix: a requirement and the checks citing it directly."""

    requirement_id: str
    title: str
    status: str
    blog: str
    v3_2_1: str | None
    check_ids: tuple[str, ...]


# ------------------------------------------------------------------------------------ loading


def load_tree(path: Path | None = None) -> RequirementTree:
    """Load and validate a requirement tree; without ``path``, the packaged v4.0.1 tree.

    The packaged tree is parsed once per process (it is immutable); an explicit path is read
    every time so tests and users editing a copy see their changes.
    """
    if path is None:
        return _load_packaged()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RequirementTreeError(f"{path}: cannot read requirement tree: {exc.strerror}") from exc
    return _parse(text, str(path))


@functools.lru_cache(maxsize=1)
def _load_packaged() -> RequirementTree:
    text = resources.files(__name__).joinpath(PACKAGED_FILE).read_text(encoding="utf-8")
    return _parse(text, PACKAGED_FILE)


def _parse(text: str, source: str) -> RequirementTree:
    try:
        data = load_document(text)  # the fast parser: this file is read on every scan
    except (InvalidYAMLError, StrictYAMLError) as exc:
        raise RequirementTreeError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise RequirementTreeError(f"{source}: top level must be a mapping")
    unknown = sorted(str(k) for k in data if k not in _TOP_LEVEL_KEYS)
    if unknown:
        raise RequirementTreeError(f"{source}: unknown top-level key(s): {', '.join(unknown)}")
    missing = sorted(k for k in _TOP_LEVEL_KEYS if k not in data)
    if missing:
        raise RequirementTreeError(f"{source}: missing top-level key(s): {', '.join(missing)}")
    standard = _text(data["standard"], f"{source}: 'standard'")
    version = _text(data["version"], f"{source}: 'version'")
    blog_titles = _blog_titles(data["blog"], source)
    entries = data["requirements"]
    if not isinstance(entries, list) or not entries:
        raise RequirementTreeError(f"{source}: 'requirements' must be a non-empty list")

    fields: dict[str, dict[str, Any]] = {}
    for index, entry in enumerate(entries, start=1):
        checked = _check_entry(entry, index, source)
        if checked["id"] in fields:
            raise RequirementTreeError(f"{source}: requirement {checked['id']!r}: duplicate id")
        fields[checked["id"]] = checked

    children: dict[str, list[str]] = {rid: [] for rid in fields}
    for rid in fields:
        parent = _parent_id(rid)
        if parent is None:
            continue
        if parent not in fields:
            raise RequirementTreeError(f"{source}: requirement {rid!r}: parent {parent!r} is missing")
        children[parent].append(rid)

    by_id = {
        rid: Requirement(
            id=rid,
            title=fields[rid]["title"],
            status=fields[rid]["status"],
            note=fields[rid]["note"],
            blog=fields[rid]["blog"],
            v3_2_1=fields[rid].get("v3_2_1"),
            parent=_parent_id(rid),
            children=tuple(sorted(children[rid], key=natural_key)),
        )
        for rid in sorted(fields, key=natural_key)
    }
    return RequirementTree(
        standard=standard,
        version=version,
        blog_titles=MappingProxyType(blog_titles),
        by_id=MappingProxyType(by_id),
    )


def _text(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RequirementTreeError(f"{where} must be a non-empty string, got {value!r}")
    return value


def _blog_titles(value: object, source: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise RequirementTreeError(f"{source}: 'blog' must map R1..R12 to titles")
    keys = {str(k) for k in value}
    if keys != set(BLOG_IDS):
        extra = sorted(keys - set(BLOG_IDS))
        absent = sorted(set(BLOG_IDS) - keys, key=lambda r: int(r[1:]))
        raise RequirementTreeError(
            f"{source}: 'blog' must have exactly R1..R12 (unexpected: {extra or 'none'}, "
            f"missing: {absent or 'none'})"
        )
    return {r: _text(value[r], f"{source}: blog {r}") for r in BLOG_IDS}


def _check_entry(entry: object, index: int, source: str) -> dict[str, Any]:
    """Validate one list item and return its fields; every message names the id."""
    if not isinstance(entry, dict):
        raise RequirementTreeError(f"{source}: requirements[{index}] must be a mapping")
    raw_id = entry.get("id")
    if raw_id is None:
        raise RequirementTreeError(f"{source}: requirements[{index}]: missing field 'id'")
    if not isinstance(raw_id, str):
        raise RequirementTreeError(
            f"{source}: requirements[{index}]: id {raw_id!r} must be a quoted string, "
            f"not {type(raw_id).__name__}"
        )
    where = f"{source}: requirement {raw_id!r}"
    if not _ID_RE.fullmatch(raw_id):
        raise RequirementTreeError(f"{where}: id does not look like a PCI DSS number (e.g. '1.2.3', 'A1.1')")
    unknown = sorted(str(k) for k in entry if k not in _REQUIRED_FIELDS and k not in _OPTIONAL_FIELDS)
    if unknown:
        raise RequirementTreeError(f"{where}: unknown field(s): {', '.join(unknown)}")
    missing = [k for k in _REQUIRED_FIELDS if k not in entry]
    if missing:
        raise RequirementTreeError(f"{where}: missing field(s): {', '.join(missing)}")

    title = _text(entry["title"], f"{where}: title")
    if "\n" in title.strip():
        raise RequirementTreeError(f"{where}: title must be one line")
    if len(title) > MAX_TITLE_LENGTH:
        raise RequirementTreeError(
            f"{where}: title is {len(title)} characters, longer than {MAX_TITLE_LENGTH}; shorten it"
        )
    status = entry["status"]
    if status not in STATUSES:
        expected = ", ".join(STATUSES)
        raise RequirementTreeError(f"{where}: unknown status {status!r} (expected one of {expected})")
    blog = entry["blog"]
    if blog not in BLOG_IDS:
        raise RequirementTreeError(f"{where}: blog {blog!r} is not one of R1..R12")
    fields: dict[str, Any] = {
        "id": raw_id,
        "title": title,
        "status": status,
        "blog": blog,
        "note": _text(entry["note"], f"{where}: note"),
    }
    if "v3_2_1" in entry:
        v3 = entry["v3_2_1"]
        if not isinstance(v3, str) or not _V3_RE.fullmatch(v3):
            raise RequirementTreeError(
                f"{where}: v3_2_1 {v3!r} must be a quoted v3.2.1 number or comma-separated numbers"
            )
        fields["v3_2_1"] = v3
    return fields


# ------------------------------------------------------------------------ coverage, consistency


def coverage(tree: RequirementTree, checks_by_requirement: Mapping[str, Sequence[str]]) -> list[CoverageRow]:
    """One row per requirement, in natural order, with the checks that cite it directly.

    A requirement id the tree does not know is an error rather than a dropped row: a coverage
    matrix that silently loses a check's evidence would mislead the assessor.
    """
    unknown = sorted((rid for rid in checks_by_requirement if rid not in tree), key=_lenient_key)
    if unknown:
        raise RequirementTreeError(f"coverage: requirement id(s) not in the tree: {', '.join(unknown)}")
    return [
        CoverageRow(
            requirement_id=r.id,
            title=r.title,
            status=r.status,
            blog=r.blog,
            v3_2_1=r.v3_2_1,
            check_ids=tuple(sorted(set(checks_by_requirement.get(r.id, ())))),
        )
        for r in tree.ordered()
    ]


def consistency_errors(tree: RequirementTree, cited_ids: Mapping[str, Iterable[str]]) -> list[str]:
    """Disagreements between a check catalog (check id -> cited requirement ids) and the tree.

    Reports, in this order: cited ids missing from the tree; requirements marked automated
    that no check cites directly or through a descendant; requirements marked not-applicable
    that a check cites. An empty list means the two agree.
    """
    citers: dict[str, set[str]] = {}
    errors: list[str] = []
    for check_id in sorted(cited_ids):
        for rid in sorted(set(cited_ids[check_id]), key=_lenient_key):
            if rid in tree:
                citers.setdefault(rid, set()).add(check_id)
            else:
                errors.append(f"check {check_id!r} cites {rid!r}, which is not in the requirement tree")
    for req in tree.ordered():
        if req.status != "automated":
            continue
        covered = req.id in citers or any(d.id in citers for d in tree.descendants(req.id))
        if not covered:
            errors.append(f"requirement {req.id!r} is marked automated but no check cites it or a descendant")
    for req in tree.ordered():
        if req.status == "not-applicable" and req.id in citers:
            checks = ", ".join(sorted(citers[req.id]))
            errors.append(f"requirement {req.id!r} is marked not-applicable but is cited by {checks}")
    return errors


def _lenient_key(requirement_id: str) -> tuple[int, tuple[tuple[int, int], ...], str]:
    """Natural order for valid ids; anything malformed sorts after them, alphabetically."""
    if _ID_RE.fullmatch(requirement_id):
        return (0, natural_key(requirement_id), requirement_id)
    return (1, (), requirement_id)

"""The PCI DSS v4.0.1 requirement tree: packaged data, validation and the coverage helpers.

The most important test here reads the research catalog (../shared/reference/controls.md) and
asserts every requirement number it cites exists in our tree, and that the tree's statuses agree
with what the catalog's checks cite. The research is the oracle, not a copy of our own data.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubepci.errors import KubepciError
from kubepci.inventory.loaders.manifests import load_document
from kubepci.requirements import (
    BLOG_IDS,
    PACKAGED_FILE,
    STATUSES,
    CoverageRow,
    RequirementTree,
    RequirementTreeError,
    consistency_errors,
    coverage,
    load_tree,
    natural_key,
)

CONTROLS_MD = Path("../shared/reference/controls.md")

# ----------------------------------------------------------------------------- research parsing

# Ranges in controls.md that are not a run of siblings, with the ids we check in their place.
NOT_EXPANDED: dict[str, tuple[str, ...]] = {
    # POL-002: "x.1.1/x.1.2 for every requirement 1..11" written as an ellipsis.
    "1.1.1/1.1.2 … 11.1.1/11.1.2": tuple(f"{n}.1.{leaf}" for n in range(1, 12) for leaf in (1, 2)),
    # PHY-001: spans three second-level requirements; we list their children down to 9.3.4.
    "9.1.1–9.3.x": ("9.1.1", "9.1.2", "9.2", "9.2.1", "9.2.4", "9.3", "9.3.1", "9.3.4"),
}

_TOKEN = re.compile(r"(?<![\w.])(A?\d+(?:\.\d+)*(?:\.x)?)(?:\s*–\s*(A?\d+(?:\.\d+)*(?:\.x)?))?")


@pytest.fixture(scope="module")
def tree() -> RequirementTree:
    return load_tree()


def _section(text: str, start: str, end: str) -> str:
    begin = text.index(start)
    return text[begin : text.index(end, begin)]


def _table_cells(section: str, column: int) -> list[tuple[str, str]]:
    """(first cell, cell at ``column``) for every body row of every table in the section."""
    rows = []
    for line in section.splitlines():
        if not line.startswith("|") or line.startswith("|---"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows.append((cells[0], cells[column]))
    return rows


def _parse_cell(cell: str) -> tuple[set[str], set[str]]:
    """Concrete requirement ids and "X.x" parents named in one table cell.

    Daggers and parenthesised remarks are dropped; "a–b" sibling ranges are expanded; ranges
    listed in NOT_EXPANDED are replaced by the ids documented there; any other range fails.
    """
    ids: set[str] = set()
    parents: set[str] = set()
    cell = cell.replace("†", "")
    for fragment, substitutes in NOT_EXPANDED.items():
        if fragment in cell:
            ids.update(substitutes)
            cell = cell.replace(fragment, "")
    cell = re.sub(r"\([^)]*\)", "", cell)
    for first, last in _TOKEN.findall(cell):
        if not last:
            if first.endswith(".x"):
                parents.add(first[: -len(".x")])
            else:
                ids.add(first)
            continue
        head, _, low = first.rpartition(".")
        head_end, _, high = last.rpartition(".")
        assert head == head_end, f"range {first}–{last} is not a run of siblings; document it in NOT_EXPANDED"
        assert low.isdigit(), f"range {first}–{last} has a wildcard; document it in NOT_EXPANDED"
        assert high.isdigit(), f"range {first}–{last} has a wildcard; document it in NOT_EXPANDED"
        prefix = f"{head}." if head else ""
        ids.update(f"{prefix}{n}" for n in range(int(low), int(high) + 1))
    return ids, parents


@pytest.fixture(scope="module")
def research() -> str:
    return CONTROLS_MD.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def catalog_citations(research: str) -> dict[str, set[str]]:
    """check id -> requirement ids, from the PCI column of controls.md §1."""
    section = _section(research, "## 1. Catalog", "## 2.")
    cited: dict[str, set[str]] = {}
    for check_id, cell in _table_cells(section, 2):
        if not re.fullmatch(r"[A-Z]{3}-\d{3}", check_id):
            continue
        ids, parents = _parse_cell(cell)
        cited[check_id] = ids | parents
    return cited


def test_parser_reads_known_catalog_rows(catalog_citations: dict[str, set[str]]) -> None:
    # Guards the parser itself: a broken parser would make the consistency tests vacuous.
    assert len(catalog_citations) == 122
    assert catalog_citations["NET-002"] == {"1.2.6", "1.3.1", "1.4.1"}
    assert catalog_citations["CFG-009"] == {"2.2.6", "3.6.1", "4.2.1"}
    assert catalog_citations["LOG-002"] == {f"10.2.1.{n}" for n in range(1, 8)} | {"10.2.2"}
    assert catalog_citations["POL-006"] == {"12.8.1", "12.8.2", "12.8.3", "12.8.4", "12.8.5", "12.9"}
    assert catalog_citations["WKL-012"] == set()
    assert "10.1.1" in catalog_citations["POL-002"]
    assert "11.1.2" in catalog_citations["POL-002"]


# -------------------------------------------------------------------------- the packaged tree


def test_packaged_tree_loads_and_is_cached(tree: RequirementTree) -> None:
    assert tree.standard == "PCI DSS"
    assert tree.version == "4.0.1"
    assert load_tree() is tree
    assert set(tree.blog_titles) == set(BLOG_IDS)


def test_twelve_principals_then_appendices_with_their_blog_number(tree: RequirementTree) -> None:
    principal_ids = [r.id for r in tree.principal()]
    assert principal_ids == [str(n) for n in range(1, 13)] + ["A1", "A3"]
    for n in range(1, 13):
        req = tree.get(str(n))
        assert req.blog == f"R{n}", req.id
        assert req.v3_2_1 == str(n), req.id
        assert req.parent is None


def test_every_node_has_its_parent_and_its_principal_blog(tree: RequirementTree) -> None:
    for req in tree.ordered():
        if req.parent is not None:
            assert req.parent in tree, req.id
            assert req.id in tree.get(req.parent).children, req.id
        assert req.blog == tree.principal_of(req.id).blog, req.id
        assert req.status in STATUSES
        assert len(req.title) <= 70


def test_children_of_not_applicable_are_not_applicable(tree: RequirementTree) -> None:
    for req in tree.ordered():
        if req.status == "not-applicable":
            assert all(tree.get(c).status == "not-applicable" for c in req.children), req.id


def test_status_choices_for_landmark_requirements(tree: RequirementTree) -> None:
    assert tree.get("9").status == "inherited"
    assert tree.get("12").status == "manual"
    assert tree.get("2.2.6").status == "partial"
    assert tree.get("7.3.3").status == "automated"
    assert tree.get("3.4").status == "not-applicable"
    for pan_discovery in ("3.2.1", "3.3.1", "3.5.1"):
        assert tree.get(pan_discovery).status == "partial"
    assert tree.get("9.5").status == "not-applicable"
    # "automated" is rare on purpose: only where checks decide the whole requirement.
    assert [r.id for r in tree.ordered() if r.status == "automated"] == ["7.3.3"]


def test_v3_mapping_follows_the_research_table(tree: RequirementTree) -> None:
    # The "CaC pair" rows of controls.md §5.5 (the best-supported ones).
    assert tree.get("1.4.1").v3_2_1 == "1.1.4"
    assert tree.get("2.2.2").v3_2_1 == "2.1"
    assert tree.get("2.2.5").v3_2_1 == "2.2.3"
    assert tree.get("2.2.6").v3_2_1 == "2.2.4"
    assert tree.get("2.2.7").v3_2_1 == "2.3"
    assert tree.get("3.5.1.3").v3_2_1 == "3.4.1"
    assert tree.get("4.2.1").v3_2_1 == "4.1"
    assert tree.get("8.2.1").v3_2_1 == "8.1.1"
    assert tree.get("10.3.1").v3_2_1 == "10.5.1"
    assert tree.get("10.3.4").v3_2_1 == "10.5.5"
    assert tree.get("8.3.4").v3_2_1 == "8.1.6, 8.1.7"
    assert tree.get("4.2.1.1").v3_2_1 is None


def test_packaged_tree_is_in_natural_order(tree: RequirementTree) -> None:
    ids = [r.id for r in tree.ordered()]
    assert ids == sorted(ids, key=natural_key)
    assert ids.index("12.9.2") < ids.index("12.10") < ids.index("12.10.1") < ids.index("A1")
    assert ids.index("10.2.1.7") < ids.index("10.2.2")
    assert tree.get("12").children[-1] == "12.10"


def test_navigation(tree: RequirementTree) -> None:
    assert [r.id for r in tree.descendants("10.6")] == ["10.6.1", "10.6.2", "10.6.3"]
    assert tree.principal_of("10.2.1.3").id == "10"
    assert tree.principal_of("A1.1.4").id == "A1"
    assert tree.principal_of("7").id == "7"
    assert tree.get("1.2").parent == "1"
    with pytest.raises(KeyError, match=r"'13\.1'"):
        tree.get("13.1")
    with pytest.raises(KeyError, match=r"'4\.9'"):
        tree.descendants("4.9")


# ----------------------------------------------------------------- consistency with the research


def test_every_number_the_catalog_cites_is_in_the_tree(
    tree: RequirementTree, catalog_citations: dict[str, set[str]]
) -> None:
    missing = sorted(
        (f"{check}: {rid}" for check, ids in catalog_citations.items() for rid in ids if rid not in tree),
    )
    assert missing == []


def test_numbers_in_the_manual_threshold_and_numbering_tables_are_in_the_tree(
    tree: RequirementTree, research: str
) -> None:
    cells = [
        *_table_cells(_section(research, "## 2. PCI DSS", "## 3."), 0),
        *_table_cells(_section(research, "### 5.4", "### 5.5"), 0),
        *_table_cells(_section(research, "### 5.5", "### 5.6"), 1),
    ]
    headers = {"Requirement(s)", "Req.", "v4.0.1"}
    seen_ids: set[str] = set()
    seen_parents: set[str] = set()
    for first, cell in cells:
        if cell in headers or first in headers:
            continue
        ids, parents = _parse_cell(cell)
        seen_ids |= ids
        seen_parents |= parents
    missing = sorted(rid for rid in seen_ids if rid not in tree)
    assert missing == []
    childless = sorted(p for p in seen_parents if p not in tree or not tree.get(p).children)
    assert childless == []
    # Each table was actually read (a parser regression would otherwise pass silently).
    assert {"1.4.3", "4.2.1.2", "A3"} <= seen_ids  # §2
    assert {"8.3.10", "11.2", "3.4", "9", "12"} <= seen_parents  # §2
    assert {"1.2.7", "8.3.9", "A1.1.4", "12.5.2"} <= seen_ids  # §5.4
    assert {"1.4.5", "3.5.1.2", "10.6.3", "10.7.2"} <= seen_ids  # §5.5


def test_tree_statuses_agree_with_the_catalog(
    tree: RequirementTree, catalog_citations: dict[str, set[str]]
) -> None:
    assert consistency_errors(tree, catalog_citations) == []


def test_every_partial_requirement_has_a_citing_check(
    tree: RequirementTree, catalog_citations: dict[str, set[str]]
) -> None:
    # "partial" promises that some check decides part of the requirement.
    cited = set().union(*catalog_citations.values())
    uncited = [
        r.id
        for r in tree.ordered()
        if r.status == "partial"
        and r.id not in cited
        and not any(d.id in cited for d in tree.descendants(r.id))
    ]
    assert uncited == []


# ---------------------------------------------------------------------------- validation errors


def _minimal() -> dict[str, Any]:
    return {
        "standard": "PCI DSS",
        "version": "4.0.1",
        "blog": {r: f"title {r}" for r in BLOG_IDS},
        "requirements": [
            {"id": "1", "title": "Network controls", "blog": "R1", "status": "partial", "note": "n."},
            {"id": "1.2", "title": "Configured", "blog": "R1", "status": "partial", "note": "n."},
            {
                "id": "1.2.1",
                "title": "Standards",
                "blog": "R1",
                "v3_2_1": "1.1",
                "status": "automated",
                "note": "n.",
            },
        ],
    }


def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "tree.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def test_minimal_tree_loads_from_a_path(tmp_path: Path) -> None:
    loaded = load_tree(_write(tmp_path, _minimal()))
    assert [r.id for r in loaded.ordered()] == ["1", "1.2", "1.2.1"]
    assert loaded.get("1.2").children == ("1.2.1",)
    assert loaded.get("1.2.1").v3_2_1 == "1.1"
    assert loaded.get("1").v3_2_1 is None


def _bad(tmp_path: Path, data: dict[str, Any]) -> str:
    with pytest.raises(RequirementTreeError) as info:
        load_tree(_write(tmp_path, data))
    return str(info.value)


def test_error_is_a_value_error_and_a_kubepci_error(tmp_path: Path) -> None:
    data = _minimal()
    data["requirements"][1]["status"] = "done"
    with pytest.raises(ValueError, match="unknown status") as info:
        load_tree(_write(tmp_path, data))
    assert isinstance(info.value, KubepciError)


def test_unknown_status_names_the_id(tmp_path: Path) -> None:
    data = _minimal()
    data["requirements"][1]["status"] = "done"
    message = _bad(tmp_path, data)
    assert "requirement '1.2'" in message
    assert "unknown status 'done'" in message
    assert str(tmp_path / "tree.yaml") in message


def test_missing_field_names_the_id(tmp_path: Path) -> None:
    data = _minimal()
    del data["requirements"][2]["note"]
    assert "requirement '1.2.1': missing field(s): note" in _bad(tmp_path, data)


def test_missing_id_names_the_position(tmp_path: Path) -> None:
    data = _minimal()
    del data["requirements"][1]["id"]
    assert "requirements[2]: missing field 'id'" in _bad(tmp_path, data)


def test_unquoted_numeric_id_is_rejected(tmp_path: Path) -> None:
    data = _minimal()
    data["requirements"][0]["id"] = 1
    message = _bad(tmp_path, data)
    assert "requirements[1]: id 1 must be a quoted string" in message


def test_unknown_field_names_the_id(tmp_path: Path) -> None:
    data = _minimal()
    data["requirements"][1]["owner"] = "someone"
    assert "requirement '1.2': unknown field(s): owner" in _bad(tmp_path, data)


def test_duplicate_id(tmp_path: Path) -> None:
    data = _minimal()
    data["requirements"].append(dict(data["requirements"][1]))
    assert "requirement '1.2': duplicate id" in _bad(tmp_path, data)


def test_missing_parent(tmp_path: Path) -> None:
    data = _minimal()
    del data["requirements"][1]
    assert "requirement '1.2.1': parent '1.2' is missing" in _bad(tmp_path, data)


def test_blog_outside_r1_to_r12(tmp_path: Path) -> None:
    data = _minimal()
    data["requirements"][2]["blog"] = "R13"
    assert "requirement '1.2.1': blog 'R13' is not one of R1..R12" in _bad(tmp_path, data)


@pytest.mark.parametrize("bad_id", ["13", "1.02", "B1", "1..2", "1.2.", "1.2.3.4.5.6", "A4.1", " 1"])
def test_invalid_id_pattern(tmp_path: Path, bad_id: str) -> None:
    data = _minimal()
    data["requirements"].append({"id": bad_id, "title": "t", "blog": "R1", "status": "manual", "note": "n."})
    message = _bad(tmp_path, data)
    assert f"requirement {bad_id!r}: id does not look like a PCI DSS number" in message


def test_title_too_long(tmp_path: Path) -> None:
    data = _minimal()
    data["requirements"][1]["title"] = "x" * 71
    message = _bad(tmp_path, data)
    assert "requirement '1.2': title is 71 characters, longer than 70" in message


def test_title_at_the_limit_is_accepted(tmp_path: Path) -> None:
    data = _minimal()
    data["requirements"][1]["title"] = "x" * 70
    assert load_tree(_write(tmp_path, data)).get("1.2").title == "x" * 70


def test_bad_v3_number(tmp_path: Path) -> None:
    data = _minimal()
    data["requirements"][2]["v3_2_1"] = "see 1.1"
    assert "requirement '1.2.1': v3_2_1 'see 1.1'" in _bad(tmp_path, data)


def test_unknown_top_level_key(tmp_path: Path) -> None:
    data = _minimal()
    data["publisher"] = "someone"
    assert "unknown top-level key(s): publisher" in _bad(tmp_path, data)


def test_missing_top_level_key(tmp_path: Path) -> None:
    data = _minimal()
    del data["version"]
    assert "missing top-level key(s): version" in _bad(tmp_path, data)


def test_blog_titles_must_be_exactly_r1_to_r12(tmp_path: Path) -> None:
    data = _minimal()
    del data["blog"]["R12"]
    data["blog"]["R0"] = "zero"
    message = _bad(tmp_path, data)
    assert "unexpected: ['R0']" in message
    assert "missing: ['R12']" in message


def test_malformed_yaml(tmp_path: Path) -> None:
    path = tmp_path / "tree.yaml"
    path.write_text("standard: [unclosed\n", encoding="utf-8")
    with pytest.raises(RequirementTreeError, match="not valid YAML"):
        load_tree(path)


def test_unreadable_path(tmp_path: Path) -> None:
    with pytest.raises(RequirementTreeError, match="cannot read requirement tree"):
        load_tree(tmp_path / "absent.yaml")


# ------------------------------------------------------------------- ordering, coverage, consistency


def _toy_tree(tmp_path: Path) -> RequirementTree:
    def node(rid: str, status: str, blog: str = "R1") -> dict[str, str]:
        return {"id": rid, "title": f"T{rid}", "blog": blog, "status": status, "note": "n."}

    data = _minimal()
    data["requirements"] = [
        node("A1", "partial", "R12"),
        node("10", "partial", "R10"),
        node("2", "not-applicable", "R2"),
        node("1.2.10", "partial"),
        node("1", "partial"),
        node("1.2.9", "automated"),
        node("1.2", "partial"),
        node("1.3", "automated"),
        node("1.3.1", "partial"),
        node("1.4", "automated"),
        node("A1.1", "partial", "R12"),
    ]
    return load_tree(_write(tmp_path, data))


def test_natural_order_and_children(tmp_path: Path) -> None:
    toy = _toy_tree(tmp_path)
    assert [r.id for r in toy.ordered()] == [
        "1",
        "1.2",
        "1.2.9",
        "1.2.10",
        "1.3",
        "1.3.1",
        "1.4",
        "2",
        "10",
        "A1",
        "A1.1",
    ]
    assert toy.get("1.2").children == ("1.2.9", "1.2.10")
    assert [r.id for r in toy.principal()] == ["1", "2", "10", "A1"]
    assert [r.id for r in toy.descendants("1")] == ["1.2", "1.2.9", "1.2.10", "1.3", "1.3.1", "1.4"]


def test_coverage_rows(tmp_path: Path) -> None:
    toy = _toy_tree(tmp_path)
    rows = coverage(toy, {"1.2.10": ["net-b", "net-a", "net-b"], "A1.1": ["tenant"]})
    assert [row.requirement_id for row in rows] == [r.id for r in toy.ordered()]
    by_id = {row.requirement_id: row for row in rows}
    assert by_id["1.2.10"] == CoverageRow("1.2.10", "T1.2.10", "partial", "R1", None, ("net-a", "net-b"))
    assert by_id["A1.1"].check_ids == ("tenant",)
    assert by_id["A1.1"].blog == "R12"
    assert by_id["1.2"].check_ids == ()


def test_coverage_rejects_unknown_requirement(tmp_path: Path) -> None:
    with pytest.raises(RequirementTreeError, match=r"not in the tree: 7\.1"):
        coverage(_toy_tree(tmp_path), {"7.1": ["x"]})


def test_consistency_errors(tmp_path: Path) -> None:
    toy = _toy_tree(tmp_path)
    errors = consistency_errors(
        toy,
        {
            "net-a": ["1.2.9", "9.9.9"],  # 9.9.9 does not exist
            "net-b": iter(["1.3.1", "2"]),  # covers automated 1.3 via its child; 2 is n/a
            "other": ("2",),
        },
    )
    assert errors == [
        "check 'net-a' cites '9.9.9', which is not in the requirement tree",
        "requirement '1.4' is marked automated but no check cites it or a descendant",
        "requirement '2' is marked not-applicable but is cited by net-b, other",
    ]


def test_consistency_clean_when_catalog_matches(tmp_path: Path) -> None:
    toy = _toy_tree(tmp_path)
    assert consistency_errors(toy, {"c1": ["1.2.9", "1.4"], "c2": ["1.3"]}) == []


def test_packaged_tree_means_the_same_to_both_parsers() -> None:
    """The tree is read with the fast YAML 1.2 parser on every scan; libyaml (YAML 1.1) must agree."""
    text = resources.files("kubepci.requirements").joinpath(PACKAGED_FILE).read_text(encoding="utf-8")
    assert load_document(text) == yaml.load(text, Loader=yaml.CSafeLoader)

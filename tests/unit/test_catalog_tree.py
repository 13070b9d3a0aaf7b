"""The catalog and the requirement tree agree: cited ids exist, automated ones are covered."""

from __future__ import annotations

from kubepci.checks import default_catalog
from kubepci.requirements import consistency_errors, load_tree


def test_catalog_is_consistent_with_the_requirement_tree() -> None:
    cited = {c.id: c.meta.requirements for c in default_catalog()}
    assert consistency_errors(load_tree(), cited) == []


def test_every_principal_requirement_with_automatable_children_has_a_check() -> None:
    tree = load_tree()
    by_req = default_catalog().by_requirement()
    covered = {tree.principal_of(r).id for r in by_req if r in tree}
    # requirements 1, 2, 3, 4, 7, 8 are where a manifest scan gives evidence
    assert {"1", "2", "3", "4", "7", "8"} <= covered, covered

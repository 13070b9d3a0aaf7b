"""Hypothesis feeds mutated manifests (wrong types, missing keys, junk values) to every check.

A check may say anything about a malformed object, but it may not crash: a crash would surface as
an ERROR finding, and an unhandled exception anywhere would abort a scan.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubepci.checks import default_catalog
from kubepci.config import Config
from kubepci.engine import evaluate
from kubepci.inventory import Inventory
from kubepci.inventory.loaders.manifests import load_paths
from kubepci.model import Resource, Status

SEEDS = [r.body for r in load_paths([str(Path(__file__).resolve().parents[2] / "examples" / "payments-platform")])
         .resources]

JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63), st.floats(allow_nan=True), st.text(max_size=30),
    st.lists(st.one_of(st.none(), st.integers(), st.text(max_size=5)), max_size=3),
    st.dictionaries(st.text(max_size=8), st.one_of(st.none(), st.integers(), st.text(max_size=8)), max_size=3),
    st.sampled_from(["true", "0", "ALL", "*", "/var/run/docker.sock", "4111111111111111", ":latest"]),
)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.extend(_paths(v, (*prefix, i)))
    return out


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    doc = copy.deepcopy(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _paths(doc) if len(p) >= 2 and p[:2] not in (("metadata", "name"),)]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = doc
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(JUNK)
    return doc


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutated(), min_size=1, max_size=4))
def test_checks_never_crash_on_mutated_manifests(docs: list[dict[str, Any]]) -> None:
    from kubepci.inventory.loaders.manifests import resources_from_object
    from kubepci.model import SourceLocation

    resources: list[Resource] = []
    for i, doc in enumerate(docs):
        res, _ = resources_from_object(doc, SourceLocation("mutated.yaml", i + 1))
        resources.extend(res)
    inventory = Inventory.build(resources)
    result = evaluate(default_catalog(), inventory, Config())
    errors = [f"{f.check_id}: {f.message}" for f in result.findings if f.status is Status.ERROR]
    assert not errors, errors

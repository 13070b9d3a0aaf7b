"""Differential oracle: kubepci's NetworkPolicy engine must allow exactly what NCA 2.1.0 allows.

Hand-written scenarios cover every NetworkPolicy semantics item 1-14 of netpol-rbac.md §4; seeded
generated cases explore combinations over the x/y/z × a/b/c model. For each, both tools read the
same directory, both answers are normalised (netpol-rbac.md §2.1) and compared pair by pair and port
by port. The only tolerated disagreements are the pinned entries of differences.yaml, each a place
where NCA departs from upstream Kubernetes. NCA itself comes from scripts/setup-nca-oracle.sh.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.oracle_nca.generate import CASES, generate
from tests.oracle_nca.harness import (
    SCENARIO_ROOT,
    Outcome,
    Scenario,
    differential,
    load_differences,
    load_scenarios,
    materialise,
    render,
)
from tests.oracle_nca.nca import run_nca
from tests.oracle_nca.relation import format_atom, normalise

SCENARIOS = load_scenarios()
BY_NAME = {s.name: s for s in SCENARIOS}
DIFFERENCES = load_differences()
BASE_XYZ = SCENARIO_ROOT / "_base" / "xyz.yaml"


def _expectation_failures(scenario: Scenario, outcome: Outcome) -> list[str]:
    """The hand-checked lines of ``scenario.yaml`` that kubepci's relation contradicts.

    A line naming an endpoint that occurs in neither relation is itself a failure, so a typo
    cannot turn an expected "none" into a vacuous pass.
    """
    ours, theirs = normalise(outcome.engine.pairs, outcome.nca_pairs)
    shown = {f"{format_atom(s)} => {format_atom(d)}": str(p) for (s, d), p in ours.items()}
    known = {format_atom(e) for rel in (ours, theirs) for pair in rel for e in pair}
    known |= set(outcome.names.pods.values())
    failures = []
    for line in scenario.expect:
        pair, _, want = line.rpartition(": ")
        unknown = [e for e in pair.split(" => ") if e not in known]
        got = shown.get(pair, "none")
        if unknown:
            failures.append(f"{pair}: unknown endpoint(s) {unknown}")
        elif got != want:
            failures.append(f"{pair}: expected {want}, kubepci says {got}")
    return failures


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_hand_written_scenario_matches_nca(scenario: Scenario, nca_exe: Path, tmp_path: Path) -> None:
    given = tmp_path / "input"
    docs = materialise(scenario.manifests(), given)
    documented = DIFFERENCES.get(scenario.name)
    oracle_dir = None
    if documented is not None and documented.oracle_scenario:
        refused = run_nca(nca_exe, given)
        assert refused.returncode != 0, f"NCA now accepts {scenario.name}; update differences.yaml\n{refused.text}"
        assert documented.nca_rejects in refused.stdout + refused.stderr, refused.text
        oracle_dir = tmp_path / "oracle"
        materialise(BY_NAME[documented.oracle_scenario].manifests(), oracle_dir)
    outcome = differential(nca_exe, given, docs, oracle_dir)

    assert outcome.nca.returncode == 0, outcome.nca.text
    assert not outcome.engine.errors, outcome.engine.errors
    if documented is not None and documented.mismatches:
        if sorted(m.line() for m in outcome.mismatches) != sorted(documented.mismatches):
            pytest.fail(f"{scenario.name}: the documented NCA deviation changed\n{render(outcome)}", pytrace=False)
    elif outcome.mismatches:
        pytest.fail(f"{scenario.name}: kubepci and NCA disagree\n{render(outcome)}", pytrace=False)
    failures = _expectation_failures(scenario, outcome)
    if failures:
        pytest.fail(f"{scenario.name}: hand-checked expectations fail:\n" + "\n".join(failures), pytrace=False)


@pytest.mark.parametrize("index", range(CASES), ids=[f"gen-{i:02d}" for i in range(CASES)])
def test_generated_case_matches_nca(index: int, nca_exe: Path, tmp_path: Path) -> None:
    given = tmp_path / "input"
    extra = generate(index)
    docs = materialise([BASE_XYZ], given, extra)
    text = yaml.safe_dump_all(extra, sort_keys=False)
    outcome = differential(nca_exe, given, docs)

    assert outcome.nca.returncode == 0, f"{outcome.nca.text}\n--- generated input:\n{text}"
    assert not outcome.engine.errors, outcome.engine.errors
    if outcome.mismatches:
        pytest.fail(f"generated case {index}: kubepci and NCA disagree\n{render(outcome)}\n"
                    f"--- generated input:\n{text}", pytrace=False)


def test_hand_written_scenarios_cover_every_semantics_item() -> None:
    covered = {item for s in SCENARIOS for item in s.covers}
    assert set(range(1, 15)) <= covered, f"§4 items without a scenario: {sorted(set(range(1, 15)) - covered)}"
    assert len(SCENARIOS) >= 40


def test_every_documented_difference_is_complete() -> None:
    for name, diff in DIFFERENCES.items():
        assert name in BY_NAME, f"differences.yaml names unknown scenario {name}"
        assert diff.upstream, name
        assert diff.reference, name
        assert diff.nca_behaviour, name
        assert bool(diff.mismatches) != bool(diff.oracle_scenario), f"{name}: pin mismatches or name an oracle"
        if diff.oracle_scenario:
            assert diff.nca_rejects, name
            assert diff.oracle_scenario in BY_NAME, name
            assert diff.oracle_scenario not in DIFFERENCES, name

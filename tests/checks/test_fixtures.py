"""Every check against its own pass/fail fixtures, plus the meta-tests that keep the catalog honest."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubepci.checks import default_catalog
from kubepci.model import Status
from tests.checks.harness import FIXTURES, all_fixtures, expectations, run_fixture

CASES = all_fixtures()


@pytest.mark.parametrize(("check_id", "fixture"), CASES, ids=[f"{c}/{f.name}" for c, f in CASES])
def test_fixture(check_id: str, fixture: Path) -> None:
    result = run_fixture(check_id, fixture)
    errors = [f for f in result.findings if f.status is Status.ERROR]
    assert not errors, f"check raised: {errors}"
    assert result.evaluated[check_id] > 0, f"{fixture.name}: the check evaluated no target at all"
    failing = [f for f in result.findings if f.status is Status.FAIL]
    if fixture.name.startswith("pass."):
        assert not failing, "\n".join(f"unexpected FAIL {f.resource} {f.path}: {f.message}" for f in failing)
        return
    expected = expectations(fixture)
    assert expected, f"{fixture.name}: a fail fixture must name its failing resources (# expect-fail: ...)"
    got_refs = {str(f.resource) for f in failing}
    want_refs = {e.ref for e in expected}
    assert got_refs == want_refs, f"failing resources differ: got {sorted(got_refs)}, want {sorted(want_refs)}"
    for e in expected:
        matching = [
            f for f in failing if str(f.resource) == e.ref and e.path in f.path and e.message in f.message
        ]
        assert matching, (
            f"no finding on {e.ref} with path containing {e.path!r} and message containing {e.message!r}; "
            f"got {[(f.path, f.message) for f in failing if str(f.resource) == e.ref]}"
        )
        for f in matching:
            assert f.location is not None, f"finding without a location: {f}"
            assert f.location.line > 0, f"finding without a line: {f}"


def test_every_check_has_pass_and_fail_fixtures() -> None:
    missing = []
    for chk in default_catalog():
        d = FIXTURES / chk.id
        if not list(d.glob("pass.*.yaml")) or not list(d.glob("fail.*.yaml")):
            missing.append(chk.id)
    assert not missing, f"checks without pass and fail fixtures: {missing}"


def test_fixture_dirs_name_real_checks() -> None:
    ids = {c.id for c in default_catalog()}
    orphans = sorted(
        d.name for d in FIXTURES.iterdir() if d.is_dir() and not d.name.startswith(("_", ".")) and d.name not in ids
    )
    assert not orphans, f"fixture directories for unknown checks: {orphans}"


def test_metadata_rules() -> None:
    problems = [p for chk in default_catalog() for p in chk.meta.problems()]
    assert not problems, problems


def test_catalog_size() -> None:
    assert len(default_catalog()) >= 60

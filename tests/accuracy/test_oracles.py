"""Agreement with the Polaris and Checkov suites: >= 95% per suite, every difference explained."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.accuracy.oracle import cases, disagreements, verdict

CASES = list(cases())
KNOWN = disagreements()


@pytest.mark.parametrize("suite", ["polaris", "checkov"])
def test_agreement_per_suite(suite: str) -> None:
    total = Counter[str]()
    unexplained = []
    for case, mapping in CASES:
        if case.suite != suite:
            continue
        total["cases"] += 1
        ours = verdict(case, mapping)
        if ours == case.expected:
            total["agree"] += 1
            assert f"{suite}:{case.case_id}" not in KNOWN, f"{case.case_id} is listed as a disagreement but agrees"
            continue
        if f"{suite}:{case.case_id}" not in KNOWN:
            unexplained.append(f"{case.case_id}: peer {case.expected}, kubepci {ours} ({mapping.check_id})")
    assert total["cases"] > 100, total
    assert not unexplained, "disagreements not documented in disagreements.yaml:\n" + "\n".join(unexplained)
    rate = total["agree"] / total["cases"]
    print(f"{suite}: {total['agree']}/{total['cases']} = {rate:.1%}")
    assert rate >= 0.95, f"{suite}: agreement {rate:.1%} below 95%"


def test_disagreement_list_names_real_cases() -> None:
    ids = {f"{c.suite}:{c.case_id}" for c, _ in CASES}
    stale = sorted(set(KNOWN) - ids)
    assert not stale, f"disagreements.yaml lists unknown cases: {stale}"
    assert all(len(reason) > 20 for reason in KNOWN.values()), "each disagreement needs a real reason"

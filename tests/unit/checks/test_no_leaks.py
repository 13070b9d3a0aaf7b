"""Findings name keys and masked numbers, never the secret or card number they judged.

Runs the real fail fixtures through the engine and searches every message and path for the
values those fixtures planted.
"""

from __future__ import annotations

import pytest

from kubepci.model import Status
from tests.checks.harness import FIXTURES, run_fixture

PLANTED = {
    "pan-exposure/fail.pans.yaml": [
        "4111 1111 1111 1111", "4111111111111111", "378282246310005", "5555555555554444", "3530-1113-3330-0000",
        "3530111333300000", "6011-1111-1111-1117", "6011111111111117", "30569309025904", "4222222222222",
    ],
    "vendor-default-password/fail.defaults.yaml": ["prom-operator", "Harbor12345", "changeme", "Acme2024!", "guest"],
    "secret-env-literal/fail.literal.yaml": [
        "hunter2-but-longer", "k-7f3c9a", "abc123", "123456", "s3cr3t-pw", "AKIAIOSFODNN7EXAMPLE", "OPENSSH",
    ],
    "secret-configmap-credentials/fail.credentials.yaml": ["abc123", "xxxxx", "eyJhbGci", "ghp_", "MIIB", "xxxxxxxx"],
}


@pytest.mark.parametrize("fixture", sorted(PLANTED))
def test_findings_never_repeat_planted_values(fixture: str) -> None:
    check_id = fixture.split("/")[0]
    result = run_fixture(check_id, FIXTURES / fixture)
    failing = [f for f in result.findings if f.status is Status.FAIL]
    assert failing
    for finding in failing:
        for value in PLANTED[fixture]:
            assert value not in finding.message, (value, finding.message)
            assert value not in finding.path, (value, finding.path)

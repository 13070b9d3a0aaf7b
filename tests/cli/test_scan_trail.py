"""``kubepci scan --trail-store``: the report's digest and the waiver changes a scan sees, as leaves."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from kubepci.auditlog.checkpoint import generate_keypair
from kubepci.auditlog.evidence import waiver_changes
from kubepci.auditlog.store import SearchQuery, open_store
from kubepci.auditlog.trail import Trail, load_verifiers
from tests.cli.test_scan_cli import EXAMPLE, NOW, kubepci

W1 = {"id": "W-1", "check": "c", "resources": ["a/B/c"], "justification": "j", "approved_by": "x@example.com",
      "ticket": "T-1", "expires": "2027-01-31"}
W2 = {**W1, "id": "W-2", "expires": "2026-12-31"}
TODAY = dt.date(2026, 11, 27)


def test_waiver_changes_from_the_recorded_state() -> None:
    assert waiver_changes({}, [W1, W2], TODAY) == [("added", W1), ("added", W2)]
    recorded: dict[str, tuple[str, Any]] = {"W-1": ("added", W1), "W-2": ("added", W2)}
    assert waiver_changes(recorded, [W1, W2], TODAY) == []
    longer = {**W2, "expires": "2027-03-31"}
    assert waiver_changes(recorded, [W1, longer], TODAY) == [("changed", longer)]
    assert waiver_changes(recorded, [W2], TODAY) == [("removed", W1)]
    assert waiver_changes(recorded, [W1, W2], dt.date(2027, 1, 1)) == [("expired", W2)]
    assert waiver_changes({**recorded, "W-2": ("expired", W2)}, [W1, W2], dt.date(2027, 1, 1)) == []
    assert waiver_changes({"W-1": ("removed", W1)}, [W1], TODAY) == [("added", W1)]
    # a pruned payload: the action is known, the content is not, so nothing is claimed to change
    assert waiver_changes({"W-1": ("changed", None)}, [W1], TODAY) == []
    assert waiver_changes({"W-3": ("added", None)}, [], TODAY) == [("removed", {"id": "W-3"})]


def _records(url: str, kind: str) -> list[dict[str, Any]]:
    with open_store(url) as store:
        return [json.loads(store.entry(hit.index).raw or b"") for hit in store.search(SearchQuery(kind=kind))]


def test_scans_record_their_report_digest_and_the_waiver_changes_they_see(tmp_path: Path) -> None:
    platform = tmp_path / "platform"
    shutil.copytree(EXAMPLE, platform)
    url = f"sqlite://{tmp_path}/trail.db"
    skey, vkey = generate_keypair("kubepci.test/scan-evidence")
    (tmp_path / "trail.skey").write_text(skey + "\n", encoding="utf-8")
    (tmp_path / "trail.vkey").write_text(vkey + "\n", encoding="utf-8")
    reports = tmp_path / "reports"

    first = kubepci("scan", str(platform), "--now", NOW, "--fail-on", "none", "--report-dir", str(reports),
                    "-o", "json", "--trail-store", url, "--trail-key", str(tmp_path / "trail.skey"))
    assert first.returncode == 0, first.stderr.decode()
    assert (b"trail: scan digest is leaf 3; waiver changes: added W-2025-007, expired W-2025-007, added W-2026-001;"
            b" checkpoint at size 4\n") in first.stderr
    scans = _records(url, "scan")
    assert len(scans) == 1
    # the digest is that of the JSON report the same run wrote
    assert scans[0]["report_sha256"] == hashlib.sha256((reports / "kubepci-report.json").read_bytes()).hexdigest()
    assert scans[0]["report_sha256"] == hashlib.sha256(first.stdout).hexdigest()
    changes = [(r["action"], r["waiver"]["id"]) for r in _records(url, "waiver")]
    assert changes == [("added", "W-2025-007"), ("expired", "W-2025-007"), ("added", "W-2026-001")]

    # the same scan again (same inputs, same --now: the same report bytes) is recognised, not repeated
    again = kubepci("scan", str(platform), "--now", NOW, "--fail-on", "none", "-o", "json", "--trail-store", url)
    assert again.returncode == 0, again.stderr.decode()
    assert b"trail: scan digest is leaf 3; waiver changes: none\n" in again.stderr
    # a later scan with nothing changed records its own digest only
    later = kubepci("scan", str(platform), "--now", "2026-11-28T12:00:00Z", "--fail-on", "none", "-o", "json",
                    "--trail-store", url)
    assert later.returncode == 0, later.stderr.decode()
    assert b"trail: scan digest is leaf 4; waiver changes: none\n" in later.stderr
    assert len(_records(url, "waiver")) == 3

    # one waiver extended, the other withdrawn
    waivers = platform / "waivers.yaml"
    text = waivers.read_text(encoding="utf-8").replace("expires: 2027-06-30", "expires: 2027-09-30")
    start = text.index("  - id: W-2025-007")
    waivers.write_text(text[:start], encoding="utf-8")
    third = kubepci("scan", str(platform), "--now", NOW, "--fail-on", "none", "-o", "json", "--trail-store", url,
                    "--trail-key", str(tmp_path / "trail.skey"))
    assert third.returncode == 0, third.stderr.decode()
    records = _records(url, "waiver")[3:]
    assert [(r["action"], r["waiver"]["id"]) for r in records] == [("removed", "W-2025-007"), ("changed", "W-2026-001")]
    assert records[1]["waiver"]["expires"] == "2027-09-30"
    assert records[0]["actor"].endswith("(kubepci scan)")
    assert str(waivers) in records[0]["reason"]
    with open_store(url) as store:
        result = Trail(store, verifiers=load_verifiers(tmp_path / "trail.vkey")).verify()
        assert result.size == 8
        latest = store.latest_checkpoint()
        assert latest is not None
        assert latest.size == 8

"""`import_files` and the `kubepci trail` commands, on every store."""

from __future__ import annotations

import gzip
import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from kubepci.auditlog.checkpoint import NoteSigner
from kubepci.auditlog.store import SearchQuery, TrailStore
from kubepci.auditlog.trail import Trail, TrailIntegrityError, order_rotated, verify_proof_bundle
from kubepci.cli.trail_cmd import trail as trail_cli
from kubepci.errors import UsageError
from tests.integration.conftest import Backend
from tests.integration.events import DEMO_LOG, MALFORMED_TRACE, TRACE_DIR, demo_lines, trace_lines


def _rotated_logs(directory: Path) -> tuple[Path, Path]:
    """demo.log split the way lumberjack rotates it, with Falco's malformed event as line 7 of the backup."""
    lines = demo_lines()
    directory.mkdir(parents=True, exist_ok=True)
    backup = directory / "audit-2017-09-11T19-57-00.000.log.gz"
    with gzip.open(backup, "wb") as out:
        out.write(b"\n".join([*lines[:6], MALFORMED_TRACE.read_bytes().strip(), *lines[6:20]]) + b"\n")
    current = directory / "audit.log"
    current.write_bytes(b"\n".join(lines[20:]))  # the live file's last line has no newline yet
    return backup, current


def test_import_rotated_gz_skips_the_malformed_line_only(store: TrailStore, signer: NoteSigner,
                                                           tmp_path: Path) -> None:
    backup, current = _rotated_logs(tmp_path / "logs")
    trail = Trail(store, signer)
    result = trail.import_files([current, backup])  # given newest first: the backup must still come first
    assert result.files == (str(backup), str(current))
    assert (result.appended, result.duplicates) == (37, 0)
    assert [str(m) for m in result.malformed] == [f"{backup}:7: not an audit Event (kind=0)"]
    assert [e.raw for e in store.iter_entries()] == demo_lines()  # exact bytes, in log order
    again = trail.import_files([backup, current])
    assert (again.appended, again.duplicates, len(again.malformed)) == (0, 37, 1)
    trail.checkpoint()
    assert trail.verify().payloads_checked == 37


def test_import_reports_every_kind_of_bad_line(store: TrailStore, tmp_path: Path) -> None:
    good = trace_lines()[0][1]
    path = tmp_path / "mixed.log"
    path.write_bytes(b"\n".join([
        good, b"", b"not json", b"[1, 2]", b'{"kind":"EventList","items":[]}', b'{"kind":"Event","stage":"x"}',
        b'{"auditID":"a","stage":"ResponseComplete","v":NaN}', b"   ",
    ]) + b"\n")
    truncated = tmp_path / "audit-2020-01-01T00-00-00.000.log.gz"
    truncated.write_bytes(gzip.compress(b"\n".join(demo_lines()[:3]) + b"\n")[:-12])
    result = Trail(store).import_files([path, truncated])
    assert result.appended == 1 + 2  # the cut stream still yields its first two whole lines
    reasons = {(Path(m.path).name, m.line): m.reason for m in result.malformed}
    assert reasons[("mixed.log", 3)].startswith("not valid JSON")
    assert reasons[("mixed.log", 4)] == "expected a JSON object, got list"
    assert reasons[("mixed.log", 5)] == "an EventList (a webhook body), not one event per line"
    assert reasons[("mixed.log", 6)] == "audit Event without an auditID"
    assert reasons[("mixed.log", 7)].startswith("not valid JSON: NaN is not valid JSON")
    assert reasons[(truncated.name, 3)] == (
        "unreadable from here on: Compressed file ended before the end-of-stream marker was reached"
    )
    assert len([m for m in result.malformed if Path(m.path).name == "mixed.log"]) == 5


def test_import_falco_trace_files_as_they_are(store: TrailStore) -> None:
    files = sorted(TRACE_DIR.glob("*.json"))
    result = Trail(store).import_files(files)
    assert result.appended == len(trace_lines()) == 51
    assert [str(m) for m in result.malformed] == [f"{MALFORMED_TRACE}:1: not an audit Event (kind=0)"]
    attach = Trail(store).search(SearchQuery(resource="pods/attach"))
    assert len(attach) == 1
    assert attach[0]["index"] | {"event_time": None} == {
        "user": "minikube-user", "verb": "create", "resource": "pods/attach", "namespace": "default",
        "name": "nginx-deployment-7998647bdf-phvq7", "code": 101, "source_ip": "192.168.99.1",
        "audit_id": "14933b4e-7b09-4964-af09-b7987367e1ba", "stage": "ResponseStarted", "event_time": None,
        "rule": None, "priority": None,
    }
    assert attach[0]["index"]["event_time"] == "2018-10-26T13:42:46.808261Z"


def test_order_rotated_sorts_backups_by_their_timestamp() -> None:
    given = [Path("audit.log"), Path("audit-2025-08-27T16-40-51.617.log.gz"),
             Path("audit-2025-08-26T09-00-00.000.log"), Path("other.log")]
    assert [p.name for p in order_rotated(given)] == [
        "audit-2025-08-26T09-00-00.000.log", "audit-2025-08-27T16-40-51.617.log.gz", "audit.log", "other.log",
    ]


def test_cli_end_to_end(backend: Backend, tmp_path: Path) -> None:
    runner = CliRunner()
    keys = tmp_path / "keys"
    made = runner.invoke(trail_cli, ["keygen", "--name", "kubepci.test/prod/audit", "--out-dir", str(keys)])
    assert made.exit_code == 0, made.output
    skey, vkey = keys / "trail.skey", keys / "trail.vkey"
    assert stat.S_IMODE(os.stat(skey).st_mode) == 0o600
    assert vkey.read_text().startswith("kubepci.test/prod/audit+")
    again = runner.invoke(trail_cli, ["keygen", "--name", "x", "--out-dir", str(keys)])
    assert isinstance(again.exception, UsageError)

    store = ["--store", backend.url]
    imported = runner.invoke(trail_cli, ["import", str(DEMO_LOG), *store, "--key", str(skey)])
    assert imported.exit_code == 0, imported.output
    assert "imported 37 new leaves from 1 file(s); 0 already stored, 0 malformed" in imported.stdout
    assert "37 leaves under a new signed checkpoint" in imported.stdout

    verified = runner.invoke(trail_cli, ["verify", *store, "--vkey", str(vkey), "-o", "json"])
    assert verified.exit_code == 0, verified.output
    summary = json.loads(verified.stdout)
    assert (summary["size"], summary["payloads_checked"], summary["checkpoints_checked"]) == (37, 37, 1)

    found = runner.invoke(trail_cli, ["search", *store, "--namespace", "ns1", "--outcome", "failure",
                                      "--since", "2017-09-11", "-o", "json"])
    assert found.exit_code == 0, found.output
    expected = [i for i, line in enumerate(demo_lines())
                if json.loads(line).get("objectRef", {}).get("namespace") == "ns1"
                and json.loads(line)["responseStatus"]["code"] >= 400]
    assert [hit["leaf_index"] for hit in json.loads(found.stdout)] == expected
    table = runner.invoke(trail_cli, ["search", *store, "--user", "system:admin", "--limit", "2"])
    assert "2 matching leaves" in table.stdout
    bad_time = runner.invoke(trail_cli, ["search", *store, "--since", "yesterday"])
    assert isinstance(bad_time.exception, UsageError)

    proof_file = tmp_path / "proof.json"
    proved = runner.invoke(trail_cli, ["prove", "5", *store, "--key", str(skey), "-o", str(proof_file)])
    assert proved.exit_code == 0, proved.output
    proven = verify_proof_bundle(json.loads(proof_file.read_text()), vkey.read_text().strip())
    assert proven.payload == demo_lines()[5]

    created = runner.invoke(trail_cli, ["checkpoint", "create", *store, "--key", str(skey)])
    assert created.stdout.startswith("kubepci.test/prod/audit\n37\n")
    exported = runner.invoke(trail_cli, ["checkpoint", "export", str(tmp_path / "anchors"), *store])
    assert "exported 1 new checkpoint(s)" in exported.stdout  # two notes, one tree size

    short = runner.invoke(trail_cli, ["prune", *store, "--retention-days", "30"])
    assert isinstance(short.exception, UsageError)
    pruned = runner.invoke(trail_cli, ["prune", *store, "--retention-days", "365"])
    assert "pruned 0 raw payload(s)" in pruned.stdout

    leaf = runner.invoke(trail_cli, ["search", *store, "--after", "10", "--limit", "1", "-o", "json"])
    envelope = json.loads(leaf.stdout)[0]
    assert envelope["leaf_index"] == 11
    backend.tamper([("UPDATE payloads SET raw = ? WHERE seq = ?", (b"{}", 11))])
    failed = runner.invoke(trail_cli, ["verify", *store, "--vkey", str(vkey), "--exported", str(tmp_path / "anchors")])
    assert isinstance(failed.exception, TrailIntegrityError)
    assert failed.exception.exit_code == 4
    assert failed.exception.leaf_index == 11


@pytest.mark.parametrize("name", ["", "has space", "plus+sign"])
def test_keygen_rejects_bad_origin_names(tmp_path: Path, name: str) -> None:
    result = CliRunner().invoke(trail_cli, ["keygen", "--name", name, "--out-dir", str(tmp_path)])
    assert isinstance(result.exception, UsageError)
    assert not (tmp_path / "trail.skey").exists()

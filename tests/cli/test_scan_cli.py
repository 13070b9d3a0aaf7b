"""The CLI end to end in a subprocess: exit codes, stdin, byte-stable JSON, unreadable inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "payments-platform"
NOW = "2026-11-27T12:00:00Z"


def kubepci(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "kubepci", *args],
        input=stdin.encode() if stdin is not None else None,
        capture_output=True,
        timeout=120,
        check=False,
    )


def test_example_scan_prints_summary_and_exits_1() -> None:
    proc = kubepci("scan", str(EXAMPLE), "--now", NOW)
    out = proc.stdout.decode()
    assert proc.returncode == 1, proc.stderr.decode()
    assert "per principal requirement" in out
    for req in ("Network security controls", "securely configured", "need to know"):
        assert req in out
    assert "W-2025-007 EXPIRED" in out


def test_fail_on_none_exits_0_and_json_is_byte_stable(tmp_path: Path) -> None:
    a = kubepci("scan", str(EXAMPLE), "--now", NOW, "-o", "json", "--fail-on", "none")
    b = kubepci("scan", str(EXAMPLE), "--now", NOW, "-o", "json", "--fail-on", "none")
    assert a.returncode == 0, a.stderr.decode()
    assert a.stdout == b.stdout
    doc = json.loads(a.stdout)
    assert doc["schema"] == "kubepci.report/v1"
    assert doc["run"]["generated_at"] == "2026-11-27T12:00:00Z"
    assert doc["summary"]["exit_code"] == 0
    assert [r["id"] for r in doc["summary"]["principal_requirements"]][:12] == [str(i) for i in range(1, 13)]


def test_report_dir_writes_every_format(tmp_path: Path) -> None:
    proc = kubepci("scan", str(EXAMPLE), "--now", NOW, "--report-dir", str(tmp_path), "--fail-on", "none")
    assert proc.returncode == 0, proc.stderr.decode()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["kubepci-report.json", "kubepci-report.junit.xml", "kubepci-report.sarif.json",
                     "kubepci-segmentation.svg"]
    svg = (tmp_path / "kubepci-segmentation.svg").read_text()
    assert 'data-name="tokenizer"' in svg
    assert "tokenizer -&gt; zone/internet: all ports" in svg
    sarif = json.loads((tmp_path / "kubepci-report.sarif.json").read_text())
    results = sarif["runs"][0]["results"]
    assert any(r["ruleId"] == "workload-privileged" and "fluent-bit" in r["message"]["text"] for r in results)


def test_broken_document_is_listed_and_the_rest_scanned(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: ok, namespace: x}\n"
        "spec: {containers: [{name: c, image: 'r/i:1', securityContext: {privileged: true}}]}\n"
        "---\nkind: Pod\nmetadata: {name: [broken\n"
    )
    proc = kubepci("scan", str(tmp_path), "-o", "json", "--now", NOW, "--check", "workload-privileged")
    doc = json.loads(proc.stdout)
    assert proc.returncode == 1
    assert [f["resource"]["name"] for f in doc["findings"]] == ["ok"]
    assert doc["could_not_read"][0]["location"].startswith(f"{tmp_path / 'a.yaml'}:")
    strict = kubepci("scan", str(tmp_path), "--strict", "--fail-on", "none", "--now", NOW)
    assert strict.returncode == 3


def test_nothing_readable_exits_3(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text("a: [\n")
    proc = kubepci("scan", str(tmp_path))
    assert proc.returncode == 3
    assert "nothing could be read" in proc.stderr.decode()
    assert kubepci("scan", str(tmp_path / "missing")).returncode == 3


def test_stdin_list_and_usage_errors() -> None:
    doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "n"},
         "spec": {"hostPID": True, "containers": [{"name": "c", "image": "i"}]}}]})
    proc = kubepci("scan", "-", "-o", "json", "--check", "workload-host-pid", "--now", NOW, stdin=doc)
    assert proc.returncode == 1
    finding = json.loads(proc.stdout)["findings"][0]
    assert (finding["check"], finding["path"]) == ("workload-host-pid", "spec.hostPID")
    assert finding["location"] == "-:1"
    assert kubepci("scan").returncode == 2
    assert kubepci("scan", "-", "--check", "no-such-check", stdin=doc).returncode == 2
    assert kubepci("scan", "-", "--fail-on", "bogus", stdin=doc).returncode == 2


def test_bad_config_exits_2_with_line(tmp_path: Path) -> None:
    (tmp_path / "kubepci.yaml").write_text("scope:\n  cdee: {}\n")
    (tmp_path / "p.yaml").write_text("kind: Namespace\nmetadata: {name: n}\n")
    proc = kubepci("scan", str(tmp_path))
    assert proc.returncode == 2
    assert "kubepci.yaml:2: unknown key scope.cdee" in proc.stderr.decode()


def test_checks_list_explain_and_requirements() -> None:
    listing = kubepci("checks", "list", "-o", "json")
    assert listing.returncode == 0
    ids = {c["id"] for c in json.loads(listing.stdout)}
    assert "workload-privileged" in ids
    explain = kubepci("checks", "explain", "workload-privileged")
    assert explain.returncode == 0
    assert b"2.2.6" in explain.stdout
    assert b"fix: " in explain.stdout
    assert kubepci("checks", "explain", "nope").returncode == 2
    reqs = kubepci("requirements", "-o", "json")
    rows = json.loads(reqs.stdout)
    row = next(r for r in rows if r["id"] == "2.2.6")
    assert "workload-privileged" in row["checks"]


def test_streamed_json_equals_a_one_shot_rendering() -> None:
    import datetime as dt

    import orjson

    from kubepci.assess import assess
    from kubepci.checks import default_catalog
    from kubepci.config import load_config
    from kubepci.inventory import Inventory
    from kubepci.inventory.loaders.sources import load_sources
    from kubepci.reporters import json_report
    from kubepci.requirements import load_tree

    loaded = load_sources([str(EXAMPLE)])
    report = assess(Inventory.build(loaded.resources), load_config(EXAMPLE / "kubepci.yaml"), default_catalog(),
                    load_tree(), now=dt.datetime(2026, 11, 27, tzinfo=dt.UTC))
    one_shot = orjson.dumps(json_report.to_dict(report), option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    assert len(report.findings) > 10
    json_report._CHUNK = 7  # many chunks, one partial
    try:
        assert json_report.render(report) == one_shot
    finally:
        json_report._CHUNK = 5000

"""`kubepci netpol` end to end in a subprocess on a small fixture written to tmp_path."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.unit.netpol._helpers import netpol, xyz_yaml

CONFIG = """
scope:
  cde: {namespaces: [x]}
  connected: {namespaces: [y]}
zones:
  processor: [203.0.113.0/24]
flows:
  - {from: y/a, to: x/a, ports: [80/TCP], reason: "api"}
"""


@pytest.fixture
def fixture_dir(tmp_path: Path) -> Path:
    (tmp_path / "cluster.yaml").write_text(xyz_yaml(with_ips=False))
    (tmp_path / "policies.yaml").write_text("---\n".join([
        netpol("deny", "x", "{podSelector: {}, policyTypes: [Ingress]}"),
        netpol("allow", "x", "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: "
                             "{matchLabels: {ns: y}}}], ports: [{port: 80}, {port: serve-81-udp, protocol: UDP}]}]}"),
    ]))
    (tmp_path / "kubepci.yaml").write_text(CONFIG)
    return tmp_path


def netpol_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kubepci.cli.netpol_cmd", *args], capture_output=True, text=True,
                          timeout=120, check=False)


def test_can_reach_allowed_exits_0_with_explanation(fixture_dir: Path) -> None:
    proc = netpol_cli("can-reach", "y/a", "x/a", "--port", "80/TCP", str(fixture_dir))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ALLOWED: y/a -> x/a (TCP 80)")
    assert "allow TCP 80 by x/allow rule 0" in proc.stdout


def test_can_reach_denied_exits_1_and_json(fixture_dir: Path) -> None:
    proc = netpol_cli("can-reach", "z/a", "x/a", "--port", "80", "-o", "json", str(fixture_dir))
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["allowed"] is False
    ingress = doc["explanation"]["pairs"][0]["ingress"]
    assert ingress["isolated_by"] == ["x/allow", "x/deny"]
    assert ingress["decisions"][0]["action"] == "isolate"


def test_can_reach_named_port_and_bad_endpoint(fixture_dir: Path) -> None:
    proc = netpol_cli("can-reach", "y/b", "x/a", "--port", "serve-81-udp/UDP", str(fixture_dir))
    assert proc.returncode == 0
    assert "UDP 81" in proc.stdout
    bad = netpol_cli("can-reach", "nowhere/a", "x/a", str(fixture_dir))
    assert bad.returncode == 2
    assert "no endpoint 'nowhere/a'" in bad.stderr
    bad_port = netpol_cli("can-reach", "y/a", "x/a", "--port", "80/ICMP", str(fixture_dir))
    assert bad_port.returncode == 2
    assert "TCP, UDP or SCTP" in bad_port.stderr


def test_matrix_levels(fixture_dir: Path) -> None:
    proc = netpol_cli("matrix", "--level", "namespace", "-o", "json", str(fixture_dir))
    assert proc.returncode == 0, proc.stderr
    cells = {(c["from"], c["to"]): c["text"] for c in json.loads(proc.stdout)["cells"]}
    assert cells[("y", "x")] == "TCP 80; UDP 81"
    assert ("z", "x") not in cells
    zone = json.loads(netpol_cli("matrix", "--level", "zone", "-o", "json", str(fixture_dir)).stdout)
    zone_cells = {(c["from"], c["to"]): c["text"] for c in zone["cells"]}
    assert zone_cells[("connected", "cde")] == "TCP 80; UDP 81"
    table = netpol_cli("matrix", "--level", "workload", str(fixture_dir))
    assert table.returncode == 0
    assert "y/a" in table.stdout
    assert "x/a" in table.stdout


def test_exposure_table_and_json(fixture_dir: Path) -> None:
    proc = netpol_cli("exposure", "-o", "json", str(fixture_dir))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["cde_namespaces"] == ["x"]
    flow = next(f for f in doc["inbound"] if f["from"] == "y/a" and f["to"] == "x/a")
    assert flow["unapproved_text"] == "UDP 81"
    assert flow["approved_by"] == ["api"]
    assert {"endpoint": "x/a", "direction": "egress"} in doc["not_isolated"]
    table = netpol_cli("exposure", str(fixture_dir))
    assert "Into the CDE" in table.stdout
    assert "not isolated: x/a has no NetworkPolicy isolating egress" in table.stdout


def test_svg_written(fixture_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "flows.svg"
    proc = netpol_cli("svg", "-o", str(out), str(fixture_dir))
    assert proc.returncode == 0, proc.stderr
    root = ET.parse(out).getroot()  # noqa: S314 - our own output
    cde = [g.get("data-name") for g in root.iter("{http://www.w3.org/2000/svg}g") if g.get("class") == "node cde"]
    assert cde == ["x"]


def test_no_input_is_an_input_error(tmp_path: Path) -> None:
    proc = netpol_cli("matrix", str(tmp_path))
    assert proc.returncode == 3
    assert "nothing to analyse" in proc.stderr

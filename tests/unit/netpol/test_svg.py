"""The SVG: well-formed XML, CDE highlighted, labels escaped, byte-stable."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from kubepci.analyzers.netpol.model import Matrix
from kubepci.analyzers.netpol.ports import PortSet
from kubepci.analyzers.netpol.svg import render_svg
from tests.unit.netpol._helpers import build, netpol

NS = "{http://www.w3.org/2000/svg}"


def test_svg_is_well_formed_and_highlights_the_cde() -> None:
    model = build(netpol("deny", "x", "{podSelector: {}, policyTypes: [Ingress]}"),
                  config="zones:\n  corp: [10.20.0.0/16]\n")
    text = render_svg(model.namespace_matrix(), ["x"], namespace_zone={"x": "cde"})
    root = ET.fromstring(text)  # noqa: S314 - our own output
    assert root.tag == f"{NS}svg"
    nodes = {g.get("data-name"): g.get("class") for g in root.iter(f"{NS}g") if g.get("data-name")}
    assert nodes["x"] == "node cde"
    assert nodes["y"] == "node"
    assert nodes["zone/corp"] == "node zone"
    flows = [p for p in root.iter(f"{NS}path") if (p.get("class") or "").startswith("flow")]
    titles = {str(p.findtext(f"{NS}title")) for p in flows}
    assert "x -> y: all ports" in titles
    assert not any(t.endswith("-> x: all ports") for t in titles)  # x is ingress-isolated
    cde_flows = [p for p in flows if p.get("class") == "flow cde"]
    assert cde_flows
    assert all(p.get("stroke") == "#c0392b" for p in cde_flows)
    assert "<script" not in text
    assert "href=\"http" not in text
    assert text == render_svg(model.namespace_matrix(), ["x"], namespace_zone={"x": "cde"})


def test_svg_escapes_labels() -> None:
    nasty = 'a<b>&"c'
    matrix = Matrix.build("namespace", [nasty, "zone/internet"], {("zone/internet", nasty): PortSet.of("TCP", 1)})
    text = render_svg(matrix, [nasty], title="<t>")
    root = ET.fromstring(text)  # noqa: S314 - our own output
    assert root.find(f"{NS}title").text == "<t>"  # type: ignore[union-attr]
    names = [g.get("data-name") for g in root.iter(f"{NS}g") if g.get("data-name")]
    assert nasty in names
    assert "<b>" not in text

"""The report's segmentation section: CDE exposure as JSON-able data, and its SVG diagram.

Pure: :func:`to_dict` turns the evidence values computed during the run into the mapping stored in
``Report.segmentation`` (rendered by the JSON report under ``"segmentation"``); :func:`render_svg`
draws that mapping's CDE namespace matrix. CDE workloads with identical flows are listed together,
so a cluster without policies (every CDE workload reachable from every pod) stays one record
instead of one per workload. Schema: docs/report-schema.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from kubepci.analyzers.netpol.model import Matrix
from kubepci.analyzers.netpol.ports import PortSet
from kubepci.analyzers.netpol.svg import render_svg as _render_matrix

if TYPE_CHECKING:
    from kubepci.checks._segmentation_evidence import Evidence
    from kubepci.checks._segmentation_values import Flow
    from kubepci.model.report import Report

__all__ = ["SVG_TITLE", "render_svg", "to_dict"]

SVG_TITLE = "Allowed flows into and out of the CDE"


def _flow(flow: Flow, peer_key: str) -> dict[str, Any]:
    peer = flow.peer
    out: dict[str, Any] = {peer_key: peer.name, "kind": peer.kind, "peer": peer.text()}
    if peer.kind in ("cluster", "outside-cde", "namespace"):
        out["workloads"] = peer.workloads
    if peer.detail:
        out["addresses"] = peer.detail
    out.update({
        "ports": flow.ports.to_dict(),
        "text": str(flow.ports),
        "approved": flow.approved.to_dict(),
        "unapproved": flow.unapproved.to_dict(),
        "unapproved_text": str(flow.unapproved),
        "approved_by": list(flow.approved_by),
    })
    return out


def _grouped(per_workload: Sequence[tuple[str, tuple[Flow, ...]]], own_key: str,
             peer_key: str) -> list[dict[str, Any]]:
    groups: dict[tuple[Flow, ...], list[str]] = {}
    for workload, flows in per_workload:
        if flows:
            groups.setdefault(flows, []).append(workload)
    records = [{own_key: sorted(workloads), "flows": [_flow(f, peer_key) for f in flows]}
               for flows, workloads in groups.items()]
    return sorted(records, key=lambda r: r[own_key])


def _matrix_dict(matrix: Matrix) -> dict[str, Any]:
    """``Matrix.to_dict`` with each distinct port set rendered once: without policies, tens of
    thousands of cells share the same one."""
    rendered: dict[PortSet, tuple[dict[str, list[list[int]]], str]] = {}
    cells = []
    for src, dst, ports in matrix.cells:
        hit = rendered.get(ports)
        if hit is None:
            hit = rendered[ports] = (ports.to_dict(), str(ports))
        cells.append({"from": src, "to": dst, "ports": hit[0], "text": hit[1]})
    return {"level": matrix.level, "nodes": list(matrix.nodes), "cells": cells}


def to_dict(evidence: Evidence) -> dict[str, Any]:
    """The ``segmentation`` section of the JSON report."""
    flows_in = [f for _, flows in evidence.inbound for f in flows]
    flows_out = [f for _, flows in evidence.outbound for f in flows]
    internet = sorted({w for w, flows in evidence.outbound for f in flows if f.peer.is_untrusted_zone})
    return {
        "cde_namespaces": list(evidence.cde_namespaces),
        "summary": {
            "cde_workloads": len(evidence.inbound),
            "inbound_flows": len(flows_in),
            "unapproved_inbound_flows": sum(1 for f in flows_in if f.unapproved),
            "outbound_flows": len(flows_out),
            "unapproved_outbound_flows": sum(1 for f in flows_out if f.unapproved),
            "workloads_reaching_the_internet": len(internet),
            "not_isolated": len(evidence.not_isolated),
        },
        "inbound": _grouped(evidence.inbound, "to", "from"),
        "outbound": _grouped(evidence.outbound, "from", "to"),
        "reaches_internet": internet,
        "not_isolated": [{"workload": w, "direction": d} for w, d in evidence.not_isolated],
        "dmz": [{"namespace": ns, "reason": why} for ns, why in evidence.dmz],
        "namespace_matrix": _matrix_dict(evidence.matrix),
        "not_enforceable": [{"workload": w, "reason": why} for w, why in evidence.not_enforceable],
        "not_analysed": [{"namespace": ns, "policies": list(p), "workloads": n} for ns, p, n in evidence.not_analysed],
        "diagnostics": [d.to_dict() for d in evidence.diagnostics],
        "assumptions": list(evidence.assumptions),
    }


def _matrix(section: Mapping[str, Any]) -> Matrix:
    raw = section.get("namespace_matrix") or {}
    cells = {(str(c["from"]), str(c["to"])): PortSet.from_mapping(c["ports"]) for c in raw.get("cells", ())}
    return Matrix.build("namespace", raw.get("nodes", ()), cells)


def render_svg(report: Report) -> bytes | None:
    """The CDE flow diagram, or None when the report carries no segmentation evidence."""
    section = report.segmentation
    if section is None:
        return None
    zone_of = {ns: scope for scope, namespaces in report.scope.items() for ns in namespaces}
    text = _render_matrix(_matrix(section), section.get("cde_namespaces", ()), SVG_TITLE, zone_of)
    return text.encode()

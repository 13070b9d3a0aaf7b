"""NetworkPolicy reachability: which workloads and networks can reach the CDE, on which ports.

Entry point: :func:`compile_inventory` (once per run) returns a :class:`NetpolModel` that answers
``can_reach`` with an explanation and produces matrices and the CDE exposure report. Semantics are
upstream Kubernetes NetworkPolicy v1 plus AdminNetworkPolicy/BaselineAdminNetworkPolicy v1alpha1
(netpol-rbac.md §4); Cilium and Calico policies are recognised and reported as not analysed.
"""

from __future__ import annotations

from kubepci.analyzers.netpol.engine import CompileOptions, NetpolModel, compile_inventory
from kubepci.analyzers.netpol.exposure import Exposure, ExposureFlow
from kubepci.analyzers.netpol.ipset import IPSet
from kubepci.analyzers.netpol.model import (
    ASSUMPTIONS,
    Decision,
    Diagnostic,
    DirectionVerdict,
    Endpoint,
    Explanation,
    Matrix,
    PairVerdict,
    Verdict,
)
from kubepci.analyzers.netpol.ports import PortSet

__all__ = [
    "ASSUMPTIONS",
    "CompileOptions",
    "Decision",
    "Diagnostic",
    "DirectionVerdict",
    "Endpoint",
    "Explanation",
    "Exposure",
    "ExposureFlow",
    "IPSet",
    "Matrix",
    "NetpolModel",
    "PairVerdict",
    "PortSet",
    "Verdict",
    "compile_inventory",
]

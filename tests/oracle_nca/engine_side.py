"""kubepci's side of the differential test: the workload-level relation in the neutral form.

Uses the public entry points only (manifest loader, ``Inventory.build``, ``compile_inventory`` with
``ipblock_matches_pod_ips=False`` so that, like NCA, an ipBlock never selects a pod, and
``connectivity_pairs(level="workload")``). NCA also prints traffic between the two pods it models for
a replicated workload (``ns/web-1 => ns/web-2``); kubepci's pair list leaves a workload's own
replicas out, so for those workloads the "different pod of the same class" ports are asked of the
model directly and reported as the pair (workload, workload).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from kubepci.analyzers.netpol import CompileOptions, NetpolModel, compile_inventory
from kubepci.analyzers.netpol.engine import iter_bits
from kubepci.inventory import Inventory
from kubepci.inventory.loaders.manifests import load_paths
from tests.oracle_nca.relation import Endpoint, Ports, RawPair, parse_ip_endpoint

__all__ = ["EngineRun", "run_kubepci"]


@dataclass(frozen=True, slots=True)
class EngineRun:
    model: NetpolModel
    pairs: tuple[RawPair, ...]
    errors: tuple[str, ...]  # unreadable inputs and error diagnostics: a scenario must have none


def _ports(mapping: Mapping[str, list[tuple[int, int]]]) -> Ports:
    return Ports.build({proto.upper(): rng for proto, rng in mapping.items()})


def _endpoint(text: str, workloads: set[str]) -> Endpoint:
    if text in workloads:
        return text
    ranges = parse_ip_endpoint(text)
    if ranges is None:
        raise ValueError(f"kubepci printed an endpoint that is neither a workload nor addresses: {text!r}")
    return ranges


def run_kubepci(directory: Path, replicated: Iterable[str]) -> EngineRun:
    loaded = load_paths([str(directory)])
    model = compile_inventory(Inventory.build(loaded.resources), None, CompileOptions(ipblock_matches_pod_ips=False))
    errors = [f"unreadable {u}" for u in loaded.unreadable]
    errors += [f"{d.code}: {d.message}" for d in model.diagnostics if d.severity == "error"]
    display: dict[str, str] = {}
    for e in model.endpoints():
        if e.kind == "workload" and e.ref is not None:
            display[f"{e.namespace}/{e.ref.name}[{e.workload_kind}]"] = e.name
    names = set(display)
    pairs: list[RawPair] = []
    for src, dst, mapping in model.connectivity_pairs(level="workload"):
        ports = _ports(mapping)
        if ports:
            pairs.append((_endpoint(src, names), _endpoint(dst, names), ports))
    for shown in sorted(replicated):
        if shown not in display:
            raise ValueError(f"NCA models replicas of {shown}, which kubepci does not know")
        bits = list(iter_bits(model.bits_of(model.endpoint(display[shown]))))
        own = Ports(())
        for sb in bits:
            for db in bits:
                own = own | Ports.build(dict(model.pair_ports(sb, db).items()))
        if own:
            pairs.append((shown, shown, own))
    return EngineRun(model, tuple(pairs), tuple(errors))

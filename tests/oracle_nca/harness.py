"""Scenarios, documented differences, and one differential run (kubepci vs NCA) of a directory.

A hand-written scenario is a directory under ``scenarios/`` holding ``scenario.yaml`` (description,
the netpol-rbac.md §4 items it covers, the shared ``_base`` files it builds on, and a few
``expect`` lines worked out by hand from the upstream docs, so that two tools agreeing on a wrong or
empty answer cannot pass unnoticed) plus its own manifests. A run writes base and scenario
manifests into one fresh file, so both tools read exactly the same input, and neither sees the
metadata.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.oracle_nca.engine_side import EngineRun, run_kubepci
from tests.oracle_nca.nca import NameMap, NcaRun, parse_nca_output, run_nca
from tests.oracle_nca.relation import Mismatch, RawPair, compare

__all__ = [
    "DIFFERENCES_FILE",
    "SCENARIO_ROOT",
    "Difference",
    "Outcome",
    "Scenario",
    "differential",
    "load_differences",
    "load_scenarios",
    "materialise",
    "render",
]

HERE = Path(__file__).parent
SCENARIO_ROOT = HERE / "scenarios"
DIFFERENCES_FILE = HERE / "differences.yaml"
META = "scenario.yaml"


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    covers: tuple[int, ...]
    base: tuple[str, ...]
    directory: Path
    expect: tuple[str, ...] = ()  # hand-checked "src => dst: ports" lines, from upstream docs

    def manifests(self) -> list[Path]:
        own = sorted(p for p in self.directory.iterdir() if p.suffix in (".yaml", ".yml") and p.name != META)
        return [SCENARIO_ROOT / "_base" / f"{b}.yaml" for b in self.base] + own


def _meta(path: Path) -> Mapping[str, Any]:
    data = yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
    if not isinstance(data, Mapping) or not isinstance(data.get("description"), str):
        raise ValueError(f"{path}: needs a description")
    return data


def load_scenarios(root: Path = SCENARIO_ROOT) -> list[Scenario]:
    out: list[Scenario] = []
    for d in sorted(root.iterdir()):
        if not d.is_dir() or d.name.startswith("_"):
            continue
        meta = _meta(d / META)
        out.append(Scenario(d.name, meta["description"].strip(), tuple(int(i) for i in meta.get("covers") or ()),
                            tuple(str(b) for b in meta.get("base") or ()), d,
                            tuple(str(e) for e in meta.get("expect") or ())))
    return out


@dataclass(frozen=True, slots=True)
class Difference:
    """A scenario on which NCA deviates from upstream Kubernetes semantics (never a kubepci bug).

    Either ``mismatches`` pins the exact disagreement (lines as :meth:`Mismatch.line` prints them),
    or NCA rejects the input (``nca_rejects`` is part of its error) and ``oracle_scenario`` names an
    upstream-equivalent scenario whose NCA answer kubepci must reproduce instead.
    """

    scenario: str
    nca_behaviour: str
    upstream: str
    reference: str
    mismatches: tuple[str, ...] = ()
    nca_rejects: str = ""
    oracle_scenario: str = ""


def load_differences(path: Path = DIFFERENCES_FILE) -> dict[str, Difference]:
    data = yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
    out: dict[str, Difference] = {}
    for item in data["differences"]:
        diff = Difference(
            scenario=item["scenario"], nca_behaviour=item["nca_behaviour"].strip(), upstream=item["upstream"].strip(),
            reference=item["reference"].strip(), mismatches=tuple(item.get("mismatches") or ()),
            nca_rejects=item.get("nca_rejects", ""), oracle_scenario=item.get("oracle_scenario", ""))
        if diff.scenario in out:
            raise ValueError(f"{path}: {diff.scenario} listed twice")
        out[diff.scenario] = diff
    return out


def materialise(files: Sequence[Path], dest: Path, extra: Sequence[Mapping[str, Any]] = ()) -> list[Mapping[str, Any]]:
    """Write the documents of ``files`` (then ``extra``) as one ``dest/input.yaml``; return them.

    Namespaces go first. NCA reads a directory in os.walk order and binds each pod to the namespace
    object known at that moment: a pod read before its Namespace keeps a label-less stand-in, so a
    namespaceSelector would then be evaluated against the wrong labels (found by generated case 14).
    kubepci does not depend on order; one file with namespaces first makes NCA not depend on it either.
    """
    docs: list[Mapping[str, Any]] = []
    for src in files:
        docs.extend(d for d in yaml.load_all(src.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
                    if isinstance(d, Mapping))
    docs.extend(extra)
    ordered = [d for d in docs if d.get("kind") == "Namespace"] + [d for d in docs if d.get("kind") != "Namespace"]
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "input.yaml").write_text(yaml.safe_dump_all([dict(d) for d in ordered], sort_keys=False), encoding="utf-8")
    return ordered


@dataclass(frozen=True, slots=True)
class Outcome:
    nca: NcaRun
    names: NameMap
    engine: EngineRun
    nca_pairs: tuple[RawPair, ...]
    mismatches: tuple[Mismatch, ...]


def differential(nca_exe: Path, directory: Path, docs: Sequence[Mapping[str, Any]],
                 oracle_directory: Path | None = None) -> Outcome:
    """Run both tools; NCA reads ``oracle_directory`` instead when given (an equivalent input)."""
    names = NameMap.from_documents(docs)
    run = run_nca(nca_exe, oracle_directory or directory)
    nca_pairs = tuple(parse_nca_output(run.stdout, names)) if run.returncode == 0 else ()
    engine = run_kubepci(directory, names.replicated)
    return Outcome(run, names, engine, nca_pairs, tuple(compare(engine.pairs, nca_pairs)))


def render(outcome: Outcome, limit: int = 60) -> str:
    lines = [m.detail() for m in outcome.mismatches]
    shown = lines[:limit] + ([f"... and {len(lines) - limit} more"] if len(lines) > limit else [])
    return "\n".join([f"{len(lines)} (source, destination) pairs differ:", *shown])

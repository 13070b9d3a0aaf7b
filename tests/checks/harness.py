"""Run one check over one fixture file, the way the CLI would (same loader, same engine)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from kubepci.analyzers import standard_analyzers
from kubepci.checks import default_catalog
from kubepci.config import Config, load_config
from kubepci.engine import Evaluation, evaluate
from kubepci.inventory import Inventory
from kubepci.inventory.loaders.manifests import load_paths

FIXTURES = Path(__file__).parent
_EXPECT = re.compile(r"^#\s*expect-fail:\s*(.+?)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Expectation:
    ref: str
    path: str = ""
    message: str = ""


def expectations(fixture: Path) -> list[Expectation]:
    """`# expect-fail: ns/Kind/name | path substring | message substring` header lines."""
    out = []
    for line in _EXPECT.findall(fixture.read_text()):
        parts = [p.strip() for p in line.split("|")]
        parts += [""] * (3 - len(parts))
        out.append(Expectation(parts[0], parts[1], parts[2]))
    return out


def fixture_config(check_dir: Path) -> Config:
    cfg = check_dir / "kubepci.yaml"
    return load_config(cfg) if cfg.exists() else Config()


def run_fixture(check_id: str, fixture: Path) -> Evaluation:
    loaded = load_paths([str(fixture)])
    assert not loaded.unreadable, f"{fixture}: fixture does not parse: {loaded.unreadable}"
    inventory = Inventory.build(loaded.resources, loaded.unreadable, loaded.inputs)
    catalog = default_catalog().select([check_id])
    assert len(catalog) == 1, f"no check {check_id}"
    cfg = fixture_config(fixture.parent)
    return evaluate(catalog, inventory, cfg, analyzers=standard_analyzers(inventory, cfg))


def all_fixtures() -> list[tuple[str, Path]]:
    return sorted(
        (d.name, f)
        for d in FIXTURES.iterdir()
        if d.is_dir() and not d.name.startswith(("_", "."))
        for f in d.glob("*.yaml")
        if f.name.startswith(("pass.", "fail."))
    )

"""Real manifests nobody here wrote: every file scans without a crash and every object is accounted for."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kubepci.checks import default_catalog
from kubepci.config import Config
from kubepci.engine import evaluate
from kubepci.inventory import Inventory
from kubepci.inventory.loaders.manifests import iter_manifest_files, load_paths
from kubepci.model import Status

REAL = Path("../shared/corpora/real")
CORPORA = sorted(p.name for p in REAL.iterdir() if p.is_dir())


def _expected_objects(path: Path) -> int | None:
    """Objects an independent reading (PyYAML, whole stream) finds, or None if the stream is broken."""
    try:
        text = path.read_text(encoding="utf-8-sig")
        docs = list(yaml.safe_load_all(text)) if path.suffix != ".json" else [yaml.safe_load(text)]
    except yaml.YAMLError:
        return None
    count = 0
    stack = [d for d in docs if d is not None]
    while stack:
        doc = stack.pop()
        if isinstance(doc, dict) and str(doc.get("kind", "")).endswith("List") and isinstance(doc.get("items"), list):
            stack.extend(doc["items"])
        else:
            count += 1
    return count


@pytest.mark.parametrize("corpus", CORPORA)
def test_every_object_is_scanned_or_listed(corpus: str) -> None:
    root = REAL / corpus
    files = list(iter_manifest_files(root))
    assert files, f"{corpus}: no manifests"
    for path in files:
        result = load_paths([str(path)])
        expected = _expected_objects(path)
        accounted = len(result.resources) + len(result.unreadable)
        if expected is None:
            assert result.unreadable, f"{path}: PyYAML rejects it but kubepci reported nothing unreadable"
            continue
        assert accounted == expected, f"{path}: {expected} objects, {len(result.resources)} read + " \
            f"{len(result.unreadable)} unreadable"
        for problem in result.unreadable:
            assert problem.location.file == str(path), problem
            assert problem.location.line > 0, problem


@pytest.mark.parametrize("corpus", CORPORA)
def test_full_catalog_runs_without_check_errors(corpus: str) -> None:
    loaded = load_paths([str(REAL / corpus)])
    inventory = Inventory.build(loaded.resources, loaded.unreadable, loaded.inputs)
    result = evaluate(default_catalog(), inventory, Config())
    errors = [f"{f.check_id} on {f.resource} ({f.location}): {f.message}" for f in result.findings
              if f.status is Status.ERROR]
    assert not errors, "\n".join(errors[:20])
    assert sum(result.evaluated.values()) > 0

"""The example payments platform as admission test material: real manifests, real cluster context.

Every admission test starts from the same objects a scan of ``examples/payments-platform`` reads,
so a decision and a scan can be compared object by object.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
from pathlib import Path
from typing import Any

import orjson

from kubepci.admission.cache import Snapshot
from kubepci.admission.decide import Decision, Policy, decide
from kubepci.admission.review import make_review, parse_review
from kubepci.checks import default_catalog
from kubepci.config import Config, load_config
from kubepci.inventory.loaders.manifests import load_paths
from kubepci.model import Resource

__all__ = ["CONFIG_PATH", "NOW", "PLATFORM", "config", "decide_object", "objects", "one", "snapshot"]

PLATFORM = Path("examples/payments-platform")
CONFIG_PATH = PLATFORM / "kubepci.yaml"
#: inside the live waiver W-2026-001's window; W-2025-007 has expired
NOW = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)


@functools.lru_cache(maxsize=1)
def _resources() -> tuple[Resource, ...]:
    return load_paths([str(PLATFORM)]).resources


def objects() -> list[dict[str, Any]]:
    """Deep copies: a test may mutate what it gets."""
    return [copy.deepcopy(dict(r.body)) for r in _resources()]


def one(kind: str, namespace: str, name: str) -> dict[str, Any]:
    for r in _resources():
        if (r.kind, r.namespace, r.name) == (kind, namespace, name):
            return copy.deepcopy(dict(r.body))
    raise KeyError(f"{namespace}/{kind}/{name} is not in {PLATFORM}")


@functools.lru_cache(maxsize=1)
def config() -> Config:
    return load_config(CONFIG_PATH)


def snapshot(cfg: Config | None = None) -> Snapshot:
    return Snapshot.from_objects(objects(), cfg or config())


def decide_object(obj: dict[str, Any], *, policy: Policy | None = None, snap: Snapshot | None = None,
                  now: dt.datetime = NOW, **review: Any) -> Decision:
    """Through the bytes path the server takes: make_review -> JSON -> parse_review -> decide."""
    pol = policy or Policy(default_catalog(), config())
    request = parse_review(orjson.dumps(make_review(obj, **review)))
    return decide(request, snap or snapshot(pol.config), pol, now=now)

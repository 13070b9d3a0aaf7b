"""The check catalog: one module per Kubernetes domain, listed explicitly.

Adding a module to ``MODULES`` is the only way a check enters the catalog.
"""

from __future__ import annotations

import functools
import types

from kubepci.checks import (
    cluster_config,
    identity,
    images,
    namespaces,
    network,
    rbac,
    scheduling,
    secrets,
    segmentation,
    tls,
    workload_security,
)
from kubepci.checks._registry import Catalog, Check, CheckContext, CheckMeta, check

__all__ = ["MODULES", "Catalog", "Check", "CheckContext", "CheckMeta", "check", "default_catalog"]

MODULES: tuple[types.ModuleType, ...] = (
    workload_security,
    identity,
    images,
    secrets,
    namespaces,
    network,
    segmentation,
    tls,
    scheduling,
    rbac,
    cluster_config,
)


@functools.lru_cache(maxsize=1)
def default_catalog() -> Catalog:
    return Catalog.from_modules(MODULES)

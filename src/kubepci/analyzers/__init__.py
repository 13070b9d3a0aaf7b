"""Analyzers compute whole-inventory models once per run (reachability, RBAC) for checks and reports.

``standard_analyzers`` returns a lazy mapping: a model is computed the first time a check (or a
reporter) asks for it, so a scan whose catalog never needs reachability never pays for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from kubepci.config import Config
from kubepci.inventory import Inventory

__all__ = ["LazyAnalyzers", "standard_analyzers"]


class LazyAnalyzers(Mapping[str, Any]):
    """A read-only mapping whose values are computed on first access and then cached."""

    def __init__(self, factories: Mapping[str, Callable[[], Any]]) -> None:
        self._factories = dict(factories)
        self._values: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        if key not in self._values:
            self._values[key] = self._factories[key]()
        return self._values[key]

    def __contains__(self, key: object) -> bool:
        """Membership without computing (Mapping's default would call __getitem__)."""
        return key in self._factories

    def __iter__(self) -> Iterator[str]:
        return iter(self._factories)

    def __len__(self) -> int:
        return len(self._factories)

    def computed(self, key: str) -> bool:
        return key in self._values


def standard_analyzers(inventory: Inventory, config: Config) -> LazyAnalyzers:
    def netpol() -> Any:
        from kubepci.analyzers.netpol import compile_inventory

        return compile_inventory(inventory, config)

    def netpol_isolation() -> Any:
        from kubepci.checks._netpol import isolation_index

        return isolation_index(inventory)

    return LazyAnalyzers({"netpol": netpol, "netpol_isolation": netpol_isolation})

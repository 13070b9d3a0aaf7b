"""Small pure helpers shared by check bodies."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from kubepci.inventory import Container, Workload

__all__ = [
    "effective",
    "is_true",
    "mapping",
    "pod_containers",
    "run_containers",
]


def is_true(value: Any) -> bool:
    """YAML booleans arrive as bool; tolerate the string forms people write in Helm values."""
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def effective(workload: Workload, container: Container, key: str) -> tuple[Any, str]:
    """A securityContext field as the kubelet resolves it: container value wins over the pod's.

    Returns (value, path of the field that decided it, or the container path if neither set it).
    """
    sc = container.security_context
    if key in sc:
        return sc[key], f"{container.path}.securityContext.{key}"
    psc = workload.pod_security_context
    if key in psc:
        return psc[key], f"{workload.spec_path}.securityContext.{key}"
    return None, f"{container.path}.securityContext.{key}"


def pod_containers(workload: Workload) -> Iterator[Container]:
    """All containers incl. init and ephemeral ones: every one of them runs code on the node."""
    return iter(workload.containers)


def run_containers(workload: Workload) -> Iterator[Container]:
    """Regular and init containers (ephemeral containers carry no resources/probes)."""
    return (c for c in workload.containers if c.field != "ephemeralContainers")


def mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}

"""Pure helpers for the pod-hardening checks: capability names, seccomp sources, host paths.

Kept apart from the check bodies so each body reads as the rule it enforces, and so the tables
(insecure capabilities, safe sysctls, runtime sockets) live in one reviewable place.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from kubepci.checks._util import mapping
from kubepci.inventory import Container, Workload

__all__ = [
    "ALLOWED_ADDED_CAPABILITIES",
    "APPARMOR_ANNOTATION_PREFIX",
    "INSECURE_CAPABILITIES",
    "SAFE_SYSCTLS",
    "SECCOMP_CONTAINER_ANNOTATION_PREFIX",
    "SECCOMP_OK",
    "SECCOMP_POD_ANNOTATION",
    "SELINUX_TYPES",
    "added_capabilities",
    "annotation_path",
    "as_int",
    "cap_name",
    "dropped_capabilities",
    "is_false",
    "is_windows",
    "runtime_socket",
    "seccomp_from_annotation",
    "seccomp_type",
    "service_account_name",
]

#: kubescape's insecureCapabilities list (controls.md WKL-003), in normalised form
INSECURE_CAPABILITIES = frozenset({
    "SETPCAP", "NET_ADMIN", "NET_RAW", "SYS_MODULE", "SYS_RAWIO", "SYS_PTRACE", "SYS_ADMIN",
    "SYS_BOOT", "MAC_OVERRIDE", "MAC_ADMIN", "PERFMON", "ALL", "BPF",
})
#: the only capability the restricted Pod Security Standard lets a container add back
ALLOWED_ADDED_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})

#: sysctls the baseline Pod Security Standard treats as namespaced and safe
SAFE_SYSCTLS = frozenset({
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
})

#: SELinux types the baseline Pod Security Standard allows
SELINUX_TYPES = frozenset({"container_t", "container_init_t", "container_kvm_t", "container_engine_t"})

SECCOMP_OK = frozenset({"RuntimeDefault", "Localhost"})
SECCOMP_POD_ANNOTATION = "seccomp.security.alpha.kubernetes.io/pod"
SECCOMP_CONTAINER_ANNOTATION_PREFIX = "container.seccomp.security.alpha.kubernetes.io/"
APPARMOR_ANNOTATION_PREFIX = "container.apparmor.security.beta.kubernetes.io/"

# A hostPath at one of these exposes a container-runtime socket: the socket itself (by file
# name) or a directory that holds one. Mounting any of them hands the pod the node.
_SOCKET_FILES = frozenset({
    "docker.sock", "containerd.sock", "crio.sock", "podman.sock", "cri-dockerd.sock", "dockershim.sock",
})
_SOCKET_DIRS = frozenset({
    "/", "/run", "/var/run",
    "/run/containerd", "/var/run/containerd", "/run/k3s/containerd",
    "/run/crio", "/var/run/crio",
    "/run/docker", "/var/run/docker",
    "/run/podman", "/var/run/podman",
})


def cap_name(value: Any) -> str:
    """Capabilities are matched case-insensitively and with or without the kernel's CAP_ prefix."""
    if not isinstance(value, str):
        return ""
    name = value.strip().upper()
    return name[4:] if name.startswith("CAP_") else name


_NO_CAPS: frozenset[str] = frozenset()


def _cap_list(container: Container, key: str) -> list[Any]:
    caps = container.security_context.get("capabilities")
    items = caps.get(key) if isinstance(caps, Mapping) else None
    return items if isinstance(items, list) else []


def added_capabilities(container: Container) -> Iterator[tuple[int, str]]:
    """(index, normalised name) of every capability the container adds back."""
    for i, item in enumerate(_cap_list(container, "add")):
        name = cap_name(item)
        if name:
            yield i, name


def dropped_capabilities(container: Container) -> frozenset[str]:
    items = _cap_list(container, "drop")
    return frozenset(map(cap_name, items)) if items else _NO_CAPS


def is_false(value: Any) -> bool:
    """The counterpart of ``is_true``: an explicit false, as bool or as the string Helm users write."""
    return value is False or (isinstance(value, str) and value.strip().lower() == "false")


def as_int(value: Any) -> int | None:
    """An integer field as written (bool is not an int here; digit strings are tolerated)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def is_windows(workload: Workload) -> bool:
    """Linux-only controls (capabilities, seccomp, uids) do not apply to a pod pinned to Windows."""
    os_name = mapping(workload.pod_spec.get("os")).get("name")
    return isinstance(os_name, str) and os_name.lower() == "windows"


def annotation_path(workload: Workload, key: str) -> str:
    """Path of a pod-template annotation: metadata sits beside the pod spec."""
    base = workload.spec_path[: -len("spec")] + "metadata"
    return f'{base}.annotations["{key}"]'


def seccomp_type(security_context: Mapping[str, Any]) -> str | None:
    prof = security_context.get("seccompProfile")
    if not isinstance(prof, Mapping):
        return None
    value = prof.get("type")
    return value if isinstance(value, str) and value else None


def seccomp_from_annotation(value: Any) -> str | None:
    """Map a legacy seccomp annotation value onto the field's vocabulary (unknown values kept)."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text in ("runtime/default", "docker/default"):
        return "RuntimeDefault"
    if text.startswith("localhost/"):
        return "Localhost"
    if text == "unconfined":
        return "Unconfined"
    return text


def runtime_socket(path: Any) -> str | None:
    """What a hostPath exposes of the container runtime, or None if it exposes no socket."""
    if not isinstance(path, str) or not path.startswith("/"):
        return None
    parts = [p for p in path.split("/") if p and p != "."]
    norm = "/" + "/".join(parts)
    if parts and parts[-1] in _SOCKET_FILES:
        return f"the runtime socket {parts[-1]}"
    if norm in _SOCKET_DIRS:
        return "a directory holding the runtime socket"
    return None


def service_account_name(workload: Workload) -> str:
    """The ServiceAccount a pod runs as; the deprecated ``serviceAccount`` alias still counts."""
    for key in ("serviceAccountName", "serviceAccount"):
        value = workload.pod_spec.get(key)
        if isinstance(value, str) and value:
            return value
    return "default"

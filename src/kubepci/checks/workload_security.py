"""Pod and container hardening (controls.md WKL-001..012 and CFG-006, PCI DSS 2.2.6 secure parameters).

One check per control so a waiver, an override or a report line names exactly one weakness.
Tables and field resolution live in ``_workload``; these bodies only state the rule.
"""

from __future__ import annotations

from collections.abc import Iterator

from kubepci.checks._registry import CheckContext, check
from kubepci.checks._util import effective, is_true, mapping, run_containers
from kubepci.checks._workload import (
    ALLOWED_ADDED_CAPABILITIES,
    APPARMOR_ANNOTATION_PREFIX,
    INSECURE_CAPABILITIES,
    SAFE_SYSCTLS,
    SECCOMP_CONTAINER_ANNOTATION_PREFIX,
    SECCOMP_OK,
    SECCOMP_POD_ANNOTATION,
    SELINUX_TYPES,
    added_capabilities,
    annotation_path,
    as_int,
    dropped_capabilities,
    is_false,
    is_windows,
    runtime_socket,
    seccomp_from_annotation,
    seccomp_type,
)
from kubepci.inventory import Workload
from kubepci.model import Scope, Severity, Violation

__all__: list[str] = []

@check(
    id="workload-privileged",
    title="Containers must not run privileged",
    requirements=("2.2.6",),
    blog=("R5",),
    severity=Severity.CRITICAL,
    targets=("workload",),
    remediation="Remove securityContext.privileged (or set it false) and grant only the capabilities needed.",
    refs=("WKL-001", "C-0057", "KSV-0017", "CIS 5.2.2", "CKV_K8S_16"),
    cel=(
        "variables.containers.all(c, !(has(c.securityContext) && has(c.securityContext.privileged)) || "
        "c.securityContext.privileged != true)"
    ),
)
def privileged(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """A privileged container has every capability and all host devices: one escape away from the node."""
    for c in wl.containers:
        if is_true(c.security_context.get("privileged")):
            yield Violation(f"container {c.name!r} runs privileged", f"{c.path}.securityContext.privileged")


@check(
    id="workload-privilege-escalation",
    title="Containers must forbid privilege escalation",
    requirements=("2.2.6",),
    blog=("R5",),
    severity=Severity.HIGH,
    targets=("workload",),
    remediation="Set securityContext.allowPrivilegeEscalation to false on every container.",
    refs=("WKL-002", "C-0016", "KSV-0001", "CIS 5.2.6", "CKV_K8S_20"),
    cel=(
        "variables.containers.all(c, has(c.securityContext) && "
        "has(c.securityContext.allowPrivilegeEscalation) && c.securityContext.allowPrivilegeEscalation "
        "== false)"
    ),
)
def privilege_escalation(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """Unset means allowed (setuid binaries can gain privileges), so only an explicit false passes."""
    for c in wl.containers:
        value = c.security_context.get("allowPrivilegeEscalation")
        if value is not False:
            state = "is not set" if value is None else f"is {value!r}"
            yield Violation(
                f"container {c.name!r}: allowPrivilegeEscalation {state}",
                f"{c.path}.securityContext.allowPrivilegeEscalation",
            )


@check(
    id="workload-run-as-non-root",
    title="Containers must run as a non-root user",
    requirements=("2.2.6",),
    blog=("R5",),
    severity=Severity.HIGH,
    targets=("workload",),
    remediation="Set runAsNonRoot: true and a non-zero runAsUser in the pod or container securityContext.",
    refs=("WKL-004", "C-0013", "KSV-0012", "CIS 5.2.7", "CKV_K8S_23"),
    cel=(
        "variables.containers.all(c, (has(c.securityContext) && has(c.securityContext.runAsUser)) ? "
        "(c.securityContext.runAsUser != 0 && (c.securityContext.runAsUser > 0 || "
        "((has(c.securityContext) && has(c.securityContext.runAsNonRoot)) ? "
        "c.securityContext.runAsNonRoot == true : (has(variables.podSecurityContext.runAsNonRoot) && "
        "variables.podSecurityContext.runAsNonRoot == true)))) : "
        "(has(variables.podSecurityContext.runAsUser) ? (variables.podSecurityContext.runAsUser != 0 && "
        "(variables.podSecurityContext.runAsUser > 0 || ((has(c.securityContext) && "
        "has(c.securityContext.runAsNonRoot)) ? c.securityContext.runAsNonRoot == true : "
        "(has(variables.podSecurityContext.runAsNonRoot) && variables.podSecurityContext.runAsNonRoot == "
        "true)))) : ((has(c.securityContext) && has(c.securityContext.runAsNonRoot)) ? "
        "c.securityContext.runAsNonRoot == true : (has(variables.podSecurityContext.runAsNonRoot) && "
        "variables.podSecurityContext.runAsNonRoot == true))))"
    ),
)
def run_as_non_root(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """runAsNonRoot (or an explicit non-zero runAsUser) must hold for each container; uid 0 always fails."""
    for c in wl.containers:
        user, user_path = effective(wl, c, "runAsUser")
        if isinstance(user, int) and not isinstance(user, bool) and user == 0:
            yield Violation(f"container {c.name!r} runs as uid 0", user_path)
            continue
        non_root, path = effective(wl, c, "runAsNonRoot")
        if non_root is True:
            continue
        if isinstance(user, int) and not isinstance(user, bool) and user > 0:
            continue
        state = "is false" if non_root is False else "is not set and runAsUser is not set"
        yield Violation(f"container {c.name!r}: runAsNonRoot {state}", path)


@check(
    id="workload-readonly-rootfs",
    title="Containers must use a read-only root filesystem",
    requirements=("2.2.6", "11.5.2"),
    blog=("R11",),
    severity=Severity.MEDIUM,
    targets=("workload",),
    remediation="Set securityContext.readOnlyRootFilesystem to true and mount emptyDir for writable paths.",
    refs=("WKL-005", "C-0017", "KSV-0014", "CKV_K8S_22"),
    cel=(
        "variables.runContainers.all(c, has(c.securityContext) && "
        "has(c.securityContext.readOnlyRootFilesystem) && c.securityContext.readOnlyRootFilesystem == "
        "true)"
    ),
)
def readonly_rootfs(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """A writable root filesystem lets an intruder drop and run binaries that drift from the image."""
    for c in wl.containers:
        if c.field == "ephemeralContainers":
            continue
        if not is_true(c.security_context.get("readOnlyRootFilesystem")):
            yield Violation(
                f"container {c.name!r} has a writable root filesystem",
                f"{c.path}.securityContext.readOnlyRootFilesystem",
            )


@check(
    id="workload-host-pid",
    title="Pods must not share the host PID namespace",
    requirements=("2.2.6",),
    blog=("R5",),
    severity=Severity.HIGH,
    targets=("workload",),
    remediation="Remove hostPID from the pod spec.",
    refs=("WKL-006", "C-0038", "KSV-0010", "CIS 5.2.3", "CKV_K8S_17"),
    cel="!has(variables.podSpec.hostPID) || variables.podSpec.hostPID != true",
)
def host_pid(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """hostPID exposes every process on the node, including other tenants' secrets in /proc."""
    if is_true(wl.pod_spec.get("hostPID")):
        yield Violation("pod shares the host PID namespace", wl.spec_field("hostPID"))


@check(
    id="workload-host-ipc",
    title="Pods must not share the host IPC namespace",
    requirements=("2.2.6",),
    blog=("R5",),
    severity=Severity.HIGH,
    targets=("workload",),
    remediation="Remove hostIPC from the pod spec.",
    refs=("WKL-006", "C-0038", "KSV-0008", "CIS 5.2.4", "CKV_K8S_18"),
    cel="!has(variables.podSpec.hostIPC) || variables.podSpec.hostIPC != true",
)
def host_ipc(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """hostIPC lets the pod read shared memory of host processes."""
    if is_true(wl.pod_spec.get("hostIPC")):
        yield Violation("pod shares the host IPC namespace", wl.spec_field("hostIPC"))


@check(
    id="workload-host-network",
    title="Pods must not use the host network",
    requirements=("2.2.6", "1.3.1"),
    blog=("R5", "R1"),
    severity=Severity.HIGH,
    targets=("workload",),
    remediation="Remove hostNetwork from the pod spec and expose the workload through a Service.",
    refs=("WKL-006", "C-0041", "KSV-0009", "CIS 5.2.5", "CKV_K8S_19"),
    cel="!has(variables.podSpec.hostNetwork) || variables.podSpec.hostNetwork != true",
)
def host_network(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """A hostNetwork pod bypasses NetworkPolicy entirely, so CDE segmentation cannot hold for it."""
    if is_true(wl.pod_spec.get("hostNetwork")):
        yield Violation("pod uses the host network namespace", wl.spec_field("hostNetwork"))


@check(
    id="workload-host-port",
    title="Containers must not bind host ports",
    requirements=("2.2.6", "1.3.1"),
    blog=("R5", "R1"),
    severity=Severity.MEDIUM,
    targets=("workload",),
    remediation="Remove hostPort from container ports and expose the workload through a Service.",
    refs=("WKL-006", "C-0044", "KSV-0024", "CIS 5.2.12", "CKV_K8S_26"),
    cel=(
        "variables.containers.all(c, !has(c.ports) || c.ports.all(p, !has(p.hostPort) || p.hostPort == "
        "0))"
    ),
)
def host_port(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """A host port opens the node's interface to the pod outside any NetworkPolicy."""
    for c in wl.containers:
        ports = c.body.get("ports")
        if not isinstance(ports, list):
            continue
        for i, port in enumerate(ports):
            hp = mapping(port).get("hostPort")
            if hp not in (None, 0):
                yield Violation(f"container {c.name!r} binds host port {hp}", f"{c.path}.ports[{i}].hostPort")


# --- capabilities (WKL-003) -------------------------------------------------------------------

#: dropping either removes NET_RAW; adding either grants it
_NET_RAW_DROPS = frozenset({"ALL", "NET_RAW"})


#: the capabilities containerd and Docker give a container unless told otherwise (moby's default set)
RUNTIME_DEFAULT_CAPABILITIES = frozenset({
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP",
    "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
})


@check(
    id="workload-capabilities-drop-all",
    title="Containers must drop all Linux capabilities",
    requirements=("2.2.6", "7.2.5"),
    blog=("R5",),
    severity=Severity.MEDIUM,
    targets=("workload",),
    remediation="Set securityContext.capabilities.drop to [ALL] and add back only what the container needs.",
    refs=("WKL-003", "C-0046", "KSV-0003", "KSV-0106", "CIS 5.2.9", "CKV_K8S_37"),
    cel=(
        "(has(variables.podSpec.os) && has(variables.podSpec.os.name) && "
        "variables.podSpec.os.name.lowerAscii() == 'windows') || variables.containers.all(c, "
        "has(c.securityContext) && has(c.securityContext.capabilities) && "
        "has(c.securityContext.capabilities.drop) && (c.securityContext.capabilities.drop.exists(d, "
        "d.trim().upperAscii() in ['ALL', 'CAP_ALL']) || ['AUDIT_WRITE', 'CHOWN', 'DAC_OVERRIDE', "
        "'FOWNER', 'FSETID', 'KILL', 'MKNOD', 'NET_BIND_SERVICE', 'NET_RAW', 'SETFCAP', 'SETGID', "
        "'SETPCAP', 'SETUID', 'SYS_CHROOT'].all(n, c.securityContext.capabilities.drop.exists(d, "
        "d.trim().upperAscii() in [n, 'CAP_' + n]))))"
    ),
)
def capabilities_drop_all(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """The blog's rule is that pod security explicitly lists the capabilities a workload needs; that only
    holds when the runtime's default set is dropped first: drop must contain ALL (any case), or name
    every capability containerd and Docker grant by default, which leaves the same empty set."""
    if is_windows(wl):
        return
    for c in wl.containers:
        dropped = dropped_capabilities(c)
        if "ALL" not in dropped and not RUNTIME_DEFAULT_CAPABILITIES <= dropped:
            yield Violation(
                f"container {c.name!r} does not drop ALL capabilities",
                f"{c.path}.securityContext.capabilities.drop",
            )


@check(
    id="workload-dangerous-capabilities",
    title="Containers must not add capabilities beyond NET_BIND_SERVICE",
    requirements=("2.2.6", "7.2.5"),
    blog=("R5",),
    severity=Severity.HIGH,
    targets=("workload",),
    remediation="Remove every entry from securityContext.capabilities.add except NET_BIND_SERVICE.",
    refs=("WKL-003", "C-0046", "KSV-0005", "KSV-0022", "KSV-0106", "CIS 5.2.9", "CKV_K8S_25", "CKV_K8S_39"),
    cel=(
        "variables.containers.all(c, !(has(c.securityContext) && has(c.securityContext.capabilities) && "
        "has(c.securityContext.capabilities.add)) || c.securityContext.capabilities.add.all(a, "
        "a.trim().upperAscii() in ['', 'CAP_', 'NET_BIND_SERVICE', 'CAP_NET_BIND_SERVICE']))"
    ),
)
def dangerous_capabilities(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """Capabilities on kubescape's insecure list (SYS_ADMIN, NET_ADMIN, ALL, ...) are escape or sniffing
    primitives; the restricted Pod Security Standard allows adding back NET_BIND_SERVICE only, so any other
    added capability is also reported. Names are compared case-insensitively, with or without CAP_."""
    for c in wl.containers:
        for i, name in added_capabilities(c):
            path = f"{c.path}.securityContext.capabilities.add[{i}]"
            if name in INSECURE_CAPABILITIES:
                yield Violation(f"container {c.name!r} adds dangerous capability {name}", path)
            elif name not in ALLOWED_ADDED_CAPABILITIES:
                yield Violation(
                    f"container {c.name!r} adds capability {name}, not on the allowlist (NET_BIND_SERVICE)",
                    path,
                )


@check(
    id="workload-net-raw",
    title="Containers must drop the NET_RAW capability",
    requirements=("2.2.6", "7.2.5"),
    blog=("R5",),
    severity=Severity.MEDIUM,
    targets=("workload",),
    remediation="Drop NET_RAW (or ALL) in securityContext.capabilities and never add it back.",
    refs=("WKL-003", "C-0046", "CIS 5.2.8", "CKV_K8S_28"),
    cel=(
        "(has(variables.podSpec.os) && has(variables.podSpec.os.name) && "
        "variables.podSpec.os.name.lowerAscii() == 'windows') || variables.containers.all(c, "
        "has(c.securityContext) && has(c.securityContext.capabilities) && "
        "has(c.securityContext.capabilities.drop) && c.securityContext.capabilities.drop.exists(d, "
        "d.trim().upperAscii() in ['ALL', 'CAP_ALL', 'NET_RAW', 'CAP_NET_RAW']) && "
        "(!has(c.securityContext.capabilities.add) || !c.securityContext.capabilities.add.exists(a, "
        "a.trim().upperAscii() in ['ALL', 'CAP_ALL', 'NET_RAW', 'CAP_NET_RAW'])))"
    ),
)
def net_raw(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """NET_RAW is in the runtime's default set and lets a container forge packets and spoof addresses on the
    pod network, which undermines CDE segmentation; it must be dropped and never added back."""
    if is_windows(wl):
        return
    for c in wl.containers:
        added = [(i, n) for i, n in added_capabilities(c) if n in _NET_RAW_DROPS]
        for i, name in added:
            what = "adds NET_RAW back" if name == "NET_RAW" else "adds ALL capabilities, NET_RAW included"
            yield Violation(f"container {c.name!r} {what}", f"{c.path}.securityContext.capabilities.add[{i}]")
        if not added and not dropped_capabilities(c) & _NET_RAW_DROPS:
            yield Violation(
                f"container {c.name!r} does not drop NET_RAW (or ALL)",
                f"{c.path}.securityContext.capabilities.drop",
            )


# --- users and groups (WKL-004) ---------------------------------------------------------------


@check(
    id="workload-high-uid",
    title="Containers must run with a UID at or above the configured minimum",
    requirements=("2.2.6",),
    blog=("R5",),
    severity=Severity.LOW,
    targets=("workload",),
    remediation="Set securityContext.runAsUser to a UID at or above the configured minimum (default 10000).",
    refs=("WKL-004", "KSV-0020", "CKV_K8S_40"),
    cel=(
        "(has(variables.podSpec.os) && has(variables.podSpec.os.name) && "
        "variables.podSpec.os.name.lowerAscii() == 'windows') || (has(variables.podSpec.hostUsers) && "
        "variables.podSpec.hostUsers == false) || variables.containers.all(c, (has(c.securityContext) && "
        "has(c.securityContext.runAsUser)) ? c.securityContext.runAsUser >= variables.minUid : "
        "(has(variables.podSecurityContext.runAsUser) && variables.podSecurityContext.runAsUser >= "
        "variables.minUid))"
    ),
)
def high_uid(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """A low UID can collide with a real account on the node, so an escaped process would act as that
    user. The container's runAsUser wins over the pod's; unset fails. Pods with hostUsers: false run in a
    private user namespace where no host collision is possible."""
    if is_windows(wl) or is_false(wl.pod_spec.get("hostUsers")):
        return
    minimum = ctx.config.min_uid
    for c in wl.containers:
        raw, path = effective(wl, c, "runAsUser")
        uid = as_int(raw)
        if raw is None:
            yield Violation(f"container {c.name!r}: runAsUser is not set (needs >= {minimum})", path)
        elif uid is None:
            yield Violation(f"container {c.name!r}: runAsUser {raw!r} is not a numeric UID", path)
        elif uid < minimum:
            yield Violation(f"container {c.name!r} runs as uid {uid}, below {minimum}", path)


@check(
    id="workload-root-group",
    title="Pods must not run with the root group",
    requirements=("2.2.6",),
    blog=("R5",),
    severity=Severity.MEDIUM,
    targets=("workload",),
    remediation="Set runAsGroup and fsGroup to a non-zero GID and remove 0 from supplementalGroups.",
    refs=("WKL-004", "KSV-0029", "KSV-0116"),
    cel=(
        "!(has(variables.podSecurityContext.runAsGroup) && variables.podSecurityContext.runAsGroup == 0) "
        "&& !(has(variables.podSecurityContext.fsGroup) && variables.podSecurityContext.fsGroup == 0) && "
        "!(has(variables.podSecurityContext.supplementalGroups) && 0 in "
        "variables.podSecurityContext.supplementalGroups) && variables.containers.all(c, "
        "!(has(c.securityContext) && has(c.securityContext.runAsGroup)) || c.securityContext.runAsGroup "
        "!= 0)"
    ),
)
def root_group(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """GID 0 owns many files on the node and in images; a process in the root group can read or write them.
    Every explicit setting is reported, even one a container overrides, because it states root intent."""
    psc = wl.pod_security_context
    base = f"{wl.spec_path}.securityContext"
    for key in ("runAsGroup", "fsGroup"):
        if as_int(psc.get(key)) == 0:
            yield Violation(f"pod sets {key} 0 (root group)", f"{base}.{key}")
    groups = psc.get("supplementalGroups")
    if isinstance(groups, list):
        for i, gid in enumerate(groups):
            if as_int(gid) == 0:
                yield Violation("pod lists GID 0 in supplementalGroups", f"{base}.supplementalGroups[{i}]")
    for c in wl.containers:
        if as_int(c.security_context.get("runAsGroup")) == 0:
            yield Violation(f"container {c.name!r} sets runAsGroup 0 (root group)",
                            f"{c.path}.securityContext.runAsGroup")


# --- host filesystem (WKL-007) ----------------------------------------------------------------


@check(
    id="workload-host-path",
    title="Pods must not mount hostPath volumes",
    requirements=("2.2.6",),
    blog=("R5",),
    severity=Severity.HIGH,
    targets=("workload",),
    remediation="Replace hostPath volumes with emptyDir, configMap, secret or persistent volumes.",
    refs=("WKL-007", "C-0045", "C-0048", "KSV-0023", "KSV-0121"),
    cel="!has(variables.podSpec.volumes) || variables.podSpec.volumes.all(v, !has(v.hostPath))",
)
def host_path(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """A hostPath volume reaches past the container boundary into the node's filesystem: node credentials,
    other pods' data and logs that may hold cardholder data."""
    for vpath, vol in wl.volumes():
        if "hostPath" not in vol:
            continue
        path = mapping(vol.get("hostPath")).get("path")
        yield Violation(
            f"volume {vol.get('name')!r} mounts host path {path if isinstance(path, str) else '(unset)'!r}",
            f"{vpath}.hostPath.path",
        )


@check(
    id="workload-container-runtime-socket",
    title="Pods must not mount the container runtime socket",
    requirements=("2.2.6",),
    blog=("R5",),
    severity=Severity.CRITICAL,
    targets=("workload",),
    remediation="Remove hostPath volumes that expose docker, containerd, CRI-O or podman sockets or /run.",
    refs=("WKL-007", "C-0074", "KSV-0006", "CKV_K8S_27"),
    cel=(
        "!has(variables.podSpec.volumes) || variables.podSpec.volumes.all(v, !has(v.hostPath) || "
        "!has(v.hostPath.path) || !v.hostPath.path.startsWith('/') || !(('/' + "
        "v.hostPath.path.split('/').filter(p, p != '' && p != '.').join('/')) in ['/', '/run', "
        "'/run/containerd', '/run/crio', '/run/docker', '/run/k3s/containerd', '/run/podman', "
        "'/var/run', '/var/run/containerd', '/var/run/crio', '/var/run/docker', '/var/run/podman'] || "
        "(size(v.hostPath.path.split('/').filter(p, p != '' && p != '.')) > 0 && "
        "v.hostPath.path.split('/').filter(p, p != '' && p != "
        "'.')[size(v.hostPath.path.split('/').filter(p, p != '' && p != '.')) - 1] in "
        "['containerd.sock', 'cri-dockerd.sock', 'crio.sock', 'docker.sock', 'dockershim.sock', "
        "'podman.sock'])))"
    ),
)
def container_runtime_socket(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """Whoever talks to the runtime socket can start a privileged container on the node: it is root on the
    node. Mounting /run or /var/run (or the runtime's own directory) exposes the socket just the same."""
    for vpath, vol in wl.volumes():
        path = mapping(vol.get("hostPath")).get("path")
        what = runtime_socket(path)
        if what is not None:
            yield Violation(
                f"volume {vol.get('name')!r} mounts host path {path!r}, {what}", f"{vpath}.hostPath.path"
            )


# --- seccomp, AppArmor, SELinux, sysctls, procMount (WKL-008, WKL-009) --------------------------


@check(
    id="workload-seccomp",
    title="Containers must run under a RuntimeDefault or Localhost seccomp profile",
    requirements=("2.2.6",),
    blog=("R5",),
    severity=Severity.MEDIUM,
    targets=("workload",),
    remediation="Set securityContext.seccompProfile.type to RuntimeDefault in the pod spec.",
    refs=("WKL-008", "C-0210", "KSV-0030", "KSV-0104", "CIS 5.6.2", "CKV_K8S_31"),
    cel=(
        "(has(variables.podSpec.os) && has(variables.podSpec.os.name) && "
        "variables.podSpec.os.name.lowerAscii() == 'windows') || "
        "(!(has(variables.podSecurityContext.seccompProfile) && "
        "has(variables.podSecurityContext.seccompProfile.type) && "
        "variables.podSecurityContext.seccompProfile.type == 'Unconfined') && "
        "!('seccomp.security.alpha.kubernetes.io/pod' in variables.podAnnotations && "
        "variables.podAnnotations['seccomp.security.alpha.kubernetes.io/pod'].trim() in ['unconfined', "
        "'Unconfined']) && variables.containers.all(c, !(has(c.securityContext) && "
        "has(c.securityContext.seccompProfile) && has(c.securityContext.seccompProfile.type) && "
        "c.securityContext.seccompProfile.type == 'Unconfined') && "
        "!(('container.seccomp.security.alpha.kubernetes.io/' + c.name) in variables.podAnnotations && "
        "variables.podAnnotations['container.seccomp.security.alpha.kubernetes.io/' + c.name].trim() in "
        "['unconfined', 'Unconfined']) && ((has(c.securityContext) && "
        "has(c.securityContext.seccompProfile) && has(c.securityContext.seccompProfile.type) && "
        "c.securityContext.seccompProfile.type != '') ? c.securityContext.seccompProfile.type in "
        "['RuntimeDefault', 'Localhost'] : ((has(variables.podSecurityContext.seccompProfile) && "
        "has(variables.podSecurityContext.seccompProfile.type) && "
        "variables.podSecurityContext.seccompProfile.type != '') ? "
        "variables.podSecurityContext.seccompProfile.type in ['RuntimeDefault', 'Localhost'] : "
        "((('container.seccomp.security.alpha.kubernetes.io/' + c.name) in variables.podAnnotations && "
        "variables.podAnnotations['container.seccomp.security.alpha.kubernetes.io/' + c.name].trim() != "
        "'') ? (variables.podAnnotations['container.seccomp.security.alpha.kubernetes.io/' + "
        "c.name].trim() in ['runtime/default', 'docker/default', 'RuntimeDefault', 'Localhost'] || "
        "variables.podAnnotations['container.seccomp.security.alpha.kubernetes.io/' + "
        "c.name].trim().startsWith('localhost/')) : (('seccomp.security.alpha.kubernetes.io/pod' in "
        "variables.podAnnotations && "
        "variables.podAnnotations['seccomp.security.alpha.kubernetes.io/pod'].trim() != '') && "
        "(variables.podAnnotations['seccomp.security.alpha.kubernetes.io/pod'].trim() in "
        "['runtime/default', 'docker/default', 'RuntimeDefault', 'Localhost'] || "
        "variables.podAnnotations['seccomp.security.alpha.kubernetes.io/pod'].trim().startsWith('localhost/'))))))))"
    ),
)
def seccomp(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """Without a seccomp filter every syscall reaches the shared kernel, the widest escape surface there is.
    A container is covered by its own profile, else the pod's, else the legacy annotations; Unconfined is
    reported wherever it is written, even where a container overrides it (restricted Pod Security)."""
    if is_windows(wl):
        return
    ann = wl.pod_annotations
    pod_type = seccomp_type(wl.pod_security_context)
    pod_ann = seccomp_from_annotation(ann.get(SECCOMP_POD_ANNOTATION))
    if pod_type == "Unconfined":
        yield Violation("pod sets seccompProfile Unconfined",
                        f"{wl.spec_path}.securityContext.seccompProfile.type")
    if pod_ann == "Unconfined":
        yield Violation(f"pod annotation {SECCOMP_POD_ANNOTATION} is unconfined",
                        annotation_path(wl, SECCOMP_POD_ANNOTATION))
    for c in wl.containers:
        c_type = seccomp_type(c.security_context)
        key = SECCOMP_CONTAINER_ANNOTATION_PREFIX + c.name
        c_ann = seccomp_from_annotation(ann.get(key))
        field_path = f"{c.path}.securityContext.seccompProfile.type"
        if c_type == "Unconfined":
            yield Violation(f"container {c.name!r} sets seccompProfile Unconfined", field_path)
        if c_ann == "Unconfined":
            yield Violation(f"annotation {key} makes container {c.name!r} unconfined",
                            annotation_path(wl, key))
        decided = next((v for v in (c_type, pod_type, c_ann, pod_ann) if v is not None), None)
        if decided is None:
            yield Violation(f"container {c.name!r} has no seccomp profile (RuntimeDefault or Localhost)",
                            field_path)
        elif decided not in SECCOMP_OK and decided != "Unconfined":
            yield Violation(f"container {c.name!r} has unknown seccomp profile {decided!r}", field_path)


@check(
    id="workload-apparmor",
    title="Containers must not run AppArmor unconfined",
    requirements=("2.2.6",),
    blog=("R5",),
    severity=Severity.MEDIUM,
    targets=("workload",),
    remediation="Remove the Unconfined AppArmor profile and use RuntimeDefault or a Localhost profile.",
    refs=("WKL-009", "C-0055", "KSV-0002"),
    cel=(
        "!(has(variables.podSecurityContext.appArmorProfile) && "
        "has(variables.podSecurityContext.appArmorProfile.type) && "
        "variables.podSecurityContext.appArmorProfile.type == 'Unconfined') && "
        "variables.containers.all(c, !(has(c.securityContext) && has(c.securityContext.appArmorProfile) "
        "&& has(c.securityContext.appArmorProfile.type) && c.securityContext.appArmorProfile.type == "
        "'Unconfined') && !(('container.apparmor.security.beta.kubernetes.io/' + c.name) in "
        "variables.podAnnotations && "
        "variables.podAnnotations['container.apparmor.security.beta.kubernetes.io/' + "
        "c.name].trim().lowerAscii() == 'unconfined'))"
    ),
)
def apparmor(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """AppArmor is the node's mandatory access control; an explicit Unconfined switches it off for the
    container. Unset is left to the runtime default, so only an explicit Unconfined fails."""
    found: list[tuple[str, str]] = []
    if mapping(wl.pod_security_context.get("appArmorProfile")).get("type") == "Unconfined":
        found.append(("pod sets appArmorProfile Unconfined",
                      f"{wl.spec_path}.securityContext.appArmorProfile.type"))
    ann = wl.pod_annotations
    for c in wl.containers:
        sc = c.security_context
        if "appArmorProfile" in sc and mapping(sc["appArmorProfile"]).get("type") == "Unconfined":
            found.append((f"container {c.name!r} sets appArmorProfile Unconfined",
                          f"{c.path}.securityContext.appArmorProfile.type"))
        if ann:
            key = APPARMOR_ANNOTATION_PREFIX + c.name
            value = ann.get(key)
            if isinstance(value, str) and value.strip().lower() == "unconfined":
                found.append((f"annotation {key} makes container {c.name!r} AppArmor-unconfined",
                              annotation_path(wl, key)))
    if found:
        note = " in a CDE workload" if ctx.scope.of_workload(wl) is Scope.CDE else ""
        for message, path in found:
            yield Violation(message + note, path)


def _selinux(options: object, who: str, path: str) -> Iterator[Violation]:
    opts = mapping(options)
    for key in ("user", "role"):
        value = opts.get(key)
        if value not in (None, ""):
            yield Violation(f"{who} sets a custom SELinux {key} {value!r}", f"{path}.seLinuxOptions.{key}")
    stype = opts.get("type")
    if stype not in (None, "") and stype not in SELINUX_TYPES:
        yield Violation(f"{who} sets SELinux type {stype!r}, which is not a container type",
                        f"{path}.seLinuxOptions.type")


@check(
    id="workload-selinux-custom",
    title="Pods must not set custom SELinux users, roles or types",
    requirements=("2.2.6",),
    blog=("R5",),
    severity=Severity.MEDIUM,
    targets=("workload",),
    remediation="Remove seLinuxOptions user and role and use one of the container_* SELinux types.",
    refs=("WKL-009", "KSV-0025"),
    cel=(
        "(!has(variables.podSecurityContext.seLinuxOptions) || "
        "((!has(variables.podSecurityContext.seLinuxOptions.user) || "
        "variables.podSecurityContext.seLinuxOptions.user == '') && "
        "(!has(variables.podSecurityContext.seLinuxOptions.role) || "
        "variables.podSecurityContext.seLinuxOptions.role == '') && "
        "(!has(variables.podSecurityContext.seLinuxOptions.type) || "
        "variables.podSecurityContext.seLinuxOptions.type == '' || "
        "variables.podSecurityContext.seLinuxOptions.type in ['container_engine_t', 'container_init_t', "
        "'container_kvm_t', 'container_t']))) && variables.containers.all(c, !(has(c.securityContext) && "
        "has(c.securityContext.seLinuxOptions)) || ((!has(c.securityContext.seLinuxOptions.user) || "
        "c.securityContext.seLinuxOptions.user == '') && (!has(c.securityContext.seLinuxOptions.role) || "
        "c.securityContext.seLinuxOptions.role == '') && (!has(c.securityContext.seLinuxOptions.type) || "
        "c.securityContext.seLinuxOptions.type == '' || c.securityContext.seLinuxOptions.type in "
        "['container_engine_t', 'container_init_t', 'container_kvm_t', 'container_t'])))"
    ),
)
def selinux_custom(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """A custom SELinux user, role or type can lift the container out of the confined container domain
    (e.g. spc_t); the baseline Pod Security Standard allows only the container_* types and a level."""
    yield from _selinux(wl.pod_security_context.get("seLinuxOptions"), "pod",
                        f"{wl.spec_path}.securityContext")
    for c in wl.containers:
        options = c.security_context.get("seLinuxOptions")
        if options:
            yield from _selinux(options, f"container {c.name!r}", f"{c.path}.securityContext")


@check(
    id="workload-unsafe-sysctls",
    title="Pods must set only safe sysctls",
    requirements=("2.2.6",),
    blog=("R5",),
    severity=Severity.MEDIUM,
    targets=("workload",),
    remediation="Remove every sysctl that is not on the Pod Security Standard baseline safe list.",
    refs=("WKL-009", "KSV-0026"),
    cel=(
        "!has(variables.podSecurityContext.sysctls) || variables.podSecurityContext.sysctls.all(s, "
        "has(s.name) && s.name in ['kernel.shm_rmid_forced', 'net.ipv4.ip_local_port_range', "
        "'net.ipv4.ip_local_reserved_ports', 'net.ipv4.ip_unprivileged_port_start', "
        "'net.ipv4.ping_group_range', 'net.ipv4.tcp_fin_timeout', 'net.ipv4.tcp_keepalive_intvl', "
        "'net.ipv4.tcp_keepalive_probes', 'net.ipv4.tcp_keepalive_time', 'net.ipv4.tcp_syncookies'])"
    ),
)
def unsafe_sysctls(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """Sysctls outside the namespaced safe set change kernel behaviour for every pod on the node."""
    items = wl.pod_security_context.get("sysctls")
    if not isinstance(items, list):
        return
    for i, item in enumerate(items):
        name = mapping(item).get("name")
        if name not in SAFE_SYSCTLS:
            yield Violation(f"pod sets unsafe sysctl {name!r}",
                            f"{wl.spec_path}.securityContext.sysctls[{i}].name")


@check(
    id="workload-proc-mount",
    title="Containers must use the default /proc mount",
    requirements=("2.2.6",),
    blog=("R5",),
    severity=Severity.MEDIUM,
    targets=("workload",),
    remediation="Remove securityContext.procMount or set it to Default.",
    refs=("WKL-009", "KSV-0027"),
    cel=(
        "variables.containers.all(c, !(has(c.securityContext) && has(c.securityContext.procMount)) || "
        "c.securityContext.procMount == 'Default')"
    ),
)
def proc_mount(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """procMount Unmasked exposes kernel interfaces under /proc that the default mask hides."""
    for c in wl.containers:
        value = c.security_context.get("procMount")
        if value is not None and value != "Default":
            yield Violation(f"container {c.name!r} sets procMount {value!r}",
                            f"{c.path}.securityContext.procMount")


@check(
    id="workload-windows-host-process",
    title="Pods must not run Windows HostProcess containers",
    requirements=("2.2.6", "1.3.1"),
    blog=("R5",),
    severity=Severity.CRITICAL,
    targets=("workload",),
    remediation="Remove windowsOptions.hostProcess from the pod and container securityContext.",
    refs=("WKL-006", "KSV-0103"),
    cel=(
        "!(has(variables.podSecurityContext.windowsOptions) && "
        "has(variables.podSecurityContext.windowsOptions.hostProcess) && "
        "variables.podSecurityContext.windowsOptions.hostProcess == true) && variables.containers.all(c, "
        "!(has(c.securityContext) && has(c.securityContext.windowsOptions) && "
        "has(c.securityContext.windowsOptions.hostProcess) && "
        "c.securityContext.windowsOptions.hostProcess == true))"
    ),
)
def windows_host_process(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """A HostProcess container runs as a process on the Windows node with the node's network: the Windows
    equivalent of privileged plus hostNetwork."""
    if is_true(mapping(wl.pod_security_context.get("windowsOptions")).get("hostProcess")):
        yield Violation("pod sets windowsOptions.hostProcess",
                        f"{wl.spec_path}.securityContext.windowsOptions.hostProcess")
    for c in wl.containers:
        options = c.security_context.get("windowsOptions")
        if options and is_true(mapping(options).get("hostProcess")):
            yield Violation(f"container {c.name!r} sets windowsOptions.hostProcess",
                            f"{c.path}.securityContext.windowsOptions.hostProcess")


# --- sandboxing, resources, interactive access (WKL-010, WKL-012, CFG-006) ----------------------


@check(
    id="workload-sandboxed-runtime-cde",
    title="CDE pods must run in a sandboxed runtime",
    requirements=("2.2.3", "A1.1.1"),
    blog=("R5",),
    severity=Severity.MEDIUM,
    targets=("workload",),
    remediation="Set runtimeClassName to an approved sandboxed RuntimeClass such as gvisor or kata.",
    refs=("WKL-010", "C-0297"),
    applies_to="cde",
)
def sandboxed_runtime_cde(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """The blog runs CDE workloads in sandboxed containers (gVisor, Kata) so a kernel exploit does not reach
    the shared node. A class counts when its name, or the handler of its RuntimeClass object, is approved;
    when the inventory holds RuntimeClass objects the named one must be among them."""
    allowed = ctx.config.sandboxed_runtime_classes
    approved = ", ".join(allowed)
    path = wl.spec_field("runtimeClassName")
    name = wl.pod_spec.get("runtimeClassName")
    if not isinstance(name, str) or not name:
        yield Violation(f"CDE pod sets no runtimeClassName (approved sandboxes: {approved})", path)
        return
    classes = {r.name: r for r in ctx.inventory.of_kind("RuntimeClass")}
    rc = classes.get(name)
    handler = rc.body.get("handler") if rc is not None else None
    if name not in allowed and handler not in allowed:
        yield Violation(f"runtimeClassName {name!r} is not an approved sandbox ({approved})", path)
    elif classes and rc is None:
        yield Violation(f"runtimeClassName {name!r} names no RuntimeClass in the inventory", path)


def _resource_fields(wl: Workload, section: str) -> Iterator[Violation]:
    pod_level = mapping(mapping(wl.pod_spec.get("resources")).get(section))
    for c in run_containers(wl):
        values = mapping(mapping(c.body.get("resources")).get(section))
        for res in ("cpu", "memory"):
            if values.get(res) in (None, "") and pod_level.get(res) in (None, ""):
                kind = "limit" if section == "limits" else "request"
                yield Violation(f"container {c.name!r} has no {res} {kind}",
                                f"{c.path}.resources.{section}.{res}")


@check(
    id="workload-resource-limits",
    title="Containers must set CPU and memory limits",
    requirements=("2.2.6",),
    blog=("R5",),
    severity=Severity.LOW,
    targets=("workload",),
    remediation="Set cpu and memory in resources.limits on every container and init container.",
    refs=("WKL-012", "C-0009", "C-0270", "C-0271", "KSV-0011", "KSV-0018", "CKV_K8S_11", "CKV_K8S_13"),
    cel=(
        "variables.runContainers.all(c, ['cpu', 'memory'].all(r, (has(c.resources) && "
        "has(c.resources.limits) && r in c.resources.limits && c.resources.limits[r] != '') || "
        "(has(variables.podSpec.resources) && has(variables.podSpec.resources.limits) && r in "
        "variables.podSpec.resources.limits && variables.podSpec.resources.limits[r] != '')))"
    ),
)
def resource_limits(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """An unbounded container can starve its neighbours on the node, including CDE security agents (PCI
    container guidance 11.1). Pod-level resources (spec.resources) satisfy the rule for every container."""
    yield from _resource_fields(wl, "limits")


@check(
    id="workload-resource-requests",
    title="Containers must set CPU and memory requests",
    requirements=("2.2.6",),
    blog=("R5",),
    severity=Severity.LOW,
    targets=("workload",),
    remediation="Set cpu and memory in resources.requests on every container and init container.",
    refs=("WKL-012", "C-0268", "C-0269", "KSV-0015", "KSV-0016", "CKV_K8S_10", "CKV_K8S_12"),
    cel=(
        "variables.runContainers.all(c, ['cpu', 'memory'].all(r, (has(c.resources) && "
        "has(c.resources.requests) && r in c.resources.requests && c.resources.requests[r] != '') || "
        "(has(variables.podSpec.resources) && has(variables.podSpec.resources.requests) && r in "
        "variables.podSpec.resources.requests && variables.podSpec.resources.requests[r] != '')))"
    ),
)
def resource_requests(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """Without requests the scheduler cannot reserve capacity, so security agents and CDE workloads are the
    first to be evicted under pressure."""
    yield from _resource_fields(wl, "requests")


@check(
    id="workload-interactive-tty-cde",
    title="CDE containers must not allocate stdin or a TTY",
    requirements=("2.2.4", "2.2.5"),
    blog=("R2",),
    severity=Severity.MEDIUM,
    targets=("workload",),
    remediation="Remove stdin and tty from CDE containers and use audited break-glass access instead.",
    refs=("CFG-006", "K8sDisallowInteractiveTTY"),
    applies_to="cde",
    cel=(
        "variables.containers.all(c, !(has(c.stdin) && c.stdin == true) && !(has(c.tty) && c.tty == "
        "true))"
    ),
)
def interactive_tty_cde(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """An interactive terminal is functionality a CDE service does not need (2.2.4) and invites hands-on
    changes inside cardholder-data systems; debug containers with a TTY count too."""
    for c in wl.containers:
        for key in ("stdin", "tty"):
            if is_true(c.body.get(key)):
                yield Violation(f"container {c.name!r} sets {key}: true", f"{c.path}.{key}")

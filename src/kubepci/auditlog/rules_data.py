"""Value types and default lists for the automated log review (PCI DSS 10.4.1.1).

The review rules live in :mod:`kubepci.auditlog.rules_k8s` (stateless, one audit event at a time)
and :mod:`kubepci.auditlog.rules` (the stateful :class:`~kubepci.auditlog.rules.Reviewer`). Both
share the types defined here, so they sit in a module of their own that imports neither.

Every detection has an id ``D01``..``D22`` (reference/audit-trail.md section 7) and one or more
*checks* (``D15.privileged``): a detection names the risk, a check names one concrete way to see
it. ``tests/unit/auditlog/falco_rule_mapping.yaml`` maps checks to Falco rule names.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from ipaddress import ip_network
from typing import NamedTuple

from kubepci.model import Severity

__all__ = [
    "CHECKS",
    "DEFAULT_ADMIN_USERNAMES",
    "DEFAULT_CREDENTIAL_MARKERS",
    "DEFAULT_SCANNER_USER_AGENTS",
    "DEFAULT_SECRET_READERS",
    "DEFAULT_TRUSTED_SYSTEM_USERS",
    "DETECTION_PCI",
    "FALCO_METRICS_RULE",
    "KUBE_CONTROLLER_SERVICEACCOUNTS",
    "LOG_CLEARING_RULES",
    "SENSITIVE_HOST_PATHS",
    "SYSTEM_LEVEL_RESOURCES",
    "Alert",
    "CheckSpec",
    "Priority",
    "ReviewContext",
    "parse_time",
]


class Priority(enum.IntEnum):
    """Falco's priority scale, ordered so ``priority >= Priority.NOTICE`` reads naturally.

    Falco's names are used (not kubepci's :class:`~kubepci.model.Severity`) because alerts are
    compared with, and forwarded next to, Falco's own; :attr:`severity` converts.
    """

    DEBUG = 0
    INFORMATIONAL = 1
    NOTICE = 2
    WARNING = 3
    ERROR = 4
    CRITICAL = 5
    ALERT = 6
    EMERGENCY = 7

    @property
    def label(self) -> str:
        """Falco's spelling, e.g. ``Warning``."""
        return self.name.capitalize()

    @property
    def severity(self) -> Severity:
        if self >= Priority.CRITICAL:
            return Severity.CRITICAL
        return {
            Priority.ERROR: Severity.HIGH,
            Priority.WARNING: Severity.MEDIUM,
            Priority.NOTICE: Severity.LOW,
        }.get(self, Severity.INFO)

    @classmethod
    def parse(cls, text: object) -> Priority | None:
        """Accept Falco and falcosidekick spellings (``Warning``, ``WARNING``, ``INFO``); else None."""
        if not isinstance(text, str):
            return None
        key = text.strip().upper()
        if key == "INFO":
            return cls.INFORMATIONAL
        try:
            return cls[key]
        except KeyError:
            return None


class CheckSpec(NamedTuple):
    """Static facts about one check: its detection, title, default priority."""

    detection: str
    title: str
    priority: Priority
    activity: bool = (
        False  # part of Falco's "activity stream"; off when ReviewContext.activity_events is False
    )


_P = Priority

#: PCI DSS v4.0.1 sub-requirements per detection (reference/audit-trail.md section 7).
DETECTION_PCI: Mapping[str, tuple[str, ...]] = {
    "D01": ("10.2.1.1", "10.2.1.2"),
    "D02": ("10.2.1.1",),
    "D03": ("10.2.1.2",),
    "D04": ("10.2.1.1",),
    "D05": ("10.2.1.4",),
    "D06": ("10.2.1.5",),
    "D07": ("10.2.1.5",),
    "D08": ("10.2.1.4",),
    "D09": ("10.2.1.4", "8.3.4"),
    "D10": ("10.2.1.4",),
    "D11": ("10.2.1.2",),
    "D12": ("10.2.1.2",),
    "D13": ("10.7.2", "10.2.1.7"),
    "D14": ("10.2.1.6", "10.7.2"),
    "D15": ("10.2.1.7",),
    "D16": ("10.2.1.7",),
    "D17": ("1.3.1", "1.4.1", "4.2.1"),
    "D18": ("8.3.2",),
    "D19": ("10.2.1.7",),
    "D20": ("10.2.1.7",),
    "D21": ("10.2.1.1", "11.5.1"),
    "D22": ("10.7.2", "10.7.3"),
}

CHECKS: Mapping[str, CheckSpec] = {
    "D01.exec_attach": CheckSpec("D01", "Exec/attach into pod", _P.NOTICE),
    "D02.portforward": CheckSpec("D02", "Port-forward into pod", _P.NOTICE),
    "D02.proxy": CheckSpec("D02", "API-server proxy into pod, service or node", _P.NOTICE),
    "D03.ephemeral_container": CheckSpec("D03", "Ephemeral debug container added", _P.NOTICE),
    "D04.secret_read": CheckSpec("D04", "Secret read by unexpected identity", _P.WARNING),
    "D05.secret_denied": CheckSpec("D05", "Secret access denied", _P.WARNING),
    "D06.bind_cluster_admin": CheckSpec("D06", "Binding to cluster-admin", _P.WARNING),
    "D06.wildcard_role": CheckSpec("D06", "Role with wildcard verbs or resources", _P.WARNING),
    "D06.write_role": CheckSpec("D06", "Role with write privileges", _P.NOTICE),
    "D06.pod_exec_role": CheckSpec("D06", "Role allowing pod exec/attach", _P.WARNING),
    "D06.escalation_role": CheckSpec("D06", "Role with escalate/bind/impersonate", _P.WARNING),
    "D06.system_role_changed": CheckSpec("D06", "System role modified or deleted", _P.WARNING),
    "D06.rbac_modified": CheckSpec("D06", "Role or binding modified", _P.NOTICE),
    "D06.role_created": CheckSpec("D06", "Role created", _P.INFORMATIONAL, activity=True),
    "D06.role_deleted": CheckSpec("D06", "Role deleted", _P.INFORMATIONAL, activity=True),
    "D06.clusterrole_created": CheckSpec("D06", "ClusterRole created", _P.INFORMATIONAL, activity=True),
    "D06.clusterrole_deleted": CheckSpec("D06", "ClusterRole deleted", _P.INFORMATIONAL, activity=True),
    "D06.rolebinding_created": CheckSpec("D06", "RoleBinding created", _P.INFORMATIONAL, activity=True),
    "D06.rolebinding_deleted": CheckSpec("D06", "RoleBinding deleted", _P.INFORMATIONAL, activity=True),
    "D06.clusterrolebinding_created": CheckSpec(
        "D06", "ClusterRoleBinding created", _P.INFORMATIONAL, activity=True
    ),
    "D06.clusterrolebinding_deleted": CheckSpec(
        "D06", "ClusterRoleBinding deleted", _P.INFORMATIONAL, activity=True
    ),
    "D07.serviceaccount_created": CheckSpec("D07", "ServiceAccount created", _P.INFORMATIONAL, activity=True),
    "D07.serviceaccount_deleted": CheckSpec("D07", "ServiceAccount deleted", _P.INFORMATIONAL, activity=True),
    "D07.secret_created": CheckSpec("D07", "Secret created", _P.INFORMATIONAL, activity=True),
    "D07.secret_deleted": CheckSpec("D07", "Secret deleted", _P.INFORMATIONAL, activity=True),
    "D07.token_requested": CheckSpec("D07", "ServiceAccount token requested by a user", _P.NOTICE),
    "D07.sa_token_secret": CheckSpec("D07", "Long-lived ServiceAccount token Secret created", _P.NOTICE),
    "D07.csr_created": CheckSpec("D07", "CertificateSigningRequest created", _P.NOTICE),
    "D07.csr_approved": CheckSpec("D07", "CertificateSigningRequest approved", _P.WARNING),
    "D08.anonymous_allowed": CheckSpec("D08", "Anonymous request allowed", _P.WARNING),
    "D09.authn_failure_burst": CheckSpec("D09", "Burst of failed authentications", _P.WARNING),
    "D10.authz_failure_burst": CheckSpec("D10", "Burst of authorization failures", _P.WARNING),
    "D10.access_review_sweep": CheckSpec("D10", "Permission enumeration sweep", _P.WARNING),
    "D10.scanner_user_agent": CheckSpec("D10", "Known attack/scanner tool", _P.WARNING),
    "D11.impersonation": CheckSpec("D11", "Impersonation used", _P.NOTICE),
    "D12.admin_activity": CheckSpec("D12", "Activity by a default admin account", _P.WARNING),
    "D12.masters_group": CheckSpec("D12", "Activity by a system:masters member", _P.NOTICE),
    "D12.user_not_allowed": CheckSpec("D12", "Activity by a user outside the allowed set", _P.WARNING),
    "D13.admission_config_changed": CheckSpec("D13", "Admission control configuration changed", _P.WARNING),
    "D14.pipeline_tampering": CheckSpec("D14", "Audit/detection pipeline changed", _P.ERROR),
    "D14.events_deleted": CheckSpec("D14", "Kubernetes events deleted", _P.WARNING),
    "D14.log_clearing": CheckSpec("D14", "Log clearing on a node or container", _P.ERROR),
    "D14.source_silent": CheckSpec("D14", "Audit source silent", _P.ERROR),
    "D14.source_resumed": CheckSpec("D14", "Audit source resumed", _P.NOTICE),
    "D15.disallowed_image": CheckSpec("D15", "Pod with image outside the allowed set", _P.WARNING),
    "D15.privileged": CheckSpec("D15", "Privileged container", _P.WARNING),
    "D15.sensitive_mount": CheckSpec("D15", "Sensitive hostPath mount", _P.WARNING),
    "D15.host_network": CheckSpec("D15", "Pod on the host network", _P.WARNING),
    "D15.host_pid": CheckSpec("D15", "Pod in the host PID namespace", _P.WARNING),
    "D15.host_ipc": CheckSpec("D15", "Pod in the host IPC namespace", _P.WARNING),
    "D15.psa_violation": CheckSpec("D15", "Pod Security Admission violation", _P.WARNING),
    "D15.deployment_created": CheckSpec("D15", "Deployment created", _P.INFORMATIONAL, activity=True),
    "D15.deployment_deleted": CheckSpec("D15", "Deployment deleted", _P.INFORMATIONAL, activity=True),
    "D16.pod_in_kube_namespace": CheckSpec("D16", "Pod created in a kube namespace", _P.WARNING),
    "D16.serviceaccount_in_kube_namespace": CheckSpec(
        "D16", "ServiceAccount created in a kube namespace", _P.WARNING
    ),
    "D17.nodeport_service": CheckSpec("D17", "NodePort service", _P.WARNING),
    "D17.loadbalancer_service": CheckSpec("D17", "LoadBalancer service", _P.NOTICE),
    "D17.ingress_without_tls": CheckSpec("D17", "Ingress without TLS", _P.WARNING),
    "D17.service_created": CheckSpec("D17", "Service created", _P.INFORMATIONAL, activity=True),
    "D17.service_deleted": CheckSpec("D17", "Service deleted", _P.INFORMATIONAL, activity=True),
    "D18.configmap_credentials": CheckSpec("D18", "ConfigMap with credentials", _P.WARNING),
    "D18.configmap_created": CheckSpec("D18", "ConfigMap created", _P.INFORMATIONAL, activity=True),
    "D18.configmap_deleted": CheckSpec("D18", "ConfigMap deleted", _P.INFORMATIONAL, activity=True),
    "D19.namespace_created": CheckSpec("D19", "Namespace created", _P.INFORMATIONAL, activity=True),
    "D19.namespace_deleted": CheckSpec("D19", "Namespace deleted", _P.INFORMATIONAL, activity=True),
    "D19.disallowed_namespace": CheckSpec("D19", "Namespace outside the allowed set", _P.WARNING),
    "D19.system_object_changed": CheckSpec("D19", "System-level object created or deleted", _P.NOTICE),
    "D20.untrusted_node_joined": CheckSpec("D20", "Untrusted node joined", _P.ERROR),
    "D20.untrusted_node_join_failed": CheckSpec("D20", "Untrusted node tried to join", _P.WARNING),
    "D21.runtime_alert": CheckSpec("D21", "Runtime alert", _P.NOTICE),
    "D22.webhook_failed_open": CheckSpec("D22", "Admission webhook failed open", _P.ERROR),
    "D22.falco_metrics_missing": CheckSpec("D22", "Falco metrics snapshot missing", _P.ERROR),
    "D22.falco_metrics_resumed": CheckSpec("D22", "Falco metrics snapshot resumed", _P.NOTICE),
    "D22.audit_backend_errors": CheckSpec("D22", "API-server audit backend errors", _P.ERROR),
}

#: Default administrator user names of common installers (Falco's ``full_admin_k8s_users``).
DEFAULT_ADMIN_USERNAMES = frozenset(
    {
        "admin",
        "kubernetes-admin",
        "kubernetes-admin@kubernetes",
        "kubernetes-admin@cluster.local",
        "minikube-user",
    }
)

#: Host paths whose mount gives a container control of the node (exact match after normalising).
SENSITIVE_HOST_PATHS = frozenset(
    {
        "/",
        "/proc",
        "/etc",
        "/root",
        "/home/admin",
        "/var/run/docker.sock",
        "/var/run/crio/crio.sock",
        "/run/containerd/containerd.sock",
        "/var/lib/kubelet",
        "/var/lib/kubelet/pki",
        "/etc/kubernetes",
        "/etc/kubernetes/manifests",
    }
)

#: Substrings that betray a credential in ConfigMap data (matched case-insensitively).
DEFAULT_CREDENTIAL_MARKERS = (
    "aws_access_key_id",
    "aws-access-key-id",
    "aws_s3_access_key_id",
    "aws-s3-access-key-id",
    "secret_access_key",
    "secret-access-key",
    "password",
    "passphrase",
    "private key-----",
)

#: User-agent fragments of offensive Kubernetes tooling (matched case-insensitively).
DEFAULT_SCANNER_USER_AGENTS = ("kube-hunter", "peirates", "kubiscan", "kubeletctl", "kdigger", "kubesploit")

#: Control-plane identities whose writes are routine (fnmatch patterns).
DEFAULT_TRUSTED_SYSTEM_USERS = (
    "system:apiserver",
    "system:kube-controller-manager",
    "system:kube-scheduler",
    "system:node:*",
    "system:serviceaccount:kube-system:*",
)

#: Identities that read Secrets as a matter of course, in every namespace (fnmatch patterns).
DEFAULT_SECRET_READERS = (
    "system:apiserver",
    "system:kube-controller-manager",
    "system:node:*",
    "system:serviceaccount:kube-system:*",
)

#: ServiceAccounts the kube-controller-manager creates in kube-system for its own controllers.
KUBE_CONTROLLER_SERVICEACCOUNTS = frozenset(
    {
        "attachdetach-controller",
        "bootstrap-signer",
        "certificate-controller",
        "clusterrole-aggregation-controller",
        "coredns",
        "cronjob-controller",
        "daemon-set-controller",
        "deployment-controller",
        "disruption-controller",
        "endpoint-controller",
        "endpointslice-controller",
        "endpointslicemirroring-controller",
        "ephemeral-volume-controller",
        "expand-controller",
        "generic-garbage-collector",
        "horizontal-pod-autoscaler",
        "job-controller",
        "kube-proxy",
        "namespace-controller",
        "node-controller",
        "persistent-volume-binder",
        "pod-garbage-collector",
        "pv-protection-controller",
        "pvc-protection-controller",
        "replicaset-controller",
        "replication-controller",
        "resourcequota-controller",
        "root-ca-cert-publisher",
        "service-account-controller",
        "service-controller",
        "statefulset-controller",
        "token-cleaner",
        "ttl-after-finished-controller",
        "ttl-controller",
    }
)

#: Cluster-scoped resources whose creation or deletion changes the platform itself (10.2.1.7).
SYSTEM_LEVEL_RESOURCES = frozenset(
    {
        "customresourcedefinitions",
        "apiservices",
        "priorityclasses",
        "runtimeclasses",
        "storageclasses",
        "csidrivers",
        "ingressclasses",
        "flowschemas",
        "prioritylevelconfigurations",
    }
)

#: Falco rules (falcosecurity/rules) that report log files being wiped; routed to D14, not D21.
LOG_CLEARING_RULES = frozenset({"Clear Log Activities"})

#: The rule name of Falco's periodic metrics alert (``metrics.output_rule: true``), our heartbeat.
FALCO_METRICS_RULE = "Falco internal: metrics snapshot"


def _frozen(items: frozenset[str] | None) -> frozenset[str] | None:
    return None if items is None else frozenset(items)


@dataclass(frozen=True, slots=True)
class ReviewContext:
    """Everything site-specific the rules need; immutable so one instance serves all threads.

    ``None`` for an allow-list means "check disabled" (Falco ships those rules switched off or
    with lists nobody can pre-fill); an empty set means "nothing is allowed". Patterns in user
    lists are :func:`fnmatch.fnmatchcase` globs; ``{namespace}`` in a secret-reader pattern is
    replaced by the namespace of the Secret.
    """

    cde_namespaces: frozenset[str] = frozenset()
    secret_readers: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: {"*": DEFAULT_SECRET_READERS}, hash=False
    )
    admin_usernames: frozenset[str] = DEFAULT_ADMIN_USERNAMES
    allowed_users: frozenset[str] | None = None
    allowed_namespaces: frozenset[str] | None = None
    allowed_images: frozenset[str] | None = None
    privileged_images: frozenset[str] = frozenset()
    sensitive_mount_images: frozenset[str] = frozenset()
    host_network_images: frozenset[str] = frozenset()
    host_pid_images: frozenset[str] = frozenset()
    host_ipc_images: frozenset[str] = frozenset()
    sensitive_host_paths: frozenset[str] = SENSITIVE_HOST_PATHS
    kube_namespaces: frozenset[str] = frozenset({"kube-system", "kube-public"})
    kube_namespace_images: frozenset[str] = frozenset()
    kube_namespace_serviceaccounts: frozenset[str] = KUBE_CONTROLLER_SERVICEACCOUNTS
    system_role_exceptions: frozenset[str] = frozenset(
        {"system:coredns", "system:managed-certificate-controller"}
    )
    allowed_nodes: tuple[str, ...] | None = None
    allowed_node_cidrs: tuple[str, ...] | None = None
    trusted_system_users: tuple[str, ...] = DEFAULT_TRUSTED_SYSTEM_USERS
    own_webhook_names: frozenset[str] = frozenset()
    trail_namespaces: frozenset[str] = frozenset({"kubepci"})
    falco_namespaces: frozenset[str] = frozenset({"falco"})
    credential_markers: tuple[str, ...] = DEFAULT_CREDENTIAL_MARKERS
    scanner_user_agents: tuple[str, ...] = DEFAULT_SCANNER_USER_AGENTS
    activity_events: bool = True
    burst_window: timedelta = timedelta(seconds=300)
    authn_failure_threshold: int = 10
    authz_failure_threshold: int = 10
    access_review_threshold: int = 10
    silence_thresholds: Mapping[str, timedelta] = field(
        default_factory=lambda: {"k8s_audit": timedelta(minutes=5), "falco": timedelta(hours=2)},
        hash=False,
    )
    falco_metrics_max_age: timedelta = timedelta(hours=2)
    runtime_min_priority: Priority = Priority.NOTICE
    runtime_host_alerts: bool = True
    max_tracked_keys: int = 10_000

    def __post_init__(self) -> None:
        for name in ("authn_failure_threshold", "authz_failure_threshold", "access_review_threshold"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.burst_window <= timedelta(0):
            raise ValueError("burst_window must be positive")
        if self.max_tracked_keys < 1:
            raise ValueError("max_tracked_keys must be at least 1")
        for cidr in self.allowed_node_cidrs or ():
            ip_network(cidr, strict=False)  # raises ValueError on a typo instead of silently never matching
        object.__setattr__(self, "allowed_users", _frozen(self.allowed_users))
        object.__setattr__(self, "allowed_namespaces", _frozen(self.allowed_namespaces))
        object.__setattr__(self, "allowed_images", _frozen(self.allowed_images))


@dataclass(frozen=True, slots=True)
class Alert:
    """One review finding with the evidence a reviewer needs to act on it (PCI 10.2.2 fields).

    ``message`` is written for a human and never quotes request bodies, so an alert can be
    forwarded to chat or a ticket without leaking what the audited request carried.
    """

    rule_id: str
    check: str
    title: str
    priority: Priority
    pci: tuple[str, ...]
    message: str
    source: str
    audit_id: str | None = None
    user: str | None = None
    verb: str | None = None
    resource: str | None = None
    namespace: str | None = None
    name: str | None = None
    source_ip: str | None = None
    timestamp: datetime | None = None

    @property
    def severity(self) -> Severity:
        return self.priority.severity


_TIME = re.compile(r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})")


_MICRO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")


def parse_time(value: object) -> datetime | None:
    """Parse RFC 3339 with any number of fraction digits (Falco prints nanoseconds) into aware UTC."""
    if not isinstance(value, str):
        return None
    if len(value) == 27 and _MICRO_TIME.fullmatch(value):  # Kubernetes MicroTime: a third of the cost
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    match = _TIME.fullmatch(value.strip())
    if match is None:
        return None
    day, clock, fraction, zone = match.groups()
    micros = (fraction or "")[:6].ljust(6, "0")
    offset = "+00:00" if zone in ("Z", "z") else zone
    try:
        parsed = datetime.fromisoformat(f"{day}T{clock}.{micros}{offset}")
    except ValueError:
        return None
    return parsed.astimezone(UTC)

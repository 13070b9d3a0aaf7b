"""Control-plane configuration (controls.md CFG-003..006, CFG-010, DAT-001, TLS-001/002/004,
IDN-001/002/008, LOG-001/002/004, VUL-006).

The flags come from the control-plane containers themselves (see ``_control_plane``): mirror pods in
a live cluster's kube-system, static-pod manifests scanned from ``/etc/kubernetes/manifests``, or
hosted control planes running as Deployments. The same bodies serve all three. Where the API does
not show a control plane (managed clusters), these checks have no target and the provider's
evidence is needed instead. None of them runs at admission: static pods are configured on the
node, and denying their mirror pods would only hide them.

The configuration files the flags point at are linted when the scan includes them: an
``audit.k8s.io/v1`` Policy or an ``apiserver.config.k8s.io/v1`` EncryptionConfiguration as a YAML
document of its own (give it a ``metadata.name``), or held in a ConfigMap key.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from kubepci.checks._audit_policy import audit_gaps
from kubepci.checks._control_plane import (
    APISERVER,
    CONTROLLER_MANAGER,
    ETCD,
    SCHEDULER,
    ComponentFlags,
    components,
    documents_in,
    parse_bool,
    runs_control_plane,
)
from kubepci.checks._registry import Check, CheckContext, check
from kubepci.checks._util import mapping
from kubepci.inventory import Workload
from kubepci.model import Resource, Severity, Violation

__all__ = ["APPROVED_CIPHER_SUITES", "MINOR_RELEASES"]

#: controls.md §5.2 recommended default: TLS 1.3 suites, ECDHE with AEAD for TLS 1.2, no static RSA
APPROVED_CIPHER_SUITES = frozenset({
    "TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305", "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
})
_ACCEPTED_PROVIDERS = ("aescbc", "aesgcm", "secretbox", "kms")
#: admission plugins on by default (kube-apiserver 1.30+), before --enable/--disable-admission-plugins
_DEFAULT_ADMISSION = frozenset({
    "NamespaceLifecycle", "LimitRanger", "ServiceAccount", "TaintNodesByCondition", "PodSecurity", "Priority",
    "DefaultTolerationSeconds", "DefaultStorageClass", "StorageObjectInUseProtection", "PersistentVolumeClaimResize",
    "RuntimeClass", "CertificateApproval", "CertificateSigning", "ClusterTrustBundleAttest",
    "CertificateSubjectRestriction", "DefaultIngressClass", "MutatingAdmissionWebhook", "ValidatingAdmissionPolicy",
    "ValidatingAdmissionWebhook", "ResourceQuota",
})
_REQUIRED_ADMISSION = ("NodeRestriction", "NamespaceLifecycle", "ServiceAccount", "PodSecurity")
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
#: upstream minor releases (v1.34 onwards: the planned dates of the release cycle)
MINOR_RELEASES: Mapping[int, dt.date] = {
    27: dt.date(2023, 4, 11), 28: dt.date(2023, 8, 15), 29: dt.date(2023, 12, 13), 30: dt.date(2024, 4, 17),
    31: dt.date(2024, 8, 13), 32: dt.date(2024, 12, 11), 33: dt.date(2025, 4, 23), 34: dt.date(2025, 8, 27),
    35: dt.date(2025, 12, 17), 36: dt.date(2026, 4, 22), 37: dt.date(2026, 8, 26),
}
_RELEASE_CADENCE_DAYS = 122  # three minors a year
_SUPPORTED_MINORS = 3  # the current minor and the two before it get patches
_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?")


def _control_plane(**kw: Any) -> Callable[[Callable[[Workload, CheckContext], Iterator[Violation]]], Check]:
    """Shared metadata: workloads (static pods live in exempt kube-system), never at admission."""
    return check(targets=("workload",), include_exempt=True, admission=False, where=runs_control_plane, **kw)


def _missing(flags: ComponentFlags, name: str, why: str) -> Violation:
    return Violation(f"{flags.label} does not set --{name}: {why}", flags.path(name))


@_control_plane(
    id="apiserver-anonymous-auth",
    title="The API server must reject anonymous requests",
    requirements=("2.2.6", "8.3.1"),
    blog=("R2",),
    severity=Severity.HIGH,
    remediation="Start kube-apiserver with --anonymous-auth=false.",
    refs=("CFG-003", "KCV-0001", "C-0005", "CIS 1.2.1", "CKV_K8S_68"),
)
def apiserver_anonymous_auth(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """Anonymous requests carry no individual identity (8.3.1), and any RBAC grant to system:anonymous
    or system:unauthenticated opens the API to the network. The flag defaults to true."""
    for f in components(wl, APISERVER):
        value = f.get("anonymous-auth")
        if value is None:
            yield _missing(f, "anonymous-auth", "anonymous requests are accepted by default")
        elif parse_bool(value) is not False:
            yield Violation(f"{f.label} sets --anonymous-auth={value}", f.path("anonymous-auth"))


@_control_plane(
    id="apiserver-insecure-serving",
    title="The API server must serve only over authenticated TLS",
    requirements=("2.2.5", "2.2.7"),
    blog=("R2",),
    severity=Severity.CRITICAL,
    remediation="Remove --insecure-port and --insecure-bind-address and keep --secure-port non-zero.",
    refs=("CFG-003", "KCV-0017", "C-0113", "CIS 1.2.1", "CKV_K8S_86", "CKV_K8S_88", "CKV_K8S_89"),
)
def apiserver_insecure_serving(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """The insecure port skips authentication and authorization entirely and talks plain HTTP: whoever
    reaches it is cluster-admin."""
    for f in components(wl, APISERVER):
        port = f.get("insecure-port")
        if port is not None and port.strip() not in ("", "0"):
            yield Violation(f"{f.label} opens the unauthenticated HTTP port --insecure-port={port}",
                            f.path("insecure-port"))
        if f.has("insecure-bind-address"):
            yield Violation(f"{f.label} sets --insecure-bind-address={f.get('insecure-bind-address')}",
                            f.path("insecure-bind-address"))
        if (f.get("secure-port") or "").strip() == "0":
            yield Violation(f"{f.label} disables the TLS port with --secure-port=0", f.path("secure-port"))


@_control_plane(
    id="apiserver-authorization-mode",
    title="The API server must authorize with Node and RBAC, never AlwaysAllow",
    requirements=("2.2.6", "7.3.1", "7.3.3"),
    blog=("R2", "R7"),
    severity=Severity.CRITICAL,
    remediation="Start kube-apiserver with --authorization-mode=Node,RBAC.",
    refs=("CFG-004", "KCV-0007", "KCV-0008", "KCV-0009", "CIS 1.2.6", "CIS 1.2.7", "CIS 1.2.8", "CKV_K8S_74",
          "CKV_K8S_75", "CKV_K8S_77"),
)
def apiserver_authorization_mode(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """Access by need to know (7.3.1) and deny-by-default (7.3.3) only exist when RBAC decides; AlwaysAllow
    (the default when no mode is given) grants every authenticated request, and without the Node
    authorizer every kubelet can read every Secret."""
    for f in components(wl, APISERVER):
        if f.has("authorization-config") and not f.has("authorization-mode"):
            continue  # structured authorizer chain in a file; kube-apiserver rejects both flags together
        modes = f.items("authorization-mode")
        if not modes:
            yield _missing(f, "authorization-mode", "the default mode is AlwaysAllow")
            continue
        if "AlwaysAllow" in modes:
            yield Violation(f"{f.label} authorizes every request: --authorization-mode includes AlwaysAllow",
                            f.path("authorization-mode"))
        for mode in ("Node", "RBAC"):
            if mode not in modes:
                yield Violation(f"{f.label}: --authorization-mode={','.join(modes)} lacks {mode}",
                                f.path("authorization-mode"))


@_control_plane(
    id="apiserver-admission-plugins",
    title="The API server must run the hardening admission plugins",
    requirements=("2.2.6",),
    blog=("R2",),
    severity=Severity.MEDIUM,
    remediation="Add NodeRestriction to --enable-admission-plugins and remove AlwaysAdmit and any disabled default.",
    refs=("CFG-005", "KCV-0010", "KCV-0016", "C-0121", "CIS 1.2.9", "CIS 1.2.14", "CKV_K8S_79", "CKV_K8S_82",
          "CKV_K8S_83", "CKV_K8S_85"),
)
def apiserver_admission_plugins(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """NodeRestriction keeps a compromised kubelet to its own node's objects; NamespaceLifecycle,
    ServiceAccount and PodSecurity are on by default and switching them off removes namespace,
    token and pod-security enforcement. AlwaysAdmit admits everything."""
    for f in components(wl, APISERVER):
        legacy = f.items("admission-control")
        if legacy:
            enabled, where = set(legacy), f.path("admission-control")
        else:
            enabled = (set(_DEFAULT_ADMISSION) | set(f.items("enable-admission-plugins"))) - set(
                f.items("disable-admission-plugins"))
            where = f.path("enable-admission-plugins")
        if "AlwaysAdmit" in enabled:
            yield Violation(f"{f.label} enables the AlwaysAdmit admission plugin", where)
        for plugin in _REQUIRED_ADMISSION:
            if plugin not in enabled:
                how = "is disabled" if plugin in f.items("disable-admission-plugins") else "is not enabled"
                path = f.path("disable-admission-plugins") if how == "is disabled" else where
                yield Violation(f"{f.label}: admission plugin {plugin} {how}", path)


@_control_plane(
    id="control-plane-profiling",
    title="Control-plane components must not expose profiling endpoints",
    requirements=("2.2.4", "2.2.5"),
    blog=("R2",),
    severity=Severity.LOW,
    remediation="Set --profiling=false on kube-apiserver, kube-controller-manager and kube-scheduler.",
    refs=("CFG-006", "KCV-0018", "KCV-0034", "KCV-0039", "C-0129", "CIS 1.2.15", "CIS 1.3.2", "CIS 1.4.1",
          "CKV_K8S_90", "CKV_K8S_107", "CKV_K8S_114"),
)
def control_plane_profiling(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """pprof endpoints are unneeded functionality in production (2.2.4): they leak memory contents and let
    a caller burn CPU. They are on by default."""
    for f in components(wl, APISERVER, CONTROLLER_MANAGER, SCHEDULER):
        value = f.get("profiling")
        if value is None:
            yield _missing(f, "profiling=false", "profiling is on by default")
        elif parse_bool(value) is not False:
            yield Violation(f"{f.label} sets --profiling={value}", f.path("profiling"))
    for f in components(wl, ETCD):
        if f.bool("enable-pprof", False):
            yield Violation(f"{f.label} enables --enable-pprof", f.path("enable-pprof"))


@_control_plane(
    id="control-plane-bind-address",
    title="Controller-manager and scheduler must listen on loopback only",
    requirements=("2.2.4", "2.2.5"),
    blog=("R2",),
    severity=Severity.MEDIUM,
    remediation="Set --bind-address=127.0.0.1 on kube-controller-manager and kube-scheduler.",
    refs=("CFG-006", "KCV-0040", "KCV-0041", "C-0150", "C-0152", "CIS 1.3.7", "CIS 1.4.2", "CKV_K8S_113",
          "CKV_K8S_115"),
)
def control_plane_bind_address(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """Their health and metrics ports need no network exposure; by default they listen on every interface."""
    for f in components(wl, CONTROLLER_MANAGER, SCHEDULER):
        address = f.get("bind-address")
        if address is None:
            yield _missing(f, "bind-address", "it listens on all interfaces by default")
        elif address.strip().strip("[]") not in _LOOPBACK:
            yield Violation(f"{f.label} listens on --bind-address={address}", f.path("bind-address"))


@_control_plane(
    id="apiserver-audit-logging",
    title="The API server must write an audit log",
    requirements=("10.2.1", "10.2.1.3"),
    blog=("R10",),
    severity=Severity.HIGH,
    remediation="Set --audit-policy-file and --audit-log-path (or --audit-webhook-config-file) on kube-apiserver.",
    refs=("LOG-001", "KCV-0019", "C-0067", "CIS 1.2.16", "CKV_K8S_91"),
)
def apiserver_audit_logging(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """Requirement 10 starts with a record of every API action. Without a policy file the apiserver emits
    no audit events at all, and without a log path or webhook the events go nowhere."""
    for f in components(wl, APISERVER):
        if not f.has("audit-policy-file"):
            yield _missing(f, "audit-policy-file", "no audit events are generated without a policy")
        if not f.has("audit-log-path") and not f.has("audit-webhook-config-file"):
            yield Violation(f"{f.label} sets neither --audit-log-path nor --audit-webhook-config-file: audit "
                            "events have no backend", f.path("audit-log-path"))


@_control_plane(
    id="apiserver-audit-log-rotation",
    title="The API server's audit log file must keep enough history",
    requirements=("10.5.1",),
    blog=("R10",),
    severity=Severity.LOW,
    remediation="Set --audit-log-maxage=30, --audit-log-maxbackup=10 and --audit-log-maxsize=100 or higher.",
    refs=("LOG-004", "KCV-0020", "KCV-0021", "KCV-0022", "CIS 1.2.17", "CIS 1.2.18", "CIS 1.2.19", "CKV_K8S_92",
          "CKV_K8S_93", "CKV_K8S_94"),
)
def apiserver_audit_log_rotation(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """The local file is the buffer that survives a broken log shipper; CIS sizes it at 30 days, 10 files of
    100 MB. Retention itself (12 months) is proven on the central store. Logging to stdout (``-``) or
    no log file at all has nothing to rotate."""
    for f in components(wl, APISERVER):
        path = f.get("audit-log-path")
        tuned = [n for n in ("maxage", "maxbackup", "maxsize") if f.get(f"audit-log-{n}") is not None]
        if (path is None and not tuned) or (path or "").strip() == "-":
            continue
        for name, floor in (("maxage", 30), ("maxbackup", 10), ("maxsize", 100)):
            flag = f"audit-log-{name}"
            value = f.get(flag)
            if value is None:
                yield _missing(f, flag, f"set it to {floor} or more")
            elif not value.strip().isdigit() or int(value) < floor:
                yield Violation(f"{f.label} sets --{flag}={value}, below {floor}", f.path(flag))


@check(
    id="audit-policy-coverage",
    title="The audit policy must record PCI-relevant requests without logging secrets",
    requirements=("10.2.1.1", "10.2.1.2", "10.2.1.5", "10.2.1.7", "10.2.2"),
    blog=("R10",),
    severity=Severity.HIGH,
    targets=("Policy", "ConfigMap"),
    include_exempt=True,
    admission=False,
    remediation="Adopt the recommended PCI audit policy: Metadata for secrets and tokens, Request for RBAC changes, "
    "a Metadata catch-all.",
    refs=("LOG-002", "C-0161", "CIS 3.2.2"),
)
def audit_policy_coverage(resource: Resource, ctx: CheckContext) -> Iterator[Violation]:
    """The policy decides what the trail can ever show. It is evaluated rule by rule, first match wins,
    against requests a person could make, and each shortfall names the rule that decides it. An
    ``audit.k8s.io`` Policy is read as its own document or from a ConfigMap key holding it."""
    for doc in documents_in(resource, "Policy", "audit.k8s.io"):
        for gap in audit_gaps(doc.body):
            yield Violation(gap.message(), doc.path(gap.path))


@_control_plane(
    id="apiserver-encryption-at-rest",
    title="The API server must encrypt Secrets at rest",
    requirements=("3.5.1", "3.6.1", "8.3.2"),
    blog=("R3",),
    severity=Severity.HIGH,
    remediation="Set --encryption-provider-config to an EncryptionConfiguration whose first provider for secrets "
    "is kms, aescbc, aesgcm or secretbox.",
    refs=("DAT-001", "KCV-0030", "C-0066", "CIS 1.2.27", "CKV_K8S_104"),
)
def apiserver_encryption_at_rest(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """Without an encryption provider, Secrets (credentials, keys, possibly card data) sit in etcd and in
    every etcd backup in plain text (3.5.1)."""
    for f in components(wl, APISERVER):
        if not f.has("encryption-provider-config"):
            yield _missing(f, "encryption-provider-config", "Secrets are stored in etcd unencrypted")


def _provider_names(entry: Mapping[str, Any]) -> list[str]:
    providers = entry.get("providers")
    names: list[str] = []
    for p in providers if isinstance(providers, list) else ():
        names.extend(str(k) for k in mapping(p))
    return names


def _covers_secrets(entry: Mapping[str, Any]) -> bool:
    resources = entry.get("resources")
    return isinstance(resources, list) and any(r in ("secrets", "*.", "*.*") for r in resources)


@check(
    id="encryption-config-secrets",
    title="The encryption configuration must encrypt Secrets with a strong provider first",
    requirements=("3.5.1", "3.6.1", "8.3.2"),
    blog=("R3",),
    severity=Severity.HIGH,
    targets=("EncryptionConfiguration", "ConfigMap"),
    include_exempt=True,
    admission=False,
    remediation="Put a kms, aescbc, aesgcm or secretbox provider first in the entry that lists secrets.",
    refs=("DAT-001", "C-0141", "C-0142", "CIS 1.2.28", "api_server_encryption_provider_cipher"),
)
def encryption_config_secrets(resource: Resource, ctx: CheckContext) -> Iterator[Violation]:
    """The first provider of the first entry naming secrets encrypts every write; ``identity`` first means
    new Secrets are stored in plain text even if a key is configured behind it. Key material is never
    quoted. Accepted providers follow kubescape and CaC (kms, aescbc, aesgcm, secretbox)."""
    for doc in documents_in(resource, "EncryptionConfiguration", "apiserver.config.k8s.io"):
        entries = doc.body.get("resources")
        chosen = None
        for i, entry in enumerate(entries if isinstance(entries, list) else ()):
            if isinstance(entry, Mapping) and _covers_secrets(entry):
                chosen = (i, entry)
                break
        if chosen is None:
            yield Violation("EncryptionConfiguration has no entry for secrets: they are stored unencrypted",
                            doc.path("resources"))
            continue
        index, entry = chosen
        names = _provider_names(entry)
        if not names or names[0] not in _ACCEPTED_PROVIDERS:
            first = names[0] if names else "none"
            yield Violation(f"secrets are written with provider {first!r}; the first provider must be one of "
                            f"{', '.join(_ACCEPTED_PROVIDERS)}", doc.path(f"resources[{index}].providers[0]"))


def _tls_versions(ctx: CheckContext) -> tuple[str, ...]:
    return ("VersionTLS13",) if ctx.config.tls_min_version == "1.3" else ("VersionTLS12", "VersionTLS13")


@_control_plane(
    id="apiserver-tls-min-version",
    title="The API server must refuse TLS versions below 1.2",
    requirements=("4.2.1", "2.2.7"),
    blog=("R4",),
    severity=Severity.HIGH,
    remediation="Start kube-apiserver with --tls-min-version=VersionTLS12 (or VersionTLS13).",
    refs=("TLS-001", "tls_version_check_apiserver", "CNTR-K8-000170"),
)
def apiserver_tls_min_version(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """4.2.1 allows only secure protocol versions with no fallback. An explicit flag is auditable where the
    built-in default differs between releases; kubepci.yaml ``tls.min_version: "1.3"`` raises the bar."""
    allowed = _tls_versions(ctx)
    for f in components(wl, APISERVER):
        value = f.get("tls-min-version")
        if value is None:
            yield _missing(f, "tls-min-version", f"set {' or '.join(allowed)} explicitly")
        elif value.strip() not in allowed:
            yield Violation(f"{f.label} sets --tls-min-version={value}; allowed: {', '.join(allowed)}",
                            f.path("tls-min-version"))


@_control_plane(
    id="control-plane-cipher-suites",
    title="The API server and etcd must offer only strong cipher suites",
    requirements=("4.2.1", "2.2.7", "12.3.3"),
    blog=("R4",),
    severity=Severity.MEDIUM,
    remediation="Set --tls-cipher-suites (etcd: --cipher-suites) to TLS 1.3 suites and ECDHE suites with AES-GCM "
    "or ChaCha20-Poly1305 only.",
    refs=("TLS-002", "C-0143", "C-0277", "CIS 1.2.29", "CIS 2.7", "CKV_K8S_105", "api_server_tls_cipher_suites",
          "etcd_check_cipher_suite"),
)
def control_plane_cipher_suites(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """Go's default list still offers CBC-mode suites; static-RSA key exchange has no forward secrecy. The
    approved list (controls.md §5.2: TLS 1.3, ECDHE with AEAD) is recorded as 12.3.3 evidence. A
    component restricted to TLS 1.3 needs no list: TLS 1.3 suites are all AEAD and not configurable."""
    for f in components(wl, APISERVER, ETCD):
        flag = "cipher-suites" if f.component == ETCD else "tls-cipher-suites"
        if (f.get("tls-min-version") or "").strip() in ("VersionTLS13", "TLS1.3"):
            continue
        suites = f.items(flag)
        if not suites:
            yield _missing(f, flag, "the default list includes CBC-mode suites")
            continue
        weak = [s for s in suites if s not in APPROVED_CIPHER_SUITES]
        if weak:
            yield Violation(f"{f.label} offers cipher suites outside the approved list: {', '.join(weak)}",
                            f.path(flag))


_APISERVER_FILES = (
    (("tls-cert-file", "tls-private-key-file"), "its serving certificate is then self-signed and unverifiable"),
    (("client-ca-file",), "client certificates cannot be verified"),
    (("kubelet-certificate-authority",), "kubelet serving certificates are not verified"),
    (("kubelet-client-certificate", "kubelet-client-key"), "kubelets cannot authenticate the API server"),
    (("etcd-cafile",), "the etcd server is not verified"),
    (("etcd-certfile", "etcd-keyfile"), "etcd cannot authenticate the API server"),
    (("service-account-key-file",), "service-account tokens are verified with an ephemeral key"),
)
_CONTROLLER_FILES = (
    (("root-ca-file",), "pods do not get the CA to verify the API server"),
    (("service-account-private-key-file",), "service-account tokens are signed with an ephemeral key"),
)


@_control_plane(
    id="control-plane-tls-wiring",
    title="Control-plane connections must be mutually authenticated with TLS",
    requirements=("2.2.5", "2.2.7", "4.2.1"),
    blog=("R4",),
    severity=Severity.HIGH,
    remediation="Give kube-apiserver and kube-controller-manager their certificate, key and CA flags and keep "
    "--use-service-account-credentials=true.",
    refs=("TLS-004", "KCV-0004", "KCV-0025", "KCV-0035", "C-0116", "C-0136", "CIS 1.2.4", "CIS 1.2.5",
          "CIS 1.2.22", "CIS 1.3.3", "CKV_K8S_71", "CKV_K8S_72", "CKV_K8S_73", "CKV_K8S_97", "CKV_K8S_99",
          "CKV_K8S_100", "CKV_K8S_102", "CKV_K8S_108", "CKV_K8S_110", "CKV_K8S_111", "CKV_K8S_112"),
)
def control_plane_tls_wiring(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """Administrative and internal channels must be encrypted and authenticated (2.2.7): API server to etcd
    and to kubelets, clients to the API server. Controllers using one shared identity cannot be told
    apart in the audit log, and disabling kubelet serving-certificate rotation leaves certificates
    to expire or to be reused."""
    for f in components(wl, APISERVER, CONTROLLER_MANAGER):
        table = _APISERVER_FILES if f.component == APISERVER else _CONTROLLER_FILES
        for names, why in table:
            for name in names:
                if not f.has(name):
                    yield _missing(f, name, why)
        if f.component == APISERVER:
            if f.get("kubelet-https") is not None and not f.bool("kubelet-https", True):
                yield Violation(f"{f.label} talks to kubelets over plain HTTP (--kubelet-https=false)",
                                f.path("kubelet-https"))
            servers = f.items("etcd-servers")
            plain = [s for s in servers if s.startswith("http://")]
            if plain:
                yield Violation(f"{f.label} reaches etcd over plain HTTP: {', '.join(plain)}", f.path("etcd-servers"))
            continue
        if not f.bool("use-service-account-credentials", False):
            yield Violation(f"{f.label} does not set --use-service-account-credentials=true: every controller acts "
                            "as one identity", f.path("use-service-account-credentials"))
        for gate in f.items("feature-gates"):
            name, _, value = gate.partition("=")
            if name.strip() == "RotateKubeletServerCertificate" and parse_bool(value) is False:
                yield Violation(f"{f.label} disables kubelet serving-certificate rotation "
                                "(RotateKubeletServerCertificate=false)", f.path("feature-gates"))


@_control_plane(
    id="apiserver-oidc-authentication",
    title="People must authenticate to the API server through the identity provider",
    requirements=("8.2.1", "8.3.1"),
    blog=("R8",),
    severity=Severity.MEDIUM,
    remediation="Configure --oidc-issuer-url (https) and --oidc-client-id, or an AuthenticationConfiguration "
    "with a JWT issuer.",
    refs=("IDN-001", "idp_is_configured"),
)
def apiserver_oidc_authentication(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """Individual, revocable identities for staff come from the IdP (8.2.1); without it people share client
    certificates, which Kubernetes cannot revoke. A structured ``--authentication-config`` counts."""
    for f in components(wl, APISERVER):
        if f.has("authentication-config"):
            continue
        issuer = f.get("oidc-issuer-url")
        if not issuer or not issuer.strip():
            yield _missing(f, "oidc-issuer-url", "no identity provider authenticates people")
            continue
        if not issuer.strip().startswith("https://"):
            yield Violation(f"{f.label} trusts an OIDC issuer over plain HTTP: {issuer}", f.path("oidc-issuer-url"))
        if not f.has("oidc-client-id"):
            yield _missing(f, "oidc-client-id", "OIDC authentication needs the client id")


@_control_plane(
    id="apiserver-static-credentials",
    title="The API server must not accept static token or password files",
    requirements=("8.2.1", "8.3.1", "8.3.2"),
    blog=("R8",),
    severity=Severity.HIGH,
    remediation="Remove --token-auth-file and --basic-auth-file and authenticate people through OIDC.",
    refs=("IDN-002", "KCV-0002", "C-0114", "CIS 1.2.2", "CKV_K8S_69", "CKV_K8S_70"),
)
def apiserver_static_credentials(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """Static tokens and passwords live in clear text on the control-plane nodes, never expire and can only
    be changed by restarting the API server: the opposite of 8.3.2 and 8.3.9."""
    for f in components(wl, APISERVER):
        for name in ("token-auth-file", "basic-auth-file"):
            if f.has(name):
                yield Violation(f"{f.label} accepts static credentials from --{name}", f.path(name))


@_control_plane(
    id="apiserver-service-account-tokens",
    title="Service-account tokens must stay bound and short-lived",
    requirements=("8.6.3", "8.3.2"),
    blog=("R8",),
    severity=Severity.MEDIUM,
    remediation="Keep --service-account-lookup=true and set --service-account-extend-token-expiration=false.",
    refs=("IDN-008", "KCV-0024", "C-0135", "CIS 1.2.21", "CKV_K8S_96"),
)
def apiserver_service_account_tokens(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """Without lookup, a token stays valid after its ServiceAccount is deleted; extended expiration turns
    one-hour projected tokens into year-long ones. Either way a stolen token outlives its purpose (8.6.3)."""
    for f in components(wl, APISERVER):
        if not f.bool("service-account-lookup", True):
            yield Violation(f"{f.label} sets --service-account-lookup=false: deleted accounts' tokens keep working",
                            f.path("service-account-lookup"))
        if f.bool("service-account-extend-token-expiration", True):
            yield Violation(f"{f.label} extends projected token lifetimes to a year "
                            "(--service-account-extend-token-expiration is not false)",
                            f.path("service-account-extend-token-expiration"))


def _non_loopback(urls: list[str]) -> list[str]:
    out = []
    for url in urls:
        host = url.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
        if host not in _LOOPBACK:
            out.append(url)
    return out


@_control_plane(
    id="etcd-client-auth",
    title="etcd must require certificates from clients and peers",
    requirements=("2.2.5", "2.2.7"),
    blog=("R2",),
    severity=Severity.HIGH,
    remediation="Start etcd with --client-cert-auth=true, --cert-file/--key-file, and for peers "
    "--peer-client-cert-auth=true with --peer-cert-file/--peer-key-file, without auto-TLS.",
    refs=("CFG-010", "KCV-0042", "KCV-0047", "C-0153", "C-0158", "CIS 2.1", "CIS 2.6", "CKV_K8S_116",
          "CKV_K8S_117", "CKV_K8S_118", "CKV_K8S_119"),
)
def etcd_client_auth(wl: Workload, ctx: CheckContext) -> Iterator[Violation]:
    """etcd holds every Secret of the cluster; anyone who can talk to it unauthenticated reads and rewrites
    them all. Auto-generated TLS certificates are self-signed and prove nothing. Peer settings are
    required once peers talk over a non-loopback address."""
    for f in components(wl, ETCD):
        if not f.bool("client-cert-auth", False):
            yield Violation(f"{f.label} does not require client certificates (--client-cert-auth=true)",
                            f.path("client-cert-auth"))
        for name in ("cert-file", "key-file"):
            if not f.has(name):
                yield _missing(f, name, "clients cannot verify etcd")
        if f.bool("auto-tls", False):
            yield Violation(f"{f.label} uses self-signed --auto-tls certificates", f.path("auto-tls"))
        plain = [u for u in _non_loopback(f.items("listen-client-urls")) if u.startswith("http://")]
        if plain:
            yield Violation(f"{f.label} serves clients over plain HTTP: {', '.join(plain)}",
                            f.path("listen-client-urls"))
        peers = _non_loopback(f.items("listen-peer-urls"))
        if not peers and not any(f.has(n) for n in ("peer-cert-file", "peer-key-file")):
            continue
        for name in ("peer-cert-file", "peer-key-file"):
            if not f.has(name):
                yield _missing(f, name, "peer traffic is not authenticated")
        if not f.bool("peer-client-cert-auth", False):
            yield Violation(f"{f.label} does not require peer certificates (--peer-client-cert-auth=true)",
                            f.path("peer-client-cert-auth"))
        if f.bool("peer-auto-tls", False):
            yield Violation(f"{f.label} uses self-signed --peer-auto-tls certificates", f.path("peer-auto-tls"))


def _latest_minor(today: dt.date | None) -> tuple[int, bool]:
    """(current upstream minor as of ``today``, whether it was extrapolated past the table)."""
    known = max(MINOR_RELEASES)
    if today is None:
        return known, False
    released = [m for m, day in MINOR_RELEASES.items() if day <= today]
    latest = max(released) if released else min(MINOR_RELEASES)
    if latest == known:
        extra = (today - MINOR_RELEASES[known]).days // _RELEASE_CADENCE_DAYS
        return known + extra, extra > 0
    return latest, False


def _minor(version: str) -> tuple[int, int] | None:
    match = _VERSION.match(version.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


@check(
    id="cluster-version-supported",
    title="Kubernetes must run a release that still receives security patches",
    requirements=("6.3.3", "12.3.4"),
    blog=("R6",),
    severity=Severity.HIGH,
    targets=("ClusterInfo", "Node"),
    include_exempt=True,
    admission=False,
    remediation="Upgrade the control plane and kubelets to one of the three newest Kubernetes minor releases.",
    refs=("VUL-006", "C-0273", "C-0292"),
)
def cluster_version_supported(resource: Resource, ctx: CheckContext) -> Iterator[Violation]:
    """Upstream patches the newest minor release and the two before it; older ones get no security fixes,
    so 6.3.3 (critical patches within a month) cannot be met. The server version comes from the
    ``ClusterInfo`` a live scan records from ``/version``; kubelets report theirs on each Node. Past the
    last release the catalog knows, the current minor is estimated from the four-month cadence."""
    if resource.kind == "Node":
        info = mapping(mapping(resource.body.get("status")).get("nodeInfo"))
        version, path, what = info.get("kubeletVersion"), "status.nodeInfo.kubeletVersion", "kubelet"
    else:
        version, path, what = mapping(resource.body.get("version")).get("gitVersion"), "version.gitVersion", "server"
    if not isinstance(version, str) or not version:
        return
    parsed = _minor(version)
    if parsed is None or parsed[0] != 1:
        yield Violation(f"{what} version {version!r} is not a Kubernetes release version", path)
        return
    today = ctx.now.date() if ctx.now is not None else None
    latest, estimated = _latest_minor(today)
    oldest = latest - _SUPPORTED_MINORS + 1
    if parsed[1] < oldest:
        when = f" as of {today.isoformat()}" if today else ""
        note = f" (estimated from the release cadence after 1.{max(MINOR_RELEASES)})" if estimated else ""
        yield Violation(f"{what} runs Kubernetes {version} (1.{parsed[1]}); upstream supports 1.{oldest}–1.{latest}"
                        f"{when}{note}", path)

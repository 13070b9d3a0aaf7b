"""A real kube-apiserver + etcd on 127.0.0.1 for kubepci's end-to-end tests.

Why a real server: kubepci exports ValidatingAdmissionPolicies, runs an admission webhook and
reads the audit trail; a mock apiserver would only agree with our own assumptions. This module
starts the upstream binaries (built by scripts/build-kube-apiserver.sh) in the envtest shape —
etcd plus kube-apiserver, no kubelet, scheduler or controller-manager — with a PKI generated on
the fly, and talks to it with the standard library only, TLS verified against that PKI.
"""

from __future__ import annotations

import contextlib
import datetime
import http.client
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "BUILD_SCRIPT",
    "K8S_VERSION",
    "Binaries",
    "BinariesMissingError",
    "KubeAPIServer",
    "e2e_optional",
    "find_binaries",
]

_REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = _REPO / "scripts" / "build-kube-apiserver.sh"
SERVICE_CIDR = "10.0.0.0/24"
FIRST_SERVICE_IP = "10.0.0.1"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0


def _pinned_version() -> str:
    """Read the pinned release from the build script, so the two can never disagree."""
    match = re.search(r'^K8S_VERSION="(v[0-9.]+)"$', BUILD_SCRIPT.read_text(encoding="utf-8"), re.M)
    if match is None:
        raise RuntimeError(f"no K8S_VERSION=... line in {BUILD_SCRIPT}")
    return match.group(1)


K8S_VERSION = _pinned_version()


class BinariesMissingError(RuntimeError):
    """kube-apiserver or etcd is not installed; the message says how to get them."""


@dataclass(frozen=True, slots=True)
class Binaries:
    """Absolute paths of the two server binaries."""

    kube_apiserver: Path
    etcd: Path


def e2e_optional() -> bool:
    """True when missing binaries should skip e2e tests instead of failing them (never in CI)."""
    return os.environ.get("KUBEPCI_E2E_OPTIONAL") == "1"


def find_binaries() -> Binaries:
    """Locate the binaries: env overrides first, then the build script's cache and PATH."""
    cache = Path(os.environ.get("KUBEPCI_K8S_CACHE") or Path.home() / ".cache" / "kubepci" / "k8s")
    apiserver = Path(os.environ.get("KUBEPCI_KUBE_APISERVER") or cache / K8S_VERSION / "kube-apiserver")
    etcd_env = os.environ.get("KUBEPCI_ETCD")
    etcd = Path(etcd_env) if etcd_env else Path(shutil.which("etcd") or "etcd")
    missing = [str(p) for p in (apiserver, etcd) if not (p.is_file() and os.access(p, os.X_OK))]
    if missing:
        raise BinariesMissingError(
            f"e2e binaries not found: {', '.join(missing)}; run scripts/build-kube-apiserver.sh "
            f"(builds kube-apiserver {K8S_VERSION} and installs etcd), or set KUBEPCI_KUBE_APISERVER "
            "/ KUBEPCI_ETCD; set KUBEPCI_E2E_OPTIONAL=1 to skip e2e tests instead"
        )
    return Binaries(kube_apiserver=apiserver.resolve(), etcd=etcd.resolve())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pem_key(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class _PKI:
    """A throwaway CA that issues the serving and client certificates the cluster needs."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubepci-e2e-ca")])
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.ca_path = directory / "ca.crt"
        self.ca_path.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        name: str,
        common_name: str,
        *,
        organization: str | None = None,
        ips: tuple[str, ...] = (),
        dns: tuple[str, ...] = (),
    ) -> tuple[Path, Path]:
        """Issue a leaf cert: a serving cert when SANs are given, else a client cert."""
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        if organization:
            attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
        now = datetime.datetime.now(datetime.UTC)
        serving = bool(ips or dns)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if serving else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if serving:
            sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
            sans += [x509.DNSName(d) for d in dns]
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        cert_path, key_path = self.dir / f"{name}.crt", self.dir / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(_pem_key(key))
        key_path.chmod(0o600)
        return cert_path, key_path


class KubeAPIServer:
    """etcd + kube-apiserver on free loopback ports; use as a context manager.

    The admin identity is a client cert in ``system:masters``; ``request`` talks as that
    identity (or anonymously) with TLS verified against the generated CA.
    """

    def __init__(
        self,
        *,
        audit_policy_file: Path | None = None,
        audit_webhook_config_file: Path | None = None,
        audit_log_path: Path | None = None,
        extra_flags: tuple[str, ...] = (),
        binaries: Binaries | None = None,
    ) -> None:
        self.binaries = binaries or find_binaries()
        self._audit_policy_file = audit_policy_file
        self._audit_webhook_config_file = audit_webhook_config_file
        self._audit_log_path = audit_log_path
        self._extra_flags = extra_flags
        self.workdir = Path(tempfile.mkdtemp(prefix="kubepci-k8s-"))
        self.pki = _PKI(self.workdir)
        self.ca_path = self.pki.ca_path
        self.client_cert_path, self.client_key_path = self.pki.issue(
            "admin", "kubepci-admin", organization="system:masters"
        )
        self.kubeconfig_path = self.workdir / "kubeconfig"
        self.etcd_log_path = self.workdir / "etcd.log"
        self.apiserver_log_path = self.workdir / "kube-apiserver.log"
        self.port = 0
        self.url = ""
        self.startup_seconds = 0.0
        self._etcd: subprocess.Popen[bytes] | None = None
        self._apiserver: subprocess.Popen[bytes] | None = None
        self._ssl = ssl.create_default_context(cafile=str(self.ca_path))
        self._ssl.load_cert_chain(str(self.client_cert_path), str(self.client_key_path))
        self._ssl_anonymous = ssl.create_default_context(cafile=str(self.ca_path))

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> KubeAPIServer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start etcd, then the apiserver, and return once /readyz answers 200."""
        began = time.monotonic()
        etcd_url = self._start_etcd()
        self._start_apiserver(etcd_url)
        self._wait_ready(began + READY_TIMEOUT_S)
        self.startup_seconds = time.monotonic() - began
        self._write_kubeconfig()

    def stop(self) -> None:
        """Stop the apiserver first (it hangs on shutdown if etcd goes away), then etcd."""
        _terminate(self._apiserver, STOP_TIMEOUT_S)
        self._apiserver = None
        _terminate(self._etcd, STOP_TIMEOUT_S)
        self._etcd = None
        if os.environ.get("KUBEPCI_E2E_KEEP") != "1":
            shutil.rmtree(self.workdir, ignore_errors=True)

    def rss_bytes(self) -> int:
        """Resident memory of the apiserver process, for the resource figures in reports."""
        if self._apiserver is None:
            return 0
        status = Path(f"/proc/{self._apiserver.pid}/status").read_text(encoding="ascii")
        match = re.search(r"^VmRSS:\s+(\d+) kB$", status, re.M)
        return int(match.group(1)) * 1024 if match else 0

    def _start_etcd(self) -> str:
        client, peer, metrics = _free_port(), _free_port(), _free_port()
        client_url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        args = [
            str(self.binaries.etcd),
            "--name=kubepci",
            f"--data-dir={self.workdir / 'etcd-data'}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=kubepci={peer_url}",
            f"--listen-metrics-urls=http://127.0.0.1:{metrics}",
        ]
        self._etcd = _spawn(args, self.etcd_log_path)
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline:
            if self._etcd.poll() is not None:
                raise RuntimeError(f"etcd exited with {self._etcd.returncode}:\n{_tail(self.etcd_log_path)}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn = http.client.HTTPConnection("127.0.0.1", client, timeout=2)
                try:
                    conn.request("GET", "/health")
                    if b'"true"' in conn.getresponse().read():
                        return client_url
                finally:
                    conn.close()
            time.sleep(0.1)
        raise RuntimeError(f"etcd not healthy within 20 s:\n{_tail(self.etcd_log_path)}")

    def _start_apiserver(self, etcd_url: str) -> None:
        serving_cert, serving_key = self.pki.issue(
            "apiserver",
            "kube-apiserver",
            ips=("127.0.0.1", FIRST_SERVICE_IP),
            dns=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"),
        )
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        sa_key_path, sa_pub_path = self.workdir / "sa.key", self.workdir / "sa.pub"
        sa_key_path.write_bytes(_pem_key(sa_key))
        sa_pub_path.write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        self.port = _free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        args = [
            str(self.binaries.kube_apiserver),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--cert-dir={self.workdir}",
            f"--tls-cert-file={serving_cert}",
            f"--tls-private-key-file={serving_key}",
            f"--client-ca-file={self.ca_path}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={sa_pub_path}",
            f"--service-account-signing-key-file={sa_key_path}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--allow-privileged=true",
            "--endpoint-reconciler-type=none",
            # Explicit although default since 1.30: the admission paths kubepci relies on.
            "--enable-admission-plugins=ValidatingAdmissionPolicy,ValidatingAdmissionWebhook",
        ]
        if self._audit_policy_file is not None:
            args.append(f"--audit-policy-file={self._audit_policy_file}")
            if self._audit_log_path is not None:
                args.append(f"--audit-log-path={self._audit_log_path}")
        if self._audit_webhook_config_file is not None:
            args += [
                f"--audit-webhook-config-file={self._audit_webhook_config_file}",
                "--audit-webhook-batch-max-wait=1s",
            ]
        args += self._extra_flags
        self._apiserver = _spawn(args, self.apiserver_log_path)

    def _wait_ready(self, deadline: float) -> None:
        last = "no answer"
        while time.monotonic() < deadline:
            assert self._apiserver is not None
            if self._apiserver.poll() is not None:
                raise RuntimeError(
                    f"kube-apiserver exited with {self._apiserver.returncode}:\n{_tail(self.apiserver_log_path)}"
                )
            try:
                status, body = self.request("GET", "/readyz", timeout=5.0)
            except (OSError, http.client.HTTPException) as exc:
                last = repr(exc)
            else:
                if status == 200:
                    return
                last = f"HTTP {status}: {body}"
            time.sleep(0.25)
        raise RuntimeError(
            f"kube-apiserver not ready within {READY_TIMEOUT_S:.0f} s (last: {last}):\n{_tail(self.apiserver_log_path)}"
        )

    def _write_kubeconfig(self) -> None:
        # JSON is valid YAML, and kubectl and client libraries accept it as a kubeconfig.
        cluster = {"server": self.url, "certificate-authority": str(self.ca_path)}
        context = {"cluster": "kubepci-e2e", "user": "kubepci-admin"}
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kubepci-e2e", "cluster": cluster}],
            "users": [
                {
                    "name": "kubepci-admin",
                    "user": {
                        "client-certificate": str(self.client_cert_path),
                        "client-key": str(self.client_key_path),
                    },
                }
            ],
            "contexts": [{"name": "kubepci-e2e", "context": context}],
            "current-context": "kubepci-e2e",
        }
        self.kubeconfig_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
        self.kubeconfig_path.chmod(0o600)

    # -- API helpers ---------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        anonymous: bool = False,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> tuple[int, Any]:
        """Send one request; return (status, decoded JSON, or the text when not JSON)."""
        if not self.port:
            raise RuntimeError("kube-apiserver is not started")
        conn = http.client.HTTPSConnection(
            "127.0.0.1",
            self.port,
            timeout=timeout,
            context=self._ssl_anonymous if anonymous else self._ssl,
        )
        headers = {"Accept": "application/json"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = content_type
        try:
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        try:
            return response.status, json.loads(raw) if raw else None
        except ValueError:
            return response.status, raw.decode("utf-8", "replace")

    def ensure_namespace(self, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
        """Create (or relabel) a namespace and its `default` ServiceAccount.

        No controller-manager runs here, so nothing else would create the ServiceAccount,
        and without it every pod create fails with 'serviceaccount "default" not found'.
        """
        ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}
        status, obj = self.request("POST", "/api/v1/namespaces", ns)
        if status == 409 and labels:
            patch = {"metadata": {"labels": labels}}
            status, obj = self.request(
                "PATCH", f"/api/v1/namespaces/{name}", patch, content_type="application/merge-patch+json"
            )
        elif status == 409:
            status, obj = self.request("GET", f"/api/v1/namespaces/{name}")
        if status not in (200, 201):
            raise RuntimeError(f"namespace {name}: HTTP {status}: {obj}")
        sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}
        sa_status, sa_obj = self.request("POST", f"/api/v1/namespaces/{name}/serviceaccounts", sa)
        if sa_status not in (201, 409):
            raise RuntimeError(f"serviceaccount {name}/default: HTTP {sa_status}: {sa_obj}")
        result: dict[str, Any] = obj
        return result


def _spawn(args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        # A new session keeps a Ctrl-C aimed at pytest from killing etcd before the apiserver.
        return subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def _terminate(proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"

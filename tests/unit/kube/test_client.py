"""KubeClient without a cluster: kubeconfig problems and transport failures become KubeAPIError (exit 3).

The happy paths (pagination, discovery, watch, 403 per type) run against a real kube-apiserver in
tests/e2e/test_live_scan.py; here only what needs no server (plus a local TLS socket).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from kubepci.errors import InputError
from kubepci.kube import KubeAPIError, KubeClient
from kubepci.kube.client import _collection_path, _status_error


def _kubeconfig(tmp_path: Path, server: str, user: dict[str, str] | None = None) -> Path:
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "one",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": user or {"token": "t0k3n"}}],
        "contexts": [{"name": "one", "context": {"cluster": "c", "user": "u"}},
                     {"name": "two", "context": {"cluster": "c", "user": "u"}}],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))
    return path


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_kubeconfig_contexts_are_selected_by_name(tmp_path: Path) -> None:
    path = _kubeconfig(tmp_path, "https://127.0.0.1:6443")
    assert KubeClient.from_kubeconfig(path).context == "one"
    client = KubeClient.from_kubeconfig(path, "two")
    assert (client.context, client.server) == ("two", "https://127.0.0.1:6443")


def test_unknown_context_names_the_ones_that_exist(tmp_path: Path) -> None:
    with pytest.raises(KubeAPIError, match=r"no context 'three' \(contexts: one, two\)") as info:
        KubeClient.from_kubeconfig(_kubeconfig(tmp_path, "https://127.0.0.1:6443"), "three")
    assert isinstance(info.value, InputError)
    assert info.value.exit_code == 3


def test_missing_kubeconfig_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(KubeAPIError, match="kubeconfig"):
        KubeClient.from_kubeconfig(tmp_path / "absent")


def test_not_in_a_cluster_is_an_input_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(KubeAPIError, match="not running in a cluster"):
        KubeClient.in_cluster()


def test_connection_refused_is_status_0_with_the_server(tmp_path: Path) -> None:
    server = f"https://127.0.0.1:{_closed_port()}"
    client = KubeClient.from_kubeconfig(_kubeconfig(tmp_path, server))
    with pytest.raises(KubeAPIError, match=f"cannot reach the API server at {server}") as info:
        client.version()
    assert info.value.status == 0


def test_tls_is_verified_by_default(tmp_path: Path) -> None:
    """A server whose certificate no configured CA signed is refused: the TLS handshake fails."""
    import ssl
    import threading

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    import datetime as dt
    import ipaddress

    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "self.crt", tmp_path / "self.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_path, key_path)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]

    def serve() -> None:
        for _ in range(3):  # the client retries twice
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                with ctx.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        client = KubeClient.from_kubeconfig(_kubeconfig(tmp_path, f"https://127.0.0.1:{port}"))
        with pytest.raises(KubeAPIError, match=r"TLS verification failed|certificate verify failed") as info:
            client.version()
        assert info.value.status == 0
    finally:
        listener.close()
        thread.join(timeout=5)


def test_status_errors_keep_the_servers_reason() -> None:
    body = json.dumps({"kind": "Status", "reason": "Forbidden",
                       "message": 'secrets is forbidden: User "x" cannot list resource "secrets"'}).encode()
    err = _status_error(403, body, "/api/v1/secrets")
    assert (err.status, err.reason) == (403, "Forbidden")
    assert str(err) == 'GET /api/v1/secrets: HTTP 403 Forbidden: secrets is forbidden: User "x" cannot list resource ' \
        '"secrets"'
    unauthorized = _status_error(401, b"not json", "/version")
    assert unauthorized.status == 401
    assert "rejected the credentials (401 Unauthorized)" in str(unauthorized)


def test_collection_paths() -> None:
    assert _collection_path("v1", "pods", None) == "/api/v1/pods"
    assert _collection_path("v1", "pods", "payments") == "/api/v1/namespaces/payments/pods"
    assert _collection_path("apps/v1", "deployments", "a b") == "/apis/apps/v1/namespaces/a%20b/deployments"

"""The HTTPS side of the server on loopback: TLS floor, client certificates, certificate rotation."""

from __future__ import annotations

import datetime as dt
import http.client
import ssl
import time
import warnings
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from prometheus_client import CollectorRegistry

from kubepci.admission.decide import Policy
from kubepci.admission.install import issue_certificates
from kubepci.admission.server import AdmissionApp, ServerSettings, StaticSnapshot, WebhookServer
from kubepci.checks import default_catalog
from tests.unit.admission.platform import config, snapshot


def _app() -> AdmissionApp:
    return AdmissionApp(Policy(default_catalog(), config()), StaticSnapshot(snapshot()), registry=CollectorRegistry())


def _write_pair(directory: Path, name: str, days: int = 1) -> bytes:
    bundle = issue_certificates([], ["127.0.0.1"], days=days)
    (directory / f"{name}.crt").write_bytes(bundle.cert_pem)
    (directory / f"{name}.key").write_bytes(bundle.key_pem)
    return bundle.ca_pem


def _client_cert(directory: Path) -> tuple[Path, Path, Path]:
    """A client CA and a client certificate it signed (what the apiserver presents with a kubeconfig)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "apiserver-client-ca")])
    now = dt.datetime.now(dt.UTC)
    ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
            .issuer_name(name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (directory / "client-ca.crt").write_bytes(ca.public_bytes(pem))
    (directory / "client.crt").write_bytes(cert.public_bytes(pem))
    (directory / "client.key").write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption()))
    return directory / "client-ca.crt", directory / "client.crt", directory / "client.key"


def _get(port: int, ctx: ssl.SSLContext, path: str = "/healthz") -> int:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def test_tls_1_1_is_refused_and_1_2_accepted(tmp_path: Path) -> None:
    ca = _write_pair(tmp_path, "tls")
    server = WebhookServer(_app(), ServerSettings(tmp_path / "tls.crt", tmp_path / "tls.key", port=0))
    with server.running():
        ctx = ssl.create_default_context(cadata=ca.decode())
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        assert _get(server.port, ctx) == 200
        assert server.ssl.minimum_version is ssl.TLSVersion.TLSv1_2
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.load_verify_locations(cadata=ca.decode())
        old.set_ciphers("DEFAULT:@SECLEVEL=0")  # the client side would offer TLS 1.1 if the server took it
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            old.minimum_version = ssl.TLSVersion.TLSv1_1
            old.maximum_version = ssl.TLSVersion.TLSv1_1
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _get(server.port, old)


def test_client_certificate_is_required_when_a_client_ca_is_given(tmp_path: Path) -> None:
    ca = _write_pair(tmp_path, "tls")
    client_ca, client_cert, client_key = _client_cert(tmp_path)
    server = WebhookServer(_app(), ServerSettings(tmp_path / "tls.crt", tmp_path / "tls.key", port=0,
                                                  client_ca_file=client_ca))
    with server.running():
        anonymous = ssl.create_default_context(cadata=ca.decode())
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _get(server.port, anonymous)
        authenticated = ssl.create_default_context(cadata=ca.decode())
        authenticated.load_cert_chain(str(client_cert), str(client_key))
        assert _get(server.port, authenticated) == 200


def test_rotated_certificate_is_served_without_a_restart(tmp_path: Path) -> None:
    first_ca = _write_pair(tmp_path, "tls")
    settings = ServerSettings(tmp_path / "tls.crt", tmp_path / "tls.key", port=0, cert_reload_seconds=0.05)
    server = WebhookServer(_app(), settings)
    with server.running():
        assert _get(server.port, ssl.create_default_context(cadata=first_ca.decode())) == 200
        time.sleep(0.05)  # a later mtime than the first pair's, even on coarse file systems
        second_ca = _write_pair(tmp_path, "tls")
        deadline = time.monotonic() + 5
        while True:
            try:
                if _get(server.port, ssl.create_default_context(cadata=second_ca.decode())) == 200:
                    break
            except ssl.SSLError:
                pass
            assert time.monotonic() < deadline, "the new certificate was never served"
            time.sleep(0.05)
        with pytest.raises(ssl.SSLError):
            _get(server.port, ssl.create_default_context(cadata=first_ca.decode()))

"""Helpers for the ingest-server tests: a throwaway PKI, an HTTPS client, request bodies.

Certificates are generated per test session with ``cryptography`` (EC P-256, one day), so TLS is
verified for real in both directions: the client pins the test CA, and the server verifies client
certificates against a CA of its own.
"""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["SIDEKICK_EXAMPLES", "Answer", "Client", "Pki", "event_list", "sidekick_payloads"]

SIDEKICK_EXAMPLES = Path("../shared/testdata/falcosidekick/falco_payload_examples.json")


def sidekick_payloads() -> list[bytes]:
    """The falcosidekick test payloads, byte for byte as published (whitespace quirks kept)."""
    doc = json.loads(SIDEKICK_EXAMPLES.read_text(encoding="utf-8"))
    return [item["raw"].encode("utf-8") for item in doc["payloads"]]


def event_list(lines: list[bytes], separator: bytes = b",") -> bytes:
    """An audit.k8s.io/v1 EventList whose items are exactly ``lines``."""
    head = b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":['
    return head + separator.join(lines) + b"]}"


class Pki:
    """A CA that issues a loopback serving certificate and client certificates."""

    def __init__(self, directory: Path, name: str = "kubepci-trail-test-ca") -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.ca_path = directory / f"{name}.crt"
        self.ca_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, filename: str, common_name: str, *, server: bool = False) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        )
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        cert_path, key_path = self.dir / f"{filename}.crt", self.dir / f"{filename}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        key_path.chmod(0o600)
        return cert_path, key_path


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: Any
    headers: dict[str, str]


class Client:
    """HTTPS to the ingest server, TLS verified against ``ca``; optional client cert or token."""

    def __init__(self, port: int, ca: Path, cert: tuple[Path, Path] | None = None, token: str | None = None) -> None:
        self.port = port
        self.token = token
        self.ctx = ssl.create_default_context(cafile=str(ca))
        if cert is not None:
            self.ctx.load_cert_chain(str(cert[0]), str(cert[1]))

    def request(self, method: str, path: str, body: bytes | None = None, *, content_type: str = "application/json",
                headers: dict[str, str] | None = None, timeout: float = 30.0) -> Answer:
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout, context=self.ctx)
        sent = dict(headers or {})
        if body is not None:
            sent.setdefault("Content-Type", content_type)
        if self.token is not None:
            sent.setdefault("Authorization", f"Bearer {self.token}")
        response: http.client.HTTPResponse | None = None
        try:
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            raw = response.read()
            answer_headers = {k.lower(): v for k, v in response.getheaders()}
            status = response.status
        finally:
            # A server killed mid-body leaves the response holding the socket (``Connection: close`` hands it
            # over); closing only the connection would leave the socket for the garbage collector to warn about.
            if response is not None:
                response.close()
            conn.close()
        try:
            parsed: Any = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode("utf-8", "replace")
        return Answer(status, parsed, answer_headers)

    def post(self, path: str, body: bytes, **kwargs: Any) -> Answer:
        return self.request("POST", path, body, **kwargs)

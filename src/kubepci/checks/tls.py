"""Encryption in transit and the certificates behind it (controls.md TLS-005, TLS-007..009, NET-007).

PCI DSS 4.2.1 requires strong cryptography on open, public networks, certificates that are valid
(not expired) and only trusted keys and certificates; 4.2.1.1 wants an inventory of them. These
checks read Ingresses, cert-manager Certificates/Issuers and ``kubernetes.io/tls`` Secrets.

Key-size floors: a configured ``min_rsa_bits`` / ``min_ec_bits`` may raise the bar but never lower
it below what the PCI glossary calls strong cryptography (RSA 2048, EC 224); an exception below
that is a waiver, which is reviewed data, not configuration.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from kubepci.checks._credentials import key_path
from kubepci.checks._registry import CheckContext, check
from kubepci.checks._tls import fmt_days, host_matches, parse_go_duration
from kubepci.checks._util import mapping
from kubepci.config import Config
from kubepci.model import Resource, Severity, Violation

if TYPE_CHECKING:
    from cryptography import x509

__all__: list[str] = []

RSA_FLOOR = 2048
EC_FLOOR = 224
#: cert-manager defaults: 90-day certificates renewed when a third of the lifetime is left
DEFAULT_DURATION = 2160 * 3600.0
_DAY = 86400.0

#: annotations with which a cloud load balancer terminates TLS without spec.tls
_CLOUD_TLS_ANNOTATIONS = frozenset({
    "alb.ingress.kubernetes.io/certificate-arn",
    "networking.gke.io/managed-certificates",
    "ingress.gcp.kubernetes.io/pre-shared-cert",
})


def _rsa_min(cfg: Config) -> int:
    return max(cfg.min_rsa_bits, RSA_FLOOR)


def _ec_min(cfg: Config) -> int:
    return max(cfg.min_ec_bits, EC_FLOOR)


def _spec(res: Resource) -> Mapping[str, Any]:
    return mapping(res.body.get("spec"))


def _is_cert_manager(res: Resource) -> bool:
    return res.ref.api_version.startswith("cert-manager.io/")


def _hosts(value: Any) -> list[str]:
    return [h for h in value if isinstance(h, str) and h] if isinstance(value, list) else []


def _rules(spec: Mapping[str, Any]) -> list[tuple[int, Mapping[str, Any]]]:
    rules = spec.get("rules")
    return [(i, r) for i, r in enumerate(rules) if isinstance(r, Mapping)] if isinstance(rules, list) else []


@check(
    id="ingress-tls",
    title="Ingresses must terminate TLS for every host",
    requirements=("4.2.1", "2.2.7"),
    blog=("R4",),
    severity=Severity.HIGH,
    targets=("Ingress",),
    remediation="Add a spec.tls entry with a secretName whose hosts cover every rule host.",
    refs=("TLS-005", "C-0263"),
    cel=(
        "(has(object.metadata.annotations) && ['alb.ingress.kubernetes.io/certificate-arn', "
        "'ingress.gcp.kubernetes.io/pre-shared-cert', "
        "'networking.gke.io/managed-certificates'].exists(k, k in object.metadata.annotations)) || "
        "(has(object.spec) && has(object.spec.tls) && size(object.spec.tls) > 0 && "
        "(object.spec.tls.exists(t, (has(t.secretName) && t.secretName != '') && (!has(t.hosts) || "
        "t.hosts.all(h, h == ''))) || !has(object.spec.rules) || object.spec.rules.all(r, !has(r.host) "
        "|| r.host == '' || object.spec.tls.exists(t, (has(t.secretName) && t.secretName != '') && "
        "has(t.hosts) && t.hosts.exists(h, h != '' && (h.lowerAscii() == r.host.lowerAscii() || "
        "(h.startsWith('*.') && r.host.contains('.') && r.host.substring(r.host.indexOf('.') + "
        "1).lowerAscii() == h.substring(2).lowerAscii()) || (r.host.startsWith('*.') && h.contains('.') "
        "&& h.substring(h.indexOf('.') + 1).lowerAscii() == r.host.substring(2).lowerAscii())))))))"
    ),
)
def ingress_tls(ing: Resource, ctx: CheckContext) -> Iterator[Violation]:
    """An Ingress host without a TLS entry is served over plain HTTP (4.2.1). A TLS entry must name a
    ``secretName``: without one the controller falls back to its default, usually self-signed,
    certificate. A TLS entry without ``hosts`` applies to every host of the Ingress. Cloud load
    balancers that take their certificate from an annotation (AWS ALB ``certificate-arn``, GKE
    ``managed-certificates`` / ``pre-shared-cert``) terminate TLS for every host and pass."""
    if not _CLOUD_TLS_ANNOTATIONS.isdisjoint(ing.annotations):
        return
    spec = _spec(ing)
    tls = [(i, t) for i, t in enumerate(spec.get("tls") or []) if isinstance(t, Mapping)] \
        if isinstance(spec.get("tls"), list) else []
    rules = _rules(spec)
    if not tls:
        hosts = [r["host"] for _, r in rules if isinstance(r.get("host"), str) and r.get("host")]
        which = f" for host(s) {', '.join(hosts)}" if hosts else ""
        yield Violation(f"Ingress has no spec.tls: traffic{which} is served over plain HTTP", "spec.tls")
        return
    with_secret: list[str] = []
    without_secret: list[str] = []
    covers_all = False
    for _, entry in tls:
        hosts = _hosts(entry.get("hosts"))
        if entry.get("secretName"):
            with_secret.extend(hosts)
            covers_all = covers_all or not hosts
        else:
            without_secret.extend(hosts)
    if covers_all:
        return
    for i, rule in rules:
        host = rule.get("host")
        if not isinstance(host, str) or not host:
            continue
        if any(host_matches(h, host) for h in with_secret):
            continue
        if any(host_matches(h, host) for h in without_secret):
            yield Violation(f"host {host!r} is in spec.tls without a secretName", f"spec.rules[{i}].host")
        else:
            yield Violation(f"host {host!r} is not covered by spec.tls", f"spec.rules[{i}].host")


@check(
    id="ingress-wildcard-host",
    title="Ingress rules must name a specific host",
    requirements=("1.4.1", "1.4.2"),
    blog=("R1",),
    severity=Severity.MEDIUM,
    targets=("Ingress",),
    remediation="Give every Ingress rule an explicit, non-wildcard host and drop catch-all default backends.",
    refs=("NET-007",),
    cel=(
        "!has(object.spec) || (!(has(object.spec.defaultBackend) && size(object.spec.defaultBackend) > "
        "0) && !(has(object.spec.backend) && size(object.spec.backend) > 0) && (!has(object.spec.rules) "
        "|| object.spec.rules.all(r, has(r.host) && r.host.trim() != '' && !r.host.contains('*'))))"
    ),
)
def ingress_wildcard_host(ing: Resource, ctx: CheckContext) -> Iterator[Violation]:
    """The DMZ must expose only the services meant to be public (1.4.2). A rule without a host, a
    ``*`` host or a default backend answers for any name pointed at the load balancer, including
    names an attacker controls, and can capture traffic meant for another Ingress."""
    spec = _spec(ing)
    for field in ("defaultBackend", "backend"):
        if mapping(spec.get(field)):
            yield Violation(f"spec.{field} serves requests for any host", f"spec.{field}")
    for i, rule in _rules(spec):
        host = rule.get("host")
        if not isinstance(host, str) or not host.strip():
            yield Violation(f"rule {i} has no host, so it matches every host", f"spec.rules[{i}].host")
        elif "*" in host:
            yield Violation(f"rule {i} host {host!r} is a wildcard", f"spec.rules[{i}].host")


@check(
    id="certificate-lifetime",
    title="Certificates must not be valid for longer than the maximum lifetime",
    requirements=("4.2.1",),
    blog=("R4",),
    severity=Severity.MEDIUM,
    targets=("Certificate",),
    remediation="Set spec.duration to a Go duration no longer than the configured maximum, e.g. 2160h.",
    refs=("TLS-007",),
)
def certificate_lifetime(cert: Resource, ctx: CheckContext) -> Iterator[Violation]:
    """Short-lived certificates limit how long a stolen key is useful; public CAs cap TLS certificates
    at 397 days (``tls.max_certificate_days``). An unset duration is cert-manager's 90 days."""
    if not _is_cert_manager(cert):
        return
    raw = _spec(cert).get("duration")
    if raw is None:
        return
    seconds = parse_go_duration(raw)
    if seconds is None or seconds <= 0:
        yield Violation(f"spec.duration {raw!r} is not a valid positive Go duration (use hours, e.g. 2160h)",
                        "spec.duration")
        return
    limit = ctx.config.max_certificate_days
    if seconds > limit * _DAY:
        yield Violation(f"spec.duration {raw} is {fmt_days(seconds)} days, above the {limit}-day maximum",
                        "spec.duration")


@check(
    id="certificate-rotation",
    title="Certificates must be renewed before expiry with a new private key",
    requirements=("4.2.1", "3.7.4"),
    blog=("R4",),
    severity=Severity.MEDIUM,
    targets=("Certificate",),
    remediation="Set spec.renewBefore below spec.duration and spec.privateKey.rotationPolicy: Always.",
    refs=("TLS-009",),
)
def certificate_rotation(cert: Resource, ctx: CheckContext) -> Iterator[Violation]:
    """Rotation must be automatic and must replace the key (3.7.4 cryptoperiods).

    ``renewBefore`` (or ``renewBeforePercentage``) must leave a renewal window shorter than the
    lifetime; defaults are 2160h and a third of it. ``privateKey.rotationPolicy`` must be
    ``Always``. Newer cert-manager releases default to Always, but an unset field fails as "not
    explicit": the evidence has to be auditable from the manifest, not from the controller version.
    """
    if not _is_cert_manager(cert):
        return
    spec = _spec(cert)
    raw_duration = spec.get("duration")
    duration = DEFAULT_DURATION if raw_duration is None else parse_go_duration(raw_duration)
    if duration is None or duration <= 0:
        yield Violation(f"spec.duration {raw_duration!r} is not a valid positive Go duration",
                        "spec.duration")
    else:
        raw_renew = spec.get("renewBefore")
        pct = spec.get("renewBeforePercentage")
        if raw_renew is not None:
            renew = parse_go_duration(raw_renew)
            if renew is None or renew <= 0:
                yield Violation(f"spec.renewBefore {raw_renew!r} is not a valid positive Go duration",
                                "spec.renewBefore")
            elif renew >= duration:
                shown = raw_duration if raw_duration is not None else "2160h (default)"
                yield Violation(f"spec.renewBefore {raw_renew} is not shorter than spec.duration {shown}",
                                "spec.renewBefore")
        elif pct is not None and (not isinstance(pct, int) or isinstance(pct, bool) or not 0 < pct < 100):
            yield Violation(f"spec.renewBeforePercentage {pct!r} must be between 1 and 99",
                            "spec.renewBeforePercentage")
    policy = mapping(spec.get("privateKey")).get("rotationPolicy")
    if policy is None:
        yield Violation("spec.privateKey.rotationPolicy is not explicit; set Always so renewals get a new "
                        "key", "spec.privateKey.rotationPolicy")
    elif policy != "Always":
        yield Violation(f"spec.privateKey.rotationPolicy is {policy!r}: renewals keep the same private key",
                        "spec.privateKey.rotationPolicy")


def _int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


@check(
    id="certificate-key-size",
    title="Certificate keys must meet the minimum strength",
    requirements=("4.2.1",),
    blog=("R4",),
    severity=Severity.HIGH,
    targets=("Certificate",),
    remediation="Set spec.privateKey to RSA with size 2048 or more, ECDSA with size 256 or more, or Ed25519.",
    refs=("TLS-007",),
)
def certificate_key_size(cert: Resource, ctx: CheckContext) -> Iterator[Violation]:
    """Strong cryptography (4.2.1, PCI glossary) needs RSA of at least 2048 bits or EC of at least 224
    (``tls.min_rsa_bits`` / ``tls.min_ec_bits`` may require more). cert-manager defaults to RSA 2048,
    and to 256 bits for ECDSA; Ed25519 has a fixed, sufficient strength."""
    if not _is_cert_manager(cert):
        return
    pk = mapping(_spec(cert).get("privateKey"))
    algorithm = pk.get("algorithm") or "RSA"
    raw_size = pk.get("size")
    size = _int(raw_size)
    if raw_size is not None and size is None:
        yield Violation(f"spec.privateKey.size {raw_size!r} is not a number", "spec.privateKey.size")
        return
    path = "spec.privateKey.size"
    if algorithm == "RSA":
        bits, minimum = size or 2048, _rsa_min(ctx.config)
    elif algorithm == "ECDSA":
        bits, minimum = size or 256, _ec_min(ctx.config)
    elif algorithm == "Ed25519":
        return
    else:
        yield Violation(f"spec.privateKey.algorithm {algorithm!r} is not RSA, ECDSA or Ed25519",
                        "spec.privateKey.algorithm")
        return
    if bits < minimum:
        yield Violation(f"{algorithm} key of {bits} bits is below the {minimum}-bit minimum", path)


def _issuer(cert: Resource, ctx: CheckContext) -> Resource | None:
    ref = mapping(_spec(cert).get("issuerRef"))
    name = ref.get("name")
    group = ref.get("group") or "cert-manager.io"
    kind = ref.get("kind") or "Issuer"
    if not isinstance(name, str) or group != "cert-manager.io":
        return None
    if kind == "ClusterIssuer":
        candidates = ctx.inventory.of_kind("ClusterIssuer")
    elif kind == "Issuer":
        candidates = ctx.inventory.in_namespace(cert.namespace, "Issuer")
    else:
        return None
    return next((r for r in candidates if r.name == name and _is_cert_manager(r)), None)


def _served_by_ingress(cert: Resource, ctx: CheckContext) -> tuple[str, Resource] | None:
    """(host or secret, Ingress) when an Ingress serves one of the certificate's names or its Secret."""
    spec = _spec(cert)
    names = _hosts(spec.get("dnsNames"))
    if isinstance(spec.get("commonName"), str):
        names.append(spec["commonName"])
    secret = spec.get("secretName")
    for ing in ctx.inventory.of_kind("Ingress"):
        ing_spec = _spec(ing)
        hosts = [r.get("host") for _, r in _rules(ing_spec)]
        tls = [t for t in ing_spec.get("tls") or [] if isinstance(t, Mapping)] \
            if isinstance(ing_spec.get("tls"), list) else []
        for entry in tls:
            hosts.extend(_hosts(entry.get("hosts")))
            if secret and ing.namespace == cert.namespace and entry.get("secretName") == secret:
                return f"secret {secret!r}", ing
        for host in hosts:
            if isinstance(host, str) and host and any(host_matches(n, host) for n in names):
                return f"host {host!r}", ing
    return None


@check(
    id="certificate-issuer-self-signed",
    title="Externally served certificates must not be self-signed",
    requirements=("4.2.1",),
    blog=("R4",),
    severity=Severity.HIGH,
    targets=("Certificate",),
    remediation="Issue the certificate from a trusted public or enterprise CA, not a selfSigned issuer.",
    refs=("TLS-008",),
)
def certificate_issuer_self_signed(cert: Resource, ctx: CheckContext) -> Iterator[Violation]:
    """A self-signed certificate cannot be validated by clients, which teaches them to accept any
    certificate (4.2.1: only trusted keys and certificates). Internal mTLS may use one, so only a
    Certificate whose names, or whose Secret, an Ingress in the inventory serves fails."""
    if not _is_cert_manager(cert):
        return
    issuer = _issuer(cert, ctx)
    if issuer is None or "selfSigned" not in _spec(issuer):
        return
    served = _served_by_ingress(cert, ctx)
    if served is not None:
        what, ing = served
        yield Violation(f"issued by self-signed {issuer.kind} {issuer.name!r} but {what} is served by "
                        f"Ingress {ing.ref}", "spec.issuerRef")


def _pem_bytes(secret: Resource) -> bytes | None:
    """The ``tls.crt`` bytes from data (base64) or stringData; b"" if absent, None if not base64."""
    raw = mapping(secret.body.get("data")).get("tls.crt")
    if isinstance(raw, str) and raw.strip():
        try:  # manifests sometimes wrap long base64 lines; anything else outside the alphabet is an error
            return base64.b64decode("".join(raw.split()), validate=True)
        except (binascii.Error, ValueError):
            return None
    plain = mapping(secret.body.get("stringData")).get("tls.crt")
    return plain.encode() if isinstance(plain, str) else b""


def _subject(cert: x509.Certificate) -> str:
    from cryptography.x509.oid import NameOID

    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = cns[0].value if cns else ""
    return f"CN={value!s}" if value else "no CN"


@check(
    id="tls-secret-certificate",
    title="TLS Secrets must hold a valid, strong certificate",
    requirements=("4.2.1", "4.2.1.1"),
    blog=("R4",),
    severity=Severity.HIGH,
    targets=("Secret",),
    remediation="Replace the certificate with a valid one using an RSA-2048 or EC-256 key and SHA-256.",
    refs=("TLS-007",),
)
def tls_secret_certificate(secret: Resource, ctx: CheckContext) -> Iterator[Violation]:
    """Parses the first certificate in ``tls.crt`` of every ``kubernetes.io/tls`` Secret (the 4.2.1.1
    inventory) and fails on an expired certificate or one expiring within
    ``tls.expiry_warning_days``, on RSA/EC keys below the minimum, and on SHA-1 or MD5 signatures.
    A Secret without a certificate yet (cert-manager fills it later) has nothing to judge."""
    if secret.body.get("type") != "kubernetes.io/tls":
        return
    path = key_path("data", "tls.crt")
    pem = _pem_bytes(secret)
    if pem == b"":
        return
    # imported here: cryptography's x509 costs ~50 ms at start-up, and charts ship TLS Secrets
    # whose certificate is still empty (filled in at install time) far more often than real ones
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa

    try:
        if pem is None:
            raise ValueError("not base64")
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        yield Violation("tls.crt could not be parsed as a PEM X.509 certificate", path)
        return
    who = _subject(cert)
    now = ctx.now or datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    not_after = cert.not_valid_after_utc
    warn = ctx.config.expiry_warning_days
    if not_after <= now:
        yield Violation(f"certificate ({who}) expired on {not_after:%Y-%m-%d}", path)
    elif not_after <= now + timedelta(days=warn):
        yield Violation(f"certificate ({who}) expires on {not_after:%Y-%m-%d}, within {warn} days", path)
    try:
        key = cert.public_key()
    except (UnsupportedAlgorithm, ValueError):
        key = None
    if isinstance(key, (rsa.RSAPublicKey, dsa.DSAPublicKey)):
        minimum = _rsa_min(ctx.config)
        if key.key_size < minimum:
            kind = "RSA" if isinstance(key, rsa.RSAPublicKey) else "DSA"
            yield Violation(f"certificate ({who}) has a {key.key_size}-bit {kind} key, below {minimum} bits",
                            path)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        minimum = _ec_min(ctx.config)
        if key.curve.key_size < minimum:
            yield Violation(f"certificate ({who}) has a {key.curve.key_size}-bit EC key ({key.curve.name}), "
                            f"below {minimum} bits", path)
    try:
        digest = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        digest = None
    if isinstance(digest, (hashes.SHA1, hashes.MD5)):
        yield Violation(f"certificate ({who}) is signed with {digest.name.upper()}", path)
